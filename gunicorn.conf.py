"""Gunicorn's settings file (read from the project root by `gunicorn wsgi:app`).

Prometheus metrics in multiprocess mode: every worker writes its samples under
PROMETHEUS_MULTIPROC_DIR, which must exist, be empty at start, and be set before
a worker imports prometheus_client; /metrics adds the workers' files up.
"""

import os
import shutil
import tempfile
from pathlib import Path

_created_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="pixel-forge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir


def on_starting(server):
    # Samples left by an earlier run would be added to this one's.
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting; its counters stay summed.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
