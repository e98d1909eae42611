"""Recovery of SDK clients from server crashes, network faults and expired tokens.

Every edit inserts a unique marker and nothing is ever deleted, so the final
text shows directly whether an edit was lost or applied twice.
"""

import asyncio
import random
import re
from datetime import timedelta

import pytest
from materi_realtime import MateriRealtime
from rest_framework_simplejwt.tokens import AccessToken

from collab.models import Operation
from tests.conftest import token_for
from tests.proxy import FaultyProxy
from tests.stored import stored_text

pytestmark = pytest.mark.timeout(180)
MARKER = re.compile(r"\[([a-z]+)(\d+)\]")


class Writer:
    """An SDK client that inserts numbered markers at random positions."""

    def __init__(self, name: str, client: MateriRealtime, seed: int):
        self.name = name
        self.client = client
        self.rng = random.Random(seed)
        self.count = 0

    def edit(self) -> None:
        position = self.rng.randint(0, len(self.client.text))
        # Never split a marker: move the position to a marker boundary.
        for match in MARKER.finditer(self.client.text):
            if match.start() < position < match.end():
                position = match.end()
        self.client.insert(position, f"[{self.name}{self.count}]")
        self.count += 1

    async def edit_for(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            self.edit()
            await asyncio.sleep(self.rng.uniform(0.005, 0.03))


def make_client(url, document, user, name, **options) -> MateriRealtime:
    options.setdefault("reconnect_base_delay", 0.05)
    options.setdefault("reconnect_max_delay", 0.5)
    options.setdefault("reconnect_max_attempts", 200)
    options.setdefault("heartbeat_interval", 0.5)
    options.setdefault("heartbeat_timeout", 1.0)
    return MateriRealtime(
        access_token=options.pop("token", None) or token_for(user),
        document_id=str(document.pk),
        url=url,
        client_id=f"{name}-client",
        **options,
    )


async def settle(writers: list[Writer], timeout: float = 60) -> None:
    """Wait until every edit is acknowledged and every client has every edit."""
    for writer in writers:
        await asyncio.wait_for(writer.client.flush(), timeout)
    async with asyncio.timeout(timeout):
        while len({writer.client.version for writer in writers}) != 1:
            await asyncio.sleep(0.05)
        # The last broadcasts may still be on their way after the versions agree.
        while len({writer.client.text for writer in writers}) != 1:
            await asyncio.sleep(0.05)


def assert_exactly_once(text: str, writers: list[Writer]) -> None:
    found = MARKER.findall(text)
    assert len(found) == len(set(found)), "an edit was applied twice"
    for writer in writers:
        mine = {int(number) for name, number in found if name == writer.name}
        assert mine == set(range(writer.count)), f"{writer.name} lost edits"


async def close_all(writers: list[Writer]) -> None:
    for writer in writers:
        await writer.client.close()


def test_clients_survive_server_sigkill(start_server, make_user, make_document):
    server = start_server()
    owner = make_user("owner")
    document = make_document(owner)
    writers = [
        Writer(name, make_client(server.ws_url, document, owner, name), seed)
        for seed, name in enumerate(["a", "b", "c"])
    ]

    async def scenario():
        try:
            for writer in writers:
                await writer.client.connect()
            editing = asyncio.gather(*(writer.edit_for(4.0) for writer in writers))
            await asyncio.sleep(1.5)
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            await editing
            await settle(writers)
        finally:
            await close_all(writers)

    asyncio.run(scenario())
    stored = stored_text(document.pk)
    assert writers[0].client.text == stored
    document.refresh_from_db()
    assert Operation.objects.filter(document=document).count() == document.version
    assert_exactly_once(stored, writers)
    assert all(writer.count > 20 for writer in writers)


def test_clients_survive_cut_and_blackholed_links(server, make_user, make_document):
    owner = make_user("owner")
    document = make_document(owner)
    rng = random.Random(7)

    async def scenario():
        proxies = [await FaultyProxy(server.port).start() for _ in range(3)]
        writers = [
            Writer(name, make_client(proxy.ws_url, document, owner, name), seed)
            for seed, (name, proxy) in enumerate(zip("abc", proxies, strict=True))
        ]
        try:
            for writer in writers:
                await writer.client.connect()
            editing = asyncio.gather(*(writer.edit_for(6.0) for writer in writers))
            for _ in range(12):
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                proxy = rng.choice(proxies)
                if rng.random() < 0.6:
                    proxy.cut()
                else:
                    proxy.blackhole()
                    await asyncio.sleep(rng.uniform(0.2, 1.5))
                    proxy.restore()
            await editing
            await settle(writers)
            return writers
        finally:
            await close_all(writers)
            for proxy in proxies:
                await proxy.close()

    writers = asyncio.run(scenario())
    stored = stored_text(document.pk)
    assert writers[0].client.text == stored
    assert_exactly_once(stored, writers)


def test_offline_edits_on_two_clients_converge(server, make_user, make_document):
    owner = make_user("owner")
    document = make_document(owner, content="shared start")

    async def scenario():
        proxies = [await FaultyProxy(server.port).start() for _ in range(2)]
        writers = [
            Writer(name, make_client(proxy.ws_url, document, owner, name), seed)
            for seed, (name, proxy) in enumerate(zip("ab", proxies, strict=True))
        ]
        try:
            for writer in writers:
                await writer.client.connect()
            for proxy in proxies:
                proxy.blackhole()
                proxy.cut()
            await asyncio.sleep(0.3)
            for writer in writers:
                assert writer.client.connection_state != "connected"
                for _ in range(15):
                    writer.edit()
            await asyncio.sleep(0.5)
            for proxy in proxies:
                proxy.restore()
            await settle(writers)
            return writers
        finally:
            await close_all(writers)
            for proxy in proxies:
                await proxy.close()

    writers = asyncio.run(scenario())
    stored = stored_text(document.pk)
    assert writers[0].client.text == stored
    assert "shared start" in MARKER.sub("", stored)
    assert_exactly_once(stored, writers)


def test_client_behind_history_window_recovers_from_snapshot(
    start_server, make_user, make_document
):
    server = start_server(MATERI_CATCH_UP_MAX_OPERATIONS="5")
    owner = make_user("owner")
    document = make_document(owner)

    async def scenario():
        proxy = await FaultyProxy(server.port).start()
        offline = Writer("a", make_client(proxy.ws_url, document, owner, "a"), 1)
        online = Writer("b", make_client(server.ws_url, document, owner, "b"), 2)
        writers = [offline, online]
        try:
            for writer in writers:
                await writer.client.connect()
            offline.edit()
            await offline.client.flush()
            proxy.blackhole()
            proxy.cut()
            for _ in range(5):
                offline.edit()
            for _ in range(30):
                online.edit()
                await online.client.flush()
            proxy.restore()
            await settle(writers)
            return writers
        finally:
            await close_all(writers)
            await proxy.close()

    writers = asyncio.run(scenario())
    stored = stored_text(document.pk)
    assert writers[0].client.text == stored
    assert_exactly_once(stored, writers)


def test_expired_token_is_refreshed_without_losing_edits(
    server, make_user, make_document
):
    owner = make_user("owner")
    document = make_document(owner)
    short = AccessToken.for_user(owner)
    short.set_exp(lifetime=timedelta(seconds=2))
    refreshed = []

    def provide_token() -> str:
        refreshed.append(True)
        return token_for(owner)

    async def scenario():
        client = make_client(
            server.ws_url,
            document,
            owner,
            "a",
            token=str(short),
            token_provider=provide_token,
        )
        writer = Writer("a", client, 3)
        try:
            await client.connect()
            await writer.edit_for(4.0)
            await settle([writer])
            return writer
        finally:
            await client.close()

    writer = asyncio.run(scenario())
    stored = stored_text(document.pk)
    assert refreshed
    assert writer.client.text == stored
    assert_exactly_once(stored, [writer])
