"""The README's API client (issue 11, item 5), run exactly as written against a live server."""

import os
import re
import subprocess
import sys
from pathlib import Path

import requests
from sqlalchemy import func, select

from billing_site.extensions import db
from billing_site.models import ApiKey, Generation, LedgerEntry, Order
from tests.api_helpers import make_key
from tests.factories import make_customer

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_client() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-client -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no <!-- api-client --> python block"
    return match.group(1)


def test_the_readme_client_runs_against_the_site(app, live_server, tmp_path):
    user_id = make_customer(app)  # a new customer: the month's 10 free credits
    key = make_key(app, user_id, name="from the account page")
    script = tmp_path / "client.py"
    script.write_text(readme_client())

    finished = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PIXEL_FORGE_URL": live_server, "PIXEL_FORGE_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == "has credit: True balance: 10"
    assert lines[1:6] == [f"generation {n} charged 1 balance after {10 - n}" for n in range(1, 6)]
    checkout_url = re.fullmatch(r"pay \$5\.00 at (http://localhost/dev/checkout/cs_\S+)", lines[6])
    assert checkout_url
    assert lines[7].startswith("used 5 of 10 until ")
    assert re.fullmatch(r"payment \d+ pending \$5\.00", lines[8])
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Generation)) == 5
        spends = select(func.count()).where(LedgerEntry.kind == "spend")
        assert db.session.scalar(spends) == 5
        assert db.session.scalars(select(Order.status)).all() == ["pending"]
        assert db.session.scalars(select(ApiKey.name).order_by(ApiKey.id)).all() == [
            "from the account page",
            "nightly images",
        ]

    # A person pays at the checkout URL (the local stand-in plays Stripe, webhook and all);
    # the program then sees the payment and the credits.
    session_id = checkout_url.group(1).rsplit("/", 1)[-1]
    with app.app_context():
        app.extensions["stripe_gateway"].pay_checkout_session(session_id)
    headers = {"Authorization": f"Bearer {key}"}
    [payment] = requests.get(f"{live_server}/api/v1/payments", headers=headers, timeout=10).json()[
        "data"
    ]
    assert (payment["status"], payment["credits"], payment["amount"]["display"]) == (
        "paid",
        20,
        "$5.00",
    )
    assert payment["receipt_url"].endswith(f"/account/orders/{payment['id']}/receipt")
    me = requests.get(f"{live_server}/api/v1/me", headers=headers, timeout=10).json()
    assert me["balance"] == 5 + 20
