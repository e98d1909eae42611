"""Presence end to end: real server processes, real sockets, the real admin."""

import asyncio
import http.cookiejar
import re
import statistics
import time
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from presence.models import Connection
from tests.conftest import hashed
from tests.live import wait_for
from tests.presence.peers import Peer, others

pytestmark = pytest.mark.timeout(60)

services_only = pytest.mark.skipif(
    not settings.REDIS_URL or "sqlite" in settings.DATABASES["default"]["ENGINE"],
    reason="presence across server processes needs Redis: the in-memory channel "
    "layer cannot reach another process",
)

# Short enough to keep the tests fast; the peers ping every 0.25 s.
HEARTBEAT_TIMEOUT = 2.0


@pytest.fixture
def team(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    cy = make_user("cy")
    document = make_document(
        ada, content="x" * 100, members=[(bob, "editor"), (cy, "viewer")]
    )
    return {"ada": ada, "bob": bob, "cy": cy, "document": document}


@database_sync_to_async
def rows_for(client_ids: list[str]) -> int:
    return Connection.objects.filter(client_id__in=client_ids).count()


@database_sync_to_async
def connection_row(client_id: str) -> Connection:
    return Connection.objects.get(client_id=client_id)


async def close_all(peers: list[Peer]) -> None:
    for peer in peers:
        await peer.close()


@services_only
def test_presence_shared_across_processes(start_server, team):
    first = start_server()
    second = start_server()
    document = team["document"]

    async def scenario():
        ada_first = await Peer.connect(first, document, team["ada"], "ada-1")
        bob = await Peer.connect(second, document, team["bob"], "bob-1")
        ada_second = await Peer.connect(second, document, team["ada"], "ada-2")
        peers = [ada_first, bob, ada_second]
        try:
            for peer in peers:
                await peer.until(
                    lambda p=peer: set(p.view) == {"ada-1", "bob-1", "ada-2"}
                )

            await ada_first.cursor([{"anchor": 1, "head": 3}])
            await bob.cursor([{"anchor": 40, "head": 40}, {"anchor": 60, "head": 70}])
            await ada_second.activity("idle")
            await ada_first.until(
                lambda: all(peer.view == ada_first.view for peer in peers)
            )
            assert ada_first.view["bob-1"]["selections"][1] == {
                "anchor": 60,
                "head": 70,
            }
            assert bob.view["ada-2"]["activity"] == "idle"

            # A late joiner's state lists the same people, ada once with two tabs.
            cy = await Peer.connect(first, document, team["cy"], "cy-1")
            peers.append(cy)
            assert others(cy.view, "cy-1") == ada_first.view
            state = cy.messages[0]["data"]["presence"]
            ada_entry = [user for user in state if user["user_id"] == team["ada"].pk]
            assert len(ada_entry) == 1
            assert [c["client_id"] for c in ada_entry[0]["clients"]] == [
                "ada-1",
                "ada-2",
            ]

            await bob.close()
            peers.remove(bob)
            for peer in peers:
                await peer.until(lambda p=peer: "bob-1" not in p.view)
            assert ada_first.view == ada_second.view
            assert others(ada_first.view, "cy-1") == others(cy.view, "cy-1")
            assert await rows_for(["bob-1"]) == 0
        finally:
            await close_all(peers)

    asyncio.run(scenario())


def test_lost_sockets_leave_within_timeout(start_server, team):
    server = start_server(MATERI_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT))
    document = team["document"]

    async def scenario():
        watcher = await Peer.connect(server, document, team["ada"], "watcher")
        aborted = await Peer.connect(server, document, team["bob"], "aborted")
        silent = await Peer.connect(server, document, team["cy"], "silent")
        await watcher.until(lambda: {"aborted", "silent"} <= set(watcher.view))
        try:
            # No close frame: the TCP connection just ends.
            started = time.monotonic()
            await aborted.abort()
            await watcher.until(lambda: "aborted" not in watcher.view)
            assert time.monotonic() - started < HEARTBEAT_TIMEOUT

            # The socket stays open but the client stops sending anything.
            started = time.monotonic()
            silent.stop_pinging()
            await watcher.until(
                lambda: "silent" not in watcher.view, timeout=3 * HEARTBEAT_TIMEOUT
            )
            assert time.monotonic() - started < HEARTBEAT_TIMEOUT + 1.0
            await silent.until(lambda: silent.close_code is not None)
            assert silent.close_code == 4008
            assert await rows_for(["aborted", "silent"]) == 0
            assert await rows_for(["watcher"]) == 1
        finally:
            await close_all([watcher, silent])

    asyncio.run(scenario())


