"""`flask sweep-generations`: a generation a dead worker left pending is failed and refunded once.

A worker killed between committing the charge and the generator's answer is
played by a generator that raises a BaseException: it escapes the service's
`except Exception` exactly as a SIGKILL skips it, leaving the generation
pending with its credits drawn. Time passing is played by moving the
generation's created_at back past the grace period.
"""

import threading
import time
from datetime import timedelta

from sqlalchemy import create_engine, select, text, update

from billing_site import credits
from billing_site.extensions import db
from billing_site.generate.services import STALE_REASON
from billing_site.generator import GeneratedImage, GeneratorError
from billing_site.models import CreditLot, Generation, LedgerEntry, utcnow
from tests.conftest import csrf_token_from
from tests.factories import logged_in, make_customer

STALE_AFTER = 600  # the default GENERATION_STALE_AFTER_SECONDS


class WorkerKilled(BaseException):
    """The worker died mid-generation: nothing after the charge's commit runs."""


class DyingGenerator:
    def generate(self, prompt, model):
        raise WorkerKilled


def post_generate(client, model="standard"):
    token = csrf_token_from(client.get("/generate").get_data(as_text=True))
    data = {"prompt": "a lighthouse at dusk", "model": model, "csrf_token": token}
    return client.post("/generate", data=data, headers={"HX-Request": "true"})


def crash_mid_generation(app, client, model="standard"):
    """Start a generation whose worker dies after the charge; return the generation's id."""
    app.extensions["generator"] = DyingGenerator()
    try:
        post_generate(client, model)
    except WorkerKilled:
        pass
    else:
        raise AssertionError("the generator was never called")
    del app.extensions["generator"]
    return newest_generation(app).id


def newest_generation(app):
    with app.app_context():
        return db.session.execute(
            select(Generation).order_by(Generation.id.desc()).limit(1)
        ).scalar_one()


def generation(app, generation_id):
    with app.app_context():
        return db.session.get(Generation, generation_id)


def age(app, generation_id, seconds):
    """Pretend the generation was started `seconds` ago."""
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.id == generation_id)
            .values(created_at=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()


def balance_of(app, user_id):
    with app.app_context():
        return credits.current_balance(user_id)


def lots_of(app, user_id):
    with app.app_context():
        rows = db.session.execute(
            select(CreditLot.id, CreditLot.credits_remaining)
            .where(CreditLot.user_id == user_id)
            .order_by(CreditLot.id)
        )
        return dict(rows.all())


def ledger_for(app, generation_id):
    with app.app_context():
        rows = db.session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.reference == f"generation:{generation_id}")
            .order_by(LedgerEntry.id)
        ).scalars()
        return [(row.kind, row.delta, row.lot_id) for row in rows]


def sweep(runner):
    result = runner.invoke(args=["sweep-generations"])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def customer_with_two_lots(app):
    """A Basic customer holding 1 pack credit (expiring first) and 1 admin credit."""
    user_id = make_customer(app, balance=1, tier="basic")
    with app.app_context():
        credits.grant(
            user_id,
            1,
            source="pack",
            source_ref=f"test-pack-{user_id}",
            expires_at=utcnow() + timedelta(days=30),
        )
        db.session.commit()
    return user_id


# --- a crash is swept up -----------------------------------------------------------------


def test_stale_pending_generation_is_failed_and_every_lot_gets_back_what_it_gave(
    app, client, runner
):
    user_id = customer_with_two_lots(app)
    logged_in(client, app, user_id)
    lots_before = lots_of(app, user_id)
    generation_id = crash_mid_generation(app, client, model="hd")
    assert generation(app, generation_id).status == "pending"
    assert balance_of(app, user_id) == 0  # the customer paid for nothing
    age(app, generation_id, STALE_AFTER + 60)

    output = sweep(runner)

    assert output == (
        f"Swept generations pending over {STALE_AFTER}s: 1 failed and refunded "
        "(2 credit(s) returned), 0 finished meanwhile, 0 error(s)."
    )
    swept = generation(app, generation_id)
    assert swept.status == "failed"
    assert swept.error == STALE_REASON
    assert swept.result is None
    assert balance_of(app, user_id) == 2
    assert lots_of(app, user_id) == lots_before
    spends = [entry for entry in ledger_for(app, generation_id) if entry[0] == "spend"]
    compensations = [entry for entry in ledger_for(app, generation_id) if entry[0] == "compensate"]
    assert len(spends) == 2  # one draw from each lot
    assert sorted(compensations) == sorted(("compensate", -delta, lot) for _, delta, lot in spends)


