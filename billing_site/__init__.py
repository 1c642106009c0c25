"""The billing site: an app factory and the steps that assemble the app."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from billing_site.catalog import load_catalog
from billing_site.config import INSTANCE_DIR, PROJECT_ROOT, finalize_config, load_config
from billing_site.extensions import csrf, db, limiter, login_manager, migrate, talisman

# Stripe Checkout and the billing portal are reached by a redirect after a form
# POST, which Chromium checks against form-action.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": ["'self'", "data:"],
    "connect-src": "'self'",
    "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"],
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "object-src": "'none'",
}


def create_app(overrides: dict | None = None) -> Flask:
    """Build the app from the environment, with `overrides` applied on top."""
    app = Flask(
        __name__,
        instance_path=str(INSTANCE_DIR),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    config = load_config()
    config.update(overrides or {})
    finalize_config(config)
    app.config.update(config)
    INSTANCE_DIR.mkdir(exist_ok=True)

    configure_logging(app)
    register_extensions(app)
    refuse_hostile_input(app)
    answer_stripe_without_the_page_hooks(app)
    limit_request_bodies(app)  # outside the webhook lane: its read deadline covers it too
    install_edge_rules(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    register_template_context(app)
    serve_anonymous_pricing_from_memory(app)
    # Last, so the page cache (above) sees the client and scheme ProxyFix settles on.
    trust_proxies(app)
    return app


def configure_logging(app: Flask) -> None:
    """Request ids on every line, JSON with LOG_FORMAT=json, request metrics."""
    from billing_site import logs, metrics

    logs.configure(app)
    metrics.init_app(app)


def trust_proxies(app: Flask) -> None:
    """Believe X-Forwarded-* only from as many proxies as the operator runs."""
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def refuse_hostile_input(app: Flask) -> None:
    from billing_site.input_edges import install_input_edges

    install_input_edges(app)


def answer_stripe_without_the_page_hooks(app: Flask) -> None:
    from billing_site.webhook.lane import install_webhook_lane

    install_webhook_lane(app)


def limit_request_bodies(app: Flask) -> None:
    from billing_site.request_limits import install_body_limits

    install_body_limits(app)


def install_edge_rules(app: Flask) -> None:
    from billing_site.edge import install_edge_rules as install

    install(app)


def serve_anonymous_pricing_from_memory(app: Flask) -> None:
    from billing_site.pricing.page_cache import cache_anonymous_page

    cache_anonymous_page(app, "pricing.index", "pricing.home")


def register_extensions(app: Flask) -> None:
    import billing_site.models  # noqa: F401  (registers every table on db.metadata)
    from billing_site.database import configure_database
    from billing_site.notifications import outbox
    from billing_site.stripe_gateway import build_gateway

    db.init_app(app)
    configure_database(app)
    outbox.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    # The shared Limiter keeps the first app's RATELIMIT_DEFAULT and ignores a
    # later app's; each app (the tests build many) starts from its own config.
    limiter.limit_manager.set_default_limits([])
    limiter.init_app(app)
    talisman.init_app(
        app,
        content_security_policy=CONTENT_SECURITY_POLICY,
        # billing_site.edge redirects instead: /healthz exempt, the host pinned.
        force_https=False,
        strict_transport_security=app.config["FORCE_HTTPS"],
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
    )
    app.extensions["catalog"] = load_catalog(app.config["CATALOG_FILE"])
    app.extensions["stripe_gateway"] = build_gateway(app.config)
    from billing_site import stripe_contract

    stripe_contract.install(app)


def register_blueprints(app: Flask) -> None:
    from billing_site import (
        account,
        admin,
        api,
        auth,
        checkout,
        dev,
        generate,
        health,
        metrics_routes,
        pricing,
    )
    from billing_site.notifications import dev_routes as dev_mail
    from billing_site.notifications import preferences
    from billing_site.webhook import routes as webhook

    for module in (pricing, auth, checkout, webhook, account, generate, admin, health, api):
        app.register_blueprint(module.bp)
    app.register_blueprint(metrics_routes.bp)
    app.register_blueprint(preferences.bp)
    app.register_blueprint(api.key_pages_bp)
    # The local test checkout exists only where there is no real Stripe to use.
    if app.extensions["stripe_gateway"].is_local:
        app.register_blueprint(dev.bp)
        app.register_blueprint(dev_mail.bp)


def register_error_handlers(app: Flask) -> None:
    from billing_site.errors import register_error_handlers as register

    register(app)


def register_commands(app: Flask) -> None:
    from billing_site.commands import register_commands as register

    register(app)


def register_template_context(app: Flask) -> None:
    from flask_login import current_user

    from billing_site import formatting
    from billing_site.account.services import nav_badge

    formatting.register(app)

    @app.context_processor
    def layout_context():
        badge = nav_badge(current_user) if current_user.is_authenticated else {}
        return {
            "nav_balance": badge.get("balance"),
            "nav_unlimited": badge.get("unlimited", False),
            "nav_shows_badge": badge.get("shown", False),
            "oob": False,
            "stripe_is_local": app.extensions["stripe_gateway"].is_local,
        }
