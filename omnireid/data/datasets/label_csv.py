"""CSV lists of ``path,label`` rows: the custom-data format of the classification and retrieval tasks."""
from __future__ import annotations

from .bases import DatasetLayoutError
from .csv_lists import read_csv_list

HEADER = ("path", "label")


def read_label_csv(path: str, owner: str) -> list[tuple[str, str]]:
    """``(image path, label)`` rows; ``label`` is kept as written (a class name or an integer).

    The reading rules (optional header ``path,label``, relative paths, errors naming file and line) are
    :func:`read_csv_list`'s; ``owner`` (the dataset name) prefixes every error.
    """
    rows = []
    for row in read_csv_list(path, owner, HEADER)[1]:
        if not row.cells[0]:
            raise DatasetLayoutError(f"{row.where}: empty label")
        rows.append((row.image, row.cells[0]))
    if not rows:
        raise DatasetLayoutError(f"{owner}: {path} lists no image")
    return rows
