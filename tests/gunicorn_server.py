"""The site under real gunicorn, for tests that need real worker processes.

`serve()` starts `gunicorn wsgi:app` on a free loopback port with the test
PostgreSQL and Redis, waits until it answers, and always stops it (by the
arbiter's PID) on the way out. It can name the worker that owns a TCP
connection, so a test can kill exactly the worker serving a request.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import TEST_WEBHOOK_SECRET
from tests.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


@dataclass
class GunicornServer:
    process: subprocess.Popen
    url: str
    log: Path

    @property
    def arbiter_pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The live worker processes (the arbiter's children)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                state, parent = fields[0], int(fields[1])
                if parent == self.arbiter_pid and state not in ("Z", "X"):
                    pids.append(int(entry.name))
        return sorted(pids)

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= count and self._answers():
                return
            time.sleep(0.05)
        raise AssertionError(f"gunicorn did not get {count} workers up:\n{self.log_tail()}")

    def worker_holding_port(self, local_port: int) -> int:
        """The worker whose TCP socket has `local_port` on its own end (its DB connection)."""
        inodes = _socket_inodes_with_local_port(local_port)
        for pid in self.worker_pids():
            if _open_socket_inodes(pid) & inodes:
                return pid
        raise AssertionError(f"no gunicorn worker owns a socket on local port {local_port}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        return ""

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False


@contextlib.contextmanager
def serve(
    database_url: str, redis_url: str, directory: Path, *, workers: int = 2, env: dict | None = None
):
    """Run the site under gunicorn (with the project's gunicorn.conf.py) until the block ends.

    gunicorn reads ./gunicorn.conf.py from its working directory, the project root,
    so the tests run the worker class and timeouts production runs; the options
    below override only what a test needs. `env` adds environment variables.
    """
    port = free_port()
    log = directory / "gunicorn.log"
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "RATELIMIT_STORAGE_URI": redis_url,
        "SECRET_KEY": "gunicorn-test-secret-key",
        "STRIPE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        # Empty, not absent: a developer's .env must not slip a real key in.
        "STRIPE_SECRET_KEY": "",
        "LOCAL_STRIPE_STATE_FILE": str(directory / "local_stripe.json"),
        "SITE_URL": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    command = [
        str(GUNICORN),
        "wsgi:app",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        # Longer than any test waits: the test, not gunicorn's timeout, kills workers.
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        # Its default control socket is one path per machine, shared by every gunicorn.
        "--no-control-socket",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = GunicornServer(process=process, url=f"http://127.0.0.1:{port}", log=log)
    try:
        server.wait_for_workers(workers)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the arbiter stops its workers
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _socket_inodes_with_local_port(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port:
                    inodes.add(fields[9])
    return inodes


def _open_socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes
