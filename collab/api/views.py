"""HTTP API views: documents, their operations and members, and session tokens.

Every document view returns 404 when the caller is not a member of the document or
it does not exist, so the API does not reveal which documents exist. It returns 403
when the caller is a member whose role is too low. Viewers and commenters read,
owners and editors also rename, and only the owner deletes and manages members.
"""

import logging
import uuid

from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken

from collab import store
from collab.api import membership, serializers
from collab.api.permissions import get_access, require_edit, require_manage
from collab.models import Document, DocumentMembership, Role

logger = logging.getLogger(__name__)


class DocumentListView(APIView):
    """GET: the caller's documents. POST: create a document owned by the caller."""

    def get(self, request: Request) -> Response:
        memberships = (
            DocumentMembership.objects.filter(user=request.user)
            .select_related("document")
            .defer("document__snapshot")
            .order_by("-document__updated_at")
        )
        data = serializers.DocumentSummarySerializer(memberships, many=True).data
        return Response(data)

    def post(self, request: Request) -> Response:
        serializer = serializers.DocumentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = store.create_document(
            request.user,
            serializer.validated_data["title"],
            serializer.validated_data["content"],
        )
        logger.info("document %s created by user %s", document.pk, request.user.pk)
        access = membership.Access(document, Role.OWNER)
        data = serializers.DocumentDetailSerializer(access).data
        return Response(data, status=status.HTTP_201_CREATED)


class DocumentDetailView(APIView):
    """GET: a document's content (any member). PATCH: rename (owner or editor).
    DELETE: delete (owner only).

    Non-members get 404 and members with a lower role get 403.
    """

    def get(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        return Response(serializers.DocumentDetailSerializer(access).data)

    def patch(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        require_edit(access, "rename this document")
        serializer = serializers.DocumentRenameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = access.document
        document.title = serializer.validated_data["title"]
        document.save(update_fields=["title", "updated_at"])
        # NOTE: sockets open on the document keep the old title until they
        # reconnect, because the protocol has no message for a rename.
        return Response(serializers.DocumentDetailSerializer(access).data)

    def delete(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        require_manage(access, "delete this document")
        store.delete_document(access.document.pk)
        logger.info("document %s deleted by user %s", document_id, request.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OperationListView(APIView):
    """GET ?since=N[&limit=L]: the stored operations from version N on (any member).

    The body is {"version": V, "operations": [...], "has_more": bool}. V is the
    document's version when the request was read, and every operation listed applied
    to a version below V. has_more is true when `limit` cut the list short, so the
    next page starts at the last listed version + 1. Non-members get 404.
    """

    def get(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        query = serializers.OperationsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        since = query.validated_data["since"]
        limit = query.validated_data["limit"]

        version = (
            Document.objects.filter(pk=access.document.pk)
            .values_list("version", flat=True)
            .first()
        )
        if version is None:
            raise NotFound("Document not found. It was deleted.")
        # Fetching one operation more than the limit shows whether more remain.
        operations = store.operations_since(
            access.document.pk, since, until=version, limit=limit + 1
        )
        has_more = len(operations) > limit
        return Response(
            {
                "version": version,
                "operations": [_operation_entry(op) for op in operations[:limit]],
                "has_more": has_more,
            }
        )


def _operation_entry(operation: store.StoredOperation) -> dict:
    """Return a document_edit broadcast's data plus the author's ids, as in catch_up."""
    return {
        **operation.to_wire(),
        "client_id": operation.client_id,
        "message_id": operation.message_id,
    }


class MemberListView(APIView):
    """GET: the document's members (any member). POST: add a member or change a
    member's role (owner only).

    Granting owner transfers ownership, and the previous owner becomes an editor.
    Non-members get 404 and members other than the owner get 403 on POST.
    """

    def get(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        members = membership.list_members(access.document)
        return Response(serializers.MemberSerializer(members, many=True).data)

    def post(self, request: Request, document_id: uuid.UUID) -> Response:
        access = get_access(request, document_id)
        require_manage(access, "manage members")
        serializer = serializers.MemberWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["username"]
        role = Role(serializer.validated_data["role"])
        try:
            member, created = membership.set_member_role(
                access.document, username, role
            )
        except membership.MembershipError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        logger.info(
            "user %s set %s to %s on document %s",
            request.user.pk,
            username,
            role.value,
            document_id,
        )
        return Response(
            serializers.MemberSerializer(member).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class MemberDetailView(APIView):
    """DELETE: remove a member (owner only). The owner cannot remove themself.

    Non-members get 404, members other than the owner get 403, and a username that
    is not a member of the document gets 404.
    """

    def delete(
        self, request: Request, document_id: uuid.UUID, username: str
    ) -> Response:
        access = get_access(request, document_id)
        require_manage(access, "remove members")
        try:
            membership.remove_member(access.document, username)
        except DocumentMembership.DoesNotExist:
            raise NotFound(f"{username!r} is not a member of this document.") from None
        except membership.MembershipError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        logger.info(
            "user %s removed %s from document %s",
            request.user.pk,
            username,
            document_id,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionTokenView(APIView):
    """POST: a fresh JWT access token for the user of the Django session.

    Only session authentication is accepted, and DRF checks the CSRF token on it, so
    a page of another site cannot mint a token with the visitor's cookie.
    """

    authentication_classes = [SessionAuthentication]

    def post(self, request: Request) -> Response:
        return Response({"access": str(AccessToken.for_user(request.user))})
