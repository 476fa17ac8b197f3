"""Logging and progress bars. The library logs to ``logging.getLogger("cellmorph")`` and never
prints; the command line decides where messages go and how verbose they are.

Progress bars are tqdm's (``tqdm.auto``: widgets in Jupyter). They show on an interactive
terminal (``disable=None``), so a log redirected to a file never fills with cursor-movement
escape codes, and in a Jupyter kernel, whose stderr is no terminal but draws widgets;
``--quiet`` turns them off everywhere.

A notebook sees the library's INFO lines after ``logging.basicConfig(level=logging.INFO)``
(the library adds no handler of its own; the command line adds one).
"""

from __future__ import annotations

import logging
import sys
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


def in_notebook() -> bool:
    """True in a Jupyter kernel (not in a plain IPython terminal)."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return type(get_ipython() if get_ipython else None).__name__ == "ZMQInteractiveShell"


def progress(iterable: Iterable[T] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that shows on a terminal or in a notebook, when progress is enabled."""
    if not (enabled and _progress_enabled):
        disable: bool | None = True
    else:
        disable = False if in_notebook() else None
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
