"""The API against its own OpenAPI description, with Schemathesis and an operator's token: whatever
a caller sends, that the description allows (positive) or not (negative), the answer is never a
server error, never a status the description does not list, and always the content type and body
it describes. Bounded: a few examples per operation and mode, derandomized."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import PKI
from support.console import ConsoleEnv, account_token, make_env

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> ConsoleEnv:
    env = make_env(tmp_path_factory.mktemp("openapi") / "home")
    # something for the paths to find: a lineage with an active version, a node
    env.store.put_lineage("web")
    env.store.issue("web", pki.leaf.cert, pki.leaf.chain, key=pki.leaf.key)
    return env


@pytest.fixture(scope="module")
def operator(env: ConsoleEnv) -> str:
    account_token(env, "admin", "admin")
    return account_token(env, "ops", "operator")


@pytest.fixture(scope="module")
def api(env: ConsoleEnv, operator: str) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", env.app, headers={"authorization": f"Bearer {operator}"}
    )


def test_the_api_keeps_to_its_description(api: schemathesis.schemas.BaseSchema, operator: str) -> None:
    # each operation in turn (Schemathesis's own pytest plugin does not load under this pytest)
    failed: dict[str, str] = {}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 25
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"authorization": f"Bearer {operator}"}, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing to send that the description refuses (no parameter, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures are reported
            failed[f"{operation.label} ({mode.value})"] = f"{type(exc).__name__}: {exc}"[:2000]
    assert not failed, "\n\n".join(f"{label}:\n{why}" for label, why in failed.items())
