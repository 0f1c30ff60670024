"""The human view of every core command: certificate tables, problem lists, a chain leaf→root.

Only the human view lives here; ``--json`` output comes from the results' ``to_dict()``. Rich's
table and tree machinery is imported inside the functions that draw them, so that importing this
module costs nothing on the paths that print JSON or plain lines (``verify --each``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.text import Text

from certfleet.cli._common import console

if TYPE_CHECKING:
    from rich.table import Table
    from rich.tree import Tree

    from certfleet.certinfo import CertInfo
    from certfleet.chain import ChainResult
    from certfleet.export import CsrWritten, KeyWritten, OutputFormat, WrittenFile
    from certfleet.inspection import Inspection
    from certfleet.keys import MatchResult
    from certfleet.names import NamePlan, NamesReport
    from certfleet.problems import Problem, Severity
    from certfleet.trust import TrustStore
    from certfleet.verify import Verification

__all__ = [
    "cert_line",
    "cert_table",
    "chain_failed",
    "chain_report",
    "chain_tree",
    "conversion",
    "csr_written",
    "days_left_text",
    "inspection",
    "key_written",
    "match_result",
    "name_plan",
    "names_report",
    "print_problems",
    "problem_list",
    "say",
    "severity_style",
    "verdict",
    "verification",
]


def severity_style(severity: Severity) -> str:
    return {"error": "bold red", "warning": "yellow", "info": "cyan"}[severity.value]


_SEVERITY_MARK = {"error": "✗", "warning": "!", "info": "i"}


def say(text: str | Text, style: str | None = None) -> None:
    """One line of a report: never wrapped (paths stay whole), never read as markup (names are data)."""
    console.print(text, style=style, soft_wrap=True, markup=False, highlight=False)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- building blocks ----------------------------------------------------------------------------


def days_left_text(info: CertInfo, now: dt.datetime) -> Text:
    """``41 days left`` in a colour that says how urgent it is; expired and future dates in words."""
    if now < info.not_before:
        return Text(f"not valid until {_iso(info.not_before)}", style="bold red")
    if now > info.not_after:
        # counted as the problem's message counts it, so one report never says 56 and 55
        ago = (now - info.not_after).days
        when = f"{ago} day{'' if ago == 1 else 's'} ago" if ago else "less than a day ago"
        return Text(f"expired {when}", style="bold red")
    days = info.days_left(now)
    style = "bold red" if days < 7 else "yellow" if days < 30 else "green"
    return Text(f"{days} days left", style=style)


def _names(info: CertInfo) -> str:
    names = [*info.dns_names, *info.ip_addresses]
    text = ", ".join(names) if names else "(no subjectAltName)"
    return text + (f"; also {', '.join(info.other_names)}" if info.other_names else "")


def cert_table(
    info: CertInfo,
    *,
    now: dt.datetime,
    title: str | None = None,
    source: str | None = None,
    extra: Iterable[tuple[str, str | Text]] = (),
) -> Table:
    """Every field a person checks on one certificate, as a two-column table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("subject", info.subject)
    table.add_row("issuer", info.issuer)
    table.add_row("names", _names(info))
    table.add_row("valid", f"{_iso(info.not_before)} → {_iso(info.not_after)}")
    table.add_row("expires", days_left_text(info, now))
    table.add_row("key", info.key_type)
    table.add_row("signature", info.signature_algorithm)
    table.add_row("CA", "yes" if info.is_ca else "no")
    if info.precertificate:
        table.add_row("kind", Text("CT precertificate: not the certificate to serve", style="yellow"))
    table.add_row("serial", info.serial)
    table.add_row("sha256", info.sha256)
    for fault in info.faults:
        table.add_row("fault", Text(fault, style="yellow"))
    if source:
        table.add_row("source", source)
    for field, value in extra:
        table.add_row(field, value)
    return table


def cert_line(info: CertInfo) -> Text:
    """One line for a certificate inside a list: its common name (else subject) and a short fingerprint."""
    line = Text(info.common_name or info.subject or "(empty subject)")
    line.append(f"  sha256:{info.sha256[:16]}…", style="dim")
    return line


