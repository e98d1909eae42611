"""The id of this server process, stored on every Connection row it owns."""

import os
import secrets
import socket

_instance_id: str | None = None
_instance_pid: int | None = None


def instance_id() -> str:
    """Return this process's id: host name, process id and a random suffix.

    The random suffix keeps the id unique when the operating system reuses a process
    id. A forked child gets an id of its own.
    """
    global _instance_id, _instance_pid
    pid = os.getpid()
    if _instance_id is None or _instance_pid != pid:
        host = socket.gethostname()[:60]
        _instance_id = f"{host}:{pid}:{secrets.token_hex(4)}"
        _instance_pid = pid
    return _instance_id
