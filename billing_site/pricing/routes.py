from flask import Blueprint, render_template

bp = Blueprint("pricing", __name__)


@bp.get("/")
@bp.get("/pricing")
def index():
    return render_template("errors/error.html", status=200, message="Pricing (to be built)")