def chain_tree(
    chain: Sequence[CertInfo],
    root: CertInfo | None,
    *,
    now: dt.datetime,
    label: str = "chain",
    rooted: bool | None = None,
) -> Tree:
    """The chain as a client walks it: the leaf, under it its issuer, and so on down to the root.

    ``root`` is the trust anchor reached (not served); None draws "no trusted root reached",
    unless ``rooted`` says a root was reached without naming it.
    """
    from rich.tree import Tree

    tree = Tree(Text(label, style="bold"))
    node = tree
    for i, info in enumerate(chain):
        line = Text("leaf: " if i == 0 else "intermediate: ", style="bold")
        line.append_text(cert_line(info))
        line.append("  ")
        line.append_text(days_left_text(info, now))
        node = node.add(line)
    if root is not None:
        line = Text("root (trusted, not served): ", style="bold green")
        line.append_text(cert_line(root))
        node.add(line)
    elif rooted:
        node.add(Text("a trusted root (not served)", style="bold green"))
    elif chain:
        node.add(Text("no trusted root reached", style="bold red"))
    return tree


def problem_list(problems: Sequence[Problem]) -> RenderableType:
    """Problems, worst first, each with its code, message and hint in its severity's colour."""
    if not problems:
        return Text("no problems found", style="green")
    ordered = sorted(problems, key=lambda p: -p.severity.rank)
    lines: list[RenderableType] = []
    for p in ordered:
        style = severity_style(p.severity)
        line = Text(f"{_SEVERITY_MARK[p.severity.value]} {p.severity.value} ", style=style)
        line.append(f"[{p.code.value}] ", style=style)
        line.append(p.message)
        lines.append(line)
        if p.hint:
            lines.append(Text(f"    hint: {p.hint}", style="dim"))
    return Group(*lines)


def print_problems(out: Console, problems: Sequence[Problem], *, title: str = "problems") -> None:
    out.print(Text(title, style="bold"))
    # unwrapped: a message is one line to read, grep or paste into a ticket
    out.print(problem_list(problems), soft_wrap=True)


def verdict(ok: bool, good: str, bad: str) -> Text:
    """The one-line answer a report starts with."""
    return Text(f"✓ {good}", style="bold green") if ok else Text(f"✗ {bad}", style="bold red")


# --- the commands' reports ----------------------------------------------------------------------


def inspection(report: Inspection) -> None:
    """Every certificate, key and CSR found; days left are counted from ``report.now``."""
    from certfleet.certinfo import describe, fingerprint

    pool = report.pool
    say(
        Text(
            f"{len(pool.certificates)} certificate(s), {len(pool.keys)} key(s), {len(pool.csrs)} CSR(s)",
            style="bold",
        )
    )
    for i, item in enumerate(pool.certificates, start=1):
        extra: list[tuple[str, str | Text]] = [("format", item.format.value)]
        if item.friendly_name:
            extra.append(("friendly name", item.friendly_name))
        console.print()
        table = cert_table(
            describe(item.cert), now=report.now, title=f"certificate {i}", source=item.source, extra=extra
        )
        console.print(table)
    for i, found in enumerate(report.keys, start=1):
        key = found.key
        console.print()
        say(Text(f"key {i}: {key.key_type}", style="bold"))
        say(f"  source    {key.source} ({key.format.value}{', encrypted' if key.encrypted else ''})")
        for cert in found.certificates:
            say(f"  matches   certificate {cert.source} sha256:{fingerprint(cert.cert)[:16]}…")
        if found.csrs:
            say(f"  matches   CSR {', '.join(c.source for c in found.csrs)}")
        if not found.certificates and not found.csrs:
            say("  matches   nothing among these files", style="yellow")
    for i, request in enumerate(report.csrs, start=1):
        info = request.info
        console.print()
        say(Text(f"CSR {i}", style="bold"))
        names = ", ".join([*info.dns_names, *info.ip_addresses]) or "(no subjectAltName)"
        names += f"; also {', '.join(info.other_names)}" if info.other_names else ""
        say(f"  subject   {info.subject}")
        say(f"  names     {names}")
        say(f"  key       {info.key_type}")
        say(f"  signature {info.signature_algorithm}{'' if info.signature_valid else ' (INVALID)'}")
        say(f"  key file  {request.key.source if request.key is not None else 'not among these files'}")
        for fault in info.faults:
            say(f"  fault     {fault}", style="yellow")
        say(f"  source    {request.csr.source}")
    if pool.ignored:
        console.print()
        say(f"ignored (held nothing usable): {', '.join(pool.ignored)}")
    if report.problems:
        console.print()
        print_problems(console, report.problems)


