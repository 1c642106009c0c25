"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi …`."""

import gc

from billing_site import create_app

app = create_app()
# What the app has built so far (modules, routes, models, templates) lives as long
# as the process: frozen out of the collector, a full collection no longer walks it,
# and those pauses were the long tail of request times.
gc.freeze()
