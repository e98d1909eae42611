import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from collab import store
from tests.live import ServerProcess, database_url, server_env


@pytest.fixture
def make_user(transactional_db):
    def create(username: str, password: str = "correct-horse-battery"):
        return get_user_model().objects.create_user(username, password=password)

    return create


@pytest.fixture
def make_document(transactional_db):
    def create(owner, title: str = "Notes", content: str = "", members=()):
        document = store.create_document(owner, title, content)
        for user, role in members:
            document.memberships.create(user=user, role=role)
        return document

    return create


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


@pytest.fixture
def start_server(transactional_db):
    """Start server processes on the test database; all are stopped after the test."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(server_env(database_url(connection.settings_dict), **env))
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server()
