from flask import Blueprint

bp = Blueprint("generate", __name__)