def test_the_dashboard_shows_the_swept_generation_as_failed_and_the_credits_returned(
    app, client, runner
):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    generation_id = crash_mid_generation(app, client)
    age(app, generation_id, STALE_AFTER + 60)
    sweep(runner)

    html = client.get("/account").get_data(as_text=True)

    assert 'class="pill pill-failed">failed<' in html
    assert "Credits returned — the generation failed" in html  # in the customer's words


def test_running_the_sweep_twice_refunds_once(app, client, runner):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    generation_id = crash_mid_generation(app, client)
    balance_after_charge = balance_of(app, user_id)
    age(app, generation_id, STALE_AFTER + 60)

    sweep(runner)
    second = sweep(runner)

    assert "0 failed and refunded (0 credit(s) returned)" in second
    assert balance_of(app, user_id) == balance_after_charge + 1
    assert [kind for kind, _, _ in ledger_for(app, generation_id)] == ["spend", "compensate"]


def test_a_visitors_stale_generation_is_failed_without_touching_any_balance(app, client, runner):
    generation_id = crash_mid_generation(app, client)
    age(app, generation_id, STALE_AFTER + 60)

    output = sweep(runner)

    assert "1 failed and refunded (0 credit(s) returned)" in output
    assert generation(app, generation_id).status == "failed"
    assert ledger_for(app, generation_id) == []


# --- what the sweep leaves alone -----------------------------------------------------------


def test_a_generation_pending_for_less_than_the_grace_period_is_left_alone(app, client, runner):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    generation_id = crash_mid_generation(app, client)
    balance_after_charge = balance_of(app, user_id)
    age(app, generation_id, STALE_AFTER - 60)

    output = sweep(runner)

    assert "0 failed and refunded" in output
    assert generation(app, generation_id).status == "pending"
    assert balance_of(app, user_id) == balance_after_charge
    assert [kind for kind, _, _ in ledger_for(app, generation_id)] == ["spend"]


def test_the_grace_period_comes_from_configuration(make_app, client):
    app = make_app(GENERATION_STALE_AFTER_SECONDS=30)
    client = app.test_client()
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    generation_id = crash_mid_generation(app, client)
    age(app, generation_id, 60)

    output = sweep(app.test_cli_runner())

    assert output.startswith("Swept generations pending over 30s: 1 failed and refunded")
    assert generation(app, generation_id).status == "failed"


def test_finished_generations_are_untouched_however_old(app, client, runner):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    assert post_generate(client).status_code == 200
    succeeded_id = newest_generation(app).id
    app.extensions["generator"] = FailingGenerator()
    assert post_generate(client).status_code == 503
    failed_id = newest_generation(app).id
    for generation_id in (succeeded_id, failed_id):
        age(app, generation_id, 7 * 86400)
    balance_before = balance_of(app, user_id)

    output = sweep(runner)

    assert "0 failed and refunded" in output
    assert generation(app, succeeded_id).status == "succeeded"
    assert generation(app, succeeded_id).result.startswith("<svg")
    assert generation(app, failed_id).error == "the GPU caught fire"
    assert balance_of(app, user_id) == balance_before
    assert [kind for kind, _, _ in ledger_for(app, succeeded_id)] == ["spend"]
    assert [kind for kind, _, _ in ledger_for(app, failed_id)] == ["spend", "compensate"]


class FailingGenerator:
    def generate(self, prompt, model):
        raise GeneratorError("the GPU caught fire")


