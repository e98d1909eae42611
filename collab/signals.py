"""Tell open sockets when a membership or a document changes.

The admin, the HTTP API and the pages all change memberships through the ORM, so
the signals here catch every path. Messages go out after the transaction commits.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from collab import protocol
from collab.models import Document, DocumentMembership

logger = logging.getLogger(__name__)


def _send_after_commit(document_id, message: dict) -> None:
    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(
                protocol.group_name(document_id), message
            )
        except Exception as exc:
            # The sockets keep their old role until they reconnect; every commit
            # still checks the role in the database.
            logger.warning(
                "could not notify sockets of document %s: %s", document_id, exc
            )

    transaction.on_commit(send)


@receiver(post_save, sender=DocumentMembership)
def membership_saved(sender, instance: DocumentMembership, created, **kwargs) -> None:
    if created:
        return
    _send_after_commit(
        instance.document_id,
        {
            "type": protocol.MEMBERSHIP_CHANGED,
            "user_id": instance.user_id,
            "role": instance.role,
        },
    )


@receiver(post_delete, sender=DocumentMembership)
def membership_deleted(sender, instance: DocumentMembership, **kwargs) -> None:
    _send_after_commit(
        instance.document_id,
        {
            "type": protocol.MEMBERSHIP_CHANGED,
            "user_id": instance.user_id,
            "role": None,
        },
    )


@receiver(post_delete, sender=Document)
def document_deleted(sender, instance: Document, **kwargs) -> None:
    _send_after_commit(instance.pk, {"type": protocol.DOCUMENT_DELETED})
