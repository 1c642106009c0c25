"""gunicorn settings for the web process (the Procfile's `web:` line uses this file).

gthread workers: each worker process serves `threads` requests at once, and
connections that are idle or still sending their headers wait in the worker's
poller instead of holding a thread. A client trickling its body holds one thread
for at most BODY_READ_TIMEOUT_SECONDS (billing_site/request_limits.py), and a
body over the size caps is refused from its Content-Length without being read.
See README "Serving" for what was measured.

Prometheus metrics in multiprocess mode: every worker writes its samples under
PROMETHEUS_MULTIPROC_DIR, which must exist, be empty at start, and be set before
a worker imports prometheus_client; /metrics adds the workers' files up.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# A request may wait this long on Stripe (STRIPE_TIMEOUT_SECONDS is 20) before
# the arbiter restarts a worker whose main loop stopped answering.
timeout = 30
graceful_timeout = 20
# Short: an idle keep-alive connection costs a poller slot, not a thread, but
# there is no reason to keep it long behind a load balancer that reconnects.
keepalive = 2
# Request line and headers stay at gunicorn's bounds (4094 bytes, 100 fields).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
# Its default control socket is one path per machine, shared by every gunicorn.
control_socket_disable = True

# --- Prometheus multiprocess mode -------------------------------------------------
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
