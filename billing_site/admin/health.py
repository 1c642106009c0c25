"""GET /admin/health: is Stripe reaching us, are events applied, is anything stuck?"""

from flask import render_template

from billing_site import observability
from billing_site.admin.routes import bp


@bp.get("/health")
def health():
    state = observability.current_state()
    return render_template(
        "admin/health.html",
        state=state,
        pinned_version=observability.PINNED_STRIPE_API_VERSION,
    )