def verification(result: Verification, *, at: dt.datetime, trust: TrustStore) -> None:
    from certfleet.certinfo import describe

    name = result.name or "(no name)"
    say(verdict(result.valid, f"valid for {name} at {at:%Y-%m-%d %H:%M} UTC", f"NOT valid for {name}"))
    chain = list(result.chain)
    # the path ends at an anchor even when the leaf is refused for its name or its dates
    anchor = chain.pop() if len(chain) > 1 and trust.contains(chain[-1]) else None
    root = describe(anchor) if anchor is not None else None
    console.print(chain_tree([describe(c) for c in chain], root, now=at))
    if result.problems or not result.valid:
        print_problems(console, result.problems)


def chain_failed(result: ChainResult) -> bool:
    """The chain does not reach a trusted root, or has an error-severity problem."""
    return not result.complete or any(p.severity.value == "error" for p in result.problems)


def chain_report(result: ChainResult, written: Sequence[str] = (), *, now: dt.datetime) -> None:
    """The chain to serve, with days left counted from ``now``."""
    from certfleet.certinfo import describe

    say(
        verdict(
            not chain_failed(result),
            f"chain complete: {len(result.chain)} certificate(s) to serve, ending at a trusted root",
            "the chain is not complete" if not result.complete else "the chain has errors",
        )
    )
    root = describe(result.root) if result.root is not None else None
    console.print(chain_tree([describe(c) for c in result.chain], root, now=now, label="chain to serve"))
    if result.key is not None:
        where = f" ({result.key.source})" if result.key.source else ""
        state = "matches the leaf" if result.key.matches_leaf else "does NOT match the leaf"
        say(f"key{where}: {result.key.type}, {state}")
    for cert in result.fetched:
        say(f"fetched: {describe(cert).subject}")
    for drop in result.dropped:
        where = f" ({drop.source})" if drop.source else ""
        say(f"dropped: {describe(drop.cert).subject}{where}: {drop.reason}")
    for path in written:
        say(f"wrote {path}")
    print_problems(console, result.problems)


def conversion(result: ChainResult, to: OutputFormat, written: Sequence[WrittenFile], *, now: dt.datetime) -> None:
    chain_report(result, now=now)
    console.print()
    say(verdict(True, f"wrote {to}", ""))
    for file in written:
        say(f"  {file.path}{'  (private key, mode 0600)' if file.private else ''}")


def key_written(report: KeyWritten) -> None:
    say(f"wrote {report.path}: {report.type} key, mode 0600{', encrypted' if report.encrypted else ''}")
    say(f"public key id (sha256 of the SPKI): {report.public_key_id}")


def name_plan(plan: NamePlan) -> None:
    fits = plan.fits
    say(
        f"names plan: {plan.count} of {plan.limit} names" + ("" if fits else " — more than the CA allows"),
        style="bold" if fits else "bold red",
    )
    for entry in plan.entries:
        covered = [n for n, by in plan.covered_by.items() if by == entry and n != entry]
        say(f"  {entry}" + (f"  (covers {', '.join(covered)})" if covered else ""))
    for note in plan.notes:
        say(f"  {note}", style="dim")


def csr_written(report: CsrWritten) -> None:
    if report.key is not None:
        key_written(report.key)
    info = report.csr
    say(f"wrote {report.path}: CSR for {info.subject} ({info.key_type}, {info.signature_algorithm})")
    name_plan(report.plan)


def match_result(result: MatchResult) -> None:
    say(verdict(result.ok, "every key belongs to a certificate or CSR here", "a key matches nothing"))
    for pair in result.pairs:
        what = "CA certificate" if pair.cert_is_ca else "certificate"
        say(f"  {pair.key_source} ({pair.key_type}) ↔ {what} {pair.cert_source}: {pair.cert_subject}")
    for c in result.csrs:
        say(f"  {c.key_source} ↔ CSR {c.csr_source}: {c.csr_subject}")
    if result.problems:
        print_problems(console, result.problems)


def names_report(report: NamesReport) -> None:
    name_plan(report.plan)
    cover = report.coverage
    if cover is None:
        return
    console.print()
    say(verdict(cover.complete, f"{report.cert} covers every name", f"{report.cert} misses names"))
    for required, by in cover.covered.items():
        say(f"  ✓ {required}" + (f"  (by {by})" if by != required else ""))
    for missing in cover.missing:
        say(f"  ✗ {missing.reason}", style="red")
