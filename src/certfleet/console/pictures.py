"""Inline SVG pictures for the pages: a certificate's lifetime, and a chain from leaf to root."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from markupsafe import Markup

from certfleet.fleet.health import Health
from certfleet.problems import EXPIRING_DAYS

__all__ = ["ChainBox", "chain_svg", "timeline_svg"]


_FILL = {Health.GOOD: "#1f7a3a", Health.WARN: "#b26a00", Health.BAD: "#b3261e", Health.NONE: "#6b7280"}


def _text(value: str, limit: int = 60) -> str:
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return escape(value, {'"': "&quot;"})


def timeline_svg(
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    *,
    warn_days: int = EXPIRING_DAYS,
    width: int = 420,
) -> Markup:
    """The validity period as a bar, the part already used shaded, and a marker for today."""
    total = max((not_after - not_before).total_seconds(), 1.0)
    used = min(max((now - not_before).total_seconds() / total, 0.0), 1.0)
    days_left = (not_after - now).days
    health = Health.BAD if now >= not_after else Health.WARN if days_left <= warn_days else Health.GOOD
    x0, bar = 8, width - 16
    used_w = round(bar * used, 1)
    marker = round(x0 + used_w, 1)
    left = "expired" if now >= not_after else f"{days_left} days left"
    label = f"valid {not_before:%Y-%m-%d} to {not_after:%Y-%m-%d}, {left}"
    return Markup(  # noqa: S704 (every value interpolated is escaped or numeric)
        f'<svg class="timeline" role="img" aria-label="{_text(label, 120)}" viewBox="0 0 {width} 46" '
        f'width="{width}" height="46" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_text(label, 120)}</title>"
        f'<rect x="{x0}" y="10" width="{bar}" height="12" rx="6" fill="#e5e7eb"/>'
        f'<rect x="{x0}" y="10" width="{used_w}" height="12" rx="6" fill="{_FILL[health]}" opacity="0.85"/>'
        f'<line x1="{marker}" y1="4" x2="{marker}" y2="28" stroke="#111827" stroke-width="2"/>'
        f'<text x="{x0}" y="42" font-size="11" fill="#374151">{not_before:%Y-%m-%d}</text>'
        f'<text x="{x0 + bar}" y="42" font-size="11" fill="#374151" text-anchor="end">{not_after:%Y-%m-%d}</text>'
        f'<text x="{x0 + bar / 2}" y="42" font-size="11" fill="{_FILL[health]}" text-anchor="middle" '
        f'font-weight="bold">{_text(left)}</text>'
        "</svg>"
    )


@dataclass(frozen=True, slots=True)
class ChainBox:
    """One certificate of a chain as drawn: its role, subject and a health colour."""

    role: str  # "leaf", "intermediate", "root", "missing"
    title: str
    detail: str
    health: Health
    href: str | None = None


def chain_svg(boxes: Sequence[ChainBox], *, width: int = 520) -> Markup:
    """Boxes from leaf (top) to root (bottom), each signed by the one below it."""
    box_h, gap = 54, 26
    height = max(len(boxes), 1) * (box_h + gap) - gap + 8
    parts = [
        f'<svg class="chain" role="img" aria-label="certificate chain" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>certificate chain, leaf first</title>",
    ]
    for i, box in enumerate(boxes):
        y = 4 + i * (box_h + gap)
        dash = ' stroke-dasharray="6 4"' if box.role == "missing" else ""
        rect = (
            f'<rect x="4" y="{y}" width="{width - 8}" height="{box_h}" rx="8" fill="#ffffff" '
            f'stroke="{_FILL[box.health]}" stroke-width="2"{dash}/>'
            f'<rect x="4" y="{y}" width="10" height="{box_h}" rx="4" fill="{_FILL[box.health]}"/>'
            f'<text x="24" y="{y + 20}" font-size="13" font-weight="bold" fill="#111827">'
            f"{_text(box.role)}: {_text(box.title)}</text>"
            f'<text x="24" y="{y + 40}" font-size="11" fill="#374151">{_text(box.detail, 80)}</text>'
        )
        if box.href:
            rect = f'<a href="{_text(box.href, 300)}">{rect}</a>'
        parts.append(rect)
        if i + 1 < len(boxes):
            ax = width // 2
            y1, y2 = y + box_h + 2, y + box_h + gap - 2
            parts.append(
                f'<line x1="{ax}" y1="{y1}" x2="{ax}" y2="{y2 - 6}" stroke="#6b7280" stroke-width="2"/>'
                f'<polygon points="{ax - 5},{y2 - 8} {ax + 5},{y2 - 8} {ax},{y2}" fill="#6b7280"/>'
                f'<text x="{ax + 10}" y="{(y1 + y2) // 2 + 4}" font-size="10" fill="#6b7280">signed by</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from escaped text only)
