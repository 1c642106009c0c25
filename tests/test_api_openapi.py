"""The OpenAPI 3.1 document (issue 11, item 4): valid, complete, and readable offline."""

import re

from openapi_spec_validator import validate

from billing_site.api.openapi import document

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on any error against the 3.1 schema
    assert spec["servers"] == [{"url": "http://localhost"}]


def test_every_route_under_api_v1_is_in_the_document(app):
    paths = document("http://localhost")["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = openapi_path(rule.rule)
        for method in sorted(rule.methods & METHODS):
            if method.lower() not in paths.get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == [], f"add these to billing_site/api/openapi.py: {missing}"


def test_the_document_names_no_route_that_does_not_exist(app):
    served = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods & METHODS
    }
    documented = {
        (path, method) for path, methods in document("x")["paths"].items() for method in methods
    }
    assert documented - served == set()


def test_every_operation_documents_its_errors_in_the_one_shape():
    spec = document("x")
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path.endswith(("openapi.json", "webhook")):
                continue
            errors = [code for code in operation["responses"] if code >= "400"]
            assert "429" in errors, f"{method} {path}"
            for code in errors:
                assert operation["responses"][code] == {"$ref": f"#/components/responses/E{code}"}
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]


def test_the_docs_page_is_served_offline_and_lists_every_operation(client):
    response = client.get("/api/docs")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # Nothing fetched from elsewhere: every script, style and image is the site's own.
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)
    for path, methods in document("x")["paths"].items():
        for method in methods:
            assert f"{method.upper()} {path}" in html
    assert 'id="schema-CreditCheck"' in html
    assert "invalid_api_key" in html
