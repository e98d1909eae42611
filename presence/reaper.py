"""Removal of Connection rows left behind by dead server processes.

`manage.py reap_connections` runs it once. Every `manage.py serve` process also runs
it at start-up and then every quarter of the heartbeat timeout, so a killed
process's sockets leave every presence list about one heartbeat timeout after its
last refresh.
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from collab.consumers import group_name
from collab.protocol import Event
from presence import service
from presence.session import presence_event

logger = logging.getLogger(__name__)


async def reap(max_age: float | None = None) -> list[service.ReapedConnection]:
    """Delete stale rows, then send `leave` to each reaped socket's document group."""
    reaped = await database_sync_to_async(service.reap_stale_connections)(max_age)
    channel_layer = get_channel_layer()
    for connection in reaped:
        if not connection.announce_leave:
            continue
        data = {"client_id": connection.client_id, "user_id": connection.user_id}
        await channel_layer.group_send(
            group_name(connection.document_id),
            presence_event(connection.channel_name, Event.LEAVE, data),
        )
    return reaped


async def reap_periodically() -> None:
    """Reap now and then every quarter of the heartbeat timeout, until cancelled."""
    interval = settings.MATERI["HEARTBEAT_TIMEOUT"] / 4
    while True:
        try:
            await reap()
        except Exception:
            # A database or Redis outage must not stop the loop; the next round
            # reaps what this one could not.
            logger.exception(
                "reaping stale connections failed; retrying in %.1f s", interval
            )
        await asyncio.sleep(interval)


def start_periodic_reaper() -> asyncio.Task:
    """Schedule `reap_periodically` on this thread's event loop.

    Call it before the loop runs (daphne's ready callback) or inside it.
    """
    loop = asyncio.get_event_loop()
    task = loop.create_task(reap_periodically())
    logger.info(
        "reaping stale connections every %.1f s",
        settings.MATERI["HEARTBEAT_TIMEOUT"] / 4,
    )
    return task
