"""The migrations build exactly the schema the models describe, on PostgreSQL and SQLite."""

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from billing_site import create_app
from billing_site.extensions import db as _db
from tests.conftest import csrf_token_from


def test_models_and_migrations_agree_on_postgresql(db):
    # conftest built this database by running every migration.
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)

    assert differences == []


def sqlite_app(path):
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            "SQLALCHEMY_ENGINE_OPTIONS": {},
            "RATELIMIT_STORAGE_URI": "memory://",
        }
    )


def test_migrations_upgrade_a_fresh_sqlite_file_and_the_site_runs_on_it(tmp_path):
    app = sqlite_app(tmp_path / "fresh.db")
    try:
        with app.app_context():
            flask_migrate.upgrade()
            tables = set(inspect(_db.engine).get_table_names())
        assert {table.name for table in _db.metadata.sorted_tables} <= tables

        client = app.test_client()
        assert client.get("/pricing").status_code == 200
        token = csrf_token_from(client.get("/auth/signup").get_data(as_text=True))
        password = "a fresh password"
        data = {"email": "ada@example.com", "password": password, "password_confirm": password}
        signup = client.post("/auth/signup", data={**data, "csrf_token": token})
        assert "Check your inbox" in signup.get_data(as_text=True)
        login = {"email": "ada@example.com", "password": password, "csrf_token": token}
        assert client.post("/auth/login", data=login).status_code == 302
        assert "Log out" in client.get("/pricing").get_data(as_text=True)
    finally:
        with app.app_context():
            _db.session.remove()
            _db.engine.dispose()


def test_0012_fills_in_each_customers_last_top_up_from_their_lots(tmp_path):
    app = sqlite_app(tmp_path / "before.db")
    lot = (
        "INSERT INTO credit_lots (user_id, source, source_ref, credits_granted,"
        " credits_remaining, created_at) VALUES (:user, :source, :ref, :credits, 0, :at)"
    )
    try:
        with app.app_context():
            flask_migrate.upgrade(revision="0010")
            for user in (1, 2, 3):
                _db.session.execute(
                    text(
                        "INSERT INTO users (id, email, password_hash, is_admin, balance,"
                        " session_version, created_at, updated_at) VALUES (:id, :email, 'x',"
                        " false, 0, 0, '2026-01-01', '2026-01-01')"
                    ),
                    {"id": user, "email": f"c{user}@example.com"},
                )
            for user, source, ref, credits, at in [
                (1, "pack", "a", 100, "2026-01-01"),
                (1, "admin", "b", 40, "2026-02-01"),
                (1, "restore", "c", 7, "2026-03-01"),  # a refund reversed: not a top-up
                (2, "debt", "d", 5, "2026-01-01"),
            ]:
                params = {"user": user, "source": source, "ref": ref}
                _db.session.execute(text(lot), params | {"credits": credits, "at": at})
            _db.session.commit()

            flask_migrate.upgrade()

            rows = _db.session.execute(
                text("SELECT id, last_top_up_credits FROM users ORDER BY id")
            ).all()
        assert [tuple(row) for row in rows] == [(1, 40), (2, None), (3, None)]
    finally:
        with app.app_context():
            _db.session.remove()
            _db.engine.dispose()
