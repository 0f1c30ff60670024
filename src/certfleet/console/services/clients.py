"""Client deployment: profiles (a settings template), users, and one-time deployment links.

A link carries a 256-bit token; only its SHA-256 is stored. Opening the link shows a page and uses
nothing up: mail and chat previews and link scanners fetch every link they see. The configuration
is released only to the request the client makes on purpose (a POST to the link, which the page's
button sends), and that uses the link up in the same transaction that reads it, so two fetches can
never both succeed. Every change, and every fetch, is written to the audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import segno
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console import security
from certfleet.console.models import ClientLinkRow, ClientProfileRow, ClientUserRow, Sessions
from certfleet.console.services.audit import Actor, Audit, ConsoleAction
from certfleet.errors import InputError, NotFoundError

__all__ = [
    "CLIENT_PATH",
    "PLACEHOLDERS",
    "ClientLink",
    "ClientProfile",
    "ClientUser",
    "Clients",
    "LinkInfo",
    "LinkRefused",
    "qr_svg",
]

CLIENT_PATH = "/client/"
MAX_TEMPLATE = 64 * 1024
# the certificate's placeholders, filled for the profile's host: the issuing CA's key and the
# lineage's names stay the same across renewals; the leaf's fingerprint changes at each one
CERTIFICATE_PLACEHOLDERS = ("ca_spki_sha256", "ca_pin_sha256", "names", "fingerprint")
PLACEHOLDERS = ("username", "display_name", "email", "server", "host", "port", "profile", *CERTIFICATE_PLACEHOLDERS)
CONTENT_TYPES = ("application/json", "application/xml", "text/plain", "application/x-plist")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


class LinkRefused(InputError):
    """A deployment link that is unknown, already used or expired (which one is not said)."""


@dataclass(frozen=True, slots=True)
class ClientProfile:
    id: int
    name: str
    hostname: str
    content_type: str
    template: str
    link_hours: int
    users: int

    @property
    def host(self) -> str:
        return split_host(self.hostname)[0]

    @property
    def port(self) -> int:
        return split_host(self.hostname)[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "content_type": self.content_type,
            "template": self.template,
            "link_hours": self.link_hours,
            "users": self.users,
        }


@dataclass(frozen=True, slots=True)
class ClientUser:
    id: int
    profile: str
    username: str
    display_name: str
    email: str
    links: int
    last_used_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "profile": self.profile,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "links": self.links,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


@dataclass(frozen=True, slots=True)
class ClientLink:
    """A new link: the only moment its URL exists outside the client's hands."""

    user: str
    profile: str
    url: str
    expires_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "profile": self.profile, "url": self.url, "expires_at": self.expires_at.isoformat()}

    def __repr__(self) -> str:  # the URL carries the token
        return f"ClientLink(user={self.user!r}, expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What the page of an unused link shows: whose it is, until when."""

    user: str
    display_name: str
    profile: str
    expires_at: dt.datetime


