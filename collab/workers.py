"""Run several server processes that share one listening socket.

The parent binds the port once and starts each worker with the socket's file
descriptor. The kernel hands every new connection to one of the workers. A
worker that dies is started again, so a crash costs its clients a reconnect.
"""

import logging
import signal
import socket
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0


class WorkerPool:
    def __init__(self, host: str, port: int, count: int, output):
        self.host = host
        self.port = port
        self.count = count
        self.output = output
        self.workers: list[subprocess.Popen | None] = [None] * count
        self.ready: set[int] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(1024)
        listener.set_inheritable(True)
        self.listener = listener

        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for index in range(self.count):
            self.start_worker(index)
        while not self.stopping.is_set():
            self.restart_dead_workers()
            self.stopping.wait(0.2)
        self.stop_workers()

    def start_worker(self, index: int) -> None:
        command = [
            sys.executable,
            sys.argv[0],
            "serve",
            "--fd",
            str(self.listener.fileno()),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        process = subprocess.Popen(
            command,
            pass_fds=(self.listener.fileno(),),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.workers[index] = process
        logger.info("started worker %d (pid %d)", index, process.pid)
        threading.Thread(
            target=self.forward_output, args=(index, process), daemon=True
        ).start()

    def forward_output(self, index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if not line.startswith("READY"):
                self.output.write(line)
                continue
            with self.lock:
                self.ready.add(index)
                if len(self.ready) == self.count:
                    pids = ",".join(str(worker.pid) for worker in self.workers)
                    self.output.write(
                        f"READY http://{self.host}:{self.port} workers={pids}\n"
                    )
            self.output.flush()

    def restart_dead_workers(self) -> None:
        for index, process in enumerate(self.workers):
            if process is None or process.poll() is None:
                continue
            logger.warning(
                "worker %d (pid %d) exited with %s; starting it again",
                index,
                process.pid,
                process.returncode,
            )
            process.stdout.close()
            time.sleep(RESTART_DELAY)
            if not self.stopping.is_set():
                self.start_worker(index)

    def stop(self, signum=None, frame=None) -> None:
        self.stopping.set()

    def stop_workers(self) -> None:
        for process in self.workers:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in self.workers:
            if process is None:
                continue
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        logger.info("stopped %d workers", self.count)
