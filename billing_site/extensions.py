"""Bare extension instances; create_app binds them to the app."""

from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, bindparam
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase

from billing_site.client_identity import client_key

# Named constraints, so Alembic can alter them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
talisman = Talisman()
# Limits are declared where they apply (log-in, checkout, generation); none by default.
limiter = Limiter(key_func=client_key)


def dialect_insert(table):
    """INSERT for the session's dialect: both offer ON CONFLICT (SQLite in dev, PostgreSQL)."""
    dialect = db.session.get_bind().dialect.name
    return postgresql_insert(table) if dialect == "postgresql" else sqlite_insert(table)


def insert_once(table, columns, *unique_columns):
    """INSERT of `columns` as bound parameters that does nothing when the unique key
    `unique_columns` is taken, RETURNING the new id: built once by the caller and
    kept (building a statement costs about as much as running it)."""
    return (
        dialect_insert(table)
        .values({name: bindparam(name, type_=table.c[name].type) for name in columns})
        .on_conflict_do_nothing(index_elements=list(unique_columns))
        .returning(table.c.id)
    )
