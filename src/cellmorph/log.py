"""Logging and progress bars. The library logs to ``logging.getLogger("cellmorph")`` and never
prints; the command line decides where messages go and how verbose they are.

Progress bars are tqdm's. They show on an interactive terminal only (``disable=None``), so a
log redirected to a file never fills with cursor-movement escape codes; ``--quiet`` turns them
off everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger("cellmorph")

T = TypeVar("T")
_progress_enabled = True


def get_logger(name: str) -> logging.Logger:
    """The logger of a cellmorph module (a child of ``cellmorph``)."""
    return logging.getLogger(f"cellmorph.{name.removeprefix('cellmorph.')}")


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for the whole process (the CLI's ``--quiet``)."""
    global _progress_enabled
    _progress_enabled = enabled


def progress(iterable: Iterable[T] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that shows only on a terminal and only when progress is enabled."""
    disable = None if (enabled and _progress_enabled) else True
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
