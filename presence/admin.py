"""Read-only admin list of live connections, with an action that closes sockets."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html

from collab import protocol
from presence.models import Connection

logger = logging.getLogger(__name__)

# Close reason sent with close code 4010; WebSocket limits it to 123 bytes.
# NOTE: daphne 4.2 does not put the reason of an ASGI close message into the close
# frame, so behind daphne clients see code 4010 with an empty reason.
DISCONNECT_REASON = "disconnected by an operator"


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    """Open sockets. Rows come and go with the sockets, so nothing here is editable."""

    list_display = [
        "document",
        "connections_on_document",
        "user",
        "client_id",
        "instance_id",
        "remote_address",
        "connected_at",
        "last_seen",
    ]
    list_filter = [
        ("document", admin.RelatedOnlyFieldListFilter),
        ("user", admin.RelatedOnlyFieldListFilter),
        "instance_id",
    ]
    list_select_related = ["document", "user"]
    search_fields = ["client_id", "user__username", "document__title"]
    actions = ["disconnect_connections"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        per_document = (
            Connection.objects.filter(document=OuterRef("document"))
            .order_by()
            .values("document")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                document_connection_count=Subquery(
                    per_document, output_field=IntegerField()
                )
            )
        )

    @admin.display(
        description="Connections on document", ordering="document_connection_count"
    )
    def connections_on_document(self, connection: Connection):
        return format_html(
            '<a href="?document__id__exact={}">{}</a>',
            connection.document_id,
            connection.document_connection_count,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting a row would hide a socket that is still open; disconnect it.
        return False

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("presence.disconnect_connection")

    @admin.action(
        description="Disconnect selected connections", permissions=["disconnect"]
    )
    def disconnect_connections(
        self, request: HttpRequest, queryset: QuerySet[Connection]
    ) -> None:
        """Ask each socket's owning consumer to close with code 4010.

        The consumer deletes the row when the socket closes. A row of a dead
        process stays until the reaper deletes it.
        """
        channel_layer = get_channel_layer()
        connections = list(queryset.values_list("pk", "channel_name", "client_id"))
        for pk, channel_name, client_id in connections:
            async_to_sync(channel_layer.send)(
                channel_name,
                {"type": protocol.CHANNEL_TERMINATE, "reason": DISCONNECT_REASON},
            )
            logger.info(
                "user %s disconnected connection %s (client=%s channel=%s)",
                request.user.pk,
                pk,
                client_id,
                channel_name,
            )
        self.message_user(
            request,
            f"Sent a disconnect request to {len(connections)} connections. Their "
            "rows disappear when the sockets have closed.",
            messages.SUCCESS,
        )
