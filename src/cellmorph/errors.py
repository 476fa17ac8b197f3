"""The one exception type the command line turns into a single clear error line."""

from __future__ import annotations


class CellmorphError(Exception):
    """A problem with the user's input: the message names the file or row and the fix."""
