"""The one clock seam. Faces read the time here and pass it in (``now=``); tests pass a fixed or
stepped clock. The core never reads the time itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)
