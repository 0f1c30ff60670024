"""Names a certificate must cover: IDNA, wildcard rules, coverage and the SAN-versus-wildcard plan.

Every name is compared in one canonical form: the lowercase A-label (``xn--bcher-kva.example``)
without a trailing dot, or the canonical text of an IP address. Wildcards follow RFC 6125 and the
CA/Browser Forum: ``*`` is the whole left-most label, it covers exactly one label, never the apex,
and never sits directly over a public suffix.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certfleet.certinfo import printable, san_names
from certfleet.errors import InputError, LimitError

# idna and publicsuffixlist are imported where a name needs them (a U-label or an xn-- label, a
# wildcard's base): the plain ASCII host names of most certificates need neither
if TYPE_CHECKING:
    import idna
    from publicsuffixlist import PublicSuffixList

__all__ = [
    "DEFAULT_NAME_LIMIT",
    "Coverage",
    "MissingName",
    "NamePlan",
    "NamesReport",
    "canonical_name",
    "check_wildcard",
    "coverage",
    "covers",
    "is_ip",
    "is_wildcard",
    "normalize_name",
    "normalize_names",
    "plan",
]

DEFAULT_NAME_LIMIT = 15  # what many commercial CAs allow in one certificate
MAX_NAMES = 1000  # far above any CA's limit; a longer list is a mistake, not a certificate
_MAX_INPUT_CHARS = 1024  # U-labels are longer than their A-labels, but not this much
_MAX_NAME_OCTETS = 253  # RFC 1035, in presentation form without the trailing dot
_MAX_LABEL_OCTETS = 63
# full stops that UTS #46 maps to "." (ideographic, fullwidth, halfwidth ideographic)
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_IP_CHARS = re.compile(r"[0-9A-Fa-f:.%]+\Z")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# characters IDNA's mapping drops without a word (a zero-width space, a soft hyphen, a variation
# selector): a name holding one is not the name its author saw, so it is refused, never changed
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")


def _invisible(text: str) -> str | None:
    """The first character of ``text`` that shows nothing, if any (spaces are IDNA's to refuse,
    with the label they are in)."""
    import unicodedata

    if text.isascii() and text.isprintable():
        return None
    for c in text:
        if c.isspace():
            continue
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") or _IGNORABLE.match(c):
            return c
    return None


@functools.cache
def _psl() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    # accept_unknown: a TLD missing from the list is still a public suffix, so "*.internal" is refused
    return PublicSuffixList(accept_unknown=True)


def _refuse(name: str, why: str, hint: str | None = None) -> InputError:
    return InputError(f"{name!r} is not a valid name: {why}", hint=hint or "give a DNS name or an IP address")


def _ip_text(text: str) -> str | None:
    """Canonical text of an IP address, or None when ``text`` is not one."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not _IP_CHARS.match(candidate):
        return None  # cheap refusal of host names before ipaddress's full parse
    if "%" in candidate:
        return None  # zone ids are local to one host; they never appear in a certificate
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def is_ip(name: str) -> bool:
    """True when ``name`` is an IPv4 or IPv6 address (``[::1]`` too)."""
    return _ip_text(name.strip()) is not None


def is_wildcard(name: str) -> bool:
    """True when ``name`` starts with ``*.`` (whether the wildcard is allowed is :func:`check_wildcard`'s job)."""
    return name.strip().startswith("*.")


def _label_reason(label: str, exc: idna.IDNAError) -> str:
    import idna

    text = str(exc)
    if isinstance(exc, idna.InvalidCodepoint):
        bad = next((c for c in label if not (c.isalnum() or c == "-")), None)
        if bad == "_":
            return "an underscore is not allowed in a host name (IDNA)"
        if bad is not None and bad.isspace():
            return "a space is not allowed in a host name"
        if bad is not None:
            return f"the character {bad!r} is not allowed in a host name"
        return "it holds a character IDNA does not allow"
    if "start or end with a hyphen" in text:
        return "a label must not start or end with a hyphen"
    if "3rd and 4th" in text:
        return "hyphens in the 3rd and 4th place are reserved for xn-- A-labels"
    if "too long" in text.lower():
        return f"a label may hold at most {_MAX_LABEL_OCTETS} characters"
    if "A-label" in text or "Punycode" in text or label.lower().startswith("xn--"):
        return "it is not a valid xn-- A-label"
    return text[:200]


