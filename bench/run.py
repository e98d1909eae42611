#!/usr/bin/env python3
"""Run the benchmark scenarios against a fresh Materi Realtime server and print tables.

    bench/run.py --config services --scenarios S1,S2,S3,S4,S5,S6 --reps 3
    bench/run.py --config embedded --reps 1
    bench/run.py --peers --reps 1     # every peer of the peer benchmark plus ours, one run

Configurations: `services` is PostgreSQL (database materi_bench on 127.0.0.1:5432, user
postgres) + Redis db 2 on 127.0.0.1:6379 with DEBUG off; `embedded` is a SQLite file
plus the in-memory channel layer, which the settings allow only with DEBUG on. Every
run gets a fresh server process and fresh data: the collab tables are truncated and
Redis db 2 flushed, or the SQLite file is replaced by a freshly migrated copy.
Results are appended to bench/results/raw.jsonl (git-ignored).
"""

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
CLIENT = BENCH / "client.py"
PYTHON = sys.executable
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgres://postgres@127.0.0.1:5432/materi_bench"
REDIS_URL = "redis://127.0.0.1:6379/2"
SQLITE_DIR = Path(tempfile.gettempdir()) / "materi-bench"
SQLITE_FILE = SQLITE_DIR / "db.sqlite3"
SQLITE_TEMPLATE = SQLITE_DIR / "template.sqlite3"
BASE_PORT = 18300
SCENARIOS = ["S1", "S2", "S3", "S4", "S5"]
# S6 documents: (label, size in characters, stored operations).
HISTORY_DOCUMENTS = [
    ("1KB-1k", 1_000, 1_000),
    ("1MB-1k", 1_000_000, 1_000),
    ("1MB-100k", 1_000_000, 100_000),
]
PEER_NAMES = {"services": "materi-pg-redis", "embedded": "materi-embedded"}


def config_env(config: str) -> dict[str, str]:
    """Return the environment that selects a configuration, for server and commands."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "sdk" / "python")
    # One hour, so no token expires during a run (the default is 900 s).
    env["MATERI_ACCESS_TOKEN_SECONDS"] = "3600"
    # The server and `manage.py token` must sign with the same key, so the parent
    # process picks it once and every child inherits it.
    env.setdefault("MATERI_BENCH_SECRET_KEY", secrets.token_hex(32))
    env["DJANGO_SECRET_KEY"] = env["MATERI_BENCH_SECRET_KEY"]
    if config == "services":
        env.update(
            DJANGO_DEBUG="false",
            DJANGO_ALLOWED_HOSTS="127.0.0.1",
            DATABASE_URL=PG_URL,
            REDIS_URL=REDIS_URL,
        )
    elif config == "embedded":
        env.update(DJANGO_DEBUG="true", DATABASE_URL=f"sqlite:///{SQLITE_FILE}")
        env.pop("REDIS_URL", None)
    else:
        raise SystemExit(f"unknown --config {config!r}; use services or embedded")
    return env


def manage(config: str, *arguments: str, timeout: float = 300) -> str:
    """Run a management command in a configuration and return its stdout."""
    result = subprocess.run(
        [PYTHON, str(REPO / "manage.py"), *arguments],
        cwd=REPO,
        env=config_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(arguments)} failed (exit {result.returncode}): "
            f"{result.stderr[-2000:]}"
        )
    return result.stdout.strip()


# Fresh data per run


def prepare(config: str) -> None:
    """Create the database and its tables from the current migrations, once per invocation.

    The services database is dropped and created again, so a migration edited in
    place since the last invocation still gives the current schema.
    """
    if config == "services":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS materi_bench WITH (FORCE)")
            admin.execute("CREATE DATABASE materi_bench")
        manage(config, "migrate", "--noinput")
    else:
        SQLITE_DIR.mkdir(parents=True, exist_ok=True)
        for path in SQLITE_DIR.glob("*.sqlite3*"):
            path.unlink()
        manage(config, "migrate", "--noinput")
        shutil.copy(SQLITE_FILE, SQLITE_TEMPLATE)


def reset(config: str) -> None:
    """Empty the collab tables and Redis db 2, or restore the migrated SQLite copy."""
    if config == "services":
        import psycopg
        import redis

        with psycopg.connect(PG_URL, autocommit=True) as connection:
            # CASCADE also empties the tables of other apps that point at documents.
            connection.execute("TRUNCATE collab_document CASCADE")
        redis.Redis.from_url(REDIS_URL).flushdb()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
        shutil.copy(SQLITE_TEMPLATE, SQLITE_FILE)


def serve(config: str, port: int, fresh: bool) -> None:
    """Reset the data, then replace this process with the server (same pid)."""
    if fresh:
        reset(config)
    arguments = [PYTHON, str(REPO / "manage.py"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    os.chdir(REPO)
    os.execve(PYTHON, arguments, config_env(config))


# Our own runs


def server_code_state() -> str:
    """Return the checked-out commit, with "+changes" when the server code differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "--no-optional-locks", "status", "--porcelain", "--", "collab", "materi", "presence"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}+changes" if changed else head


