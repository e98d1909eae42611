"""Presence storage and queries: Connection rows, their cached state, the list sent
to joining clients, and the reaping of rows left behind by dead server processes.

All functions here are synchronous and use the ORM and the cache; the consumer
calls them through `database_sync_to_async`. Each connect, disconnect and throttled
heartbeat costs one database write. Cursor moves and activity changes only touch
the cache.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from collab import store as document_store
from presence import store
from presence.cursors import clamp_selections, rebase_selections
from presence.instance import instance_id
from presence.models import Connection
from presence.store import PresenceState

logger = logging.getLogger(__name__)

# Colours for user cursors and name labels. Each has a contrast ratio of at least
# 4.5:1 against white, both as text on white and as a label behind white text
# (tests/presence/test_units.py checks this).
PALETTE = (
    "#b91c1c",
    "#c2410c",
    "#a16207",
    "#15803d",
    "#0f766e",
    "#0e7490",
    "#1d4ed8",
    "#4338ca",
    "#6d28d9",
    "#7e22ce",
    "#a21caf",
    "#be185d",
)


def color_for_user(user_id: int) -> str:
    """Return the user's colour; consecutive user ids get different colours."""
    return PALETTE[user_id % len(PALETTE)]


def display_name(user: AbstractBaseUser) -> str:
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full_name or user.get_username()


@dataclass(frozen=True)
class ConnectionInfo:
    """Details of a socket that the server stores when it connects."""

    document_id: uuid.UUID
    user: AbstractBaseUser
    client_id: str
    channel_name: str
    remote_address: str
    user_agent: str
    protocol_version: int


@dataclass(frozen=True)
class PresentClient:
    """One open socket as other clients see it."""

    channel_name: str
    client_id: str
    user_id: int
    display_name: str
    color: str
    connected_at: datetime
    state: PresenceState


# Connection rows


def register_connection(info: ConnectionInfo, state: PresenceState) -> int:
    """Store the Connection row and the cached state of a new socket; return the pk."""
    connection = Connection.objects.create(
        user=info.user,
        document_id=info.document_id,
        client_id=info.client_id,
        instance_id=instance_id(),
        channel_name=info.channel_name,
        remote_address=info.remote_address[:255],
        user_agent=info.user_agent[:512],
        protocol_version=info.protocol_version,
    )
    store.save_state(info.channel_name, state)
    return connection.pk


def refresh_connections(
    connections: dict[int, tuple[str, PresenceState]],
) -> dict[int, bool]:
    """Set the rows' last_seen to now and save their states again, in one update.

    `connections` maps each row's primary key to its channel name and state. The
    result maps each row to whether it still exists. A row is gone when the
    reaper deleted it while this process could not refresh it, for example during
    a database outage.
    """
    Connection.objects.filter(pk__in=connections).update(last_seen=timezone.now())
    existing = set(
        Connection.objects.filter(pk__in=connections).values_list("pk", flat=True)
    )
    store.save_states(dict(connections.values()))
    return {pk: pk in existing for pk in connections}


def unregister_connection(
    pk: int | None, channel_name: str, document_id: uuid.UUID, client_id: str
) -> bool:
    """Delete the socket's row and state; return whether others should see a leave.

    A client that reconnects with the same client_id before its old socket is
    closed already has a new row, and the old socket's leave would remove the
    new one from every presence list, so no leave is due then.
    """
    if pk is not None:
        Connection.objects.filter(pk=pk).delete()
    store.delete_states([channel_name])
    return not Connection.objects.filter(
        document_id=document_id, client_id=client_id
    ).exists()


# The list sent to joining clients


def load_present_clients(document_id: uuid.UUID) -> list[PresentClient]:
    """Read every open socket on the document with its cached state.

    Call this before reading the document snapshot: every cached selection then
    refers to a version at or below the snapshot's, so it can be moved forward.
    """
    rows = list(
        Connection.objects.filter(document_id=document_id)
        .select_related("user")
        .order_by("connected_at", "pk")
    )
    states = store.load_states([row.channel_name for row in rows])
    return [
        PresentClient(
            channel_name=row.channel_name,
            client_id=row.client_id,
            user_id=row.user_id,
            display_name=display_name(row.user),
            color=color_for_user(row.user_id),
            connected_at=row.connected_at,
            state=states.get(row.channel_name) or PresenceState(),
        )
        for row in rows
    ]


