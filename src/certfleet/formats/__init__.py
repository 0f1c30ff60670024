"""Reading every kind of certificate package, by content, into one :class:`Pool`.

PEM (any mix of blocks, text around them), DER, PKCS#7, PKCS#12 (modern and legacy, keytool's
too), encrypted keys (PKCS#8 and traditional), and zips of all these, read in memory and guarded.
"""

from certfleet.formats._common import MAX_INPUT_BYTES
from certfleet.formats._model import InputFormat, Pool, PoolCert, PoolCSR, PoolKey
from certfleet.formats._pool import detect_format, read_bytes, read_pool
from certfleet.formats._zip import MAX_DEPTH, MAX_MEMBER_BYTES, MAX_MEMBERS, MAX_RATIO, MAX_TOTAL_BYTES

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
    "detect_format",
    "read_bytes",
    "read_pool",
]