def split_host(hostname: str) -> tuple[str, int]:
    host, port = hostname, 443
    if hostname.startswith("["):
        host, _, rest = hostname[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif hostname.count(":") == 1:
        host, _, p = hostname.partition(":")
        port = int(p)
    return host, port


def check_hostname(hostname: str) -> str:
    hostname = hostname.strip().lower()
    if not _HOST.match(hostname):
        raise InputError(f"not a host[:port]: {hostname[:80]!r}", hint="e.g. mbg.example.com or mbg.example.com:8443")
    host, port = split_host(hostname)
    if not (1 <= port <= 65535):
        raise InputError(f"port out of range in {hostname!r}")
    from certfleet.names import normalize_name

    normalize_name(host.strip("[]"))  # refuses invalid labels with a message naming them
    return hostname


def _escape_for(content_type: str) -> Callable[[str], str]:
    if content_type.endswith("json"):
        return lambda v: json.dumps(v)[1:-1]
    if content_type.endswith(("xml", "plist")):
        return lambda v: xml_escape(v, {'"': "&quot;", "'": "&apos;"})
    return lambda v: v


def render_template(template: str, content_type: str, values: Mapping[str, str]) -> str:
    """Fill ``${name}`` placeholders; each value escaped for the profile's content type."""
    esc = _escape_for(content_type)
    return string.Template(template).safe_substitute({k: esc(v) for k, v in values.items()})


def check_template(template: str) -> str:
    if len(template.encode()) > MAX_TEMPLATE:
        raise InputError(f"the template is larger than {MAX_TEMPLATE // 1024} KiB")
    unknown = sorted(
        {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(template)}
        - {None}
        - set(PLACEHOLDERS)
    )
    if unknown:
        raise InputError(
            f"unknown placeholder ${{{unknown[0]}}}",
            hint="placeholders: " + ", ".join(f"${{{p}}}" for p in PLACEHOLDERS),
        )
    return template


def qr_svg(url: str) -> str:
    """The link as a QR code, inline SVG (no external image)."""
    return str(segno.make(url, error="m").svg_inline(scale=5, title="deployment link", dark="#000", light="#fff"))


class Clients:
    def __init__(self, sessions: Sessions, *, audit: Audit, clock: Clock) -> None:
        self._db = sessions
        self._audit = audit
        self._clock = clock

    def profiles(self) -> list[ClientProfile]:
        with self._db(write=False) as s:
            rows = s.scalars(select(ClientProfileRow).order_by(ClientProfileRow.name)).all()
            return [self._profile(r) for r in rows]

    @staticmethod
    def _profile(r: ClientProfileRow) -> ClientProfile:
        return ClientProfile(r.id, r.name, r.hostname, r.content_type, r.template, r.link_hours, len(r.users))

    def save_profile(
        self,
        actor: Actor,
        name: str,
        *,
        hostname: str,
        template: str,
        content_type: str = "application/json",
        link_hours: int = 72,
    ) -> ClientProfile:
        """Create the profile, or update the one of that name."""
        name = name.strip()
        if not _NAME.match(name):
            raise InputError("a profile name is 1 to 64 letters, digits or . _ -")
        hostname = check_hostname(hostname)
        template = check_template(template)
        if content_type not in CONTENT_TYPES:
            raise InputError(f"content type must be one of {', '.join(CONTENT_TYPES)}")
        if not (1 <= link_hours <= 24 * 30):
            raise InputError("a link lives between 1 hour and 30 days")
        now = self._clock()
        with self._db(write=True) as s:
            row = s.scalar(select(ClientProfileRow).where(ClientProfileRow.name == name))
            if row is None:
                row = ClientProfileRow(name=name, created_at=now)
                s.add(row)
            row.hostname, row.template, row.content_type = hostname, template, content_type
            row.link_hours, row.updated_at = link_hours, now
            s.flush()
            profile = self._profile(row)
        self._audit.record(actor, ConsoleAction.PROFILE_SAVE, {"profile": profile.name, "hostname": profile.hostname})
        return profile

    def remove_profile(self, actor: Actor, name: str) -> None:
        with self._db(write=True) as s:
            row = s.scalar(select(ClientProfileRow).where(ClientProfileRow.name == name))
            if row is None:
                raise NotFoundError(f"no client profile named {name!r}")
            s.delete(row)
        self._audit.record(actor, ConsoleAction.PROFILE_REMOVE, {"profile": name})

    def users(self) -> list[ClientUser]:
        with self._db(write=False) as s:
            rows = s.scalars(select(ClientUserRow).order_by(ClientUserRow.username)).all()
            return [self._user(r) for r in rows]

    @staticmethod
    def _user(r: ClientUserRow) -> ClientUser:
        used = [link.used_at for link in r.links if link.used_at is not None]
        return ClientUser(
            r.id, r.profile.name, r.username, r.display_name, r.email, len(r.links), max(used) if used else None
        )

    def add_user(
        self, actor: Actor, profile: str, username: str, *, display_name: str = "", email: str = ""
    ) -> ClientUser:
        username = username.strip()
        if not (1 <= len(username) <= 128) or not username.isprintable():
            raise InputError("a user name is 1 to 128 printable characters")
        if len(display_name) > 200 or len(email) > 254:
            raise InputError("display name or e-mail too long")
        try:
            with self._db(write=True) as s:
                prof = s.scalar(select(ClientProfileRow).where(ClientProfileRow.name == profile))
                if prof is None:
                    raise InputError(f"no client profile named {profile!r}")
                row = ClientUserRow(
                    profile=prof,
                    username=username,
                    display_name=display_name.strip(),
                    email=email.strip(),
                    created_at=self._clock(),
                )
                s.add(row)
                s.flush()
                user = self._user(row)
        except IntegrityError as exc:
            raise InputError(f"profile {profile} already has a user {username}") from exc
        self._audit.record(actor, ConsoleAction.USER_ADD, {"user": user.username, "profile": user.profile})
        return user

    def remove_user(self, actor: Actor, user_id: int) -> str:
        with self._db(write=True) as s:
            row = s.get(ClientUserRow, user_id)
            if row is None:
                raise NotFoundError(f"no client user with id {user_id}")
            name = row.username
            s.delete(row)
        self._audit.record(actor, ConsoleAction.USER_REMOVE, {"user": name})
        return name

    def new_link(self, actor: Actor, user_id: int) -> ClientLink:
        """A one-time link for one user; earlier unused links of that user stop working. Its URL
        exists only in what is returned."""
        link = self._new_link(user_id, created_by=actor.audit_name)
        self._audit.record(
            actor,
            ConsoleAction.LINK_CREATE,
            {"user": link.user, "profile": link.profile, "expires_at": link.expires_at.isoformat()},
        )
        return link

    def _new_link(self, user_id: int, *, created_by: str) -> ClientLink:
        now = self._clock()
        token = security.new_token()
        with self._db(write=True) as s:
            user = s.get(ClientUserRow, user_id)
            if user is None:
                raise NotFoundError(f"no client user with id {user_id}")
            for old in user.links:
                if old.used_at is None and old.expires_at > now:
                    old.expires_at = now
            expires = now + dt.timedelta(hours=user.profile.link_hours)
            s.add(
                ClientLinkRow(
                    token_hash=security.token_hash(token),
                    user=user,
                    created_by=created_by,
                    created_at=now,
                    expires_at=expires,
                )
            )
            url = f"https://{user.profile.hostname}{CLIENT_PATH}{token}"
            return ClientLink(user.username, user.profile.name, url, expires)

    def peek(self, token: str) -> LinkInfo:
        """Whose the link is, without using it (what a link scanner's GET sees). Refused when used,
        expired or unknown."""
        now = self._clock()
        with self._db(write=False) as s:
            link = self._usable(s, token, now)
            user = link.user
            return LinkInfo(user.username, user.display_name, user.profile.name, link.expires_at)

    def fetch(
        self, token: str, *, address: str, certificate: Callable[[str], Mapping[str, str]]
    ) -> tuple[str, str, str]:
        """Use a link: (content type, configuration, user name). Refused when used or expired.

        ``certificate(host)`` gives the certificate placeholders (``CERTIFICATE_PLACEHOLDERS``) for
        the certificate served for the profile's host. The fetch is audited under the actor ``client``.
        """
        content_type, body, user = self._fetch(token, address=address, certificate=certificate)
        self._audit.record_as("client", ConsoleAction.FETCH, {"user": user, "address": address})
        return content_type, body, user

    @staticmethod
    def _usable(s: Session, token: str, now: dt.datetime) -> ClientLinkRow:
        if not token or len(token) > 128:
            raise LinkRefused("this deployment link is not valid")
        link = s.scalar(select(ClientLinkRow).where(ClientLinkRow.token_hash == security.token_hash(token)))
        if link is None or link.used_at is not None or link.expires_at <= now:
            raise LinkRefused(
                "this deployment link is used, expired or unknown",
                hint="ask the administrator for a new link",
            )
        return link

    def _fetch(
        self, token: str, *, address: str, certificate: Callable[[str], Mapping[str, str]]
    ) -> tuple[str, str, str]:
        now = self._clock()
        with self._db(write=True) as s:
            link = self._usable(s, token, now)
            link.used_at = now
            link.used_from = address[:64]
            user, prof = link.user, link.user.profile
            host, port = split_host(prof.hostname)
            served = certificate(host.strip("[]"))
            values = {
                "username": user.username,
                "display_name": user.display_name,
                "email": user.email,
                "server": prof.hostname,
                "host": host,
                "port": str(port),
                "profile": prof.name,
                **{name: served.get(name, "") for name in CERTIFICATE_PLACEHOLDERS},
            }
            return prof.content_type, render_template(prof.template, prof.content_type, values), user.username
