"""Forms make nothing twice and remove nothing without asking: a new token or deployment link
waits for the one page after its form's redirect, and a removal goes through a question first. On
SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from support.console import ConsoleEnv, logged_in, make_env
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used


@pytest.fixture
def env(backend: Backend) -> ConsoleEnv:
    return make_env(backend.home)


def test_client_user_removal_asks_first(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    h = {"x-csrf-token": csrf}
    env.client.put(
        "/api/v1/client-profiles",
        json={"name": "mobile", "hostname": "mbg.example.test", "template": "${username}"},
        headers=h,
    )
    user = env.client.post("/api/v1/client-users", json={"profile": "mobile", "username": "bob"}, headers=h).json()
    path = f"/clients/users/{user['id']}/remove"
    assert env.client.post(path, data={"csrf_token": csrf}).headers["location"] == path
    assert "Remove bob from the client profile mobile?" in env.client.get(path).text
    assert len(env.console.clients.users()) == 1
    assert env.client.post(path, data={"csrf_token": csrf, "confirm": "yes"}).status_code == 303
    assert env.console.clients.users() == []


def test_secrets_wait_for_one_page_only(env: ConsoleEnv) -> None:
    logged_in(env)
    reveals = env.console.reveals
    key = reveals.put(1, "api-token", ("cft_x", "ci"))
    assert reveals.take(2, "api-token", key, tuple) is None  # another account's
    assert reveals.take(1, "client-link", key, tuple) is None  # another kind
    assert reveals.take(1, "api-token", key, tuple) == ("cft_x", "ci")
    assert reveals.take(1, "api-token", key, tuple) is None  # once
    stale = reveals.put(1, "api-token", ("cft_y", "ci"))
    env.clock.advance(minutes=6)
    assert reveals.take(1, "api-token", stale, tuple) is None
