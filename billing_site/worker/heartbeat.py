"""Each worker process says it is alive every few seconds; /healthz and the admin read it."""

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from billing_site.extensions import db, dialect_insert
from billing_site.models import WorkerHeartbeat, utcnow

log = logging.getLogger("billing_site.worker")


def beat(worker_id: str, current_event_id: str | None = None) -> None:
    """Record that this worker is alive now (and which event it is applying)."""
    now = utcnow()
    statement = dialect_insert(WorkerHeartbeat).values(
        worker_id=worker_id, started_at=now, last_seen_at=now, current_event_id=current_event_id
    )
    statement = statement.on_conflict_do_update(
        index_elements=["worker_id"],
        set_={"last_seen_at": now, "current_event_id": current_event_id},
    )
    db.session.execute(statement)
    db.session.commit()


def forget(worker_id: str) -> None:
    """A worker stopping cleanly removes its row, so it is not mistaken for a dead one."""
    db.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))
    db.session.commit()


def last_seen() -> datetime | None:
    """When any worker last beat, or None if none ever has."""
    return db.session.scalar(select(db.func.max(WorkerHeartbeat.last_seen_at)))


def processing_event_ids(stale_after: timedelta) -> set[str]:
    """Events that live workers said, at their last beat, they were applying."""
    since = utcnow() - stale_after
    statement = select(WorkerHeartbeat.current_event_id).where(
        WorkerHeartbeat.current_event_id.is_not(None), WorkerHeartbeat.last_seen_at >= since
    )
    return set(db.session.scalars(statement))


class HeartbeatThread(threading.Thread):
    """Beats on its own connection, so a long handler does not make the worker look dead."""

    def __init__(self, app, worker_id: str, interval: float):
        super().__init__(name="worker-heartbeat", daemon=True)
        self.app, self.worker_id, self.interval = app, worker_id, interval
        self.current_event_id: str | None = None
        self.stopped = threading.Event()

    def working_on(self, event_id: str | None) -> None:
        """Tell the next beat which event this worker is applying (None: none)."""
        self.current_event_id = event_id

    def run(self) -> None:
        with self.app.app_context():
            while not self.stopped.is_set():
                try:
                    beat(self.worker_id, self.current_event_id)
                except Exception:  # the database may be away for a while; keep trying
                    db.session.rollback()
                    log.warning("worker %s: heartbeat failed", self.worker_id, exc_info=True)
                self.stopped.wait(self.interval)
            db.session.remove()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.interval + 5)
