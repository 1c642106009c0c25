from flask import Blueprint

bp = Blueprint("dev", __name__, url_prefix="/dev")
