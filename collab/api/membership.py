"""Document access rules and changes to a document's members.

The API views and the web pages both use these functions, so the two enforce the
same rules. Members with any role may read, and owners and editors may also edit
(rename). Only the owner may delete the document or manage its members. A document
has exactly one owner membership, which belongs to `Document.owner`.
"""

import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from collab.models import Document, DocumentMembership, Role


class MembershipError(ValueError):
    """A member change that breaks a rule. `field` names the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Access:
    """A member's document and role."""

    document: Document
    role: Role


def find_access(user: AbstractBaseUser, document_id: uuid.UUID) -> Access | None:
    """Return the user's document and role, or None when the user is not a member.

    None also covers a document that does not exist, so callers can treat both
    cases alike and not reveal which documents exist.
    """
    if not user.is_authenticated:
        return None
    membership = (
        DocumentMembership.objects.filter(document_id=document_id, user=user)
        .select_related("document")
        .first()
    )
    if membership is None:
        return None
    return Access(membership.document, Role(membership.role))


def list_members(document: Document) -> list[DocumentMembership]:
    """Return the memberships of a document: the owner first, then by username."""
    memberships = document.memberships.select_related("user")
    return sorted(
        memberships,
        key=lambda m: (m.role != Role.OWNER, m.user.get_username().casefold()),
    )


def set_member_role(
    document: Document, username: str, role: Role
) -> tuple[DocumentMembership, bool]:
    """Add a member or change a member's role, and return (membership, created).

    Granting `owner` transfers ownership: the user becomes the owner and the previous
    owner becomes an editor, so the document keeps exactly one owner. The owner's own
    role changes only through such a transfer.
    Raise MembershipError for an unknown username or a change to the owner's role.
    """
    user = _find_user(username)
    with transaction.atomic():
        membership = (
            DocumentMembership.objects.select_for_update()
            .filter(document=document, user=user)
            .first()
        )
        if membership is not None and membership.role == Role.OWNER:
            if role != Role.OWNER:
                raise MembershipError(
                    "role",
                    f"{username} is the owner and cannot change their own role. Grant "
                    "owner to another member to transfer ownership.",
                )
            return membership, False

        if role == Role.OWNER:
            _demote_owner(document)
        created = membership is None
        if created:
            membership = DocumentMembership.objects.create(
                document=document, user=user, role=role
            )
        else:
            membership.role = role
            membership.save(update_fields=["role"])
        if role == Role.OWNER:
            document.owner = user
            document.save(update_fields=["owner", "updated_at"])
    return membership, created


def remove_member(document: Document, username: str) -> None:
    """Remove a member from a document.

    Raise DocumentMembership.DoesNotExist when the user is not a member, and
    MembershipError when the user is the owner.
    """
    username_lookup = f"user__{get_user_model().USERNAME_FIELD}"
    membership = DocumentMembership.objects.get(
        document=document, **{username_lookup: username}
    )
    if membership.role == Role.OWNER:
        raise MembershipError(
            "username",
            f"{username} is the owner and cannot be removed. Grant owner to another "
            "member first.",
        )
    membership.delete()


def username_max_length() -> int:
    """Return the max length of the user model's username field."""
    user_model = get_user_model()
    return user_model._meta.get_field(user_model.USERNAME_FIELD).max_length


def _find_user(username: str) -> AbstractBaseUser:
    user_model = get_user_model()
    try:
        return user_model.objects.get(**{user_model.USERNAME_FIELD: username})
    except user_model.DoesNotExist:
        raise MembershipError(
            "username", f"No user with username {username!r} exists."
        ) from None


def _demote_owner(document: Document) -> None:
    # Saved one by one, not with update(), so the signal closes the old owner's
    # sockets with 4009 and they reconnect with the new role.
    owners = DocumentMembership.objects.filter(document=document, role=Role.OWNER)
    for membership in owners:
        membership.role = Role.EDITOR
        membership.save(update_fields=["role"])
