"""Copying a whole store into another database: ``certfleet store copy --to URL``.

Made for moving a machine's SQLite store into a PostgreSQL database that several machines then
share. Every table goes, as it is: the sealed keys stay sealed (the same bytes, under the same
ids, which their sealing is bound to), the history and the audit trail come along, and so do the
tables that other layers keep in the store (the console's), whatever they are: the tables and
their order come from the database's own schema, not from a list here.

The target must hold no data. It is brought to the source's schema revision by the migrations
and filled in one transaction (on PostgreSQL the DDL too), under the store's write lock: a copy
that fails leaves nothing behind. The source is read in one transaction as well, so the copy is
one consistent moment of it even while others write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, MetaData, Table, func, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import ForeignKeyConstraint, sort_tables_and_constraints

from certfleet.errors import InputError, StoreError
from certfleet.store._engine import Database, _alembic_config, busy_timeout, check_url, shown_url
from certfleet.store._models import AuditRow
from certfleet.store._records import AuditAction
from certfleet.store._store import Store

__all__ = ["CopyResult", "copy_store"]

_BATCH = 1000
_ALEMBIC = "alembic_version"


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What ``store copy`` did: from where, to where, and the rows of each table."""

    source: str  # URLs without their passwords
    target: str
    revision: tuple[str, ...]
    rows: Mapping[str, int]
    keys: str  # how the keys are sealed: what every machine using the target needs

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "revision": list(self.revision),
            "rows": dict(self.rows),
            "total": self.total,
            "keys": self.keys,
        }


def copy_store(store: Store, url: str) -> CopyResult:
    """Copy every table of ``store`` into the empty database at ``url`` (``postgresql+psycopg://``
    or ``sqlite://``), at the store's schema revision; the audit trails of both say so."""
    from alembic import command  # only here: opening a store loads no part of Alembic

    check_url(url, what="--to")
    if url == store.url:
        raise InputError("the store cannot be copied into itself", hint="give --to the URL of another database")
    revision = tuple(sorted(store.schema_revision()))
    keys = store.key_protection
    target = Database(url, timeout=busy_timeout())
    try:
        with _source(store) as src, target.migrating() as dst:
            _refuse_data(dst, url)
            for rev in revision:
                command.upgrade(_alembic_config(dst), rev)
            rows = _copy_tables(src, dst, is_sqlite=target.is_sqlite)
            detail = {"from": shown_url(store.url), "rows": sum(rows.values())}
            dst.execute(insert(AuditRow), [store._audit_values(AuditAction.STORE_COPY, detail)])
    except DBAPIError as exc:
        raise target.mapped(exc) from exc
    finally:
        target.dispose()
    store.audit(AuditAction.STORE_COPY, {"to": shown_url(url), "rows": sum(rows.values())})
    return CopyResult(shown_url(store.url), shown_url(url), revision, rows, keys)


@contextmanager
def _source(store: Store) -> Iterator[Connection]:
    # one read transaction: a consistent picture of the source even while others write to it
    conn = store._db.engine.connect()
    try:
        if not store._db.is_sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn
    except DBAPIError as exc:
        raise store._db.mapped(exc) from exc
    finally:
        conn.close()


def _refuse_data(conn: Connection, url: str) -> None:
    for name in inspect(conn).get_table_names():
        if name == _ALEMBIC:
            continue
        if conn.execute(select(text("1")).select_from(Table(name, MetaData())).limit(1)).first() is not None:
            raise StoreError(
                f"the database at {shown_url(url)} already holds data (table {name})",
                hint="store copy fills an empty database only: create a new one, or drop what is in it",
            )


def _copy_tables(src: Connection, dst: Connection, *, is_sqlite: bool) -> dict[str, int]:
    source = MetaData()
    source.reflect(bind=src)
    target = MetaData()
    target.reflect(bind=dst)
    missing = sorted(set(source.tables) - set(target.tables) - {_ALEMBIC})
    if missing:
        raise StoreError(
            f"the target's schema has no table {missing[0]}",
            hint="the source holds tables its migrations did not make: copy with the certfleet that made them",
        )

    # insert parents before children; a foreign key in a cycle (lineages.active_version_id and
    # versions.lineage_id) must be nullable: it is filled in once both sides are in
    def inline(fk: ForeignKeyConstraint) -> bool | None:
        return False if any(not c.nullable for c in fk.columns) else None

    order = sort_tables_and_constraints(  # type: ignore[no-untyped-call]
        [t for name, t in target.tables.items() if name != _ALEMBIC and name in source.tables], filter_fn=inline
    )
    deferred: dict[str, list[ForeignKeyConstraint]] = {}
    for table, fks in order:
        if table is None:
            for fk in fks:
                deferred.setdefault(fk.table.name, []).append(fk)
    rows: dict[str, int] = {}
    later: list[tuple[Table, dict[str, Any], dict[str, Any]]] = []
    for table, _fks in order:
        if table is None:
            continue
        held_back = [c.name for fk in deferred.get(table.name, []) for c in fk.columns]
        rows[table.name] = _copy_table(
            source.tables[table.name], table, src, dst, held_back=held_back, later=later, is_sqlite=is_sqlite
        )
    for table, key, values in later:
        dst.execute(update(table).where(*(table.c[k] == v for k, v in key.items())).values(**values))
    if not is_sqlite:
        _advance_sequences(dst, target)
    for name, count in rows.items():
        found = dst.execute(select(func.count()).select_from(target.tables[name])).scalar_one()
        if found != count:
            raise StoreError(f"copying table {name} went wrong: {count} rows read, {found} in the target")
    return rows


def _copy_table(
    src_table: Table,
    dst_table: Table,
    src: Connection,
    dst: Connection,
    *,
    held_back: Sequence[str],
    later: list[tuple[Table, dict[str, Any], dict[str, Any]]],
    is_sqlite: bool,
) -> int:
    columns = [c.name for c in src_table.columns if c.name in dst_table.c]
    pk = [c.name for c in dst_table.primary_key.columns]
    query = select(*(src_table.c[c] for c in columns)).order_by(*(src_table.c[c] for c in pk if c in src_table.c))
    count = 0
    result = src.execution_options(yield_per=_BATCH).execute(query)
    for part in result.partitions():
        batch = []
        for row in part:
            values = {c: _value(v, is_sqlite) for c, v in zip(columns, row, strict=True)}
            if held_back:
                kept = {c: values[c] for c in held_back if values.get(c) is not None}
                if kept:
                    later.append((dst_table, {c: values[c] for c in pk}, kept))
                values.update(dict.fromkeys(held_back))
            batch.append(values)
        dst.execute(insert(dst_table), batch)
        count += len(batch)
    return count


def _value(value: Any, is_sqlite: bool) -> Any:
    # the store keeps UTC: naive on SQLite (which has no zones), aware on PostgreSQL
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if is_sqlite else value
    return value


def _advance_sequences(dst: Connection, target: MetaData) -> None:
    # rows came with their ids: each table's sequence must start after them
    for name, table in target.tables.items():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or name == _ALEMBIC or not isinstance(pk[0].type, Integer):
            continue
        column = pk[0].name
        quote = dst.dialect.identifier_preparer.quote
        # names from the database's own catalog, quoted: nothing here comes from a user
        sql = f"SELECT setval(pg_get_serial_sequence(:table, :column), COALESCE(MAX({quote(column)}), 0) + 1, false) FROM {quote(name)}"  # noqa: S608, E501
        dst.execute(text(sql), {"table": quote(name), "column": column})
