"""The long lists read well: the audit trail in words, filtered and a page at a time, its dates on
one line; the nodes list uses the window's width and never breaks a path or a port inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.console import ConsoleEnv, add_node, logged_in, make_env


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home")


def test_audit_page_reads_as_words_with_a_filter_and_pages(env: ConsoleEnv) -> None:
    logged_in(env)
    for i in range(60):
        env.store.audit("deploy", {"lineage": "web", "version": i, "nodes": {"cgw": "ok", "main": "failed"}})
    env.store.audit("export", {"lineage": "web", "files": ["a.pfx", "b.pem"], "key_encrypted": True})
    page = env.client.get("/audit").text
    assert "{'cgw': 'ok'" not in page and "cgw: ok, main: failed" in page
    assert "a.pfx, b.pem" in page and "<dd>yes</dd>" in page
    assert '<td class="nowrap">' in page  # the date on one line
    assert page.count('<tr data-action="') == 50 and 'rel="next"' in page

    older = env.client.get("/audit?page=2").text
    assert 'rel="prev"' in older and older.count('<tr data-action="') > 10
    only = env.client.get("/audit?kind=export").text
    assert only.count('<tr data-action="') == 1 and 'data-action="export"' in only
    found = env.client.get("/audit?kind=deploy&q=version%3A+42").text
    assert found.count('<tr data-action="') == 1 and "<dd>42</dd>" in found


def test_nodes_list_keeps_paths_and_ports_whole_and_uses_the_width(env: ConsoleEnv, tmp_path: Path) -> None:
    csrf = logged_in(env)
    long_path = tmp_path / "a-rather-long-folder-name" / "nginx-certificates-for-the-gateway"
    add_node(env, csrf, "gw1", ["gw.example.test"], [f"nginx:{long_path}"], probe="gw.example.test:8443")
    page = env.client.get("/nodes").text
    assert '<main class="wide">' in page
    assert f'<div class="token">nginx:{long_path}</div>' in page
    assert '<td class="token">gw.example.test:8443</td>' in page
    css = env.client.get("/static/console.css").text
    assert "main.wide { max-width: none;" in css
    assert ".token {" in css and "white-space: nowrap" in css.split(".token {")[1].split("}")[0]
