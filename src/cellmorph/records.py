"""Result records: how they show in a notebook, and how they become ``metrics.json``.

- A repr that fits on a screen (tables and arrays by their shape, not their contents) and,
  where a result has a table worth seeing, that table as HTML: a result dataclass inherits
  :class:`ShortRepr` and is declared ``@dataclass(repr=False)`` (the generated repr would
  print every array); one with a ``summary_table()`` method shows that table in Jupyter.
- :func:`as_dict`: a summary record as the plain dict ``metrics.json`` holds.
"""

from __future__ import annotations

import dataclasses
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

_LONGEST = 60  # characters of any one field in a repr


def short(value: object) -> str:
    """A field's value in a few characters: tables and arrays by shape, long text cut."""
    if isinstance(value, pd.DataFrame):
        return f"<DataFrame {len(value)} rows x {value.shape[1]} columns>"
    if isinstance(value, np.ndarray):
        return f"<array {'x'.join(map(str, value.shape))} {value.dtype}>"
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, dict) and len(value) > 3:
        return f"{{{len(value)} entries: {', '.join(map(str, list(value)[:3]))}, ...}}"
    if isinstance(value, list | tuple) and value and (
            len(value) > 4 or any(_is_record(v) for v in value)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"[{len(value)} x {'/'.join(kinds)}]"
    if _is_record(value):
        return f"<{type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= _LONGEST else text[:_LONGEST - 3] + "..."


def _is_record(value: object) -> bool:
    """A dataclass instance or a config (pydantic model): shown by its type alone."""
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or \
        isinstance(value, BaseModel)


class ShortRepr:
    """A repr of one field a line, each :func:`short`; and ``summary_table()`` as HTML."""

    def __repr__(self) -> str:
        fields = [f for f in dataclasses.fields(self) if f.repr]  # type: ignore[arg-type]
        inner = ",\n".join(f"    {f.name}={short(getattr(self, f.name))}" for f in fields)
        return f"{type(self).__name__}(\n{inner}\n)"

    def _repr_html_(self) -> str:
        table = getattr(self, "summary_table", None)
        head = f"<p><b>{escape(type(self).__name__)}</b></p>"
        if table is None:
            return head + f"<pre>{escape(repr(self))}</pre>"
        return head + table().to_html(index=False)


def optional(default: object = None) -> Any:
    """A record field left out of :func:`as_dict` while it is None (absent from the JSON)."""
    return dataclasses.field(default=default, metadata={"omit_none": True})


def as_dict(record: object) -> Any:
    """A record (dataclasses nested in lists and dicts) as plain data, field by field in
    declaration order; optional fields that are None are left out."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: as_dict(getattr(record, f.name)) for f in dataclasses.fields(record)
                if not (f.metadata.get("omit_none") and getattr(record, f.name) is None)}
    if isinstance(record, dict):
        return {k: as_dict(v) for k, v in record.items()}
    if isinstance(record, list | tuple):
        return [as_dict(v) for v in record]
    return record
