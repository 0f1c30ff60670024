"""The console's routes: ``public`` (no login), ``pages`` (HTML), ``api`` (``/api/v1``), ``metrics``."""
