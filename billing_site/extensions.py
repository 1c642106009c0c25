"""Bare extension instances; create_app binds them to the app."""

from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, bindparam, inspect, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.attributes import set_committed_value

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


def savepoint():
    """A savepoint on the session's connection, as a context manager: released at the
    end, rolled back (and the error raised) if the block raises.

    On PostgreSQL it is psycopg's own (`Connection.transaction()` inside a transaction):
    the same SAVEPOINT and RELEASE for about 40% of the CPU of SQLAlchemy's
    `begin_nested`, which goes through its whole statement path twice; the worker opens
    one per receipt. The ORM does not see it, so the block must write through
    statements, not through objects the session would flush later.
    """
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        return connection.connection.driver_connection.transaction()
    return connection.begin_nested()


_update_statements: dict = {}  # (table, changed column names) -> the UPDATE, built once


def update_now(obj) -> None:
    """Write a loaded row's changed columns now, as one prebuilt UPDATE, and take the
    values as committed, so no flush writes them again.

    For one changed row the unit of work costs several times its one statement
    (the worker's paid order: about 1 ms of its 9). Anything but plain column
    changes, or an onupdate that is SQL, is left to an ordinary flush.
    """
    state = inspect(obj)
    if not state.committed_state:
        return  # nothing changed: nothing to write (and no updated_at to move)
    table = state.mapper.local_table
    columns = [state.mapper.column_attrs.get(key) for key in state.committed_state]
    plain = state.key is not None and len(state.mapper.primary_key) == 1
    if not plain or not all(prop and _is_own_column(prop, table) for prop in columns):
        db.session.flush()
        return
    values = {prop.key: state.dict.get(prop.key) for prop in columns}
    for column in table.columns:
        refresh = column.onupdate
        if refresh is not None and column.key not in values:
            if not (refresh.is_callable or refresh.is_scalar):
                db.session.flush()
                return
            values[column.key] = refresh.arg(None) if refresh.is_callable else refresh.arg
    primary_key = state.mapper.primary_key[0]
    statement_key = (table.name, tuple(values))
    if statement_key not in _update_statements:
        _update_statements[statement_key] = (
            update(table)
            .where(primary_key == bindparam("primary_key"))
            .values({name: bindparam(name, type_=table.c[name].type) for name in values})
        )
    identity = state.identity[0]
    db.session.connection().execute(
        _update_statements[statement_key], {"primary_key": identity, **values}
    )
    for name, value in values.items():
        set_committed_value(obj, name, value)
    # Clean again, as a flush leaves the rows it wrote (SQLAlchemy's own step for
    # that; it has no public name): later flushes in the transaction skip the object.
    if not state.committed_state:
        state._commit_all(state.dict, db.session.identity_map)


def _is_own_column(prop, table) -> bool:
    """The attribute is one column of `table`, under the column's own name."""
    return len(prop.columns) == 1 and prop.columns[0] is table.c.get(prop.key)
