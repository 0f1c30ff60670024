"""Rich rendering shared by every command: certificate tables, problem lists, a chain leaf→root.

Only the human view lives here; ``--json`` output comes from the results' ``to_dict()``. This
module imports Rich's table machinery, so commands import it lazily, inside the function that
draws, to keep start-up fast for the paths that print JSON or plain lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from certfleet.certinfo import CertInfo
from certfleet.problems import Problem, Severity

__all__ = [
    "SEVERITY_STYLE",
    "cert_line",
    "cert_table",
    "chain_tree",
    "days_left_text",
    "print_problems",
    "problem_list",
    "verdict",
]

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_SEVERITY_MARK = {Severity.ERROR: "✗", Severity.WARNING: "!", Severity.INFO: "i"}


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def days_left_text(info: CertInfo, now: dt.datetime) -> Text:
    """``41 days left`` in a colour that says how urgent it is; expired and future dates in words."""
    if now < info.not_before:
        return Text(f"not valid until {_iso(info.not_before)}", style="bold red")
    days = info.days_left(now)
    if days < 0:
        return Text(f"expired {-days} days ago", style="bold red")
    style = "bold red" if days < 7 else "yellow" if days < 30 else "green"
    return Text(f"{days} days left", style=style)


def _names(info: CertInfo) -> str:
    names = [*info.dns_names, *info.ip_addresses]
    return ", ".join(names) if names else "(no subjectAltName)"


def cert_table(
    info: CertInfo,
    *,
    now: dt.datetime,
    title: str | None = None,
    source: str | None = None,
    extra: Iterable[tuple[str, str | Text]] = (),
) -> Table:
    """Every field a person checks on one certificate, as a two-column table."""
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
    table.add_row("serial", info.serial)
    table.add_row("sha256", info.sha256)
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


def chain_tree(chain: Sequence[CertInfo], root: CertInfo | None, *, now: dt.datetime, label: str = "chain") -> Tree:
    """The chain as a client walks it: the leaf, under it its issuer, and so on down to the root.

    ``root`` is the trust anchor reached (not served); None draws "no trusted root reached".
    """
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
        style = SEVERITY_STYLE[p.severity]
        line = Text(f"{_SEVERITY_MARK[p.severity]} {p.severity.value} ", style=style)
        line.append(f"[{p.code.value}] ", style=style)
        line.append(p.message)
        lines.append(line)
        if p.hint:
            lines.append(Text(f"    hint: {p.hint}", style="dim"))
    return Group(*lines)


def print_problems(console: Console, problems: Sequence[Problem], *, title: str = "problems") -> None:
    console.print(Text(title, style="bold"))
    # unwrapped: a message is one line to read, grep or paste into a ticket
    console.print(problem_list(problems), soft_wrap=True)


def verdict(ok: bool, good: str, bad: str) -> Text:
    """The one-line answer a report starts with."""
    return Text(f"✓ {good}", style="bold green") if ok else Text(f"✗ {bad}", style="bold red")
