"""Access checks of the HTTP API.

A caller who is not a member of a document gets 404, the same response as for a
document that does not exist, so the API does not reveal which documents exist. A
member whose role is too low for the request gets 403.
"""

import uuid

from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request

from collab.api.membership import Access, find_access
from collab.models import Role

DOCUMENT_NOT_FOUND = "Document not found, or you are not a member of it."


def get_access(request: Request, document_id: uuid.UUID) -> Access:
    """Return the caller's document and role, or raise NotFound for a non-member."""
    access = find_access(request.user, document_id)
    if access is None:
        raise NotFound(DOCUMENT_NOT_FOUND)
    return access


def require_edit(access: Access, action: str) -> None:
    """Raise PermissionDenied unless the role may edit the document."""
    if not access.role.can_edit:
        raise PermissionDenied(
            f"Your role {access.role.value} cannot {action}. "
            "An owner or editor role is required."
        )


def require_manage(access: Access, action: str) -> None:
    """Raise PermissionDenied unless the role is the document's owner."""
    if not access.role.can_manage:
        raise PermissionDenied(
            f"Your role {access.role.value} cannot {action}. "
            f"The {Role.OWNER.value} role is required."
        )
