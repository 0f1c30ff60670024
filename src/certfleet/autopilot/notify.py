"""Sending a message to one destination, by its Apprise URL (e-mail, Slack, Teams, Matrix,
webhooks and a hundred more services: https://github.com/caronc/apprise/wiki).

An Apprise URL often holds a secret (an SMTP password, a webhook token, a bot key), so nothing
here lets one out: a URL is shown as Apprise masks it (:func:`shown`), and what Apprise says
about a failed delivery is cleaned of every part of the URL that the masked form hides before it
is returned. Apprise is imported on first use (it loads its plugins then).

:class:`Notifier` is the seam: the autopilot sends through it, tests may pass their own.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from certfleet.errors import InputError

if TYPE_CHECKING:
    from apprise import Apprise

__all__ = ["AppriseNotifier", "Notifier", "redact", "shown"]

MAX_URL = 4096
_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")
_MASK = "****"
# Apprise's own logger says which delivery failed and why; its words are kept (cleaned) for the
# report, never printed by Apprise itself
_LOGGER = "apprise"
_capture_lock = threading.Lock()
_APPRISE_DEFAULTS = {"overflow", "retry", "wait", "optional", "cto", "rto", "format", "emojis", "tz", "store"}


class Notifier(Protocol):
    def send(self, url: str, title: str, body: str) -> str | None:
        """Deliver ``title`` and ``body`` to ``url``; None when delivered, else why not (cleaned)."""
        ...


def _secrets(url: str, masked: str) -> list[str]:
    """The parts of ``url`` that its masked form does not show: what must never be printed."""
    visible = set(_SPLIT.split(unquote(masked)))
    parts = {p for p in _SPLIT.split(unquote(url)) if len(p) >= 3 and p not in visible}
    parts |= {p for p in _SPLIT.split(url) if len(p) >= 3 and p not in visible}
    return sorted(parts, key=len, reverse=True)


def redact(text: str, url: str, masked: str | None = None) -> str:
    """``text`` with every secret part of ``url`` masked."""
    for secret in _secrets(url, masked if masked is not None else shown(url)):
        text = text.replace(secret, _MASK)
    return text


def _fallback(url: str) -> str:
    # what Apprise cannot read is shown as its scheme and host only
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "<unreadable URL>"
    scheme = re.sub(r"[^a-z0-9+.-]", "", parts.scheme.lower())[:20] or "?"
    return f"{scheme}://{host[:80]}/{_MASK}" if host else f"{scheme}://{_MASK}"


def _apprise(url: str) -> Apprise | None:
    with warnings.catch_warnings():
        # Apprise's PGP support (loaded with its e-mail plugin) imports imghdr, which Python warns of
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        asset = apprise.AppriseAsset(app_id="certfleet", app_desc="certfleet", app_url="https://github.com/")
        found = apprise.Apprise(asset=asset)
        with _quiet():
            return found if found.add(url) else None


def _plain(masked: str) -> str:
    # Apprise adds its delivery defaults to every URL it shows (retry=0&wait=0.5...): noise here
    base, _, query = masked.partition("?")
    kept = [p for p in query.split("&") if p and p.partition("=")[0] not in _APPRISE_DEFAULTS]
    return base + ("?" + "&".join(kept) if kept else "")


def shown(url: str) -> str:
    """``url`` as it may be printed: Apprise's masked form, or its scheme and host only."""
    found = _apprise(url)
    if found is None or len(found) != 1:
        return _fallback(url)
    masked = _plain(str(found[0].url(privacy=True)))  # type: ignore[no-untyped-call]
    # belt and braces: a plugin that forgets to mask a field still shows no secret it was given
    for part in _SPLIT.split(unquote(urlsplit(url).password or "")):
        if len(part) >= 3:
            masked = masked.replace(part, _MASK)
    return masked


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(record.getMessage())


@contextmanager
def _quiet() -> Iterator[_Capture]:
    """Apprise's log records, kept for the report instead of reaching the terminal."""
    logger = logging.getLogger(_LOGGER)
    capture = _Capture()
    with _capture_lock:
        propagate, level = logger.propagate, logger.level
        logger.addHandler(capture)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.WARNING:
            logger.setLevel(logging.WARNING)
        try:
            yield capture
        finally:
            logger.removeHandler(capture)
            logger.propagate = propagate
            logger.setLevel(level)


class AppriseNotifier:
    """Delivers through Apprise, one destination at a time."""

    def check(self, url: str) -> str:
        """``url`` shown masked, once Apprise knows how to deliver to it; :class:`InputError` if not."""
        if not url or len(url) > MAX_URL or any(c in url for c in "\x00\r\n"):
            raise InputError("an alert URL is empty, longer than 4096 characters, or holds a line break")
        if _apprise(url) is None:
            raise InputError(
                f"Apprise cannot deliver to {_fallback(url)}: the URL is not one it knows",
                hint="see https://github.com/caronc/apprise/wiki for the URL of each service, "
                "e.g. mailtos://user:password@example.com?to=ops@example.com or json://host/path",
            )
        return shown(url)

    def send(self, url: str, title: str, body: str) -> str | None:
        found = _apprise(url)
        if found is None:
            return f"Apprise cannot deliver to {_fallback(url)}"
        masked = str(found[0].url(privacy=True))  # type: ignore[no-untyped-call]
        with _quiet() as capture:
            try:
                delivered = bool(found.notify(title=title, body=body))
            except Exception as exc:  # a plugin's surprise is this destination's failure, not the pass's
                capture.lines.append(f"{type(exc).__name__}: {exc}")
                delivered = False
        if delivered:
            return None
        said = "; ".join(dict.fromkeys(line.strip() for line in capture.lines if line.strip()))[-500:]
        return redact(said or "the service did not accept the message", url, masked)
