"""Selections and activity of each open socket, kept in the Django cache.

They change with every cursor move, far too often for a database row, so they live
in the cache (Redis when REDIS_URL is set), where every server process that shares
it can read them. Entries are keyed by the socket's channel name, which is unique
across processes. Each entry expires after twice the heartbeat timeout unless the
owning consumer saves it again, which it does with every heartbeat refresh of its
Connection row, so the entry of a dead process disappears on its own.
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache

KEY_PREFIX = "materi:presence:"


@dataclass
class PresenceState:
    """The changing part of one socket's presence: selections and activity.

    `selections` refer to document version `version`.
    """

    selections: list[dict[str, int]] = field(default_factory=list)
    version: int = 0
    activity: str = "active"

    def to_cache(self) -> dict[str, Any]:
        return {
            "selections": self.selections,
            "version": self.version,
            "activity": self.activity,
        }

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> "PresenceState":
        return cls(value["selections"], value["version"], value["activity"])


def cache_key(channel_name: str) -> str:
    return KEY_PREFIX + channel_name


def expiry_seconds() -> float:
    return 2 * settings.MATERI["HEARTBEAT_TIMEOUT"]


def save_state(channel_name: str, state: PresenceState) -> None:
    cache.set(cache_key(channel_name), state.to_cache(), expiry_seconds())


def save_states(states: dict[str, PresenceState]) -> None:
    """Store the state of each channel name, in one cache call."""
    cache.set_many(
        {cache_key(name): state.to_cache() for name, state in states.items()},
        expiry_seconds(),
    )


def load_states(channel_names: list[str]) -> dict[str, PresenceState]:
    """Return the stored state of each channel that has one.

    NOTE: the embedded configuration's LocMemCache evicts entries once it has more
    than 300 (Django's default MAX_ENTRIES). With more open sockets than that, some
    states read as missing, and a joining client sees those sockets without
    selections or activity.
    """
    found = cache.get_many([cache_key(name) for name in channel_names])
    states = {}
    for name in channel_names:
        value = found.get(cache_key(name))
        if value is not None:
            states[name] = PresenceState.from_cache(value)
    return states


def delete_states(channel_names: list[str]) -> None:
    cache.delete_many([cache_key(name) for name in channel_names])
