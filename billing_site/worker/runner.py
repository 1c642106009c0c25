"""The worker process's loop: apply due events (in batches under a backlog), run due
jobs, sleep until woken.

On PostgreSQL it LISTENs on its own autocommit psycopg connection, so an
insert's NOTIFY wakes it within milliseconds; it also polls every
WORKER_POLL_SECONDS, which covers SQLite, retries coming due, and a NOTIFY
missed while the listening connection was being re-made. SIGTERM or SIGINT
finishes the event in hand, then stops.
"""

import logging
import os
import signal
import socket
import time
import uuid

from billing_site.extensions import db
from billing_site.webhook.services import NOTIFY_CHANNEL
from billing_site.worker import heartbeat, queue
from billing_site.worker.jobs import run_due_jobs

log = logging.getLogger("billing_site.worker")

JOB_CHECK_SECONDS = 1.0
ERROR_PAUSE_SECONDS = 2.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, app, *, run_jobs: bool = True):
        self.app = app
        self.config = app.config
        self.run_jobs = run_jobs
        self.worker_id = new_worker_id()
        self.stopping = False
        self.listener = None
        self.tried_slots: dict[str, int] = {}
        self.next_job_check = 0.0

    def stop(self, *_signal) -> None:
        self.stopping = True

    def run(self) -> None:
        """Work until stopped by a signal."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        beats = heartbeat.HeartbeatThread(
            self.app, self.worker_id, self.config["WORKER_HEARTBEAT_SECONDS"]
        )
        beats.start()
        log.info("worker %s started", self.worker_id)
        try:
            with self.app.app_context():
                while not self.stopping:
                    self._step(beats)
                self._forget()
        finally:
            beats.stop()
            self._close_listener()
            log.info("worker %s stopped", self.worker_id)

    def _step(self, beats) -> None:
        try:
            if self.run_jobs and time.monotonic() >= self.next_job_check:
                self.next_job_check = time.monotonic() + JOB_CHECK_SECONDS
                run_due_jobs(self.worker_id, self.tried_slots)
            if not queue.apply_next(on_claim=beats.working_on, limit=queue.batch_size()):
                self._wait()
        except Exception:  # the database went away, most likely: pause, then carry on
            db.session.rollback()
            log.exception("worker %s: step failed; trying again shortly", self.worker_id)
            self._close_listener()
            time.sleep(ERROR_PAUSE_SECONDS)

    def _wait(self) -> None:
        """Sleep until a NOTIFY, the poll interval, or the next job check, whichever is first."""
        timeout = self.config["WORKER_POLL_SECONDS"]
        if self.run_jobs:
            timeout = min(timeout, max(self.next_job_check - time.monotonic(), 0.01))
        listener = self._listener()
        if listener is None:
            time.sleep(timeout)
            return
        # In short slices, so a SIGTERM is honoured within half a second.
        deadline = time.monotonic() + timeout
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            for _notify in listener.notifies(timeout=min(left, 0.5), stop_after=1):
                return

    def _listener(self):
        if self.listener is not None or db.engine.dialect.name != "postgresql":
            return self.listener
        import psycopg

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.listener = psycopg.connect(url, autocommit=True)
        self.listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self.listener

    def _close_listener(self) -> None:
        if self.listener is not None:
            try:
                self.listener.close()
            finally:
                self.listener = None

    def _forget(self) -> None:
        try:
            heartbeat.forget(self.worker_id)
        except Exception:
            db.session.rollback()
            log.warning("worker %s: could not remove its heartbeat", self.worker_id)
