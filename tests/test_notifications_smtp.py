"""A real SMTP server on loopback (aiosmtpd): mail goes out after the commit, and a mail
server that refuses or is down never fails the payment; the message is retried."""

import email
import email.policy
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from billing_site.extensions import db as _db
from billing_site.models import Order, OutboundEmail, utcnow
from billing_site.notifications import send_due_emails
from billing_site.notifications.outbox import MAX_ATTEMPTS, mail_settings, retry_delay
from tests.conftest import csrf_token_from
from tests.factories import make_order, make_user
from tests.servers import free_port
from tests.stripe_events import checkout_session, make_event, post_event


class MailServer:
    """Accepts (and keeps) every message, or refuses them all while `refusing`."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refusing = False

    async def handle_DATA(self, server, session, envelope):
        if self.refusing:
            return "554 5.3.0 Mailbox unavailable (refused by the test)"
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


@pytest.fixture
def mail_server():
    handler = MailServer()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.url = f"smtp://127.0.0.1:{controller.port}"
    yield handler
    controller.stop()


def the_email() -> OutboundEmail:
    _db.session.expire_all()
    return _db.session.execute(select(OutboundEmail)).scalar_one()


def pay(client, user, item="pro") -> Order:
    order = make_order(user, item)
    response = post_event(client, make_event("checkout.session.completed", checkout_session(order)))
    assert response.status_code == 200, response.get_data(as_text=True)
    return order


def test_a_receipt_goes_out_once_after_the_payment_commits(make_app, mail_server):
    app = make_app(
        MAIL_URL=mail_server.url, MAIL_DEFAULT_SENDER="Pixel Forge <billing@pixelforge.test>"
    )
    client = app.test_client()
    with app.app_context():
        order = pay(client, make_user("buyer@example.com"))
        for _ in range(4):  # redeliveries
            post_event(client, make_event("checkout.session.completed", checkout_session(order)))

        sent = the_email()
        assert (sent.status, sent.attempts) == ("sent", 1)
        [message] = mail_server.messages
        assert message["To"] == "buyer@example.com"
        assert message["From"] == "Pixel Forge <billing@pixelforge.test>"
        assert message["Subject"] == "Receipt: Pro Pack (100 credits), $20.00"
        assert message["Message-ID"].startswith(f"<{sent.id}.")
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "Amount paid: $20.00" in text
        assert "<h1" in html and "Thank you, your payment went through" in html


def test_a_refusing_mail_server_leaves_the_payment_applied_and_the_message_retried(
    make_app, mail_server
):
    mail_server.refusing = True
    app = make_app(MAIL_URL=mail_server.url)
    client = app.test_client()
    with app.app_context():
        order = pay(client, make_user("buyer@example.com"))

        assert _db.session.get(Order, order.id).status == "paid"  # the webhook answered 200
        queued = the_email()
        assert (queued.status, queued.attempts) == ("queued", 1)
        assert "554" in queued.last_error
        assert queued.next_attempt_at > utcnow() + timedelta(seconds=50)  # backoff
        assert send_due_emails() == {}  # not due yet

        mail_server.refusing = False
        assert send_due_emails(now=utcnow() + timedelta(minutes=2)) == {"sent": 1}
        assert send_due_emails(now=utcnow() + timedelta(days=1)) == {}
        assert (the_email().status, the_email().attempts) == ("sent", 2)
        assert len(mail_server.messages) == 1


def test_a_mail_server_that_is_down_is_retried_with_backoff_then_given_up(make_app, runner):
    app = make_app(MAIL_URL=f"smtp://127.0.0.1:{free_port()}", MAIL_TIMEOUT=2)  # nobody there
    client = app.test_client()
    with app.app_context():
        order = pay(client, make_user())
        assert _db.session.get(Order, order.id).status == "paid"
        later = utcnow()
        for attempt in range(2, MAX_ATTEMPTS + 1):
            later += retry_delay(attempt - 1) + timedelta(seconds=1)
            send_due_emails(now=later)
        given_up = the_email()
        assert (given_up.status, given_up.attempts) == ("failed", MAX_ATTEMPTS)
        assert "Connection refused" in given_up.last_error or "111" in given_up.last_error
        assert retry_delay(1) == timedelta(minutes=1) and retry_delay(30) == timedelta(hours=6)

    result = app.test_cli_runner().invoke(args=["send-emails"])
    assert result.exit_code == 0 and "none due" in result.output


def test_mail_url_is_read_into_flask_mailmans_settings():
    assert mail_settings("smtp://ann%40x.org:s3cr%2Ft@mail.example.com:587?tls=1") == {
        "MAIL_BACKEND": "smtp",
        "MAIL_SERVER": "mail.example.com",
        "MAIL_PORT": 587,
        "MAIL_USERNAME": "ann@x.org",
        "MAIL_PASSWORD": "s3cr/t",
        "MAIL_USE_TLS": True,
        "MAIL_USE_SSL": False,
    }
    assert mail_settings("smtps://mail.example.com")["MAIL_PORT"] == 465
    from billing_site.config import ConfigError

    with pytest.raises(ConfigError, match="MAIL_URL"):
        mail_settings("http://mail.example.com")


def test_a_reset_link_is_sent_by_the_worker_not_by_the_request(make_app, mail_server):
    from billing_site.worker.jobs import JOBS

    app = make_app(MAIL_URL=mail_server.url)
    client = app.test_client()
    with app.app_context():
        make_user("ada@example.com")
        token = csrf_token_from(client.get("/auth/reset").get_data(as_text=True))
        answer = client.post("/auth/reset", data={"email": "ada@example.com", "csrf_token": token})
        assert answer.status_code == 200

        # Not sent by the request: a known and an unknown address take the same time.
        assert the_email().status == "queued"
        assert mail_server.messages == []
        assert JOBS["send-emails"].run() == "1 sent"
        [message] = mail_server.messages
        assert message["To"] == "ada@example.com"
        assert "/auth/reset/" in message.get_body(("plain",)).get_content()
