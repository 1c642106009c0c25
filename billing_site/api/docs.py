"""The OpenAPI document as JSON, and /api/docs: the same document as a page, offline."""

from flask import current_app, jsonify, render_template

from billing_site.api.blueprint import route
from billing_site.api.openapi import document

METHODS = ("get", "post", "delete")


@route("/v1/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config["SITE_URL"]))


@route("/docs")
def docs():
    spec = document(current_app.config["SITE_URL"])
    operations = [
        (path, method.upper(), op)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if method in METHODS
    ]
    return render_template(
        "api/docs.html",
        spec=spec,
        operations=operations,
        schemas=spec["components"]["schemas"],
        errors=spec["components"]["responses"],
    )
