"""Durability under faults: killed server processes, a restarted Redis and a
stopped PostgreSQL. Each fault is made on a private instance, never on the
machine's shared services.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from collab import ot
from collab.models import Operation
from tests.live import ROOT, ServerProcess, database_url, server_env
from tests.sdk.test_recovery import (
    Writer,
    assert_exactly_once,
    close_all,
    make_client,
    settle,
)
from tests.services import PostgresCluster, RedisInstance
from tests.stored import stored_text

pytestmark = pytest.mark.timeout(240)


def record_acks(writers: list[Writer]) -> list[tuple[str, str]]:
    acked: list[tuple[str, str]] = []
    for writer in writers:
        client_id = writer.client.client_id
        writer.client.on(
            "ack",
            lambda data, client_id=client_id: acked.append(
                (client_id, data["message_id"])
            ),
        )
    return acked


def record_errors(writers: list[Writer]) -> list[str]:
    codes: list[str] = []
    for writer in writers:
        writer.client.on("error", lambda data: codes.append(data["code"]))
    return codes


@pytest.fixture
def redis_instance(tmp_path):
    instance = RedisInstance(tmp_path / "redis").start()
    yield instance
    instance.stop()


def test_sigkilled_worker_loses_no_acknowledged_edit(
    redis_instance, make_user, make_document
):
    env = server_env(
        database_url(connection.settings_dict), REDIS_URL=redis_instance.url
    )
    pool = ServerProcess(env, args=("--processes", "2")).start(timeout=60)
    owner = make_user("owner")
    document = make_document(owner)
    worker_pids = [
        int(pid) for pid in pool.ready_line.split("workers=")[1].strip().split(",")
    ]
    writers = [
        Writer(name, make_client(pool.ws_url, document, owner, name), seed)
        for seed, name in enumerate("abcd")
    ]
    acked = record_acks(writers)

    async def scenario():
        try:
            for writer in writers:
                await writer.client.connect()
            editing = asyncio.gather(*(writer.edit_for(4.0) for writer in writers))
            await asyncio.sleep(1.5)
            os.kill(worker_pids[0], signal.SIGKILL)
            await editing
            await settle(writers)
        finally:
            await close_all(writers)

    try:
        asyncio.run(scenario())
    finally:
        pool.stop()
    stored = stored_text(document.pk)
    assert writers[0].client.text == stored
    assert_exactly_once(stored, writers)
    stored_ids = set(
        Operation.objects.filter(document=document).values_list(
            "client_id", "message_id"
        )
    )
    assert set(acked) <= stored_ids


def test_redis_restart_under_load(redis_instance, make_user, make_document):
    env = server_env(
        database_url(connection.settings_dict), REDIS_URL=redis_instance.url
    )
    servers = [ServerProcess(env).start(), ServerProcess(env).start()]
    owner = make_user("owner")
    document = make_document(owner)
    writers = [
        Writer(name, make_client(servers[seed % 2].ws_url, document, owner, name), seed)
        for seed, name in enumerate("abc")
    ]

    async def scenario():
        try:
            for writer in writers:
                await writer.client.connect()
            editing = asyncio.gather(*(writer.edit_for(5.0) for writer in writers))
            await asyncio.sleep(1.5)
            await asyncio.to_thread(redis_instance.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_instance.start)
            await editing
            await settle(writers)
        finally:
            await close_all(writers)

    try:
        asyncio.run(scenario())
    finally:
        for server in servers:
            server.stop()
    stored = stored_text(document.pk)
    for writer in writers:
        assert writer.client.text == stored
    assert_exactly_once(stored, writers)


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


CREATE_OWNER_AND_DOCUMENT = """
import json
import shutil
import tempfile
from django.contrib.auth import get_user_model
from collab import store
owner = get_user_model().objects.create_user("owner")
document = store.create_document(owner, "Notes")
print(json.dumps({"user_id": owner.pk, "document_id": str(document.pk)}))
"""


class StoredDocument:
    """The ids that the SDK helpers need, for a document in another database."""

    def __init__(self, document_id: str):
        self.pk = document_id


def test_postgres_outage_refuses_edits_then_converges():
    # Not under pytest's tmp_path: the postgres user cannot enter root's folders.
    folder = Path(tempfile.mkdtemp(prefix="materi-pg-"))
    cluster = PostgresCluster(folder).init()
    try:
        env = server_env(cluster.url)
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--noinput", "-v", "0")
        ids = json.loads(
            manage(env, "shell", "-v", "0", "-c", CREATE_OWNER_AND_DOCUMENT)
        )
        server = ServerProcess(env).start()
        token = AccessToken()
        token["user_id"] = ids["user_id"]
        document = StoredDocument(ids["document_id"])
        writers = [
            Writer(
                name,
                make_client(server.ws_url, document, None, name, token=str(token)),
                seed,
            )
            for seed, name in enumerate("ab")
        ]
        acked = record_acks(writers)
        errors = record_errors(writers)

        async def scenario():
            try:
                for writer in writers:
                    await writer.client.connect()
                editing = asyncio.gather(*(writer.edit_for(5.0) for writer in writers))
                await asyncio.sleep(1.0)
                await asyncio.to_thread(cluster.stop)
                await asyncio.sleep(3.0)
                await asyncio.to_thread(cluster.start)
                await editing
                await settle(writers, timeout=90)
            finally:
                await close_all(writers)

        try:
            asyncio.run(scenario())
        finally:
            server.stop()
        [(content, snapshot_version, version)] = cluster.query(
            "SELECT snapshot, snapshot_version, version FROM collab_document "
            "WHERE id = %s",
            ids["document_id"],
        )
        operations = cluster.query(
            "SELECT components FROM collab_operation "
            "WHERE document_id = %s AND version >= %s ORDER BY version",
            ids["document_id"],
            snapshot_version,
        )
        assert snapshot_version + len(operations) == version
        for (components,) in operations:
            content = ot.apply(content, components)
        stored_ids = set(
            cluster.query("SELECT client_id, message_id FROM collab_operation")
        )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert "unavailable" in errors
    assert writers[0].client.text == content
    assert_exactly_once(content, writers)
    assert set(acked) <= stored_ids
