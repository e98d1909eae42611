"""Server-rendered pages: sign up, the document list, sharing and the editor.

Every document page returns 404 to a signed-in user who is not a member of the
document, as the API does, so the pages do not reveal which documents exist.
"""

import logging
import uuid

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework_simplejwt.tokens import AccessToken

from collab import store
from collab.api import membership
from collab.models import DocumentMembership, Role
from collab.web.forms import DocumentCreateForm, ShareForm

logger = logging.getLogger(__name__)

ROLE_LABELS = {
    Role.OWNER: "Owner",
    Role.EDITOR: "Editor",
    Role.COMMENTER: "Commenter (read-only here)",
    Role.VIEWER: "Viewer (read-only)",
}


def _get_access(request: HttpRequest, document_id: uuid.UUID) -> membership.Access:
    access = membership.find_access(request.user, document_id)
    if access is None:
        raise Http404("Document not found, or you are not a member of it.")
    return access


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account with UserCreationForm and sign the new user in."""
    if request.user.is_authenticated:
        return redirect("document-list")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        logger.info("user %s signed up", user.pk)
        return redirect("document-list")
    return render(request, "registration/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def document_list(request: HttpRequest) -> HttpResponse:
    """List the user's documents. POST creates one and opens it in the editor."""
    form = DocumentCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        document = store.create_document(request.user, form.cleaned_data["title"])
        logger.info("document %s created by user %s", document.pk, request.user.pk)
        return redirect("document-editor", document_id=document.pk)
    memberships = (
        DocumentMembership.objects.filter(user=request.user)
        .select_related("document", "document__owner")
        .order_by("-document__updated_at")
    )
    return render(
        request,
        "collab/document_list.html",
        {"form": form, "memberships": memberships},
    )


@login_required
@require_http_methods(["GET", "POST"])
def document_share(request: HttpRequest, document_id: uuid.UUID) -> HttpResponse:
    """List the members. The owner can also add members and change roles here."""
    access = _get_access(request, document_id)
    can_manage = access.role.can_manage
    form = ShareForm(request.POST or None) if can_manage else None
    if request.method == "POST":
        if not can_manage:
            return HttpResponse(
                "Only the document's owner can manage its members.", status=403
            )
        if form.is_valid():
            username = form.cleaned_data["username"]
            role = Role(form.cleaned_data["role"])
            try:
                membership.set_member_role(access.document, username, role)
            except membership.MembershipError as exc:
                form.add_error(exc.field, exc.message)
            else:
                logger.info(
                    "user %s set %s to %s on document %s",
                    request.user.pk,
                    username,
                    role.value,
                    document_id,
                )
                messages.success(request, f"{username} now has the {role.value} role.")
                return redirect("document-share", document_id=document_id)
    return render(
        request,
        "collab/document_share.html",
        {
            "document": access.document,
            "role": access.role,
            "can_manage": can_manage,
            "form": form,
            "members": membership.list_members(access.document),
        },
    )


@login_required
@require_POST
def member_remove(
    request: HttpRequest, document_id: uuid.UUID, username: str
) -> HttpResponse:
    """Remove a member (owner only). The owner cannot remove themself."""
    access = _get_access(request, document_id)
    if not access.role.can_manage:
        return HttpResponse("Only the document's owner can remove members.", status=403)
    try:
        membership.remove_member(access.document, username)
    except DocumentMembership.DoesNotExist:
        raise Http404(f"{username} is not a member of this document.") from None
    except membership.MembershipError as exc:
        messages.error(request, exc.message)
    else:
        logger.info(
            "user %s removed %s from document %s",
            request.user.pk,
            username,
            document_id,
        )
        messages.success(request, f"{username} was removed.")
    return redirect("document-share", document_id=document_id)


@never_cache
@login_required
def document_editor(request: HttpRequest, document_id: uuid.UUID) -> HttpResponse:
    """Render the editor with its configuration, including a fresh access token.

    never_cache keeps the embedded token out of browser and proxy caches.
    """
    access = _get_access(request, document_id)
    scheme = "wss" if request.is_secure() else "ws"
    config = {
        "documentId": str(access.document.pk),
        "title": access.document.title,
        "username": request.user.get_username(),
        "role": access.role.value,
        "accessToken": str(AccessToken.for_user(request.user)),
        "websocketUrl": f"{scheme}://{request.get_host()}",
        "sessionTokenUrl": reverse("api-session-token"),
        "csrfToken": get_token(request),
    }
    return render(
        request,
        "collab/editor.html",
        {
            "document": access.document,
            "role": access.role,
            "role_label": ROLE_LABELS[access.role],
            "config": config,
        },
    )