def start_server(config: str, port: int, log_path: Path, fresh: bool = True):
    command = [PYTHON, str(Path(__file__).resolve()), "serve", "--config", config, "--port", str(port)]
    if not fresh:
        command.append("--no-reset")
    log = open(log_path, "w")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "READY" in log_path.read_text():
            return process, log
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    stop_server(process, log)
    raise RuntimeError(f"server not READY within 30 s; log: {log_path}")


def stop_server(process, log) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    log.close()


def run_client(config: str, arguments: list[str], timeout: float) -> dict:
    result = subprocess.run(
        [PYTHON, str(CLIENT), *arguments],
        cwd=REPO,
        env=config_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"client failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_once(config: str, scenario: str, rep: int, args) -> dict:
    run_id = f"{PEER_NAMES[config]}-{scenario}-r{rep}-{int(time.time())}"
    run_dir = RESULTS / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "peer": PEER_NAMES[config],
        "scenario": scenario,
        "rep": rep,
        "run_id": run_id,
        "server_code": server_code_state(),
        "load_average": os.getloadavg(),
    }
    documents = []
    if scenario == "S6":
        reset(config)
        for label, size, operations in HISTORY_DOCUMENTS:
            document = manage(config, "bench_history", "bench", "--size", str(size), "--operations", str(operations), "--title", label, timeout=600)
            documents += ["--document", document]
    process, log = start_server(config, BASE_PORT, run_dir / "server.log", fresh=scenario != "S6")
    try:
        time.sleep(1.0)
        arguments = [
            "--url", f"ws://127.0.0.1:{BASE_PORT}", "--scenario", scenario,
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--run-id", run_id, "--server-pid", str(process.pid),
            "--out", str(run_dir / "client.json"), *documents,
        ]
        record["result"] = run_client(config, arguments, args.duration + args.warmup + 300)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        record["error"] = str(exc)[-2000:]
    finally:
        stop_server(process, log)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "raw.jsonl", "a") as raw:
        raw.write(json.dumps(record) + "\n")
    result = record.get("result", {})
    print(
        f"{record['peer']:22s} {scenario} r{rep}: ops/s={result.get('ops_per_s')} "
        f"ack99={result.get('ack_p99_ms')} seen99={result.get('seen_p99_ms')} "
        f"perconnKB={result.get('per_conn_kb')} error={record.get('error', '')[:300]}",
        flush=True,
    )
    return record


# Tables


