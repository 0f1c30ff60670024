"""Zip packages, read in memory only and guarded: nothing inside a zip ever touches the disk.

A zip is hostile until read: member count, inflated sizes (each and in total) and the compression
ratio are bounded, and the ratio and sizes are checked on the bytes actually inflated, chunk by
chunk, not only on what the headers claim.
"""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib
from collections.abc import Callable

from certfleet.certinfo import printable
from certfleet.errors import CertfleetError, FormatError, LimitError
from certfleet.formats._common import (
    HINT_DAMAGED,
    MAX_DEPTH,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_TOTAL_BYTES,
    Budget,
    MiB,
    NothingUsable,
    NotNeeded,
    damaged,
)
from certfleet.formats._model import Pool, Unreadable, combine

# the ratio is judged once this much came out of one member: small members cannot be bombs, and a
# short, repetitive PEM compresses far better than a whole one
_RATIO_AFTER = 1 * MiB
_CHUNK = 64 * 1024
_JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_HINT_UNSAFE = "a certificate package never needs this; ask the sender for a clean zip"
_HINT_BOMB = "this is not a certificate package; unpack it yourself if you trust it"

# (member source, member bytes, depth) -> what the member holds
ReadMember = Callable[[str, bytes, int], Pool]


def read_zip(source: str, data: bytes, *, depth: int, budget: Budget, read_member: ReadMember) -> Pool:
    if depth > MAX_DEPTH:
        raise LimitError("a zip inside a zip inside a zip; only one level of nesting is read", hint=_HINT_BOMB)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except NotImplementedError as exc:  # a zip format version newer than zipfile knows
        raise FormatError("zip: a zip format certfleet cannot read", hint="unzip it and give the files inside") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise damaged("zip") from exc
    with archive:
        members = _members(source, archive)
        found: list[Pool] = []
        ignored: list[str] = []
        # members that are ours but cannot be read (damaged, encrypted): reported beside the others
        failed: list[CertfleetError] = []
        for info in members:
            member = _member(source, info)
            try:
                if info.flag_bits & 0x1:
                    raise FormatError(
                        "encrypted zip member; certfleet does not open password-protected zips",
                        hint="unzip it with its password and give certfleet the files inside",
                        source=member,
                    )
                content = _inflate(archive, info, member, budget)
                found.append(read_member(member, content, depth + 1))
            except NotNeeded as exc:
                failed.append(exc)  # a CRL: named, not silently dropped
            except NothingUsable:
                ignored.append(member)  # a README, an invoice, an installation guide
            except LimitError:
                raise  # a bomb refuses the whole zip
            except CertfleetError as exc:
                failed.append(exc.with_source(member))
    pool = combine(found)
    if not pool:
        if failed and not isinstance(failed[0], NotNeeded):
            raise failed[0]
        raise NothingUsable("zip holds no certificate, key, CSR, PKCS#7 or PKCS#12")
    unread = tuple(Unreadable.from_error(exc, source) for exc in failed)
    return combine([pool, Pool(ignored=tuple(ignored), unreadable=unread)])


def _members(source: str, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members worth reading, after refusing the whole archive if any member is unsafe."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise LimitError(f"zip has {len(infos):,} members; at most {MAX_MEMBERS:,} are read", hint=_HINT_BOMB)
    for info in infos:
        if not info.filename:  # no tool writes one; zipfile itself trips over it
            raise damaged("zip")
        if _unsafe(info.filename):
            raise FormatError(
                "unsafe path in zip (absolute, or with '..'); the whole zip is refused",
                hint=_HINT_UNSAFE,
                source=_member(source, info),
            )
    wanted: list[zipfile.ZipInfo] = []
    claimed = 0
    for info in infos:
        member = _member(source, info)
        if info.is_dir() or _junk(info.filename):
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise LimitError(_too_big(MAX_MEMBER_BYTES, "per member"), hint=_HINT_BOMB, source=member)
        claimed += info.file_size
        wanted.append(info)
    if claimed > MAX_TOTAL_BYTES:
        raise LimitError(_too_big(MAX_TOTAL_BYTES, "in all"), hint=_HINT_BOMB)
    return wanted


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, budget: Budget) -> bytes:
    out = bytearray()
    compressed = max(info.compress_size, 1)
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                out += chunk
                if len(out) > MAX_MEMBER_BYTES:
                    raise LimitError(_too_big(MAX_MEMBER_BYTES, "per member"), hint=_HINT_BOMB, source=member)
                if budget.inflated + len(out) > MAX_TOTAL_BYTES:
                    raise LimitError(_too_big(MAX_TOTAL_BYTES, "in all"), hint=_HINT_BOMB, source=member)
                if len(out) > _RATIO_AFTER and len(out) > MAX_RATIO * compressed:
                    raise LimitError(
                        f"compression ratio over {MAX_RATIO}:1; refused as a zip bomb", hint=_HINT_BOMB, source=member
                    )
    except NotImplementedError as exc:
        raise FormatError("zip member uses a compression method certfleet cannot read", source=member) from exc
    # zipfile reports a damaged member in many ways: bad CRC, a negative seek, a short read, ...
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError, ValueError) as exc:
        raise FormatError("zip member: damaged or cut short", hint=HINT_DAMAGED, source=member) from exc
    budget.inflated += len(out)
    return bytes(out)


def _member(source: str, info: zipfile.ZipInfo) -> str:
    # a member's name is the sender's text: it must not break the one-line message that names it
    return f"{source}!{printable(info.filename, 200)}"


def _too_big(limit: int, scope: str) -> str:
    return f"inflates to more than {limit // MiB} MiB {scope}; refused as a zip bomb"


def _unsafe(name: str) -> bool:
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    return ".." in path.split("/")


def _junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return "__MACOSX" in parts or parts[-1] in _JUNK_FILES or parts[-1].startswith("._")
