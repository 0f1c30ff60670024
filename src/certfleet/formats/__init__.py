"""Reading every kind of certificate package, by content, into one :class:`Pool`.

PEM (any mix of blocks, text around them), DER, PKCS#7, PKCS#12 (modern and legacy, keytool's
too), encrypted keys (PKCS#8 and traditional), and zips of all these, read in memory and guarded.

The readers of PKCS#7, PKCS#12, keys and zips are imported when such an input comes: they pull in
zipfile and cryptography's serialization machinery (SSH keys, ciphers, S/MIME's email package),
which a command that only reads certificates (``verify --each``) would pay for at every start.
"""

from certfleet.formats._common import (
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_TOTAL_BYTES,
)
from certfleet.formats._model import InputFormat, Pool, PoolCert, PoolCSR, PoolKey, Unread, Unreadable
from certfleet.formats._pool import detect_format, read_bytes, read_pool

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "InputFormat",
    "Pool",
    "PoolCSR",
    "PoolCert",
    "PoolKey",
    "Unread",
    "Unreadable",
    "detect_format",
    "read_bytes",
    "read_pool",
]
