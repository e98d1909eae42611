import functools
import os
import tempfile
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from collab import store
from collab.fanout import fanout
from collab.store import text_cache
from tests.live import ServerProcess, database_url, server_env

# Consumers under test reach the database from asgiref's worker threads. A
# persistent connection left open there would keep PostgreSQL from dropping the
# test database at the end of the run.
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


def pytest_configure(config):
    """Give each test run its own SQLite file, shared with its server processes.

    Server processes open the database through DATABASE_URL, so it must be a
    file rather than SQLite's in-memory test database.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        path = Path(tempfile.gettempdir()) / f"materi-test-{os.getpid()}.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


def pytest_unconfigure(config):
    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if name and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def make_user(transactional_db):
    def create(username: str, password: str = "correct-horse-battery"):
        user = get_user_model()(username=username, password=hashed(password))
        user.save()
        return user

    return create


@pytest.fixture
def make_document(transactional_db):
    def create(owner, title: str = "Notes", content: str = "", members=()):
        document = store.create_document(owner, title, content)
        for user, role in members:
            document.memberships.create(user=user, role=role)
        return document

    return create


@functools.cache
def hashed(password: str) -> str:
    """Hash each test password once: PBKDF2 takes a few hundred ms per call."""
    return make_password(password)


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


@pytest.fixture
def start_server(transactional_db):
    """Start server processes on the test database; all are stopped after the test."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(
            server_env(database_url(connection.settings_dict), **env)
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Create the test database, and end stray sessions before it is dropped.

    Server processes and worker threads may leave a PostgreSQL session behind for
    a moment after they stop, and PostgreSQL refuses to drop a database in use.
    """
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Give each test new channel-layer and fan-out objects, and no cached text.

    The layer and the fan-out keep state bound to the event loop that used them,
    and every async test runs in an event loop of its own.
    """
    yield
    channel_layers.backends = {}
    fanout.__init__()
    text_cache.clear()