def describe_presence(
    document_id: uuid.UUID,
    clients: list[PresentClient],
    version: int,
    length: int,
) -> list[dict[str, Any]]:
    """Build the `presence` list of document_state, with selections at `version`.

    `length` is the document's length at `version`. A user with several sockets
    appears once with one entry per client. When one client_id has several sockets
    (a reconnect before the old socket closed), the newest one is listed.
    """
    newest: dict[str, PresentClient] = {}
    for client in clients:
        newest[client.client_id] = client
    listed = sorted(newest.values(), key=lambda client: client.connected_at)
    operations = _operations_for(document_id, listed, version)

    users: dict[int, dict[str, Any]] = {}
    for client in listed:
        user = users.setdefault(
            client.user_id,
            {
                "user_id": client.user_id,
                "display_name": client.display_name,
                "color": client.color,
                "clients": [],
            },
        )
        user["clients"].append(
            {
                "client_id": client.client_id,
                "selections": _selections_at(client.state, operations, version, length),
                "activity": client.state.activity,
            }
        )
    return list(users.values())


def _operations_for(
    document_id: uuid.UUID, clients: list[PresentClient], version: int
) -> list[document_store.StoredOperation]:
    """Read the operations needed to move every listed selection to `version`."""
    oldest = min(
        (
            client.state.version
            for client in clients
            if client.state.selections and client.state.version < version
        ),
        default=version,
    )
    oldest = max(oldest, version - settings.MATERI["CATCH_UP_MAX_OPERATIONS"])
    if oldest >= version:
        return []
    return document_store.operations_since(document_id, oldest, until=version)


def _selections_at(
    state: PresenceState,
    operations: list[document_store.StoredOperation],
    version: int,
    length: int,
) -> list[dict[str, int]]:
    if not state.selections:
        return []
    if version - state.version > settings.MATERI["CATCH_UP_MAX_OPERATIONS"]:
        # NOTE: moving a selection over more operations than a catch-up would read
        # costs too much on every join, so a client idle that long is listed
        # without selections until it moves its cursor again.
        return []
    if state.version > version:
        # Cannot happen when the state was read before the snapshot; keep the
        # selection inside the document.
        return clamp_selections(state.selections, length)
    return rebase_selections(
        state.selections, state.version, operations, version, length
    )


# Reaping


@dataclass(frozen=True)
class ReapedConnection:
    document_id: uuid.UUID
    user_id: int
    client_id: str
    channel_name: str
    announce_leave: bool


def reap_stale_connections(max_age: float | None = None) -> list[ReapedConnection]:
    """Delete rows whose last_seen is older than `max_age` seconds and their states.

    `max_age` defaults to the heartbeat timeout: a live consumer refreshes its row
    at least that often, so an older row belongs to a dead server process. Rows
    that another process is reaping at the same time are skipped, so each reaped
    socket is announced once.
    """
    if max_age is None:
        max_age = settings.MATERI["HEARTBEAT_TIMEOUT"]
    cutoff = timezone.now() - timedelta(seconds=max_age)
    with transaction.atomic():
        stale = list(
            Connection.objects.select_for_update(skip_locked=True)
            .filter(last_seen__lt=cutoff)
            .values_list("pk", "document_id", "user_id", "client_id", "channel_name")
        )
        Connection.objects.filter(pk__in=[row[0] for row in stale]).delete()
    if not stale:
        return []
    store.delete_states([row[4] for row in stale])

    still_open = set(
        Connection.objects.filter(
            document_id__in={row[1] for row in stale},
            client_id__in={row[3] for row in stale},
        ).values_list("document_id", "client_id")
    )
    reaped = [
        ReapedConnection(
            document_id=document_id,
            user_id=user_id,
            client_id=client_id,
            channel_name=channel_name,
            announce_leave=(document_id, client_id) not in still_open,
        )
        for _, document_id, user_id, client_id, channel_name in stale
    ]
    for connection in reaped:
        logger.info(
            "reaped connection document=%s client=%s user=%s channel=%s",
            connection.document_id,
            connection.client_id,
            connection.user_id,
            connection.channel_name,
        )
    return reaped
