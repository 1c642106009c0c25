"""Two `flask --app wsgi worker` processes beside the site, and waiting for them to drain.

The webhook only stores events now (issue 15); these workers apply them. The
ingest figure is the webhook's; `wait_for_drain` then says how long after the
last delivery the last event was applied, `cpu_seconds` what the workers spent
and `lag` how long each event waited between being stored and being applied.
`Killer` SIGKILLs one worker after another and restarts it at once, for the
fault run: an event a worker dies on must be applied once by the next.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.stack import PROJECT_ROOT, process_cpu_seconds

FLASK = Path(sys.executable).parent / "flask"


def start(env: dict, log_dir: Path, count: int = 2) -> list[subprocess.Popen]:
    return [start_one(env, log_dir, number) for number in range(count)]


def start_one(env: dict, log_dir: Path, number: int) -> subprocess.Popen:
    """Worker `number`, logging to worker<number>.log (appended to across restarts)."""
    with (log_dir / f"worker{number}.log").open("ab") as log:
        return subprocess.Popen(
            [str(FLASK), "--app", "wsgi", "worker", "--no-jobs"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def cpu_seconds(workers: list[subprocess.Popen]) -> float:
    """CPU the live workers have spent so far (utime + stime, /proc/<pid>/stat)."""
    return sum(process_cpu_seconds(worker.pid) for worker in workers)


def kill_and_restart(workers: list[subprocess.Popen], number: int, env: dict, log_dir: Path):
    """SIGKILL worker `number` (no chance to finish the event in hand) and start another."""
    workers[number].kill()
    workers[number].wait()
    workers[number] = start_one(env, log_dir, number)


class Killer(threading.Thread):
    """Every `interval` s, SIGKILLs the next worker in turn and restarts it at once.

    A worker not yet in its loop (no heartbeat row for its pid: a restarted one takes
    a few seconds to import the app) is left alone on its turn, so the drain still
    moves when starting up takes longer than the two turns between its kills."""

    def __init__(
        self, workers: list, env: dict, log_dir: Path, database_url: str, interval: float = 2.0
    ):
        super().__init__(daemon=True)
        self.workers, self.env, self.log_dir, self.interval = workers, env, log_dir, interval
        self.database_url = database_url
        self.kills = 0
        self.spared = 0  # turns on which the worker was still starting
        self._stopping = threading.Event()

    def run(self) -> None:
        engine = create_engine(self.database_url)
        try:
            turn = 0
            while not self._stopping.wait(self.interval):
                number = turn % len(self.workers)
                turn += 1
                if in_loop(engine, self.workers[number].pid):
                    kill_and_restart(self.workers, number, self.env, self.log_dir)
                    self.kills += 1
                else:
                    self.spared += 1
        finally:
            engine.dispose()

    def stop(self) -> int:
        """Stop killing; the number of kills."""
        self._stopping.set()
        self.join()
        return self.kills


def in_loop(engine, pid: int) -> bool:
    """Whether worker `pid` has beaten (its worker id is host:pid:suffix)."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT EXISTS (SELECT 1 FROM worker_heartbeats WHERE worker_id LIKE :pattern)"),
            {"pattern": f"%:{pid}:%"},
        ).scalar_one()


def pause(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGSTOP)


def resume(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGCONT)


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


def lag(database_url: str, event_ids: list[str]) -> dict:
    """For the events `event_ids` that were applied: how many, and the p50, p99 and
    maximum seconds from being stored (received_at) to being applied (processed_at)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT count(*) AS applied,"
                    " percentile_cont(0.5) WITHIN GROUP (ORDER BY waited) AS p50,"
                    " percentile_cont(0.99) WITHIN GROUP (ORDER BY waited) AS p99,"
                    " max(waited) AS max"
                    " FROM (SELECT extract(epoch FROM processed_at - received_at) AS waited"
                    "  FROM stripe_events"
                    "  WHERE id = ANY(:ids) AND status = 'processed') AS applied"
                ),
                {"ids": event_ids},
            ).one()
    finally:
        engine.dispose()
    return {
        "applied": row.applied,
        **{
            name: None if row._mapping[name] is None else float(row._mapping[name])
            for name in ("p50", "p99", "max")
        },
    }
