"""The batch's verifier (leaf facts from the DER, steps over many leaves, proven intermediates
reused) against the plain path: a fresh Verifier per leaf, and verify_chain, leaf by leaf."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet import testing
from certfleet._batch.files import check_leaf_files
from certfleet._batch.verifier import BatchVerifier
from certfleet.errors import CertfleetError
from certfleet.trust import TrustStore
from certfleet.verify import Verification, Verifier, verify_chain

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
_NAME_CONSTRAINT = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.test")], excluded_subtrees=None)


@dataclass(frozen=True)
class Fleet:
    trust: TrustStore
    untrusted: list[x509.Certificate]
    leaves: list[tuple[str, bytes]]  # (what it is, its DER); the first of each issuer valid
    proven: set[x509.Certificate]  # the intermediates whose leaves may take the shortcut
    constrained: list[x509.Certificate]  # intermediates under name constraints


def _der(leaf: testing.TestLeaf | x509.Certificate) -> bytes:
    cert = leaf.cert if isinstance(leaf, testing.TestLeaf) else leaf
    return cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    root = testing.TestCA.root("Differential Root", key="rsa:2048")
    plain = root.intermediate("Plain Intermediate")
    # name constraints on an intermediate, and on a root of its own
    constrained = root.intermediate("Constrained Intermediate", extensions=[(_NAME_CONSTRAINT, True)])
    constraining_root = testing.TestCA.root("Constraining Root", extensions=[(_NAME_CONSTRAINT, True)])
    under_constraint = constraining_root.intermediate("Intermediate under a constraint")
    # pathLenConstraint=0 on an intermediate under another one: its leaves are valid ...
    upper = root.intermediate("Upper Intermediate", path_length=1)
    lower = upper.intermediate("Lower Intermediate (pathlen 0)", path_length=0)
    # ... and an intermediate under a pathLenConstraint=0 one is not a path
    tight = root.intermediate("Tight Intermediate (pathlen 0)", path_length=0)
    too_deep = tight.intermediate("Intermediate one too deep")
    stranger = testing.TestCA.root("Stranger Root").intermediate("Stranger Intermediate")
    old = NOW - dt.timedelta(days=200.5)
    soon = NOW + dt.timedelta(days=3.5)

    def kinds(ca: testing.TestCA, host: str) -> list[tuple[str, bytes]]:
        return [
            (f"{host}: valid", _der(ca.leaf(f"www.{host}", f"api.{host}"))),
            (f"{host}: expired", _der(ca.leaf(f"old.{host}", not_before=old, days=90))),
            (f"{host}: not yet valid", _der(ca.leaf(f"new.{host}", not_before=soon))),
            (f"{host}: client auth only", _der(ca.leaf(f"client.{host}", server_auth=False))),
            (f"{host}: wildcard", _der(ca.leaf(f"*.wild.{host}"))),
            (f"{host}: IP only", _der(ca.leaf("10.0.0.1", "2001:db8::1"))),
            (f"{host}: DNS and IP", _der(ca.leaf(f"mixed.{host}", "192.0.2.7"))),
            (f"{host}: no SAN", _der(ca.leaf(f"nosan.{host}", san=False))),
            (f"{host}: RSA 1024", _der(ca.leaf(f"weak.{host}", key="rsa:1024"))),
            (f"{host}: valid again", _der(ca.leaf(f"www2.{host}"))),
        ]

    leaves = [
        *kinds(plain, "example.test"),
        *kinds(lower, "example.test"),
        *kinds(constrained, "example.test"),
        ("constrained intermediate: outside", _der(constrained.leaf("www.elsewhere.test"))),
        ("constrained intermediate: one name outside", _der(constrained.leaf("www.example.test", "x.other.test"))),
        *kinds(under_constraint, "example.test"),
        ("constraining root: outside", _der(under_constraint.leaf("www.elsewhere.test"))),
        ("too deep", _der(too_deep.leaf("www.example.test"))),
        ("tight intermediate's own leaf", _der(tight.leaf("tight.example.test"))),
        ("too deep, its issuer's issuer proven", _der(too_deep.leaf("deep.example.test"))),
        ("stranger", _der(stranger.leaf("www.example.test"))),
        ("self-signed", _der(testing.TestCA.root("www.example.test").cert)),
    ]
    untrusted = [
        plain.cert,
        upper.cert,
        lower.cert,
        constrained.cert,
        under_constraint.cert,
        tight.cert,
        too_deep.cert,
        stranger.cert,
    ]
    return Fleet(
        TrustStore((root.cert, constraining_root.cert)),
        untrusted,
        leaves,
        {plain.cert, lower.cert, tight.cert},
        [constrained.cert, under_constraint.cert],
    )


def _answer(result: Verification | CertfleetError) -> Any:
    return (type(result), str(result)) if isinstance(result, CertfleetError) else result


def _fresh(fleet: Fleet, leaf: x509.Certificate, name: str | None, max_depth: int | None) -> Any:
    try:
        return Verifier(fleet.trust, fleet.untrusted, at=NOW, max_depth=max_depth).verify(leaf, name)
    except CertfleetError as exc:
        return (type(exc), str(exc))


def _chain(fleet: Fleet, leaf: x509.Certificate, name: str | None, max_depth: int | None) -> Any:
    try:
        return verify_chain(leaf, fleet.untrusted, fleet.trust, name=name, at=NOW, max_depth=max_depth)
    except CertfleetError as exc:
        return (type(exc), str(exc))


def _verdicts(answers: list[Any]) -> list[Any]:
    """Each answer's verdict and problem codes (an error: its kind and words)."""
    return [(a.valid, [p.code for p in a.problems]) if isinstance(a, Verification) else a for a in answers]