def test_serve_reaps_at_start_up(start_server, team):
    stale_row = Connection.objects.create(
        user=team["bob"],
        document=team["document"],
        client_id="bob-1",
        instance_id="dead-host:1:0",
        channel_name="specific.dead!1",
        protocol_version=1,
        last_seen=timezone.now() - timedelta(minutes=5),
    )
    start_server(MATERI_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT))
    wait_for(lambda: not Connection.objects.filter(pk=stale_row.pk).exists(), timeout=5)


@services_only
def test_killed_server_presence_reaped(start_server, team):
    doomed = start_server(MATERI_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT))
    survivor = start_server(MATERI_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT))
    document = team["document"]

    async def scenario():
        watcher = await Peer.connect(survivor, document, team["ada"], "watcher")
        other = await Peer.connect(survivor, document, team["cy"], "other")
        lost = [
            await Peer.connect(doomed, document, team["bob"], "bob-1"),
            await Peer.connect(doomed, document, team["ada"], "ada-2"),
        ]
        expected = {"watcher", "other", "bob-1", "ada-2"}
        for peer in (watcher, other):
            await peer.until(lambda p=peer: set(p.view) == expected)
        try:
            await asyncio.to_thread(doomed.kill)
            started = time.monotonic()
            for peer in (watcher, other):
                await peer.until(
                    lambda p=peer: set(p.view) == {"watcher", "other"},
                    timeout=4 * HEARTBEAT_TIMEOUT,
                )
            # The rows go at most a heartbeat timeout after their last refresh,
            # plus one reaper period (a quarter of the timeout).
            assert time.monotonic() - started < 1.25 * HEARTBEAT_TIMEOUT + 1.0
            assert await rows_for(["bob-1", "ada-2"]) == 0
            assert await rows_for(["watcher", "other"]) == 2
            # Each lost socket was announced once.
            assert len(watcher.received("leave", "bob-1")) == 1
        finally:
            for peer in lost:
                await peer._stop()
            await close_all([watcher, other])

    asyncio.run(scenario())


