"""A verifier for a group of leaves at a time: :meth:`Verifier.verify`'s steps, each over all of them.

A batch of thousands of leaves (``verify --each``) spends as much time around cryptography's
verdicts as in them. :class:`BatchVerifier` answers exactly as :meth:`Verifier.verify` does, leaf
by leaf, and saves that time in two ways: what the verifier needs from each leaf is read from its
DER (:mod:`certfleet.leafscan`) rather than decoded whole, and each step (what the leaves
are checked for, cryptography's verdicts, the rules phones add) runs over the whole group before
the next, which keeps that step's code and data warm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from certfleet.errors import CertfleetError
from certfleet.leafscan import LeafFacts, leaf_facts
from certfleet.verify import Verification, Verifier

if TYPE_CHECKING:
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.verification import Subject

    from certfleet.trust import TrustStore

__all__ = ["BatchVerifier"]


class BatchVerifier(Verifier):
    """A :class:`Verifier` that also verifies many leaves at once (:meth:`verify_many`).

    ``facts`` reads what the verifier needs from a leaf's DER, or None to leave the leaf to
    cryptography; tests give their own. Like any Verifier, it remembers proven intermediates
    only when ``reuse_proven`` says so.
    """

    def __init__(
        self,
        trust: TrustStore,
        untrusted: Sequence[x509.Certificate] = (),
        *,
        at: dt.datetime,
        max_depth: int | None = None,
        reuse_proven: bool = False,
        facts: Callable[[bytes], LeafFacts | None] = leaf_facts,
    ) -> None:
        super().__init__(trust, untrusted, at=at, max_depth=max_depth, reuse_proven=reuse_proven)
        self._facts = facts

    def verify_many(
        self,
        leaves: Sequence[x509.Certificate],
        name: str | None = None,
        *,
        ders: Sequence[bytes | None] | None = None,
    ) -> list[Verification | CertfleetError]:
        """:meth:`verify` for each of ``leaves``, in order: its Verification, or the error it raised.

        ``ders`` are the leaves' own encodings (exactly the bytes each was loaded from), where the
        caller has them; without, the facts are read from each leaf's TBSCertificate.
        """
        read = self._facts
        results: list[Verification | CertfleetError | None] = [None] * len(leaves)
        pending: list[tuple[int, x509.Certificate, LeafFacts | None, Subject, str | None]] = []
        for index, leaf in enumerate(leaves):
            der = ders[index] if ders is not None else None
            facts = read(der if der is not None else leaf.tbs_certificate_bytes)
            try:
                step = self._prepare(leaf, name, facts)
            except CertfleetError as exc:
                results[index] = exc
                continue
            if isinstance(step, Verification):
                results[index] = step
            else:
                subject, shown = step
                pending.append((index, leaf, facts, subject, shown))
        # cryptography's verdicts, one after another; a refusal is explained at once
        chains: list[list[x509.Certificate] | None] = []
        for index, leaf, _, subject, shown in pending:
            chain, reason = self._verdict(leaf, subject)
            if chain is None:
                try:
                    results[index] = self._explain(leaf, subject, shown, reason)
                except CertfleetError as error:
                    results[index] = error
            chains.append(chain)
        for (index, leaf, facts, subject, shown), chain in zip(pending, chains, strict=True):
            if chain is None:
                continue
            try:
                results[index] = self._accepted(leaf, chain, subject, shown, facts)
            except CertfleetError as exc:
                results[index] = exc
        return cast(list[Verification | CertfleetError], results)  # every leaf has its answer now
