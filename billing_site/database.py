"""How requests use the database connections: commit what only read, ping what sat idle.

- A request that only read commits its transaction at the end instead of rolling
  it back. The answer is the same, but psycopg throws away every prepared
  statement on a ROLLBACK, so read-only pages (the account page) never got to
  reuse theirs; committing roughly halves PostgreSQL's CPU on them. A request
  that wrote anything it did not commit itself (or failed) is rolled back, as before.
- Instead of SQLAlchemy's pool_pre_ping (a round trip before every transaction),
  a connection is pinged only when it comes out of the pool after sitting idle
  for DATABASE_IDLE_PING_SECONDS: that is when a PostgreSQL restart, a failover
  or an idle timeout has had the chance to kill it. A dead one is replaced
  before the request sees it. A connection killed while in use is still detected
  by SQLAlchemy, which invalidates it and every connection pooled before it.
"""

import time

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from billing_site.extensions import db

# Key in a connection's info: it ran something other than a SELECT in this transaction.
WROTE = "transaction_wrote"
CHECKED_IN_AT = "checked_in_at"


def configure_database(app: Flask) -> None:
    """Call after db.init_app(app): hooks the app's engine and its request teardown."""
    with app.app_context():
        engine = db.engine
    _track_writes(engine)
    if not app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping"):
        _ping_when_idle(engine, app.config["DATABASE_IDLE_PING_SECONDS"])
    # Registered after Flask-SQLAlchemy's own teardown, so it runs before it
    # (Flask runs teardowns last-registered first) and finds the session open.
    app.teardown_appcontext(_end_read_only_transaction)


def _end_read_only_transaction(error: BaseException | None) -> None:
    if error is not None or not db.session.registry.has():
        return
    session = db.session()
    transaction = session.get_transaction()
    if transaction is None or not transaction.is_active:
        return  # Flask-SQLAlchemy's teardown rolls back (and closes) as before
    if session.new or session.dirty or session.deleted:
        return  # unflushed changes nobody committed: never commit them here
    connection = session.connection()
    if connection.invalidated or connection.info.get(WROTE):
        return
    # Without expiring: the objects leave the session as a rollback-and-close
    # would leave them, still readable (a test or a CLI command may hold some).
    session.expire_on_commit = False
    session.commit()


def _track_writes(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def note_write(connection, cursor, statement, parameters, context, executemany):
        if statement.lstrip()[:6].upper() != "SELECT":
            connection.info[WROTE] = True

    @event.listens_for(engine, "begin")
    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def forget_writes(connection):
        if not connection.invalidated:  # a dead connection's info went with it
            connection.info.pop(WROTE, None)


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def note_checkin(dbapi_connection, connection_record):
        connection_record.info[CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, connection_record, connection_proxy):
        checked_in_at = connection_record.info.get(CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return  # new, or in use a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            if not engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise
            alive = False
        if not alive:
            # The pool discards this connection and checks out another (a new one).
            raise DisconnectionError("pooled connection was dead after sitting idle")
