"""Two `flask --app wsgi worker` processes beside the site, and waiting for them to drain.

The webhook only stores events now (issue 15); these workers apply them. The
ingest figure is the webhook's; `wait_for_drain` then says how long after the
last delivery the last event was applied.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.stack import PROJECT_ROOT

FLASK = Path(sys.executable).parent / "flask"


def start(env: dict, log_dir: Path, count: int = 2) -> list[subprocess.Popen]:
    workers = []
    for number in range(count):
        log = (log_dir / f"worker{number}.log").open("ab")
        workers.append(
            subprocess.Popen(
                [str(FLASK), "--app", "wsgi", "worker", "--no-jobs"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def wait_for_drain(database_url: str, timeout: float = 900.0) -> float | None:
    """Seconds until no event is queued or retrying (None if still not drained)."""
    started = time.monotonic()
    engine = create_engine(database_url)
    try:
        while time.monotonic() - started < timeout:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM stripe_events WHERE status IN ('queued', 'retrying')"
                    )
                ).scalar_one()
            if waiting == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        return None
    finally:
        engine.dispose()
