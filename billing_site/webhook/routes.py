from flask import Blueprint

bp = Blueprint("webhook", __name__, cli_group=None)
