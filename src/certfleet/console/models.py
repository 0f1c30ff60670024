"""The console's tables, on the store's declarative base; created by migration ``0002_console``.

Secrets are never stored: passwords as argon2 hashes, every token (session, setup, API, client
deployment) as the SHA-256 of its value.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from certfleet.store._models import Base, UTCDateTime

__all__ = [
    "AccountRow",
    "ApiTokenRow",
    "ClientLinkRow",
    "ClientProfileRow",
    "ClientUserRow",
    "LoginFailureRow",
    "PendingImportRow",
    "RevealRow",
    "SessionRow",
    "Sessions",
    "SetupTokenRow",
]


class Sessions(Protocol):
    """How the console opens a transaction on its tables: :meth:`certfleet.store.Store.session`."""

    def __call__(self, *, write: bool = ...) -> AbstractContextManager[Session]: ...


class AccountRow(Base):
    __tablename__ = "console_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # a Role's value; the database's default is the narrowest (migration 0007_access)
    role: Mapped[str] = mapped_column(String(16), server_default="viewer")
    # the lineages the account may see and act on; None: every lineage
    lineages: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"AccountRow(username={self.username!r}, role={self.role!r})"


class SessionRow(Base):
    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("console_accounts.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    address: Mapped[str | None] = mapped_column(String(64))

    account: Mapped[AccountRow] = relationship()

    def __repr__(self) -> str:
        return f"SessionRow(account_id={self.account_id}, expires_at={self.expires_at.isoformat()})"


class SetupTokenRow(Base):
    """The one-time link that creates the first account."""

    __tablename__ = "console_setup_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ApiTokenRow(Base):
    __tablename__ = "console_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("console_accounts.id", ondelete="CASCADE"), index=True)
    # at most the account's role; "metrics" reads /metrics and nothing else
    role: Mapped[str] = mapped_column(String(16))
    lineages: Mapped[list[Any] | None] = mapped_column(JSON)
    # the token that made this one, if a token did: revoking it revokes this one (no foreign key:
    # tokens are revoked, never deleted, and SQLite cannot add one to an existing table)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    account: Mapped[AccountRow] = relationship()

    def __repr__(self) -> str:
        return f"ApiTokenRow(name={self.name!r})"


class LoginFailureRow(Base):
    """Login attempts not (yet) known to have succeeded, in a row: per account name and client
    address together ("pair:ADDRESS|NAME") and per client address ("address:ADDRESS"). An attempt is
    counted before its password is checked, and uncounted when the password was right."""

    __tablename__ = "console_login_failures"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PendingImportRow(Base):
    """An upload read and shown, waiting for its sender to confirm it (migration 0009_shared_console),
    so that any console process sharing the store can save it. The files and their password may hold
    a private key: they are kept only sealed with the store's vault, bound to this row, and the row
    is deleted when confirmed or stale."""

    __tablename__ = "console_pending_imports"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("console_accounts.id", ondelete="CASCADE"), index=True)
    lineage: Mapped[str] = mapped_column(String(64))
    # nonce + AES-GCM ciphertext of the files, their password and whether a weaker version is accepted
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)

    def __repr__(self) -> str:  # the sealed files stay out of every log and debugger view
        return f"PendingImportRow(lineage={self.lineage!r}, account_id={self.account_id})"


class RevealRow(Base):
    """What a form made that is shown once (a new API token, a new deployment link), waiting for
    the page after the form's redirect (migration 0011_reveals), whichever console process serves
    it. The value is a secret: kept only sealed with the store's vault, bound to this row; the row
    is deleted when taken or stale."""

    __tablename__ = "console_reveals"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("console_accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    # nonce + AES-GCM ciphertext of the value, as JSON
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)

    def __repr__(self) -> str:  # the sealed value stays out of every log and debugger view
        return f"RevealRow(kind={self.kind!r}, account_id={self.account_id})"


class ClientProfileRow(Base):
    """A settings template for a kind of client; placeholders are filled per user."""

    __tablename__ = "console_client_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # host[:port] the clients reach the console at; the certificate served there must pass a phone
    hostname: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    template: Mapped[str] = mapped_column(Text)
    link_hours: Mapped[int] = mapped_column(Integer, default=72)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    users: Mapped[list[ClientUserRow]] = relationship(
        back_populates="profile", order_by="ClientUserRow.username", cascade="all, delete-orphan"
    )


class ClientUserRow(Base):
    __tablename__ = "console_client_users"
    __table_args__ = (UniqueConstraint("profile_id", "username", name="uq_console_client_users_profile_username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("console_client_profiles.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    profile: Mapped[ClientProfileRow] = relationship(back_populates="users")
    links: Mapped[list[ClientLinkRow]] = relationship(
        back_populates="user", order_by="ClientLinkRow.created_at", cascade="all, delete-orphan"
    )


class ClientLinkRow(Base):
    """A one-time deployment link: only the hash of its token is kept."""

    __tablename__ = "console_client_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("console_client_users.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    used_from: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[ClientUserRow] = relationship(back_populates="links")
