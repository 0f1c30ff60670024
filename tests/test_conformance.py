"""x509-limbo conformance: every SERVER case through certfleet's verification.

The pass count may only go up: a case certfleet gets wrong must be listed, with its reason, in
conformance_expected_failures.txt, and a listed case that now passes must be taken off the list.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfleet.errors import CertfleetError
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain

_SUITE = Path("shared") / "conformance" / "x509-limbo.json.gz"
# the suite lives beside the checkout (/work/shared); a git worktree sits one folder deeper
LIMBO = next(
    (folder / _SUITE for folder in Path(__file__).parents if (folder / _SUITE).is_file()),
    Path(__file__).parents[2] / _SUITE,
)
EXPECTED_FAILURES = Path(__file__).parent / "conformance_expected_failures.txt"
# the moment the run starts, for the few cases that leave the validation time open
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str


def _expected_failures() -> dict[str, str]:
    """Case id -> reason, from lines ``id`` followed by ``  # reason``."""
    out: dict[str, str] = {}
    for line in EXPECTED_FAILURES.read_text(encoding="utf-8").splitlines():
        case_id, _, reason = line.partition("#")
        case_id = case_id.strip()
        if case_id:
            out[case_id] = reason.strip()
    return out


def _run(case: dict[str, Any]) -> Outcome:
    expected_ok = case["expected_result"] == "SUCCESS"
    eku = case["extended_key_usage"] or []
    if eku and eku != ["serverAuth"]:
        return Outcome(False, f"asks for extended key usage {eku}; certfleet verifies serverAuth only")
    try:
        leaf = x509.load_pem_x509_certificate(case["peer_certificate"].encode())
        untrusted = [x509.load_pem_x509_certificate(p.encode()) for p in case["untrusted_intermediates"]]
        anchors = [x509.load_pem_x509_certificate(p.encode()) for p in case["trusted_certs"]]
    except ValueError as exc:
        # a certificate that does not even parse is refused: that is the right answer for FAILURE
        return Outcome(not expected_ok, f"does not parse: {exc}")
    peer = case["expected_peer_name"]
    name = peer["value"] if peer else None
    at = dt.datetime.fromisoformat(case["validation_time"]) if case["validation_time"] else NOW
    try:
        result = verify_chain(
            leaf,
            untrusted,
            TrustStore(tuple(anchors), source="limbo"),
            name=name,
            at=at,
            max_depth=case["max_chain_depth"],
        )
    except CertfleetError as exc:  # a peer name certfleet refuses to check is a refusal too
        return Outcome(not expected_ok, f"refused: {exc}")
    detail = "; ".join(f"{p.code.value}: {p.message}" for p in result.problems) or "valid"
    return Outcome(result.valid == expected_ok, detail)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # hostile serials
def test_limbo_server_cases(summary_line: Callable[[str], None]) -> None:
    data = json.loads(gzip.decompress(LIMBO.read_bytes()))
    cases = [c for c in data["testcases"] if c["validation_kind"] == "SERVER"]
    assert len(cases) > 9000, "the limbo file looks truncated"
    listed = _expected_failures()
    known_ids = {c["id"] for c in cases}
    assert not set(listed) - known_ids, f"listed ids that are not SERVER cases: {sorted(set(listed) - known_ids)}"

    passed = 0
    wrong: list[str] = []
    fixed: list[str] = []
    for case in cases:
        outcome = _run(case)
        passed += outcome.passed
        if not outcome.passed and case["id"] not in listed:
            wrong.append(f"{case['id']} (expected {case['expected_result']}): {outcome.detail[:300]}")
        if outcome.passed and case["id"] in listed:
            fixed.append(case["id"])
    summary_line(f"x509-limbo: {passed}/{len(cases)} SERVER cases as expected ({len(listed)} expected failures listed)")
    assert not wrong, f"{len(wrong)} cases give the wrong answer:\n" + "\n".join(wrong[:50])
    assert not fixed, "these cases now pass; take them off conformance_expected_failures.txt:\n" + "\n".join(fixed)
