"""One hardened reader for the CSV lists every task accepts (``path,pid,camid``, ``path,label``, ...).

Each format only says its columns; the reading rules live here once: UTF-8 (a BOM allowed), blank
lines skipped, cells stripped, an optional header row equal to the column names, the column count
checked per row, an empty image path refused, relative image paths resolved against the CSV file's
folder, and every error naming the dataset, the file and the line.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from .bases import DatasetLayoutError


@dataclass(frozen=True)
class CsvRow:
    """One data row: ``where`` ("<owner>: <file>, line N") prefixes any error about it."""

    where: str
    image: str  # the first cell, resolved to a path
    cells: tuple[str, ...]  # the other cells, stripped


def read_csv_list(path: str, owner: str, columns: Optional[Sequence[str]] = None,
                  header_help: str = "'path,...'") -> tuple[tuple[str, ...], list[CsvRow]]:
    """``(header, rows)`` of a CSV list whose first column is an image path.

    With ``columns`` the layout is fixed: a header row equal to ``columns`` is optional and returned as
    ``columns``. Without it the first row is the header (required, first cell ``path``) and defines the
    columns, e.g. one per attribute (``header_help`` describes it in errors).
    """
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"{owner}: list file not found: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            lines = [(reader.line_num, [cell.strip() for cell in row]) for row in reader if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error) as exc:  # binary file, NUL byte, a field over csv's size limit
        raise DatasetLayoutError(f"{owner}: {path} is not a readable CSV text file: {exc}") from exc
    header = tuple(columns) if columns is not None else None
    if header is None:
        if not lines:
            raise DatasetLayoutError(f"{owner}: {path} is empty; expected a header {header_help}")
        number, first = lines.pop(0)
        if first[0].lower() != "path" or len(first) < 2:
            raise DatasetLayoutError(f"{owner}: {path}, line {number}: the header must be {header_help}, got "
                                     f"{','.join(first)!r}")
        header = tuple(first)
    elif lines and tuple(c.lower() for c in lines[0][1]) == tuple(c.lower() for c in header):
        lines.pop(0)
    rows = []
    for number, cells in lines:
        where = f"{owner}: {path}, line {number}"
        if len(cells) != len(header):
            raise DatasetLayoutError(f"{where}: expected {len(header)} columns '{','.join(header)}', got {len(cells)}: "
                                     f"{','.join(cells)!r}")
        if not cells[0]:
            raise DatasetLayoutError(f"{where}: empty image path")
        image = os.path.expanduser(cells[0])
        rows.append(CsvRow(where, image if os.path.isabs(image) else os.path.join(folder, image), tuple(cells[1:])))
    return header, rows
