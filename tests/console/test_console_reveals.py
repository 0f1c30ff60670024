"""What a form made that is shown once (a new API token, a new deployment link) waits in the store,
on SQLite and PostgreSQL alike: sealed, for the account and kind it was made for, taken once (by
one taker only, however many ask at once), gone when stale, a bounded number per account."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from certfleet.console.models import RevealRow
from certfleet.console.roles import Role
from certfleet.console.security import token_hash
from certfleet.console.services.clients import ClientLink
from certfleet.console.services.reveals import MAX_WAITING, Reveals
from certfleet.store import Base, Store
from certfleet.store._engine import Database
from support.console import PASSWORD, ConsoleEnv, make_env
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used

TABLE = RevealRow.__tablename__
TOKEN, LINK = "api-token", "client-link"


@dataclass
class Two:
    env: ConsoleEnv
    reveals: Reveals
    a: int  # two accounts' ids
    b: int


@pytest.fixture
def two(backend: Backend) -> Iterator[Two]:
    env = make_env(backend.home)
    accounts = env.console.accounts
    a = accounts.add("admin", PASSWORD, Role.ADMIN, by="console:test").id
    b = accounts.add("ops", PASSWORD, Role.OPERATOR, by="console:test").id
    yield Two(env, env.console.reveals, a, b)
    env.store.close()


def _count(backend: Backend) -> int:
    (row,) = backend.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608 (the model's own name)
    return int(row[0])


def test_a_value_is_taken_once_by_its_account_and_kind_only(two: Two, backend: Backend) -> None:
    r, a, b = two.reveals, two.a, two.b
    key = r.put(a, TOKEN, ("cft_secret_value", "ci"))
    assert r.take(b, TOKEN, key, tuple) is None  # another account's
    assert r.take(a, LINK, key, tuple) is None  # another kind
    assert r.take(a, TOKEN, key + "x", tuple) is None  # another key
    assert r.take(a, TOKEN, "", tuple) is None
    assert r.take(a, TOKEN, "k" * 500, tuple) is None
    assert _count(backend) == 1  # refusals leave it where it is
    assert r.take(a, TOKEN, key, tuple) == ("cft_secret_value", "ci")
    assert r.take(a, TOKEN, key, tuple) is None  # once
    assert _count(backend) == 0


def test_a_client_link_comes_back_as_itself(two: Two) -> None:
    r = two.reveals
    expires = dt.datetime(2026, 7, 1, 12, 30, tzinfo=dt.UTC)
    link = ClientLink("bob", "mobile", "https://mbg.example.test/c/abcdef", expires)
    key = r.put(two.a, LINK, link)
    assert r.take(two.a, LINK, key, tuple) is None  # not of the type asked for: gone all the same
    key = r.put(two.a, LINK, link)
    back = r.take(two.a, LINK, key, ClientLink)
    assert back == link and back is not link and back.expires_at.tzinfo is not None


def test_only_known_types_wait(two: Two) -> None:
    with pytest.raises(TypeError):
        two.reveals.put(two.a, TOKEN, {"token": "x"})
    with pytest.raises(TypeError):
        two.reveals.put(two.a, TOKEN, ("x", 1))


def test_the_value_is_sealed_at_rest_and_the_key_kept_as_its_hash(two: Two, backend: Backend) -> None:
    secret = "cft_" + "Zq9" * 12
    url = "https://mbg.example.test/client/" + "Lk7" * 12
    keys = [
        two.reveals.put(two.a, TOKEN, (secret, "ci-name")),
        two.reveals.put(two.a, LINK, ClientLink("bob", "mobile", url, two.env.clock())),
    ]
    assert _count(backend) == 2
    stored = backend.stored_values()
    for needle in (secret, secret[4:20], url, "Lk7Lk7Lk7", "ci-name", *keys):
        assert needle.encode() not in stored, needle
    assert two.reveals.take(two.a, TOKEN, keys[0], tuple) == (secret, "ci-name")


def test_a_sealed_value_does_not_open_in_another_row(two: Two, backend: Backend) -> None:
    r = two.reveals
    theirs = r.put(two.a, TOKEN, ("cft_a", "a"))
    mine = r.put(two.a, TOKEN, ("cft_b", "b"))
    # copy the first row's ciphertext over the second's, behind the console's back
    rows = backend.execute(f"SELECT key_hash, sealed FROM {TABLE}")  # noqa: S608
    assert len(rows) == 2
    sealed = dict(rows)
    backend.execute(
        f"UPDATE {TABLE} SET sealed = :s WHERE key_hash = :h",  # noqa: S608
        {"s": sealed[token_hash(theirs)], "h": token_hash(mine)},
    )
    assert r.take(two.a, TOKEN, mine, tuple) is None
    assert r.take(two.a, TOKEN, theirs, tuple) == ("cft_a", "a")
    assert _count(backend) == 0


def test_a_stale_value_is_refused_and_purged(two: Two, backend: Backend) -> None:
    r, clock = two.reveals, two.env.clock
    fresh_enough = r.put(two.a, TOKEN, ("cft_1", "one"))
    stale = r.put(two.b, TOKEN, ("cft_2", "two"))
    clock.advance(minutes=4, seconds=59)
    assert r.take(two.a, TOKEN, fresh_enough, tuple) == ("cft_1", "one")
    clock.advance(seconds=2)  # five minutes and a second
    assert _count(backend) == 1
    later = r.put(two.a, TOKEN, ("cft_3", "three"))  # any write sweeps, whoever the stale one waited for
    assert _count(backend) == 1
    assert r.take(two.b, TOKEN, stale, tuple) is None
    clock.advance(minutes=6)
    assert r.take(two.a, TOKEN, later, tuple) is None
    assert _count(backend) == 0


def test_each_account_keeps_a_bounded_number_the_oldest_dropped(two: Two, backend: Backend) -> None:
    r, clock = two.reveals, two.env.clock
    other = r.put(two.b, TOKEN, ("cft_b", "b"))
    keys = []
    for i in range(MAX_WAITING + 1):
        clock.advance(seconds=1)
        keys.append(r.put(two.a, TOKEN, (f"cft_{i}", str(i))))
    assert _count(backend) == MAX_WAITING + 1  # the account's bound and the other account's one
    assert r.take(two.a, TOKEN, keys[0], tuple) is None  # the oldest was dropped
    assert r.take(two.a, TOKEN, keys[1], tuple) == ("cft_1", "1")
    assert r.take(two.a, TOKEN, keys[-1], tuple) == (f"cft_{MAX_WAITING}", str(MAX_WAITING))
    assert r.take(two.b, TOKEN, other, tuple) == ("cft_b", "b")  # another account's are not touched


def _race(takers: list[Reveals], account_id: int, key: str) -> list[object]:
    """What each taker got, all asking for ``key`` at the same moment."""
    barrier = threading.Barrier(len(takers))
    got: list[object] = []

    def take(reveals: Reveals) -> None:
        barrier.wait()
        got.append(reveals.take(account_id, TOKEN, key, tuple))

    threads = [threading.Thread(target=take, args=(t,)) for t in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_many_takers_of_one_key_only_one_gets_it(two: Two) -> None:
    """Four takers, each with a store of its own (its own connections: as four console processes
    would be), ask for each key at the same moment: exactly one of them gets the value."""
    stores = [Store.open(two.env.home) for _ in range(4)]
    takers = [Reveals(s, clock=two.env.clock) for s in stores]
    try:
        for round_ in range(10):
            key = two.reveals.put(two.a, TOKEN, (f"cft_{round_}", "race"))
            got = _race(takers, two.a, key)
            assert len(got) == len(takers)
            assert [g for g in got if g is not None] == [(f"cft_{round_}", "race")]
    finally:
        for s in stores:
            s.close()


def test_the_migration_matches_the_model_and_goes_down_and_up(backend: Backend) -> None:
    backend.home.mkdir(mode=0o700)
    db = Database(backend.url, timeout=5)

    def tables() -> set[str]:
        with db.engine.connect() as conn:
            return set(inspect(conn).get_table_names())

    def mine(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return getattr(getattr(obj, "table", obj), "name", name) == TABLE

    try:
        db.upgrade("0010_zones")
        assert TABLE not in tables()
        db.upgrade("0011_reveals")
        assert TABLE in tables()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": mine})
            assert compare_metadata(context, Base.metadata) == []  # the model and the migration agree
        db.downgrade("0010_zones")
        assert TABLE not in tables() and db.current() == {"0010_zones"}
        db.upgrade()
        assert TABLE in tables()
    finally:
        db.dispose()
