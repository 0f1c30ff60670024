"""A fleet of many nodes: the dashboard and the node list show a page of nodes at a time, while
the dashboard's counts cover every node; and a page costs the same queries whatever the number
of nodes (none in a loop over them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certfleet.console.services.status import PAGE_SIZE, page_number, page_of
from certfleet.fleet.nodes import make_node
from support.console import ConsoleEnv, count_selects, logged_in, make_env

NODE = re.compile(r'<tr data-node="([^"]+)"')


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home")


def add_nodes(env: ConsoleEnv, tmp_path: Path, first: int, count: int) -> None:
    for i in range(first, first + count):
        spec = make_node(f"n{i:04d}", [f"n{i:04d}.example.test"], [f"pem:{tmp_path / 'nodes' / f'n{i:04d}'}"])
        env.store.add_node(spec, lineage="web")


def shown(html: str) -> list[str]:
    return NODE.findall(html)


def test_the_dashboard_shows_a_page_of_nodes_and_counts_them_all(env: ConsoleEnv, tmp_path: Path) -> None:
    add_nodes(env, tmp_path, 0, 2 * PAGE_SIZE + 50)
    logged_in(env)
    everyone = [f"n{i:04d}" for i in range(2 * PAGE_SIZE + 50)]

    first = env.client.get("/").text
    assert shown(first) == everyone[:PAGE_SIZE]
    assert 'data-nodes="250"' in first and 'data-serving="not-probed">250 not probed' in first
    assert 'data-last="never"' in first and "</span> 250</span>" in first
    assert 'rel="next" href="/?page=2#lineage-web"' in first and 'rel="prev"' not in first
    assert "nodes 1–100 of 250 (page 1 of 3)" in first

    second = env.client.get("/?page=2").text
    assert shown(second) == everyone[PAGE_SIZE : 2 * PAGE_SIZE]  # nodes 101 to 200
    assert "nodes 101–200 of 250 (page 2 of 3)" in second
    assert 'rel="prev" href="/?page=1#lineage-web"' in second and 'rel="next" href="/?page=3#lineage-web"' in second
    assert 'data-nodes="250"' in second  # the counts are the whole fleet's on every page

    last = env.client.get("/?page=3").text
    assert shown(last) == everyone[2 * PAGE_SIZE :] and 'rel="next"' not in last
    # past the end, or not a number: the last page, the first page
    assert shown(env.client.get("/?page=99").text) == everyone[2 * PAGE_SIZE :]
    assert shown(env.client.get("/?page=x").text) == everyone[:PAGE_SIZE]


def test_the_node_list_pages_too(env: ConsoleEnv, tmp_path: Path) -> None:
    add_nodes(env, tmp_path, 0, PAGE_SIZE + 5)
    logged_in(env)
    first = env.client.get("/nodes").text
    assert len(shown(first)) == PAGE_SIZE and 'rel="next" href="/nodes?page=2"' in first
    second = env.client.get("/nodes?page=2").text
    assert shown(second) == [f"n{i:04d}" for i in range(PAGE_SIZE, PAGE_SIZE + 5)]
    assert "nodes 101–105 of 105 (page 2 of 2)" in second
    assert second.count("<code>web</code>") == 5  # each node's lineages, read once for the page


@pytest.mark.parametrize("path", ["/", "/nodes", "/metrics"])
def test_a_page_makes_as_many_queries_for_many_nodes_as_for_few(env: ConsoleEnv, tmp_path: Path, path: str) -> None:
    add_nodes(env, tmp_path, 0, 3)
    logged_in(env)
    few = count_selects(env, path)
    add_nodes(env, tmp_path, 3, 60)
    assert count_selects(env, path) == few


def test_page_of_and_page_number() -> None:
    items = list(range(250))
    page = page_of(items, 2)
    assert (page.items[0], page.items[-1], page.first, page.last, page.pages, page.more) == (
        100,
        199,
        101,
        200,
        3,
        True,
    )
    assert page_of([], 5).items == () and page_of([], 5).pages == 1 and page_of([], 5).first == 0
    assert [page_number(t) for t in (None, "", "0", "-3", "7", "x", "1e9")] == [1, 1, 1, 1, 7, 1, 1]
