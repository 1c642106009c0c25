"""The migrations build exactly the schema the models describe, on PostgreSQL and SQLite."""

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from billing_site import create_app
from billing_site.extensions import db as _db
from tests.conftest import csrf_token_from


def test_models_and_migrations_agree_on_postgresql(db):
    # conftest built this database by running every migration.
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)

    assert differences == []


def test_migrations_upgrade_a_fresh_sqlite_file_and_the_site_runs_on_it(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'fresh.db'}",
            "SQLALCHEMY_ENGINE_OPTIONS": {},
            "RATELIMIT_STORAGE_URI": "memory://",
        }
    )
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