@pytest.mark.parametrize("order", ["as made", "shuffled"])
@pytest.mark.parametrize("max_depth", [None, 1])
@pytest.mark.parametrize(
    "name", [None, "www.example.test", "a.wild.example.test", "10.0.0.1", "www.elsewhere.test", "bad..name"]
)
def test_the_batch_answers_as_a_fresh_verifier_for_each_leaf(
    fleet: Fleet, name: str | None, max_depth: int | None, order: str
) -> None:
    leaves = list(fleet.leaves)
    if order == "shuffled":
        random.Random(f"{name}{max_depth}").shuffle(leaves)
    ders = [der for _, der in leaves]
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    batch = BatchVerifier(fleet.trust, fleet.untrusted, at=NOW, max_depth=max_depth, reuse_proven=True)
    # in groups, as the batch reads its files
    got = []
    for start in range(0, len(certs), 16):
        got += [_answer(r) for r in batch.verify_many(certs[start : start + 16], name, ders=ders[start : start + 16])]
    fresh = [_fresh(fleet, cert, name, max_depth) for cert in certs]
    chained = [_chain(fleet, cert, name, max_depth) for cert in certs]
    assert _verdicts(got) == _verdicts(fresh) == _verdicts(chained)
    for (what, _), one, other in zip(leaves, got, fresh, strict=True):
        assert one == other, what
    assert fresh == chained
    valid = {what for (what, _), answer in zip(leaves, got, strict=True) if getattr(answer, "valid", False)}
    if name is None and max_depth is None:
        # the shortcut was there to take, for every kind of leaf after the first valid one
        assert set(batch.proven) == fleet.proven
        assert {"example.test: valid", "example.test: valid again", "tight intermediate's own leaf"} <= valid
        assert not valid & {"too deep", "too deep, its issuer's issuer proven", "constrained intermediate: outside"}
        assert not valid & {"constraining root: outside", "example.test: expired", "example.test: RSA 1024"}
    if max_depth is not None:
        assert batch.proven == ()  # a depth limit: every leaf takes the full path
    assert not set(batch.proven) & set(fleet.constrained)


def test_the_batch_reads_its_files_as_a_fresh_verifier_judges_them(fleet: Fleet, tmp_path: Path) -> None:
    paths = []
    for index, (_, der) in enumerate(fleet.leaves):
        path = tmp_path / f"leaf{index:02d}.der"
        path.write_bytes(der)
        paths.append(str(path))
    batch = BatchVerifier(fleet.trust, fleet.untrusted, at=NOW, reuse_proven=True)
    records = check_leaf_files(batch, paths, None, limit=1024 * 1024)
    fresh = [_fresh(fleet, x509.load_der_x509_certificate(der), None, None) for _, der in fleet.leaves]
    assert [(r.valid, r.name, r.problems) for r in records] == [(f.valid, f.name, f.problems) for f in fresh]
    assert {r.valid for r in records} == {True, False}
