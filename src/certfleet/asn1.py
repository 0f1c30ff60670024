"""Just enough DER to take apart what cryptography refuses whole: a certificate's extensions, a
subjectAltName holding a name type it does not know, the key algorithm of a certificate it cannot load.

Reading never raises for bad input: a TLV that does not fit yields None (or ends the iteration),
and the caller reports the object as it would any undecodable one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["SEQUENCE", "Tlv", "children", "encode", "read_tlv"]

SEQUENCE = 0x30
_MAX_LENGTH_BYTES = 4


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    start: int  # offset of the tag
    content: int  # offset of the value
    end: int  # offset just past the value

    def value(self, data: bytes) -> bytes:
        return data[self.content : self.end]

    def whole(self, data: bytes) -> bytes:
        return data[self.start : self.end]


def read_tlv(data: bytes, pos: int = 0, limit: int | None = None) -> Tlv | None:
    """The DER TLV at ``pos`` (within ``limit``, default the end of ``data``), or None when it does not fit."""
    stop = len(data) if limit is None else limit
    if pos + 2 > stop:
        return None
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:  # high tag numbers: not in the structures read here
        return None
    if first < 0x80:
        content, length = pos + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > _MAX_LENGTH_BYTES or pos + 2 + count > stop:
            return None  # indefinite (BER) lengths are not DER
        content, length = pos + 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
    end = content + length
    return Tlv(tag, pos, content, end) if end <= stop else None


def children(data: bytes, parent: Tlv) -> Iterator[Tlv]:
    """The TLVs inside a constructed ``parent``, in order; ends early at one that does not fit."""
    pos = parent.content
    while pos < parent.end:
        item = read_tlv(data, pos, parent.end)
        if item is None:
            return
        yield item
        pos = item.end


def encode(tag: int, content: bytes) -> bytes:
    """One DER TLV."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content
