from flask import Blueprint

import billing_site.webhook.handlers  # noqa: F401  (fills the registry)

bp = Blueprint("webhook", __name__, cli_group=None)