def _label(label: str, name: str) -> str:
    if _LDH.match(label) and label[2:4] != "--":
        return label.lower()  # plain letters, digits and hyphens: IDNA maps nothing
    if not label:
        raise _refuse(name, "it has an empty label (two dots in a row, or a leading dot)")
    if "*" in label:
        raise _refuse(
            name,
            f"label {label!r}: '*' is allowed only as the whole left-most label",
            hint="write a wildcard as *.example.com",
        )
    import idna

    try:
        alabel = idna.encode(label, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise _refuse(name, f"label {label!r}: {_label_reason(label, exc)}") from exc
    except UnicodeError as exc:  # the punycode codec's own errors on a malformed xn-- label
        raise _refuse(name, f"label {label!r}: it is not a valid xn-- A-label") from exc
    if len(alabel) > _MAX_LABEL_OCTETS:
        raise _refuse(name, f"label {label!r} is {len(alabel)} characters long as an A-label; at most 63 are allowed")
    return alabel


def normalize_name(name: str) -> str:
    """The canonical form of a DNS name or IP address, or InputError saying which label is wrong and why.

    Lowercase, no trailing dot, U-labels turned into A-labels (IDNA 2008 with UTS #46 mapping),
    a ``*.`` prefix kept as it is, IP addresses in their canonical text.
    """
    if not isinstance(name, str):
        raise TypeError(f"a name is a str, not {type(name).__name__}")
    return _normalize(name)


@functools.lru_cache(maxsize=4096)
def _normalize(name: str) -> str:
    if len(name) > _MAX_INPUT_CHARS:
        raise LimitError(f"a name of {len(name)} characters is not a DNS name", hint="give a DNS name or an IP address")
    text = name.strip()
    shown = text or name
    if not text:
        raise _refuse(shown, "it is empty")
    bad = _invisible(text)
    if bad is not None:
        raise _refuse(
            shown,
            f"an invisible character (U+{ord(bad):04X}) is not allowed in a name",
            hint="type the name again: it holds a character that does not show",
        )
    ip = _ip_text(text)
    if ip is not None:
        return ip
    if "%" in text and _ip_text(text.split("%", 1)[0].strip("[")) is not None:
        raise _refuse(shown, "an IP address with a zone (%...) cannot be in a certificate")
    text = text.translate(_DOTS)
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    if wildcard and not body:
        raise _refuse(shown, "a wildcard needs a domain after '*.'")
    if text == "*":
        raise _refuse(shown, "a wildcard needs a domain after '*.'", hint="write a wildcard as *.example.com")
    labels = [_label(label, shown) for label in body.split(".")]
    if labels[-1].isdigit():
        raise _refuse(
            shown, f"the last label {labels[-1]!r} is all digits, so it is neither a host name nor an IP address"
        )
    out = ".".join(labels)
    full = f"*.{out}" if wildcard else out
    if len(full) > _MAX_NAME_OCTETS:
        raise _refuse(shown, f"it is {len(full)} characters long as A-labels; at most {_MAX_NAME_OCTETS} are allowed")
    # the per-label pass gave the precise reason; this catches rules across labels (bidi),
    # which only A-labels can break
    if "xn--" in out:
        import idna

        try:
            idna.encode(out, uts46=False, std3_rules=True)
        except (idna.IDNAError, UnicodeError) as exc:
            raise _refuse(shown, str(exc)[:200]) from exc
    return full


def _parent(name: str) -> str | None:
    _, dot, rest = name.partition(".")
    return rest if dot else None


def check_wildcard(pattern: str) -> None:
    """Raise InputError unless ``pattern`` is a wildcard a public CA issues and clients honour.

    A name without ``*`` passes. The rules: ``*`` is the whole left-most label, only one ``*``,
    and the rest is neither a single label (``*.com``) nor a public suffix (``*.co.uk``).
    """
    text = pattern.strip()
    if "*" not in text:
        normalize_name(text)
        return
    if not text.startswith("*."):
        first = text.split(".", 1)[0]
        why = (
            f"'*' must be the whole left-most label, not part of {first!r}"
            if "*" in first
            else "'*' is allowed only in the left-most label"
        )
        raise InputError(f"{text!r} is not a valid wildcard: {why}", hint="write a wildcard as *.example.com")
    name = normalize_name(text)
    base = name[2:]
    if "." not in base:
        raise InputError(
            f"{name!r} is not a valid wildcard: it would cover every name in the top-level domain {base!r}",
            hint="put the wildcard under your own domain, e.g. *.example.com",
        )
    if _psl().is_public(base):
        raise InputError(
            f"{name!r} is not a valid wildcard: {base} is a public suffix, shared by many owners",
            hint="put the wildcard under your own domain, e.g. *.example.co.uk",
        )


def canonical_name(name: str) -> str:
    """:func:`normalize_name` for comparing names read from certificates, which can be anything:
    a name it refuses is only lowercased, never an error."""
    try:
        return normalize_name(name)
    except InputError:
        return name.strip().lower().rstrip(".")


@functools.lru_cache(maxsize=4096)
def _wildcard_usable(pattern: str) -> bool:
    try:
        check_wildcard(pattern)
    except InputError:
        return False
    return True


def covers(pattern: str, name: str) -> bool:
    """True when certificate name ``pattern`` covers ``name`` (RFC 6125).

    Case-insensitive; IP addresses only equal IP addresses; ``*.example.com`` covers exactly one
    label (``www.example.com``), never the apex (``example.com``) nor two labels
    (``a.b.example.com``). A wildcard over a public suffix covers nothing, as browsers refuse it.
    """
    return _covers(canonical_name(pattern), canonical_name(name))


def _covers(p: str, n: str) -> bool:
    """:func:`covers` for names already in canonical form."""
    if not p or not n:
        return False
    if p == n:
        # a wildcard among the required names is covered by the same wildcard only
        return not p.startswith("*.") or _wildcard_usable(p)
    if not p.startswith("*.") or "*" in n:
        return False
    first, dot, rest = n.partition(".")
    # an IP address never matches here: a wildcard whose last label is all digits is refused
    return bool(dot) and bool(first) and rest == p[2:] and _wildcard_usable(p)


@dataclass(frozen=True, slots=True)
class MissingName:
    name: str
    reason: str  # a whole sentence, e.g. "example.com is not covered: *.example.com covers ..."

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which required names a certificate covers, by which of its names, and why the rest are not."""

    covered: Mapping[str, str]  # required name -> the certificate name that covers it
    missing: tuple[MissingName, ...]

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "covered": dict(self.covered),
            "missing": [m.to_dict() for m in self.missing],
            "complete": self.complete,
        }


def _why_not(name: str, cert_names: Sequence[str]) -> str:
    head = f"{name} is not covered"
    if _ip_text(name) is not None:
        return f"{head}: an IP address is covered only by the same IP address in the certificate"
    for pattern in cert_names:
        if not pattern.startswith("*."):
            continue
        base, shown = pattern[2:], printable(pattern)
        if name == base:
            return f"{head}: {shown} covers exactly one label, never the apex"
        if name.endswith("." + base):
            if not _wildcard_usable(pattern):
                return f"{head}: {shown} sits over a public suffix, and clients refuse such a wildcard"
            return f"{head}: {shown} covers exactly one label"
    if not cert_names:
        return f"{head}: the certificate names no DNS name or IP address"
    return f"{head}: it is not among the certificate's names"


def _names_of(cert_names: Iterable[str] | x509.Certificate) -> list[str]:
    if isinstance(cert_names, x509.Certificate):
        dns, ips = san_names(cert_names)
        raw: Iterable[str] = [*dns, *ips]
    else:
        raw = cert_names
    out: list[str] = []
    for n in raw:
        c = canonical_name(n)
        if c and c not in out:
            out.append(c)
        if len(out) > MAX_NAMES:
            raise LimitError(f"a certificate with more than {MAX_NAMES} names is not a web certificate")
    return out


def _required(required: Iterable[str], *, wildcards_checked: bool = False) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for raw in required:
        n = normalize_name(raw)
        if wildcards_checked and n.startswith("*."):
            check_wildcard(n)
        if n not in seen:
            seen.add(n)
            out.append(n)
            if len(out) > MAX_NAMES:
                raise LimitError(f"more than {MAX_NAMES} names", hint="split the names over several certificates")
    return out


def normalize_names(names: Iterable[str]) -> list[str]:
    """Names a user gives for a certificate: each normalized, wildcards checked, duplicates dropped.

    In the order given; InputError for the first invalid name or wildcard, LimitError past
    :data:`MAX_NAMES`.
    """
    return _required(names, wildcards_checked=True)


def coverage(cert_names: Iterable[str] | x509.Certificate, required: Iterable[str]) -> Coverage:
    """Check the ``required`` names against a certificate (or the list of its SAN names).

    An exact name is preferred over a wildcard as the one that covers. Required names are user
    input and raise InputError when invalid; certificate names are compared as they are.
    """
    have = _names_of(cert_names)
    covered: dict[str, str] = {}
    missing: list[MissingName] = []
    for name in _required(required):
        by = next((p for p in have if p == name and _covers(p, name)), None)
        by = by or next((p for p in have if _covers(p, name)), None)
        if by is None:
            missing.append(MissingName(name, _why_not(name, have)))
        else:
            covered[name] = by
    return Coverage(covered=MappingProxyType(covered), missing=tuple(missing))


@dataclass(frozen=True, slots=True)
class NamePlan:
    """A proposed list of SAN entries for ``required``, counted against a CA's name limit."""

    required: tuple[str, ...]  # normalized, duplicates removed, in the order given
    entries: tuple[str, ...]  # the SAN entries to request, in order
    covered_by: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # name -> its entry
    limit: int = DEFAULT_NAME_LIMIT
    plain_count: int = 0  # how many entries listing every name on its own would take
    notes: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def fits(self) -> bool:
        return self.count <= self.limit

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(e for e in self.entries if e.startswith("*."))

    def to_dict(self) -> dict[str, Any]:
        return {
            "required": list(self.required),
            "entries": list(self.entries),
            "wildcards": list(self.wildcards),
            "count": self.count,
            "limit": self.limit,
            "fits": self.fits,
            "plain_count": self.plain_count,
            "covered_by": dict(self.covered_by),
            "notes": list(self.notes),
        }


def _listing(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


def _sizes(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def plan(required: Iterable[str], *, limit: int = DEFAULT_NAME_LIMIT, wildcards: bool = True) -> NamePlan:
    """Propose the SAN entries for ``required``: each name, or a wildcard where 2+ names share a parent.

    A wildcard is never proposed over a public suffix or a top-level domain, and never stands in
    for the apex: when ``example.com`` itself is required it is listed beside ``*.example.com``.
    Wildcards the user asked for are kept and cover their names. ``limit`` is the CA's maximum.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError("limit is an int")
    if limit < 1:
        raise InputError(f"a name limit of {limit} allows no names", hint="give the CA's limit, e.g. 15")
    names = normalize_names(required)
    if not names:
        raise InputError("no names given", hint="give the DNS names or IP addresses the certificate must cover")
    asked = [n for n in names if n.startswith("*.")]
    covered_by: dict[str, str] = {}
    for n in names:
        if n.startswith("*."):
            covered_by[n] = n
        elif (by := next((w for w in asked if covers(w, n)), None)) is not None:
            covered_by[n] = by

    groups: dict[str, list[str]] = {}
    for n in names:
        if n in covered_by or _ip_text(n) is not None:
            continue
        parent = _parent(n)
        if parent is not None:
            groups.setdefault(parent, []).append(n)
    notes: list[str] = []
    for w in asked:
        under = [n for n, by in covered_by.items() if by == w and n != w]
        if under:
            notes.append(f"{w} covers {len(under)} of the names: {_listing(under)}")
    if wildcards:
        for parent, members in groups.items():
            if len(members) < 2:
                continue
            pattern = f"*.{parent}"
            if _wildcard_usable(pattern):
                covered_by.update(dict.fromkeys(members, pattern))
                notes.append(f"{pattern} covers {len(members)} names: {_listing(members)}")
            elif "." in parent:  # two names under a TLD are simply two domains; not worth a note
                notes.append(
                    f"{_listing(members)} share {parent}, a public suffix: no wildcard can cover them, each is listed"
                )
    for n in names:
        covered_by.setdefault(n, n)

    entries = list(dict.fromkeys(covered_by[n] for n in names))
    for pattern in (e for e in entries if e.startswith("*.")):
        base = pattern[2:]
        if base in covered_by and covered_by[base] == base:
            notes.append(f"{pattern} does not cover {base}; it is listed too")
        deeper = [n for n in names if n.endswith("." + base) and covered_by[n] == n and "*" not in n]
        if deeper:
            verb = "is" if len(deeper) == 1 else "are"
            notes.append(f"{pattern} covers exactly one label: {_listing(deeper)} {verb} listed on its own")

    plain = len(names)
    if any(e.startswith("*.") and e not in asked for e in entries):
        notes.append(f"without wildcards the certificate would list {plain} names")
    if len(entries) > limit:
        advice = "split the names over two or more certificates"
        if not wildcards:
            fewer = plan(names, limit=limit, wildcards=True).count
            if fewer <= limit:
                advice = f"allowing wildcards brings it to {_sizes(fewer)}"
        notes.append(f"{len(entries)} entries are over the CA's limit of {limit}; {advice}")
    return NamePlan(
        required=tuple(names),
        entries=tuple(entries),
        covered_by=MappingProxyType({n: covered_by[n] for n in names}),
        limit=limit,
        plain_count=plain,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class NamesReport:
    """A names plan, and with a certificate, which of the names it covers."""

    plan: NamePlan
    coverage: Coverage | None
    cert: str | None  # where the certificate came from

    @property
    def ok(self) -> bool:
        return self.plan.fits and (self.coverage is None or self.coverage.complete)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "cert": self.cert,
        }