# --- a slow generation racing the sweep ------------------------------------------------------


class SweptWhileGenerating:
    """A generator so slow that the sweep runs (in another process, say) before it answers."""

    def __init__(self, app, runner, then):
        self.app = app
        self.runner = runner
        self.then = then
        self.sweep_output = None

    def generate(self, prompt, model):
        age(self.app, newest_generation(self.app).id, STALE_AFTER + 60)
        # A thread starts with no app context, so the sweep gets its own
        # session and connection, as a cron job would.
        thread = threading.Thread(target=self._sweep)
        thread.start()
        thread.join()
        return self.then(prompt, model)

    def _sweep(self):
        self.sweep_output = sweep(self.runner)


def test_a_generation_that_answers_after_being_swept_is_not_marked_succeeded_nor_charged_again(
    app, client, runner
):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    client.get("/generate")  # the month's free credits are granted on first touch
    balance_before = balance_of(app, user_id)
    slow = SweptWhileGenerating(app, runner, then=lambda prompt, model: GeneratedImage("<svg/>"))
    app.extensions["generator"] = slow

    response = post_generate(client)

    assert "1 failed and refunded (1 credit(s) returned)" in slow.sweep_output
    assert response.status_code == 503
    assert "Your credits were returned" in response.get_data(as_text=True)
    swept = newest_generation(app)
    assert swept.status == "failed"
    assert swept.result is None
    assert balance_of(app, user_id) == balance_before
    assert [kind for kind, _, _ in ledger_for(app, swept.id)] == ["spend", "compensate"]


def test_a_generation_that_fails_after_being_swept_is_not_refunded_twice(app, client, runner):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    client.get("/generate")  # the month's free credits are granted on first touch
    balance_before = balance_of(app, user_id)
    app.extensions["generator"] = SweptWhileGenerating(
        app, runner, then=FailingGenerator().generate
    )

    response = post_generate(client)

    assert response.status_code == 503
    swept = newest_generation(app)
    assert swept.error == STALE_REASON  # the sweep's word stands
    assert balance_of(app, user_id) == balance_before
    assert [kind for kind, _, _ in ledger_for(app, swept.id)] == ["spend", "compensate"]


def test_a_generation_finishing_while_the_sweep_waits_for_its_row_is_not_refunded(
    app, client, runner, database_url
):
    user_id = make_customer(app, balance=3)
    logged_in(client, app, user_id)
    generation_id = crash_mid_generation(app, client)
    balance_after_charge = balance_of(app, user_id)
    age(app, generation_id, STALE_AFTER + 60)
    engine = create_engine(database_url)
    outputs = []
    try:
        with engine.connect() as finisher:
            # The request finishing: it holds the generation's row while it writes the result.
            finisher.execute(
                text("SELECT id FROM generations WHERE id = :id FOR UPDATE"), {"id": generation_id}
            )
            sweeper = threading.Thread(target=lambda: outputs.append(sweep(runner)))
            sweeper.start()
            wait_until_a_session_waits_for_a_row_lock(engine)
            finisher.execute(
                text(
                    "UPDATE generations SET status = 'succeeded', result = '<svg/>' WHERE id = :id"
                ),
                {"id": generation_id},
            )
            finisher.commit()
            sweeper.join()
    finally:
        engine.dispose()

    assert outputs == [
        f"Swept generations pending over {STALE_AFTER}s: 0 failed and refunded "
        "(0 credit(s) returned), 1 finished meanwhile, 0 error(s)."
    ]
    assert generation(app, generation_id).status == "succeeded"
    assert balance_of(app, user_id) == balance_after_charge
    assert [kind for kind, _, _ in ledger_for(app, generation_id)] == ["spend"]


def wait_until_a_session_waits_for_a_row_lock(engine, limit_seconds=10):
    """Block until some other session is queued on a lock (the sweep on the generation's row)."""
    deadline = time.monotonic() + limit_seconds
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
            if waiting:
                return
            watcher.rollback()
            time.sleep(0.02)
    raise AssertionError("the sweep never reached the generation's row lock")
