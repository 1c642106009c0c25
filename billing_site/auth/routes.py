from flask import Blueprint

from billing_site.extensions import db, login_manager
from billing_site.models import User

bp = Blueprint("auth", __name__, url_prefix="/auth", cli_group=None)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


@bp.get("/login")
def login():
    return "log in (to be built)"


@bp.get("/signup")
def signup():
    return "sign up (to be built)"


@bp.post("/logout")
def logout():
    return "log out (to be built)"
