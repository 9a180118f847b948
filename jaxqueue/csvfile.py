"""Numeric columns of a CSV file with a header row, for the trace and calibration readers.

Errors name the file, the column and the row (data rows count from 1, the header excluded), so a
user can find the bad cell; column names are matched case-insensitively and without punctuation
(``num_prefill_tokens``, ``NumPrefillTokens`` and ``num-prefill-tokens`` are one name).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["Table", "TableError", "normalize"]


class TableError(ValueError):
    """A file that cannot be read as the numeric table it should be (the message says why)."""


def normalize(name: str) -> str:
    """A column name without case and punctuation."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


class Table:
    """The header and rows of a CSV file, read once; :meth:`numbers` converts one column."""

    def __init__(self, path: str | Path):
        self.source = str(path)
        try:
            with open(path, newline="") as handle:
                rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
        except OSError as err:
            raise TableError(f"{self.source}: cannot be read: {err.strerror or err}") from None
        except (UnicodeDecodeError, csv.Error) as err:
            raise TableError(f"{self.source}: is not a CSV text file: {err}") from None
        if not rows:
            raise TableError(f"{self.source}: is empty: needs a header row and at least one "
                             "data row")
        self.columns = [cell.strip() for cell in rows[0]]
        self.rows = rows[1:]
        if not self.rows:
            raise TableError(f"{self.source}: has a header ({', '.join(self.columns)}) but no "
                             "data rows")

    def __len__(self) -> int:
        return len(self.rows)

    def find(self, given: str | None, candidates: Sequence[str], field: str,
             option: str) -> str | None:
        """The column holding ``field``: ``given`` if named (it must exist), else the one column
        whose normalized name is among ``candidates``; None if none is; an error if several are
        (the user then names one with ``option``)."""
        if given is not None:
            hits = [c for c in self.columns if normalize(c) == normalize(given)]
            if not hits:
                raise TableError(f"{self.source}: {option} {given!r} is not a column; the "
                                 f"columns are {', '.join(self.columns)}")
            return hits[0]
        wanted = {normalize(c) for c in candidates}
        hits = [c for c in self.columns if normalize(c) in wanted]
        if len(hits) > 1:
            raise TableError(f"{self.source}: the {field} column is ambiguous ({', '.join(hits)} "
                             f"all fit): name one with {option}")
        return hits[0] if hits else None

    def numbers(self, column: str) -> np.ndarray:
        """One column as float64; every cell must be a finite number."""
        index = self.columns.index(column)
        out = np.empty(len(self.rows))
        for r, row in enumerate(self.rows):
            cell = row[index].strip() if index < len(row) else ""
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise TableError(f"{self.source}: column {column}, data row {r + 1}: {cell!r} "
                                 "is invalid: must be a finite number")
            out[r] = value
        return out