def test_cursor_flood_coalesced_while_edits_flow(start_server, team):
    server = start_server()
    document = team["document"]

    appended = 0

    async def measure_edits(editor: Peer, watcher: Peer, count: int) -> list[float]:
        """Append characters one edit at a time, after every cursor position."""
        nonlocal appended
        latencies = []
        for _ in range(count):
            started = time.monotonic()
            message_id = await editor.edit(
                [{"retain": 100 + appended}, {"insert": "e"}]
            )
            appended += 1
            await editor.until(lambda m=message_id: editor.acked(m))
            await watcher.until(lambda m=message_id: watcher.received_edit(m))
            latencies.append(time.monotonic() - started)
        return latencies

    async def flood(flooder: Peer) -> list[dict]:
        selections = []
        for index in range(1000):
            # Unique per index, so the last one cannot be mistaken for an earlier.
            selections = [{"anchor": index % 100, "head": index // 10}]
            await flooder.cursor(selections)
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        return selections

    async def scenario():
        watcher = await Peer.connect(server, document, team["ada"], "watcher")
        flooder = await Peer.connect(server, document, team["cy"], "flooder")
        editor = await Peer.connect(server, document, team["bob"], "editor")
        await watcher.until(lambda: {"flooder", "editor"} <= set(watcher.view))
        try:
            baseline = await measure_edits(editor, watcher, 5)
            flood_task = asyncio.create_task(flood(flooder))
            during = []
            while not flood_task.done():
                during += await measure_edits(editor, watcher, 1)
            last = await flood_task

            await watcher.until(lambda: watcher.view["flooder"]["selections"] == last)
            await asyncio.sleep(0.2)
            received = watcher.received_at("cursor_update", "flooder")
            updates = [message for message, _ in received]
            spread = received[-1][1] - received[0][1]
            # The server sends at most one update per 50 ms, so the updates span at
            # least (count - 1) * 50 ms. Network jitter may squeeze a few together.
            assert len(updates) <= 20 * spread + 3, (len(updates), spread)
            assert len(updates) < 100
            assert updates[-1]["data"]["selections"] == last
            assert len(during) >= 5
            assert max(during) < 0.5, (baseline, during)
            assert statistics.median(during) < max(0.1, 3 * max(baseline)), (
                baseline,
                during,
            )
        finally:
            await close_all([watcher, flooder, editor])

    asyncio.run(scenario())


class AdminSession:
    """A logged-in admin browser session over plain HTTP."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies)
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base_url + path, timeout=10) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict | list) -> str:
        body = urllib.parse.urlencode(fields, doseq=True).encode()
        with self.opener.open(self.base_url + path, body, timeout=10) as response:
            return response.read().decode()

    def csrf_token(self, page: str) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]

    def log_in(self, username: str, password: str) -> None:
        page = self.get("/admin/login/?next=/admin/")
        landing = self.post(
            "/admin/login/?next=/admin/",
            {
                "csrfmiddlewaretoken": self.csrf_token(page),
                "username": username,
                "password": password,
                "next": "/admin/",
            },
        )
        assert "Log out" in landing or "logout" in landing


def test_admin_lists_and_disconnects(start_server, team, make_document):
    server = start_server()
    document = team["document"]
    other_document = make_document(team["cy"], title="Elsewhere")
    get_user_model().objects.create(
        username="root",
        password=hashed("correct-horse-battery"),
        is_staff=True,
        is_superuser=True,
    )
    admin = AdminSession(server.http_url)
    changelist = "/admin/presence/connection/"

    async def scenario():
        ada = await Peer.connect(server, document, team["ada"], "ada-1")
        bob = await Peer.connect(server, document, team["bob"], "bob-1")
        cy = await Peer.connect(server, other_document, team["cy"], "cy-1")
        await ada.until(lambda: "bob-1" in ada.view)
        try:
            await asyncio.to_thread(admin.log_in, "root", "correct-horse-battery")
            listing = await asyncio.to_thread(admin.get, changelist)
            for client_id in ("ada-1", "bob-1", "cy-1"):
                assert client_id in listing
            assert "Connections on document" in listing
            assert f'?document__id__exact={document.pk}">2</a>' in listing
            assert f'?document__id__exact={other_document.pk}">1</a>' in listing
            assert "127.0.0.1" in listing

            filtered = await asyncio.to_thread(
                admin.get, f"{changelist}?document__id__exact={document.pk}"
            )
            assert "bob-1" in filtered
            assert "cy-1" not in filtered
            assert "Disconnect selected connections" in filtered

            bob_row = await connection_row("bob-1")
            await asyncio.to_thread(
                admin.post,
                changelist,
                {
                    "csrfmiddlewaretoken": admin.csrf_token(filtered),
                    "action": "disconnect_connections",
                    "_selected_action": [bob_row.pk],
                    "index": "0",
                },
            )
            await bob.until(lambda: bob.close_code is not None)
            assert bob.close_code == 4010
            # daphne 4.2 drops the reason of an ASGI close message, so the close
            # frame carries none; tests/presence/test_consumer.py checks the
            # reason the consumer sends.
            await ada.until(lambda: "bob-1" not in ada.view)
            assert ada.close_code is None
            assert cy.close_code is None
            assert await rows_for(["bob-1"]) == 0
            assert await rows_for(["ada-1", "cy-1"]) == 2
        finally:
            await close_all([ada, bob, cy])

    asyncio.run(scenario())