def spread(values: list[float]) -> str:
    """Format the median and (min-max) of the values that exist."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    digits = 0 if statistics.median(values) >= 100 else 2
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def medians(records: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        if "result" in record:
            grouped.setdefault((record["peer"], record["scenario"]), []).append(record["result"])
    table = {}
    for key, results in grouped.items():
        fields = {}
        for name in results[0]:
            values = [r.get(name) for r in results if isinstance(r.get(name), (int, float))]
            if values:
                fields[name] = statistics.median(values)
        fields["_all"] = results
        table[key] = fields
    return table


def coverage(result: dict) -> float | None:
    expected = result.get("seen_expected")
    return result["seen_samples"] / expected if expected else None


def print_tables(records: list[dict]) -> None:
    table = medians(records)
    peers = list(dict.fromkeys(r["peer"] for r in records))
    columns = {
        "S1": ["ops_per_s", "ack_p50_ms", "ack_p99_ms", "server_cpu_util", "client_cpu_s"],
        "S2": ["ops_per_s", "ack_p50_ms", "ack_p99_ms", "server_cpu_util", "client_cpu_s"],
        "S3": ["ops_per_s", "seen_p50_ms", "seen_p99_ms", "coverage", "server_cpu_util", "client_cpu_s"],
        "S4": ["per_conn_kb", "server_rss_before_kb", "server_rss_after_kb", "connect_all_s"],
        "S5": ["ops_per_s", "ack_p50_ms", "ack_p99_ms", "server_cpu_util", "client_cpu_s"],
    }
    for scenario, names in columns.items():
        rows = [p for p in peers if (p, scenario) in table]
        if not rows:
            continue
        print(f"\n{scenario}: median (min-max)")
        print("| peer | runs | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 2) + "|")
        for peer in rows:
            results = table[(peer, scenario)]["_all"]
            cells = []
            for name in names:
                if name == "coverage":
                    cells.append(spread([coverage(r) for r in results]))
                else:
                    cells.append(spread([r.get(name) for r in results]))
            print(f"| {peer} | {len(results)} | " + " | ".join(cells) + " |")
    print_history(records)
    print_targets(table)


def print_history(records: list[dict]) -> None:
    rows = [r for r in records if r["scenario"] == "S6" and "result" in r]
    if not rows:
        return
    print("\nS6: median (min-max) over runs")
    print("| peer | document | chars | history ops | join ms | join bytes / size | edit p50 ms | edit p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    by_key: dict[tuple[str, int, int], list[dict]] = {}
    for record in rows:
        for doc in record["result"]["documents"]:
            key = (record["peer"], doc["content_chars"], doc["history_operations"])
            by_key.setdefault(key, []).append(doc)
    for (peer, chars, history), docs in by_key.items():
        print(
            f"| {peer} | {chars // 1000} KB | {chars} | {history} | "
            f"{spread([d['join_p50_ms'] for d in docs])} | "
            f"{spread([d['join_bytes'] / d['content_bytes'] for d in docs])} | "
            f"{spread([d['edit_p50_ms'] for d in docs])} | {spread([d['edit_p99_ms'] for d in docs])} |"
        )


# (scenario, field, reference peer, bound, "min" if ours must be >= bound x reference)
TARGETS = [
    ("S1", "ops_per_s", "sharedb-pg-redis", 1.0, "min"),
    ("S1", "ack_p99_ms", "sharedb-pg-redis", 1.0, "max"),
    ("S2", "ops_per_s", "sharedb-pg-redis", 4.0, "min"),
    ("S2", "ack_p99_ms", "sharedb-pg-redis", 0.25, "max"),
    ("S3", "ops_per_s", "sharedb-pg-redis", 2.0, "min"),
    ("S3", "ops_per_s", "pycrdt-websocket", 1.0, "min"),
    ("S3", "seen_p99_ms", "sharedb-pg-redis", 0.25, "max"),
    ("S4", "per_conn_kb", "sharedb-pg-redis", 1.0, "max"),
    ("S5", "ops_per_s", "sharedb-pg-redis", 2.0, "min"),
    ("S5", "ack_p99_ms", "sharedb-pg-redis", 0.25, "max"),
]


def print_targets(table) -> None:
    ours = [p for p in PEER_NAMES.values() if any(k[0] == p for k in table)]
    if not ours or not any(k[0] == "sharedb-pg-redis" for k in table):
        return
    print("\nTargets (ratio = ours / reference, from medians)")
    print("| ours | scenario | metric | reference | ratio | target | status |")
    print("|---|---|---|---|---|---|---|")
    for peer in ours:
        for scenario, name, reference, bound, kind in TARGETS:
            mine = table.get((peer, scenario), {}).get(name)
            theirs = table.get((reference, scenario), {}).get(name)
            if mine is None or not theirs:
                continue
            ratio = mine / theirs
            met = ratio >= bound if kind == "min" else ratio <= bound
            sign = ">=" if kind == "min" else "<="
            print(
                f"| {peer} | {scenario} | {name} | {reference} | {ratio:.2f}x | "
                f"{sign} {bound}x | {'met' if met else 'missed'} |"
            )


# Peer benchmark harness


def setup_peers(directory: Path, source: str | None) -> None:
    """Copy the peer harness, install its dependencies and create its database."""
    if not (directory / "node_modules").exists():
        if not source:
            raise SystemExit(
                f"{directory} has no installed copy of the peer harness; pass "
                "--peers-source FOLDER to copy one there"
            )
        shutil.copytree(source, directory, dirs_exist_ok=True)
        for path in directory.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        directory.chmod(directory.stat().st_mode | 0o200)
        subprocess.run(["npm", "install"], cwd=directory, check=True, timeout=600)
    if not (directory / ".venv").exists():
        subprocess.run([sys.executable, "-m", "venv", str(directory / ".venv")], check=True)
        subprocess.run(
            [str(directory / ".venv" / "bin" / "pip"), "install", "pycrdt-websocket", "pycrdt", "websockets"],
            check=True,
            timeout=600,
        )
    # The harness's services.sh would start a second Redis on port 6379 and may start
    # the cluster, so its role and database are created here as that script does.
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'bench'").fetchone():
            admin.execute("CREATE ROLE bench LOGIN PASSWORD 'bench'")
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'sharedb_bench'").fetchone():
            admin.execute("CREATE DATABASE sharedb_bench OWNER bench")
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "bench", "-d", "sharedb_bench", "-q", "-f",
         str(directory / "node_modules" / "sharedb-postgres" / "structure.sql")],
        env={**os.environ, "PGPASSWORD": "bench", "PGOPTIONS": "-c client_min_messages=error"},
        capture_output=True,
        timeout=60,
    )


def run_peers(args) -> None:
    directory = Path(args.peers_dir)
    setup_peers(directory, args.peers_source)
    spec = importlib.util.spec_from_file_location("run_bench", directory / "run_bench.py")
    run_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_bench)
    this = str(Path(__file__).resolve())
    for config, name in PEER_NAMES.items():
        prepare(config)
        run_bench.PEERS[name] = {
            "servers": [[PYTHON, this, "serve", "--config", config, "--port", "{port}"]],
            "client": [PYTHON, this, "client", "--config", config],
            "needs_pg": False,
            "desc": f"Materi Realtime, {config} configuration, 1 daphne process",
        }
    raw = directory / "results" / "raw.jsonl"
    first_line = len(raw.read_text().splitlines()) if raw.exists() else 0
    sys.argv = [
        "run_bench.py", "--peers", args.peer_list, "--scenarios", args.scenarios,
        "--reps", str(args.reps), "--duration", str(args.duration), "--warmup", str(args.warmup),
    ]
    run_bench.main()
    records = [json.loads(line) for line in raw.read_text().splitlines()[first_line:]]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "peers-raw.jsonl", "a") as copy:
        for record in records:
            copy.write(json.dumps(record) + "\n")
    print_tables(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="Reset the data and exec the server (used per run).")
    serve_parser.add_argument("--config", required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--no-reset", action="store_true")
    client_parser = sub.add_parser("client", help="Run bench/client.py in a configuration's environment.")
    client_parser.add_argument("--config", required=True)
    report_parser = sub.add_parser("report", help="Print the tables of a raw.jsonl file.")
    report_parser.add_argument("files", nargs="+")
    parser.add_argument("--config", default="services", help="services, embedded or both.")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS + ["S6"]))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="Measured window in seconds.")
    parser.add_argument("--warmup", type=float, default=2, help="Warm-up in seconds.")
    parser.add_argument("--peers", action="store_true", help="Run the peer harness with our two entries added.")
    parser.add_argument("--peers-source", default=None, help="Folder of the peer harness to copy (it may be read-only).")
    parser.add_argument("--peers-dir", default=str(Path(tempfile.gettempdir()) / "materi-peers"))
    parser.add_argument(
        "--peer-list",
        default="sharedb-mem,sharedb-pg-redis,sharedb-pg-redis-2p,pycrdt-websocket,materi-pg-redis,materi-embedded",
    )
    args, rest = parser.parse_known_args()
    os.environ.setdefault("MATERI_BENCH_SECRET_KEY", secrets.token_hex(32))

    if args.command == "serve":
        serve(args.config, args.port, fresh=not args.no_reset)
    elif args.command == "client":
        os.execve(PYTHON, [PYTHON, str(CLIENT), *rest], config_env(args.config))
    elif args.command == "report":
        records = [json.loads(line) for f in args.files for line in Path(f).read_text().splitlines()]
        print_tables(records)
    elif args.peers:
        if "S6" in args.scenarios:
            args.scenarios = ",".join(s for s in args.scenarios.split(",") if s != "S6")
        run_peers(args)
    else:
        configs = ["services", "embedded"] if args.config == "both" else [args.config]
        records = []
        for config in configs:
            prepare(config)
        for rep in range(1, args.reps + 1):
            for config in configs:
                for scenario in args.scenarios.split(","):
                    records.append(run_once(config, scenario, rep, args))
        print_tables(records)


if __name__ == "__main__":
    main()
