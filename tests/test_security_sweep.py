"""The security sweep (issue 6, item 4): every rule of the URL map, for every kind of person.

Nothing here lists URLs. The tests walk `app.url_map`, so a route added tomorrow
is swept tomorrow; the one thing a new route needs is a line in ACCESS below, and
the first test fails (naming the endpoint) until it has one.

- authorization: visitors are sent to log in (401 JSON under /api/), customers get
  403 from the admin console, admins are never refused, and nobody ever gets a 500;
- CSRF: every state-changing rule refuses a request without a token, except the
  Stripe webhook, which refuses it for its missing signature instead;
- open redirects: `next=` never sends a person off the site after logging in or
  signing up;
- headers: the security headers on every page, cookies HttpOnly and SameSite=Lax,
  and no inline script or style in any page (the CSP would block it).
"""

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from werkzeug.routing import IntegerConverter, Rule

from billing_site.extensions import db
from billing_site.models import Refund, StripeEvent, utcnow
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import make_paid_order, make_user, verification_path

PUBLIC, CUSTOMER, ADMIN = "public", "customer", "admin"

# Who may use each endpoint: an exact endpoint name, or a blueprint prefix ending
# in "." (an exact name wins over its blueprint). Keep it short and explicit.
ACCESS = {
    "static": PUBLIC,
    "pricing.": PUBLIC,  # the pricing page and the catalog JSON
    "auth.": PUBLIC,  # sign up, verify the email, log in, log out
    "auth.change_password": CUSTOMER,  # and "log out everywhere else" beside it
    "auth.end_other_sessions": CUSTOMER,
    "auth.resend_verification": CUSTOMER,
    "health.": PUBLIC,
    "webhook.": PUBLIC,  # Stripe has no session; the signature is its credential
    "dev.": PUBLIC,  # the local test checkout plays Stripe's part (development only)
    "dev_mail.": PUBLIC,  # the development outbox, registered with the local checkout only
    "metrics.scrape": PUBLIC,  # open in development; token or network in production
    "email_preferences.": CUSTOMER,
    "generate.": PUBLIC,  # visitors get free tries
    "generate.download": CUSTOMER,  # a customer's own image, as a file
    "checkout.cancel": PUBLIC,  # Stripe sends whoever cancels back here
    "checkout.": CUSTOMER,
    "account.": CUSTOMER,
    "admin.": ADMIN,
    "admin.export_orders": ADMIN,  # the orders CSV: customers' emails, admins only
    # The API (issue 11): a key or a session stands for its customer; some of it is public.
    "api.": CUSTOMER,
    "api.catalog": PUBLIC,
    "api.packages": PUBLIC,
    "api.tiers": PUBLIC,
    "api.stripe_config": PUBLIC,
    "api.openapi_json": PUBLIC,
    "api.docs": PUBLIC,
    "api.check": PUBLIC,  # anonymous callers get the free cap's view
    "api.create_generation": PUBLIC,  # visitors get free tries, as on the page
    "api.search_payments": ADMIN,
    "api.refund_payment": ADMIN,
    "api_keys.": CUSTOMER,  # /account/api-keys
}
# The only rules that take a state-changing request without a CSRF token.
CSRF_EXEMPT = {"webhook.receive_event"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
SITE = "http://localhost"
LOGIN_PATH = "/auth/login"


def access_of(endpoint: str) -> str | None:
    if endpoint in ACCESS:
        return ACCESS[endpoint]
    blueprint = endpoint.split(".", 1)[0] + "."
    return ACCESS.get(blueprint) if "." in endpoint else None


def rules_of(app) -> list[Rule]:
    return sorted(app.url_map.iter_rules(), key=lambda rule: (rule.endpoint, rule.rule))


def get_rules(app) -> list[Rule]:
    return [rule for rule in rules_of(app) if "GET" in rule.methods]


def state_changing_rules(app) -> list[Rule]:
    return [rule for rule in rules_of(app) if rule.methods & STATE_CHANGING]


def method_of(rule: Rule) -> str:
    return sorted(rule.methods & STATE_CHANGING)[0]


# --- one of everything a URL can name ---------------------------------------------------


@dataclass
class World:
    """Real ids for the arguments the site's rules name, and one client per kind of person."""

    values: dict
    query: dict
    clients: dict


def dummy_value(rule: Rule, name: str):
    return 1 if isinstance(rule._converters[name], IntegerConverter) else "x"


def url_of(rule: Rule, world: World) -> str:
    """The rule's URL with real ids where the world has them, else ints → 1, strings → "x".

    Built from the rule itself, not url_for(endpoint), so an endpoint served at two
    URLs (/ and /pricing) is swept at both.
    """
    arguments = {
        name: world.values.get(name, dummy_value(rule, name)) for name in sorted(rule.arguments)
    }
    _, path = rule.build({**arguments, **world.query.get(rule.endpoint, {})}, append_unknown=True)
    return path


@pytest.fixture
def world(app) -> World:
    with app.app_context():
        customer = make_user("customer@example.com")
        admin = make_user("admin@example.com", is_admin=True)
        order = make_paid_order(customer, "pro")
        refund = Refund(order_id=order.id, sequence=1, amount_cents=100, status="failed")
        event = StripeEvent(
            id="evt_sweep_1",
            type="charge.refunded",
            created=utcnow(),
            payload={"id": "evt_sweep_1", "type": "charge.refunded"},
            status="processed",
        )
        db.session.add_all([refund, event])
        db.session.commit()
        values = {
            "order_id": order.id,
            "user_id": customer.id,
            "refund_id": refund.id,
            "event_id": event.id,
            "filename": "site.css",
        }
        ids = {"customer": customer.id, "admin": admin.id}

    clients = {"anonymous": app.test_client()}
    for role, user_id in ids.items():
        clients[role] = app.test_client()
        with clients[role].session_transaction() as session:
            session["_user_id"] = str(user_id)
            session["_fresh"] = True

    query = {}
    gateway = app.extensions["stripe_gateway"]
    if gateway.is_local:
        # A local portal session and a checkout of the customer's own, so the test
        # checkout, the portal and the success page render instead of answering 404.
        with app.app_context():
            portal = gateway.create_portal_session(customer_id="cus_sweep", return_url=SITE)
        query["dev.portal"] = {"session": portal["id"], "customer": "cus_sweep"}
        started = post_with_token(clients["customer"], "/checkout/pack/starter")
        assert started.status_code == 303, started.status_code
        session_id = urlsplit(started.headers["Location"]).path.rsplit("/", 1)[-1]
        values["session_id"] = session_id
        query["checkout.success"] = {"session_id": session_id}
    return World(values=values, query=query, clients=clients)


def post_with_token(client, url: str, **kwargs):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post(url, data={"csrf_token": token}, **kwargs)


@dataclass
class Visit:
    role: str
    rule: Rule
    access: str
    url: str
    response: object

    @property
    def label(self) -> str:
        return f"{self.role} GET {self.url} ({self.rule.endpoint}) → {self.response.status_code}"


def visit_every_get_rule(app, world: World) -> Iterator[Visit]:
    for rule in get_rules(app):
        url = url_of(rule, world)
        for role, client in world.clients.items():
            response = client.get(url, buffered=True)  # read and closed (static files)
            yield Visit(role, rule, access_of(rule.endpoint), url, response)


@pytest.fixture
def visits(app, world) -> list[Visit]:
    return list(visit_every_get_rule(app, world))


def sent_to_log_in(visit: Visit) -> bool:
    response = visit.response
    if visit.url.startswith("/api/"):
        return response.status_code == 401 and response.is_json
    location = urlsplit(response.headers.get("Location", ""))
    return response.status_code == 302 and location.path == LOGIN_PATH


# --- a: authorization over the whole URL map ----------------------------------------------


def test_every_route_in_the_url_map_has_an_access_rule(app):
    unclassified = sorted(
        {rule.endpoint for rule in rules_of(app) if access_of(rule.endpoint) is None}
    )
    assert unclassified == [], (
        "New endpoints must be classified in ACCESS (public, customer or admin) "
        f"so the sweep knows who may use them: {unclassified}"
    )
    # Every kind of route the site has today is there to be swept.
    endpoints = {rule.endpoint for rule in rules_of(app)}
    assert {"pricing.index", "auth.login", "account.dashboard", "admin.overview"} <= endpoints
    assert {"webhook.receive_event", "health.healthz", "generate.page"} <= endpoints


def test_nobody_ever_gets_a_server_error_from_any_page(visits):
    errors = [visit.label for visit in visits if visit.response.status_code >= 500]
    assert errors == []


def test_visitors_are_sent_to_log_in_from_every_customer_and_admin_page(visits):
    wrong = []
    for visit in visits:
        if visit.role != "anonymous" or visit.access == PUBLIC:
            continue
        if not sent_to_log_in(visit):
            wrong.append(visit.label)
        elif not visit.url.startswith("/api/"):
            # … and come back to the page they asked for after logging in.
            location = urlsplit(visit.response.headers["Location"])
            if parse_qs(location.query).get("next") != [visit.url]:
                wrong.append(f"{visit.label}: next= is {location.query!r}")
    assert wrong == []


def test_customers_get_403_from_every_admin_page(visits):
    admin_pages = [v for v in visits if v.role == "customer" and v.access == ADMIN]
    assert admin_pages, "the sweep found no admin pages"
    wrong = [visit.label for visit in admin_pages if visit.response.status_code != 403]
    assert wrong == []
    for visit in admin_pages:
        if visit.url.startswith("/api/"):
            assert visit.response.get_json()["error"] == "forbidden", visit.label
        else:
            assert "You do not have access to this page." in visit.response.get_data(as_text=True)


def test_nobody_is_refused_a_page_their_role_allows(visits):
    allowed = {
        "anonymous": {PUBLIC},
        "customer": {PUBLIC, CUSTOMER},
        "admin": {PUBLIC, CUSTOMER, ADMIN},
    }
    wrong = [
        visit.label
        for visit in visits
        if visit.access in allowed[visit.role]
        and (visit.response.status_code in (401, 403) or sent_to_log_in(visit))
    ]
    assert wrong == []
    # The sweep really reached pages behind the log-in and the admin check.
    reached = {(v.role, v.rule.endpoint) for v in visits if v.response.status_code == 200}
    assert {("customer", "account.dashboard"), ("admin", "admin.overview")} <= reached
    assert ("admin", "admin.order_detail") in reached


def test_visitors_and_customers_cannot_post_to_what_their_role_does_not_allow(app, world):
    """The same rules for state-changing requests, with a valid CSRF token."""
    wrong = []
    for rule in state_changing_rules(app):
        access = access_of(rule.endpoint)
        url = url_of(rule, world)
        for role in ("anonymous", "customer"):
            if access == PUBLIC or (role == "customer" and access == CUSTOMER):
                continue
            client = world.clients[role]
            headers = {
                "X-CSRFToken": csrf_token_from(client.get("/auth/login").get_data(as_text=True))
            }
            response = client.open(url, method=method_of(rule), headers=headers, json={})
            visit = Visit(role, rule, access, url, response)
            expected = sent_to_log_in(visit) if role == "anonymous" else response.status_code == 403
            if not expected:
                wrong.append(visit.label.replace(" GET ", f" {method_of(rule)} "))
    assert wrong == []


# --- b: CSRF on every state-changing rule but the webhook -----------------------------------


def test_every_state_changing_rule_but_the_webhook_refuses_a_request_without_a_csrf_token(
    app, world
):
    admin = world.clients["admin"]
    admin.get("/pricing")  # a session exists: only the token is missing
    wrong = []
    for rule in state_changing_rules(app):
        url = url_of(rule, world)
        method = method_of(rule)
        # An API is sent what it reads (JSON); a page, what a form sends.
        payload = {"json": {}} if url.startswith("/api/") else {"data": {}}
        response = admin.open(url, method=method, **payload)
        label = f"{method} {url} ({rule.endpoint}) → {response.status_code}"
        body = response.get_data(as_text=True)
        if rule.endpoint in CSRF_EXEMPT:
            # Refused for the missing signature instead, never for a CSRF token.
            if response.status_code != 400 or response.get_json()["error"] != "invalid_webhook":
                wrong.append(f"{label}: {body[:120]}")
        elif response.status_code != 400:
            wrong.append(f"{label}: accepted without a CSRF token: {body[:120]}")
        elif url.startswith("/api/"):
            if not response.is_json or response.get_json().get("error") != "csrf_failed":
                wrong.append(f"{label}: not the JSON CSRF error: {body[:120]}")
        elif "did not come from this site" not in body:
            wrong.append(f"{label}: not the CSRF message")
    assert wrong == []


# --- c: open redirects on next= ---------------------------------------------------------------

OFF_SITE_NEXT = [
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",  # as the server reads a double-encoded link
    "///evil.example",  # what /%2F%2F decodes to
    "/\t/evil.example",  # browsers drop tabs: //evil.example
    "https:evil.example",
    "http://localhost@evil.example",
]


def stays_on_site(location: str) -> bool:
    """Where a browser would go: it drops tabs and newlines and reads \\ as /."""
    cleaned = re.sub(r"[\t\r\n]", "", location).replace("\\", "/")
    target = urlsplit(urljoin(f"{SITE}{LOGIN_PATH}", cleaned))
    return target.scheme == "http" and target.netloc == "localhost"


def next_values_in_links(html: str) -> list[str]:
    """The next= of every link and form action on a page (as the browser would send it)."""
    values = []
    for target in re.findall(r'(?:href|action)="([^"]*)"', html):
        query = urlsplit(target.replace("&amp;", "&")).query
        values.extend(parse_qs(query).get("next", []))
    return values


@pytest.fixture
def open_app(make_app):
    # Many log-ins from one address in a minute are the point here, not brute force.
    return make_app(LOGIN_RATE_LIMIT="1000 per minute", SIGNUP_RATE_LIMIT="1000 per minute")


def verified_via_link(client, caplog):
    """Open the link of the last verification email (sign-up's next= rides in it)."""
    return client.get(verification_path(client))


@pytest.mark.parametrize("form", ["login", "signup"])
def test_next_never_sends_anyone_off_the_site(open_app, form, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    with open_app.app_context():
        make_user("ada@example.com")
    wrong = []
    for number, next_url in enumerate(OFF_SITE_NEXT):
        client = open_app.test_client()
        path = f"/auth/{form}"
        page = client.get(path, query_string={"next": next_url}).get_data(as_text=True)
        for carried in next_values_in_links(page):
            if not stays_on_site(carried):
                wrong.append(f"{form} page links carry next={carried!r} (from {next_url!r})")
        data = {"csrf_token": csrf_token_from(page), "password": TEST_PASSWORD}
        if form == "login":
            data["email"] = "ada@example.com"
        else:
            data.update(email=f"new{number}@example.com", password_confirm=TEST_PASSWORD)
        response = client.post(path, query_string={"next": next_url}, data=data)
        if form == "signup":
            response = verified_via_link(client, caplog)
        location = response.headers.get("Location", "")
        if response.status_code != 302 or not stays_on_site(location):
            wrong.append(f"{form} next={next_url!r} → {response.status_code} {location!r}")
    assert wrong == []


def test_a_raw_double_encoded_next_stays_on_the_site(open_app):
    with open_app.app_context():
        make_user("ada@example.com")
    client = open_app.test_client()
    path = "/auth/login?next=/%2F%2Fevil.example"
    data = {"email": "ada@example.com", "password": TEST_PASSWORD}
    data["csrf_token"] = csrf_token_from(client.get(path).get_data(as_text=True))
    response = client.post(path, data=data)
    assert response.status_code == 302
    assert stays_on_site(response.headers["Location"]), response.headers["Location"]


def test_a_safe_next_still_brings_the_customer_back(open_app):
    with open_app.app_context():
        make_user("ada@example.com")
    client = open_app.test_client()
    path = "/auth/login"
    page = client.get(path, query_string={"next": "/account?tab=usage"}).get_data(as_text=True)
    data = {
        "email": "ada@example.com",
        "password": TEST_PASSWORD,
        "csrf_token": csrf_token_from(page),
    }
    response = client.post(path, query_string={"next": "/account?tab=usage"}, data=data)
    assert (response.status_code, response.headers["Location"]) == (302, "/account?tab=usage")


# --- d: security headers, cookies, and no inline script or style ---------------------------


def csp_directives(response) -> dict:
    policy = response.headers.get("Content-Security-Policy", "")
    parts = (part.strip() for part in policy.split(";"))
    return {part.split()[0]: part.split()[1:] for part in parts if part}


def header_problems(response) -> list[str]:
    problems = []
    csp = csp_directives(response)
    if not csp:
        return ["no Content-Security-Policy"]
    script_src = csp.get("script-src", csp.get("default-src", []))
    if not script_src or "'unsafe-inline'" in script_src or "'unsafe-eval'" in script_src:
        problems.append(f"script-src {script_src}")
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    if "X-Frame-Options" not in response.headers and "frame-ancestors" not in csp:
        problems.append("may be framed (no X-Frame-Options or frame-ancestors)")
    if not response.headers.get("Referrer-Policy"):
        problems.append("no Referrer-Policy")
    return problems


def test_every_page_someone_can_open_carries_the_security_headers(visits):
    opened = [visit for visit in visits if visit.response.status_code == 200]
    assert len({visit.rule.endpoint for visit in opened}) >= 15  # the sweep reached the site
    wrong = [f"{v.label}: {p}" for v in opened if (p := header_problems(v.response))]
    assert wrong == []


INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<[a-z][^>]*\sstyle\s*=", re.IGNORECASE)
STYLE_ELEMENT = re.compile(r"<style\b", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)
# htmx evaluates hx-on attributes as code, which script-src 'self' forbids too.
HTMX_HANDLER = re.compile(r"<[a-z][^>]*\shx-on[:-]", re.IGNORECASE)


def inline_code_in(html: str) -> list[str]:
    found = []
    for name, pattern in (
        ("inline <script>", INLINE_SCRIPT),
        ("style= attribute", INLINE_STYLE),
        ("<style> element", STYLE_ELEMENT),
        ("on…= handler", INLINE_HANDLER),
        ("hx-on handler", HTMX_HANDLER),
    ):
        match = pattern.search(html)
        if match:
            found.append(f"{name}: {match.group(0)[:80]!r}")
    return found


def test_no_page_has_inline_script_or_style_the_csp_would_block(visits):
    pages = [v for v in visits if v.response.mimetype == "text/html"]
    assert pages, "the sweep found no HTML pages"
    wrong = [
        f"{visit.label}: {problem}"
        for visit in pages
        for problem in inline_code_in(visit.response.get_data(as_text=True))
    ]
    assert sorted(set(wrong)) == []


def session_cookies(response) -> list[str]:
    return [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]


def test_the_session_cookie_is_httponly_and_samesite_lax_wherever_it_is_set(open_app, visits):
    with open_app.app_context():
        make_user("ada@example.com")
    client = open_app.test_client()
    page = client.get(LOGIN_PATH).get_data(as_text=True)
    data = {
        "email": "ada@example.com",
        "password": TEST_PASSWORD,
        "csrf_token": csrf_token_from(page),
    }
    logged_in = client.post(LOGIN_PATH, data=data)
    cookies = session_cookies(logged_in) + [c for v in visits for c in session_cookies(v.response)]
    assert session_cookies(logged_in), "logging in set no session cookie"
    for cookie in cookies:
        flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
        assert "httponly" in flags, cookie
        assert "samesite=lax" in flags, cookie
