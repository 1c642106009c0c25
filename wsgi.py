"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi …`."""

import gc

from billing_site import create_app

app = create_app()
# What the app has built so far (modules, routes, models, templates) lives as long
# as the process: frozen out of the collector, a full collection no longer walks
# its ~134,000 objects (measured: about 0.1 s per full collection before, ~0 after).
gc.freeze()
