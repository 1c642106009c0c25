"""Real `flask --app wsgi worker` processes for tests, with the test PostgreSQL and Redis.

`start()` launches one with the same environment the gunicorn helper gives the
web process (plus any WORKER_* overrides); `.kill()` is SIGKILL, `.stop()` is
SIGTERM and a wait. `running()` stops whatever it started, however the test ends.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TEST_WEBHOOK_SECRET

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).parent / "flask"


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when the machine loses power."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        return ""


def environment(database_url: str, redis_url: str, directory: Path, **overrides) -> dict:
    return {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "RATELIMIT_STORAGE_URI": redis_url,
        "SECRET_KEY": "worker-test-secret-key",
        "STRIPE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "STRIPE_SECRET_KEY": "",  # empty, not absent: a developer's .env must not slip one in
        "LOCAL_STRIPE_STATE_FILE": str(directory / "local_stripe.json"),
        "WORKER_HEARTBEAT_SECONDS": "0.5",
        **{name: str(value) for name, value in overrides.items()},
    }


def start(database_url: str, redis_url: str, directory: Path, *args, name="worker", **overrides):
    """Start one worker process; its output goes to directory/<name>.log."""
    log = directory / f"{name}.log"
    env = environment(database_url, redis_url, directory, **overrides)
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            [str(FLASK), "--app", "wsgi", "worker", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(process, log)


@contextlib.contextmanager
def running(database_url: str, redis_url: str, directory: Path, count: int = 1, **overrides):
    """`count` workers for the block; all stopped (SIGTERM, then SIGKILL) afterwards."""
    workers = [
        start(database_url, redis_url, directory, name=f"worker{n}", **overrides)
        for n in range(count)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def wait_until(condition, *, timeout: float = 30.0, interval: float = 0.05, message: str = ""):
    """Poll `condition` until it is truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or f"not true within {timeout}s")
