"""The error every config check raises: one line naming the key and the fix (oml-exp prints it and exits 1)."""

from __future__ import annotations

import os
from typing import Optional


class ConfigError(ValueError):
    """A bad config value; the message names the key and the fix."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def require_file(path: Optional[str], key: str) -> None:
    require(path is None or os.path.isfile(path), f"{key}={path!r} is not a readable file; check the path")
