"""Key material out of what a command printed, before the text is stored or shown.

A node's commands are run by certfleet and their output is kept in the deploy history, shown on
the console and returned by its API. A command that prints a key (by mistake or by design:
``cat privkey.pem``, ``openssl pkey -text``, ``base64 key.der``) must not put it there, so every
output goes through :func:`clean` where it enters a record: PEM blocks, base64 runs that look
like encoded keys and long hex dumps are replaced by a short marker, and the text is capped.

The rules err on the side of removing: a long random-looking token or a SHA-256 in hex is
removed too; paths, words, messages and short identifiers stay.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TEXT", "cap", "clean", "redact"]

MAX_TEXT = 64 * 1024  # characters kept by default: the end, where a failing command says why

# a PEM block, or an opening line whose end was never printed (output cut by a timeout)
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?(?:-----END \1-----|\Z)", re.S)
# the end of a block whose start is not in the text (only the tail of the output was kept)
_PEM_END = re.compile(r"\A.*?-----END ([A-Z0-9 ]{1,40})-----", re.S)
_B64_LINE = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
# `openssl pkey -text` prints secret numbers as colon-separated bytes over several lines
_HEX_COLON = re.compile(r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2}:[ \t]*\r?\n?[ \t]*){15,}[0-9A-Fa-f]{2}\b")
# `xxd -p` lines and raw secrets in hex; longer than any digest but SHA-256's 64 digits
_HEX_RUN = re.compile(r"\b[0-9A-Fa-f]{48,}\b")

_MARK = "[redacted: {}]"


def _random_looking(run: str) -> bool:
    # base64 of key bytes mixes cases and digits; a path or a word does not
    body = run.rstrip("=")
    return (
        any(c.isupper() for c in body)
        and any(c.islower() for c in body)
        and any(c.isdigit() or c == "+" for c in body)
        and body.count("/") * 4 < len(body)
    )


def _b64_blocks(text: str) -> str:
    """Runs of lines holding nothing but base64, one of them long and random-looking: a key's
    body without its armour. The short last line of the block goes with it."""
    lines = text.split("\n")
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if any(len(line.strip()) >= 40 and _random_looking(line.strip()) for line in block):
            out.append(_MARK.format("base64 block"))
        else:
            out.extend(block)
        block.clear()

    for line in lines:
        if _B64_LINE.fullmatch(line.strip()):
            block.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


def redact(text: str) -> str:
    """``text`` without PEM blocks, base64 runs that look like keys, or long hex dumps."""
    # the label in lower case: scanners of logs and pages look for "PRIVATE KEY", which a marker
    # must not set off
    text = _PEM.sub(lambda m: _MARK.format(f"PEM {m.group(1).strip().lower()}"), text)
    text = _PEM_END.sub(lambda m: _MARK.format(f"end of a PEM {m.group(1).strip().lower()}"), text)
    text = _b64_blocks(text)
    text = _B64_RUN.sub(lambda m: _MARK.format("base64") if _random_looking(m.group(0)) else m.group(0), text)
    text = _HEX_COLON.sub(_MARK.format("hex bytes"), text)
    return _HEX_RUN.sub(_MARK.format("hex"), text)


def cap(text: str, limit: int = MAX_TEXT) -> str:
    """The end of ``text``, at most ``limit`` characters (``…`` in front when cut)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """What may be stored or shown of a command's output: redacted, then capped."""
    return cap(redact(text), limit)
