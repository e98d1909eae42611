#!/usr/bin/env python3
"""Load client for the Materi Realtime server, following the peer benchmark's rules.

Scenarios S1-S5 are the peer benchmark's workload: writers insert one character at a
uniformly random position of their local copy, keep one edit in flight, apply the
other writers' edits with OT, and readers only apply what they receive. All sockets
live in this one asyncio process and are opened and joined before a warm-up, then a
measured window. S6 (ours only) measures joins and single edits on documents that
`manage.py bench_history` filled with a long history.

The client needs a token and documents. It runs `manage.py token USERNAME --create`
with the environment it was started with, so DATABASE_URL must select the server's
database, and creates documents with `POST /v1/documents/`.

    python bench/client.py --url ws://127.0.0.1:18100 --scenario S1 \
        --server-pid PID --out result.json
"""

import argparse
import asyncio
import json
import os
import random
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sdk" / "python"))
from materi_realtime import ot  # noqa: E402

SCENARIOS = {
    "S1": {"docs": 1, "writers_per_doc": 1, "readers": 0},
    "S2": {"docs": 1, "writers_per_doc": 10, "readers": 0},
    "S3": {"docs": 1, "writers_per_doc": 10, "readers": 90},
    "S4": {"idle": 2000},
    "S5": {"docs": 100, "writers_per_doc": 2, "readers": 0},
    "S6": {},
}
# Connections opened at once while joining (S4 uses the peer rule of 50).
JOIN_CONCURRENCY = 20
IDLE_JOIN_CONCURRENCY = 50
# The server closes sockets that send nothing for 45 s by default.
PING_INTERVAL_S = 15.0
ACK_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 10.0
# Hard bound on the whole process, above the orchestrator's own timeout.
PROCESS_TIMEOUT_S = 900.0
LETTERS = string.ascii_lowercase


def now_ms() -> float:
    """Return CLOCK_MONOTONIC in milliseconds."""
    return time.monotonic_ns() / 1e6


def percentile(samples: list[float], p: float) -> float | None:
    """Return the nearest-rank percentile: sorted[floor(p / 100 * n)]."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def server_rss_kb(pids: list[int]) -> int | None:
    """Return the summed VmRSS of the server processes, or None without pids."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def server_cpu_s(pids: list[int]) -> float | None:
    """Return the summed user + system CPU seconds of the server processes."""
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# Setup: token and documents


def fetch_token(username: str) -> str:
    """Run `manage.py token USERNAME --create` and return the token it prints."""
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "token", username, "--create"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "sdk" / "python")},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py token failed (exit {result.returncode}): {result.stderr[-2000:]}"
        )
    return result.stdout.strip()


def create_document(http_url: str, token: str, title: str) -> str:
    """Create one document through the HTTP API and return its id."""
    request = urllib.request.Request(
        f"{http_url}/v1/documents/",
        data=json.dumps({"title": title}).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["id"]
    except urllib.error.HTTPError as exc:
        body = exc.read()[:500].decode(errors="replace")
        raise RuntimeError(
            f"POST {http_url}/v1/documents/ failed with HTTP {exc.code}: {body}"
        ) from None


def create_documents(http_url: str, token: str, run_id: str, count: int) -> list[str]:
    """Create `count` empty documents, 8 requests at a time."""
    titles = [f"bench {run_id} {index}" for index in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda title: create_document(http_url, token, title), titles))


# One socket on one document


