"""Spending on a generation: reserve, generate, and give back if generating fails.

The credits are reserved (and the pending Generation committed) in one
transaction *before* the generator is called, so a slow or failing generator
never holds the user's row locked, and a crash mid-generation leaves a visible
pending row rather than a free image. A failure writes a compensating entry;
so does `flask sweep-generations` for a row a crash left pending too long.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from billing_site import credits, metrics
from billing_site.account.services import grant_free_allowance, tier_of, unlocked_models
from billing_site.catalog import Model, Tier, current_catalog
from billing_site.extensions import db
from billing_site.generate.forms import GenerationInput
from billing_site.generator import GeneratedImage, current_generator
from billing_site.models import Generation, LedgerEntry, User, utcnow
from billing_site.notifications import hooks as notify

log = logging.getLogger(__name__)


class GenerationRefused(Exception):
    """The generation did not happen; `message` says why and what to do."""

    status = 400
    code = "generation_refused"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OutOfCredits(GenerationRefused):
    status = 402
    code = "insufficient_credits"

    def __init__(self, balance: int, cost: int):
        if balance < 0:
            message = (
                f"Your balance is {balance} credits after a refund. Top it up to keep generating."
            )
        else:
            message = (
                f"This generation costs {cost} credit{'s' if cost != 1 else ''} "
                f"and you have {balance}. Buy a pack or subscribe to keep generating."
            )
        super().__init__(message)
        self.balance = balance
        self.cost = cost


class ModelNotInTier(GenerationRefused):
    status = 403
    code = "model_not_in_tier"

    def __init__(self, model: Model, tier: Tier | None):
        if tier is None:
            message = f"The {model.name} model is for customers. Sign up, then upgrade to use it."
        else:
            message = f"The {model.name} model is not in the {tier.name} plan. Upgrade to use it."
        super().__init__(message)
        self.model = model
        self.tier = tier


class GenerationFailed(GenerationRefused):
    status = 503
    code = "generation_failed"

    def __init__(self, refunded: bool):
        message = "The image generator is not available right now. "
        message += "Your credits were returned; please try again." if refunded else "Try again."
        super().__init__(message)


@dataclass(frozen=True)
class GenerationResult:
    generation: Generation
    image: GeneratedImage
    balance: int | None  # None for an anonymous visitor


def generate_for_customer(user_id: int, request: GenerationInput) -> GenerationResult:
    """Generate for a customer, charging the model's cost (nothing on an unlimited tier).

    Raises ModelNotInTier, OutOfCredits (nothing written) or GenerationFailed
    (the credits given back with a compensating entry).
    """
    user = db.session.get(User, user_id)
    tier = tier_of(user)
    model = current_catalog().model(request.model)
    if not _may_use(user, tier, model):
        raise ModelNotInTier(model, tier)
    generation, draws, balance = _reserve(user, tier, model, request.prompt)
    image = _run(generation, draws)
    return GenerationResult(generation, image, balance)


def _may_use(user: User, tier: Tier, model: Model) -> bool:
    """The plan's models, or a pack buyer's: the plan is asked first, as it needs no query."""
    return model.id in tier.models or model.id in unlocked_models(user, tier)


def generation_cost(tier: Tier, model: Model) -> int:
    """Credits one generation of `model` takes on `tier` (none on an unlimited tier)."""
    return 0 if tier.is_unlimited else model.cost


@dataclass(frozen=True)
class CreditCheck:
    """Whether `count` generations of `model` would go through now, and if not, why."""

    has_credit: bool
    cost: int
    reason: str | None  # None, "model_not_in_tier", "insufficient_credits", "free_uses_exhausted"
    shortfall: int  # credits missing (0 unless insufficient_credits)


def check_credit(user: User, model: Model, count: int = 1) -> CreditCheck:
    """The rules generate_for_customer applies, asked without spending (grants the month first)."""
    grant_free_allowance(user)
    db.session.commit()
    tier = tier_of(user)
    cost = generation_cost(tier, model) * count
    balance = credits.current_balance(user.id)
    if model.id not in tier.models:
        return CreditCheck(False, cost, "model_not_in_tier", 0)
    # A negative balance (after a clawback) blocks even an unlimited tier.
    needed = max(cost, 0 if tier.is_unlimited else 1)
    if balance < needed:
        return CreditCheck(False, cost, "insufficient_credits", needed - balance)
    return CreditCheck(True, cost, None, 0)


def check_visitor(model: Model, count: int, free_left: int | None) -> CreditCheck:
    """The same question for an anonymous visitor: free-tier models, within the daily cap."""
    if model.id not in current_catalog().free_tier.models:
        return CreditCheck(False, 0, "model_not_in_tier", 0)
    if free_left is not None and free_left < count:
        return CreditCheck(False, 0, "free_uses_exhausted", 0)
    return CreditCheck(True, 0, None, 0)


def generate_for_visitor(client_key: str, request: GenerationInput) -> GenerationResult:
    """Generate for an anonymous visitor (capped by the rate limiter, never charged)."""
    catalog = current_catalog()
    model = catalog.model(request.model)
    if model.id not in catalog.free_tier.models:
        raise ModelNotInTier(model, None)
    generation = _insert_pending(client_key=client_key, prompt=request.prompt, model=model.id)
    db.session.commit()
    image = _run(generation, [])
    return GenerationResult(generation, image, None)


def _reserve(
    user: User, tier: Tier, model: Model, prompt: str
) -> tuple[Generation, list[credits.Draw], int]:
    """Commit a pending generation with its credits taken, or raise OutOfCredits.

    Returns the generation (detached, see _insert_pending), what was drawn, and
    the balance the spend left, read under the user's lock, so the answer needs
    no transaction of its own to show it.
    """
    # Lock the user row before inserting the generation: the insert's foreign key
    # takes a share lock on that row, and two requests each holding one while
    # waiting for FOR UPDATE would deadlock.
    credits.lock_user(user.id)
    grant_free_allowance(user)
    cost = generation_cost(tier, model)
    try:
        # Refused before anything is written; spend() checks the same again.
        credits.lock_user_covering(user.id, cost)
        generation = _insert_pending(
            user_id=user.id, prompt=prompt, model=model.id, credits_charged=cost
        )
        draws = credits.spend(user.id, cost, reference=_reference(generation)) if cost else []
    except credits.InsufficientCredits as error:
        db.session.rollback()
        metrics.count_credit_check(model.id, purchase_required=True)
        raise OutOfCredits(error.balance, cost or 1) from error
    if cost:
        notify.balance_spent(user.id)  # a low-balance email, once per top-up
    balance = user.balance  # before the commit expires it
    db.session.commit()
    metrics.count_credit_check(model.id, purchase_required=False)
    return generation, draws, balance


def _run(generation: Generation, draws: list[credits.Draw]) -> GeneratedImage:
    try:
        image = current_generator().generate(generation.prompt, generation.model)
    except Exception as error:
        # Any failure, not only GeneratorError: the customer paid before we
        # called, so whatever went wrong they get their credits back.
        log.warning("generation %s failed: %r", generation.id, error)
        _fail(generation, draws, getattr(error, "message", None) or repr(error))
        raise GenerationFailed(refunded=bool(draws)) from error
    if not _finish(generation, image):
        # The sweep gave up on this generation (and returned its credits) while
        # the generator was still working: the record says failed, so we say so too.
        raise GenerationFailed(refunded=bool(draws))
    return image


# On the table, not the entity: a plain UPDATE skips the ORM's DML machinery.
_generations = Generation.__table__
FINISH_PENDING = (
    update(_generations)
    .where(_generations.c.id == bindparam("generation_id"), _generations.c.status == "pending")
    .values(status="succeeded", result=bindparam("svg"))
)

# A plain INSERT skips the ORM's unit of work. Its columns are the parameters'
# keys (SQLAlchemy caches the compiled form per set of keys).
INSERT_PENDING = insert(_generations).returning(_generations.c.id)


def _insert_pending(**fields) -> Generation:
    """Insert a pending generation (not committed) and return it, detached from the session.

    Detached, so a commit does not expire it: the generator, _finish and the
    answer read it as it was written, without a query.
    """
    values = {
        "user_id": None,
        "client_key": None,
        "credits_charged": 0,
        "status": "pending",
        "result": None,
        "error": None,
        "created_at": utcnow(),
        **fields,
    }
    generation_id = db.session.connection().execute(INSERT_PENDING, values).scalar_one()
    # Every column given, so the object is complete: as if just loaded, and
    # never in this session.
    generation = Generation(id=generation_id, **values)
    make_transient_to_detached(generation)
    return generation


def _finish(generation: Generation, image: GeneratedImage) -> bool:
    """Mark the generation succeeded, or do nothing and return False if it is no longer pending.

    One conditional UPDATE: it waits for a sweep holding the row's lock and then
    re-checks `status = 'pending'` on the row as the sweep left it, so a
    generation the sweep failed (and refunded) is never marked succeeded.
    """
    finished = (
        db.session.connection()
        .execute(FINISH_PENDING, {"generation_id": generation.id, "svg": image.svg})
        .rowcount
    )
    if not finished:
        status = db.session.scalar(select(Generation.status).where(Generation.id == generation.id))
        db.session.rollback()
        log.warning(
            "generation %s finished after it was marked %s; result discarded",
            generation.id,
            status,
        )
        return False
    db.session.commit()
    metrics.GENERATIONS.labels(status="succeeded").inc()
    if generation not in db.session:  # the detached copy _reserve handed out
        set_committed_value(generation, "status", "succeeded")
        set_committed_value(generation, "result", image.svg)
    return True


def _fail(
    generation: Generation,
    draws: list[credits.Draw],
    reason: str,
    note: str = "generation failed; credits returned",
) -> bool:
    """Mark the generation failed and give back exactly what it took, in one commit.

    Only a pending generation is failed: under its row lock the status is
    re-read, so the request's own failure path and the sweep can both try and
    the credits still come back once. Returns False, writing nothing, otherwise.
    """
    db.session.rollback()  # whatever the generator left half-done in the session
    if generation.user_id is not None:
        # The user's row before the generation's, the order every path takes
        # (reserve, fail, sweep), so two of them can never deadlock.
        credits.lock_user(generation.user_id)
    generation = _lock_generation(generation.id)
    if generation.status != "pending":
        db.session.rollback()
        return False
    if draws:
        credits.compensate(generation.user_id, draws, reference=_reference(generation), note=note)
    generation.status = "failed"
    generation.error = reason[:1000]
    db.session.commit()
    metrics.GENERATIONS.labels(status="failed").inc()
    return True


def _lock_generation(generation_id: int) -> Generation:
    """The generation's row, locked for the rest of the transaction and freshly read."""
    statement = (
        select(Generation)
        .where(Generation.id == generation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one()


def _reference(generation: Generation) -> str:
    return f"generation:{generation.id}"


# --- sweeping up generations a crash left pending ---------------------------------------

STALE_REASON = (
    "The generation did not finish: the server stopped while making it. "
    "Any credits it took were returned."
)
STALE_NOTE = "generation did not finish; credits returned"


@dataclass(frozen=True)
class SweepResult:
    failed: int  # stale generations marked failed
    credits_returned: int
    finished_meanwhile: int  # found stale, but done by the time we held its lock
    errors: int  # could not be swept; left pending for the next run


def sweep_stale_generations(stale_after: timedelta, now: datetime | None = None) -> SweepResult:
    """Fail every generation pending for longer than `stale_after` and return its credits, once.

    A worker killed between the charge and the generator's answer leaves its
    generation pending for ever; this gives the customer back exactly what was
    drawn. Each generation is its own transaction, so one bad row does not hold
    up the rest, and running it twice (or beside a request finishing late)
    returns nothing twice: `_fail` acts only on a row still pending under its lock.
    """
    cutoff = (now or utcnow()) - stale_after
    stale_ids = (
        db.session.execute(
            select(Generation.id)
            .where(Generation.status == "pending", Generation.created_at < cutoff)
            .order_by(Generation.id)
        )
        .scalars()
        .all()
    )
    failed = returned = finished = errors = 0
    for generation_id in stale_ids:
        try:
            generation = db.session.get(Generation, generation_id)
            draws = _draws_recorded_for(generation)
            if not _fail(generation, draws, STALE_REASON, note=STALE_NOTE):
                finished += 1
                continue
            credits_returned = sum(draw.credits for draw in draws)
            failed += 1
            returned += credits_returned
            log.warning(
                "swept stale generation %s user=%s credits_returned=%s",
                generation_id,
                generation.user_id,
                credits_returned,
            )
        except Exception:
            db.session.rollback()
            log.exception("could not sweep generation %s", generation_id)
            errors += 1
    return SweepResult(failed, returned, finished, errors)


def _draws_recorded_for(generation: Generation) -> list[credits.Draw]:
    """What `_reserve` took, read back from its spend entries (one per lot drawn from).

    Those entries commit in the same transaction as the pending generation, so
    a pending generation's draws are always there to read.
    """
    if generation.user_id is None:
        return []  # a visitor's generation is never charged
    entries = db.session.execute(
        select(LedgerEntry.lot_id, LedgerEntry.delta)
        .where(
            LedgerEntry.user_id == generation.user_id,
            LedgerEntry.reference == _reference(generation),
            LedgerEntry.kind == "spend",
        )
        .order_by(LedgerEntry.id)
    ).all()
    return [credits.Draw(lot_id, -delta) for lot_id, delta in entries]
