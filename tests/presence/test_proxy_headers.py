"""The client address of a Connection row, with and without proxy headers."""

import asyncio

import pytest
import websockets
from channels.db import database_sync_to_async

from presence.models import Connection
from tests.conftest import token_for
from tests.live import wait_for

FORWARDED_FOR = "198.51.100.23"


def remote_address(server, document, user, client_id: str) -> str:
    """Connect with an X-Forwarded-For header and return the stored address."""
    url = (
        f"{server.ws_url}/v1/ws/documents/{document.pk}"
        f"?client_id={client_id}&token={token_for(user)}"
    )

    def stored_address() -> str | None:
        return (
            Connection.objects.filter(client_id=client_id)
            .values_list("remote_address", flat=True)
            .first()
        )

    async def scenario() -> str:
        async with websockets.connect(
            url, additional_headers={"X-Forwarded-For": FORWARDED_FOR}
        ) as socket:
            await socket.recv()
            # The row is deleted when the socket closes, so read it while open.
            return await database_sync_to_async(wait_for)(stored_address)

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("setting", "expected"), [("true", FORWARDED_FOR), ("false", "127.0.0.1")]
)
def test_remote_address_follows_setting(
    start_server, make_user, make_document, setting, expected
):
    server = start_server(MATERI_PROXY_HEADERS=setting)
    ada = make_user("ada")
    document = make_document(ada)
    assert remote_address(server, document, ada, f"proxy-{setting}") == expected