class Connection:
    """A joined socket with a local copy of the document, as an editor keeps one.

    `version` is the server version that `text` minus the in-flight edit is at. A
    remote edit is transformed against the in-flight edit (the committed edit goes
    left on a tie) before it is applied, and the in-flight edit against it.
    """

    def __init__(self, url: str, document_id: str, token: str, client_id: str):
        self.url = (
            f"{url}/v1/ws/documents/{document_id}?token={token}&client_id={client_id}"
        )
        self.document_id = document_id
        self.client_id = client_id
        self.text = ""
        self.version = 0
        self.joined = asyncio.Event()
        self.join_bytes = 0
        self.join_ms = 0.0
        self.inflight_ops: list | None = None
        self.inflight_id: str | None = None
        self.inflight_future: asyncio.Future | None = None
        self.on_remote = None  # callable(client_id, message_id), for readers
        self.version_gaps = 0
        self.errors: list[str] = []
        self.ws = None
        self.task: asyncio.Task | None = None

    async def open(self) -> "Connection":
        started = now_ms()
        self.ws = await connect(
            self.url,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=30,
        )
        self.task = asyncio.create_task(self.receive_loop())
        await asyncio.wait_for(self.joined.wait(), 30)
        self.join_ms = now_ms() - started
        return self

    async def receive_loop(self) -> None:
        try:
            async for raw in self.ws:
                self.handle(raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket closed or a frame was invalid
            self.errors.append(f"receive loop ended: {exc!r}")
        if not self.joined.is_set():
            self.errors.append(f"socket closed before join: {self.ws.close_code}")
        self.fail_inflight("socket closed")

    def handle(self, raw: str) -> None:
        message = json.loads(raw)
        event = message.get("event")
        data = message.get("data") or {}
        if event == "document_edit":
            self.apply_remote(data, message["client_id"], message["message_id"])
        elif event == "operation_ack":
            if data.get("message_id") == self.inflight_id:
                self.version = data["version"] + 1
                self.inflight_ops = None
                self.inflight_id = None
                if not self.inflight_future.done():
                    self.inflight_future.set_result(now_ms())
        elif event == "document_state":
            self.text = data["content"]
            self.version = data["version"]
            self.join_bytes = len(raw.encode())
            self.joined.set()
        elif event == "error":
            self.errors.append(f"{data.get('code')}: {data.get('message')}")
            if data.get("message_id") == self.inflight_id:
                self.fail_inflight(data.get("code", "error"))

    def apply_remote(self, data: dict, client_id: str, message_id: str) -> None:
        if data["version"] != self.version:
            self.version_gaps += 1
        ops = data["operation"]["ops"]
        if self.inflight_ops is not None:
            transformed = ot.transform(ops, self.inflight_ops, "left")
            self.inflight_ops = ot.transform(self.inflight_ops, ops, "right")
            ops = transformed
        self.text = ot.apply(self.text, ops)
        self.version = data["version"] + 1
        if self.on_remote is not None:
            self.on_remote(client_id, message_id)

    def fail_inflight(self, reason: str) -> None:
        if self.inflight_future is not None and not self.inflight_future.done():
            self.inflight_future.set_exception(RuntimeError(reason))

    async def submit_insert(self, position: int, character: str) -> tuple[str, asyncio.Future]:
        """Apply a one-character insert locally and send it; return its id and ack future."""
        ops = [{"insert": character}]
        if position:
            ops.insert(0, {"retain": position})
        self.text = ot.apply(self.text, ops)
        self.inflight_ops = ops
        self.inflight_id = uuid.uuid4().hex[:16]
        self.inflight_future = asyncio.get_running_loop().create_future()
        frame = {
            "type": "operation",
            "event": "document_edit",
            "data": {"operation": {"ops": ops}, "version": self.version},
            "client_id": self.client_id,
            "message_id": self.inflight_id,
        }
        await self.ws.send(json.dumps(frame))
        return self.inflight_id, self.inflight_future

    async def ping(self) -> None:
        frame = {"type": "system", "event": "ping", "data": {"timestamp": int(time.time() * 1000)}}
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except Exception:  # closing is best effort once the numbers are written
                pass


async def run_bounded(count: int, concurrency: int, open_one) -> None:
    """Call open_one(index) for every index, at most `concurrency` at a time."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await open_one(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def keep_alive(connections: list[Connection]) -> None:
    """Ping every socket every PING_INTERVAL_S, so the heartbeat timeout never fires."""
    while True:
        await asyncio.sleep(PING_INTERVAL_S)
        for connection in list(connections):
            if connection.ws is not None and connection.task and not connection.task.done():
                await connection.ping()


# S1, S2, S3, S5


async def run_load(args, cfg, documents: list[str], token: str) -> tuple[dict, list]:
    track_seen = cfg["readers"] > 0
    submitted_at: dict[tuple[str, str], float] = {}
    ack_ms: list[float] = []
    seen_ms: list[float] = []
    state = {"acked": 0, "submitted": 0, "errors": 0, "stopping": False}
    window = {"start": float("inf"), "end": float("inf")}

    def on_seen(client_id: str, message_id: str) -> None:
        started = submitted_at.get((client_id, message_id))
        if started is not None:
            seen_ms.append(now_ms() - started)

    writers: list[Connection] = []
    readers: list[Connection] = []

    async def open_writer(index: int) -> None:
        document = documents[index % len(documents)]
        url = args.urls[index % len(args.urls)]
        writers.append(await Connection(url, document, token, f"w{index}").open())

    async def open_reader(index: int) -> None:
        document = documents[index % len(documents)]
        url = args.urls[(len(writers) + index) % len(args.urls)]
        reader = Connection(url, document, token, f"r{index}")
        reader.on_remote = on_seen
        readers.append(await reader.open())

    await run_bounded(len(documents) * cfg["writers_per_doc"], JOIN_CONCURRENCY, open_writer)
    await run_bounded(cfg["readers"], JOIN_CONCURRENCY, open_reader)
    connections = writers + readers
    pinger = asyncio.create_task(keep_alive(connections))

    async def write(writer: Connection, seed: int) -> None:
        rng = random.Random(seed)
        count = 0
        while not state["stopping"]:
            started = now_ms()
            in_window = started >= window["start"]
            position = rng.randint(0, len(writer.text))
            message_id, future = await writer.submit_insert(position, LETTERS[count % 26])
            count += 1
            if in_window:
                state["submitted"] += 1
                if track_seen:
                    submitted_at[(writer.client_id, message_id)] = started
            try:
                acked = await asyncio.wait_for(future, ACK_TIMEOUT_S)
            except (asyncio.TimeoutError, RuntimeError) as exc:
                # The local copy no longer matches the server, so this writer stops.
                state["errors"] += 1
                writer.errors.append(f"edit {message_id} not acknowledged: {exc!r}")
                return
            if in_window and acked <= window["end"]:
                state["acked"] += 1
                ack_ms.append(acked - started)

    began = now_ms()
    window["start"] = began + args.warmup * 1000
    window["end"] = window["start"] + args.duration * 1000
    tasks = [asyncio.create_task(write(w, args.seed + i)) for i, w in enumerate(writers)]
    await asyncio.sleep(args.warmup)
    cpu_start = server_cpu_s(args.server_pids)
    await asyncio.sleep(max(0.0, (window["end"] - now_ms()) / 1000))
    state["stopping"] = True
    cpu_end = server_cpu_s(args.server_pids)
    rss_end = server_rss_kb(args.server_pids)

    # Drain, bounded: the last acks, then readers catching up.
    expected = state["acked"] * cfg["readers"] / len(documents)
    deadline = now_ms() + DRAIN_TIMEOUT_S * 1000
    while now_ms() < deadline and (
        not all(task.done() for task in tasks) or (track_seen and len(seen_ms) < expected)
    ):
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    pinger.cancel()
    first_document = [c for c in connections if c.document_id == documents[0]]
    converged = await wait_converged(first_document)

    errors = [f"{c.client_id}: {e}" for c in connections for e in c.errors]
    result = {
        "converged": converged,
        # Server versions reached by the sockets of the first document, for a failed check.
        "first_document_versions": sorted({c.version for c in first_document}),
        "acked_ops": state["acked"],
        "ops_per_s": state["acked"] / args.duration,
        "submitted_in_window": state["submitted"],
        "errors": state["errors"] + sum(len(c.errors) for c in connections),
        "error_samples": errors[:5],
        "version_gaps": sum(c.version_gaps for c in connections),
        "ack_p50_ms": percentile(ack_ms, 50),
        "ack_p99_ms": percentile(ack_ms, 99),
        "ack_max_ms": percentile(ack_ms, 100),
        "seen_samples": len(seen_ms),
        "seen_expected": round(expected) if track_seen else 0,
        "seen_p50_ms": percentile(seen_ms, 50),
        "seen_p99_ms": percentile(seen_ms, 99),
        "server_rss_end_kb": rss_end,
        "server_cpu_util": (
            (cpu_end - cpu_start) / args.duration if cpu_start is not None else None
        ),
        "final_doc_len": len(writers[0].text) if writers else None,
    }
    return result, connections


async def wait_converged(connections: list[Connection], timeout_s: float = 5.0) -> bool:
    """Wait until every socket of one document has the same text and nothing in flight."""

    def same() -> bool:
        texts = {c.text for c in connections}
        return len(texts) <= 1 and all(c.inflight_ops is None for c in connections)

    deadline = now_ms() + timeout_s * 1000
    while now_ms() < deadline and not same():
        await asyncio.sleep(0.1)
    return same()


# S4


async def run_idle(args, cfg, documents: list[str], token: str, rss_before) -> tuple[dict, list]:
    connections: list[Connection] = []
    started = now_ms()

    async def open_idle(index: int) -> None:
        url = args.urls[index % len(args.urls)]
        connections.append(await Connection(url, documents[index], token, f"i{index}").open())

    pinger = asyncio.create_task(keep_alive(connections))
    await run_bounded(cfg["idle"], IDLE_JOIN_CONCURRENCY, open_idle)
    connect_all_s = (now_ms() - started) / 1000
    await asyncio.sleep(3)
    rss_after = server_rss_kb(args.server_pids)
    pinger.cancel()
    per_conn = (
        (rss_after - rss_before) / cfg["idle"] if rss_before is not None else None
    )
    result = {
        "connections": len(connections),
        "connect_all_s": connect_all_s,
        "server_rss_before_kb": rss_before,
        "server_rss_after_kb": rss_after,
        "per_conn_kb": per_conn,
        "errors": sum(len(c.errors) for c in connections),
    }
    return result, connections


# S6


async def run_history(args, documents: list[str], token: str) -> tuple[dict, list]:
    """Measure joins and one-at-a-time edits on each given document.

    Unlike S1-S5, an edit's clock starts right before the frame is sent, after the
    local apply, so the client's own string copy of a large document is not counted.
    """
    url = args.urls[0]
    results = []
    for document in documents:
        joins = []
        for index in range(args.joins):
            connection = await Connection(url, document, token, f"j{index}").open()
            joins.append(connection)
            await connection.close()
        editor = await Connection(url, document, token, "e0").open()
        rng = random.Random(args.seed)
        edit_ms = []
        for count in range(args.edits):
            position = rng.randint(0, len(editor.text))
            started = now_ms()
            _, future = await editor.submit_insert(position, LETTERS[count % 26])
            acked = await asyncio.wait_for(future, ACK_TIMEOUT_S)
            edit_ms.append(acked - started)
        await editor.close()
        first = joins[0]
        results.append(
            {
                "document_id": document,
                "content_chars": len(first.text),
                "content_bytes": len(first.text.encode()),
                "history_operations": first.version,
                "join_ms": [round(j.join_ms, 2) for j in joins],
                "join_p50_ms": percentile([j.join_ms for j in joins], 50),
                "join_bytes": first.join_bytes,
                "edits": len(edit_ms),
                "edit_p50_ms": percentile(edit_ms, 50),
                "edit_p99_ms": percentile(edit_ms, 99),
            }
        )
    return {"documents": results}, []


# Entry point


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:18100", help="Comma-separated ws:// base URLs; sockets use them round-robin.")
    parser.add_argument("--scenario", default="S1", choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, default=10, help="Measured window in seconds.")
    parser.add_argument("--warmup", type=float, default=2, help="Warm-up in seconds.")
    parser.add_argument("--run-id", default=str(int(time.time() * 1000)))
    parser.add_argument("--server-pid", default="", help="Comma-separated server pids, for RSS and CPU.")
    parser.add_argument("--out", default=None, help="Write the JSON result to this file.")
    parser.add_argument("--http-url", default=None, help="HTTP base URL for the API; default: the first --url with http://.")
    parser.add_argument("--token", default=None, help="Access token; default: run `manage.py token --create` for --username.")
    parser.add_argument("--username", default="bench", help="User that owns the benchmark documents.")
    parser.add_argument("--document", action="append", default=[], help="S6: a document id to measure (repeatable).")
    parser.add_argument("--joins", type=int, default=5, help="S6: joins measured per document.")
    parser.add_argument("--edits", type=int, default=200, help="S6: edits measured per document.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random insert positions.")
    for name in ("docs", "writers_per_doc", "readers", "idle"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="Override the scenario's value.")
    args = parser.parse_args(argv)
    args.urls = [url.rstrip("/") for url in args.url.split(",")]
    args.server_pids = [int(pid) for pid in args.server_pid.split(",") if pid]
    if args.http_url is None:
        parts = urlsplit(args.urls[0])
        args.http_url = f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"
    return args


async def run(args) -> dict:
    cfg = dict(SCENARIOS[args.scenario])
    for name in ("docs", "writers_per_doc", "readers", "idle"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    wall_start = time.time()
    cpu_start = time.process_time()
    rss_start = server_rss_kb(args.server_pids)
    token = args.token or await asyncio.to_thread(fetch_token, args.username)

    setup_start = now_ms()
    if args.scenario == "S6":
        documents = args.document
        if not documents:
            raise SystemExit("S6 needs --document ID (see manage.py bench_history)")
    else:
        count = cfg["idle"] if args.scenario == "S4" else cfg["docs"]
        documents = await asyncio.to_thread(
            create_documents, args.http_url, token, args.run_id, count
        )
    setup_s = (now_ms() - setup_start) / 1000

    if args.scenario == "S4":
        # "before" is taken after the documents exist, so it covers sockets only.
        result, connections = await run_idle(
            args, cfg, documents, token, server_rss_kb(args.server_pids)
        )
    elif args.scenario == "S6":
        result, connections = await run_history(args, documents, token)
    else:
        result, connections = await run_load(args, cfg, documents, token)

    output = {
        "peer_client": "materi-python",
        "scenario": args.scenario,
        "cfg": cfg,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "urls": args.urls,
        "setup_s": setup_s,
        "server_rss_start_kb": rss_start,
        **result,
        "client_wall_s": time.time() - wall_start,
        "client_cpu_s": time.process_time() - cpu_start,
    }
    await asyncio.wait_for(
        asyncio.gather(*(c.close() for c in connections), return_exceptions=True), 30
    )
    return output


def main() -> None:
    args = parse_args()
    # Bound the process even if a socket or the server hangs.
    threading.Timer(PROCESS_TIMEOUT_S, lambda: os._exit(3)).start()
    try:
        output = asyncio.run(run(args))
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(2)
    text = json.dumps(output)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
