"""gunicorn settings for the web process (the Procfile's `web:` line uses this file).

gthread workers: each worker process serves `threads` requests at once, and
connections that are idle or still sending their headers wait in the worker's
poller instead of holding a thread. A client trickling its body holds one thread
for at most BODY_READ_TIMEOUT_SECONDS (billing_site/request_limits.py), and a
body over the size caps is refused from its Content-Length without being read.
See README "Serving" for what was measured.
"""

import os

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
