"""CSV lists of ``path,label`` rows: the custom-data format of the classification and retrieval tasks."""
from __future__ import annotations

import csv
import os

from .bases import DatasetLayoutError

HEADER = ("path", "label")


def read_label_csv(path: str, owner: str) -> list[tuple[str, str]]:
    """``(image path, label)`` rows; ``label`` is kept as written (a class name or an integer).

    An optional header row ``path,label`` is skipped, blank lines too. Relative image paths are
    resolved against the CSV file's folder. ``owner`` (the dataset name) prefixes every error, which
    names the file and the line.
    """
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"{owner}: list file not found: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    rows: list[tuple[str, str]] = []
    first = True
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if first and tuple(c.lower() for c in cells) == HEADER:
                first = False
                continue
            first = False
            where = f"{owner}: {path}, line {reader.line_num}"
            if len(cells) != 2:
                raise DatasetLayoutError(f"{where}: expected 2 columns 'path,label', got {len(cells)}: {row!r}")
            image, label = cells
            if not image or not label:
                raise DatasetLayoutError(f"{where}: empty {'image path' if not image else 'label'}")
            image = os.path.expanduser(image)
            rows.append((image if os.path.isabs(image) else os.path.join(folder, image), label))
    if not rows:
        raise DatasetLayoutError(f"{owner}: {path} lists no image")
    return rows
