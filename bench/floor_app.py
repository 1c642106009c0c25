"""The floors: the least a Flask app on this stack can do for the same requests.

Served by the same gunicorn, with the same worker count, against the same
PostgreSQL as the site, so the ratio site/floor says what the site's own work
costs rather than what the machine can do:

- POST /webhook verifies the Stripe signature exactly as Stripe's library does
  and inserts one row (the webhook floor);
- GET /page renders a static page (templates/floor_page.html) through Jinja
  (the page floor).

Configured by FLOOR_DATABASE_URL and STRIPE_WEBHOOK_SECRET; bench.run creates
the floor_events table before the workers start.
"""

import os

import stripe
from flask import Flask, render_template, request
from sqlalchemy import create_engine, text

WEBHOOK_TOLERANCE_SECONDS = 300

app = Flask(__name__)
engine = create_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=2, max_overflow=2)
secret = os.environ["STRIPE_WEBHOOK_SECRET"]


@app.post("/webhook")
def webhook():
    payload = request.get_data()
    try:
        stripe.WebhookSignature.verify_header(
            payload, request.headers.get("Stripe-Signature", ""), secret, WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError:
        return "bad signature", 400
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO floor_events (event_id) VALUES (:event_id)"),
            {"event_id": request.get_json()["id"]},
        )
    return "", 200


@app.get("/page")
def page():
    # A template file, loaded and compiled once per worker as the site's are; it is
    # about the pricing page's size (~8 KB), so bytes on the wire are no confound.
    return render_template("floor_page.html", title="The page floor")
