"""Store commands: ``certfleet store copy --to URL`` (a SQLite store into PostgreSQL, whole)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from certfleet.cli._common import JsonOpt, app, console, emit, open_store

if TYPE_CHECKING:
    from certfleet.store import CopyResult

store_app = typer.Typer(help="The store itself: copy it into another database (SQLite to a shared PostgreSQL).")
app.add_typer(store_app, name="store")


@store_app.command(
    "copy",
    epilog=(
        "Example: certfleet store copy --to postgresql+psycopg://certfleet@db.example.com/certfleet   "
        "(a password: PGPASSWORD or ~/.pgpass rather than in the URL)"
    ),
)
def copy_cmd(
    to: Annotated[
        str,
        typer.Option(
            "--to", help="The empty database to fill: postgresql+psycopg://USER@HOST[:PORT]/DB or sqlite:///PATH."
        ),
    ],
    *,
    as_json: JsonOpt = False,
) -> None:
    """Copy this store, whole, into an empty database: nodes, lineages, versions with their keys
    (still sealed), trust anchors, the history and the audit trail. Then point
    CERTFLEET_DATABASE_URL at it on every machine that shares it (see docs/store.md)."""
    from certfleet.store import copy_store

    with open_store() as store:
        result = copy_store(store, to)
    emit(result, as_json, _render)


def _render(r: CopyResult) -> None:
    from certfleet.store import KEY_FILE, PASSPHRASE_ENV

    console.print(f"copied {r.total} rows from {r.source} to {r.target}", markup=False, soft_wrap=True)
    for name, count in sorted(r.rows.items()):
        console.print(f"  {name:<28} {count}", markup=False)
    secret = f"the same ${PASSPHRASE_ENV}" if r.keys == "passphrase" else f"a copy of this machine's {KEY_FILE} (0600)"
    console.print(
        f"keys stay sealed: every machine using {r.target} needs {secret}; set CERTFLEET_DATABASE_URL there",
        markup=False,
        soft_wrap=True,
    )
