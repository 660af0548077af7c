"""Readers of the attribute annotation files people have, into an :class:`AttributeSchema` + labels.

- PA-100K ``annotation.mat`` (Liu et al., HydraPlus-Net): ``attributes`` (26x1 cell of names),
  ``{train,val,test}_images_name`` (Mx1 cells of file names), ``{train,val,test}_label`` (Mx26 0/1).
- Market-1501-attribute / DukeMTMC-attribute ``market_attribute.mat`` / ``duke_attribute.mat``
  (Lin et al., Pattern Recognition 2019): a struct ``market_attribute`` (``duke_attribute``) with
  fields ``train`` and ``test``, each a struct of 1xK arrays (one column per identity) plus
  ``image_index`` (1xK cell of 4-digit identity strings). Binary fields hold 1 = no / 2 = yes (for
  ``gender`` 2 = female, ``hair`` long, ``up`` short sleeve, ``down`` short, ``clothes`` pants, Duke's
  ``top`` long, ``shoes`` light); Market's ``age`` is 1-4 = young/teenager/adult/old and becomes a
  categorical group (never a binary target). Train and test structs may list fields in different
  orders: fields are looked up by name.
- omnireid's CSV: ``path,attr1,attr2,...`` with a header; cells 0/1, empty = unknown. A categorical
  column is declared in the header as ``name:class1|class2|...`` and holds a class name per row.
- The synthetic data's ``attributes.csv`` (one row per identity, written by
  :mod:`omnireid.data.synthetic`).
"""
from __future__ import annotations

import csv
import os
from typing import Any, Mapping

import numpy as np

from omnireid.data.datasets import DatasetLayoutError

from omnireid.data.datasets.csv_lists import read_csv_list

from .schema import AttributeGroup, AttributeSchema, EncodedLabels

PA100K_SPLITS = ("train", "val", "test")
MARKET_AGE = AttributeGroup("age", ("young", "teenager", "adult", "old"))


def load_mat(path: str) -> dict[str, Any]:
    """A MATLAB file's variables (scipy, structs as objects with attributes, 1x1 arrays squeezed)."""
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"annotation file not found: {path}")
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # scipy comes with the "attributes" extra
        raise ImportError(f"reading {path} needs scipy: pip install 'omnireid[attributes]'") from exc
    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DatasetLayoutError(f"cannot read {path} as a MATLAB file: {exc}") from exc


def _strings(value: Any) -> list[str]:
    """A squeezed cell array of strings (or a single string) as a list."""
    return [str(v).strip() for v in np.atleast_1d(value).ravel()]


def _variable(mat: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetLayoutError(f"{path}: no variable {key!r} (found {found})")
    return mat[key]


# ----------------------------------------------------------------------------------------------
# PA-100K
# ----------------------------------------------------------------------------------------------
def read_pa100k(annotation: str) -> tuple[AttributeSchema, dict[str, list[tuple[str, EncodedLabels]]]]:
    """``(schema, {"train"|"val"|"test": [(image file name, labels)]})`` of PA-100K's official split."""
    mat = load_mat(annotation)
    names = _strings(_variable(mat, "attributes", annotation))
    schema = AttributeSchema(tuple(names))
    splits = {}
    for split in PA100K_SPLITS:
        files = _strings(_variable(mat, f"{split}_images_name", annotation))
        labels = np.atleast_2d(np.asarray(_variable(mat, f"{split}_label", annotation)))
        if labels.shape != (len(files), len(names)):
            raise DatasetLayoutError(f"{annotation}: {split}_label has shape {labels.shape}, expected "
                                     f"({len(files)}, {len(names)}) for {len(files)} images and {len(names)} "
                                     "attributes")
        if not np.isin(labels, (0, 1)).all():
            raise DatasetLayoutError(f"{annotation}: {split}_label must hold 0/1 values")
        ones = np.ones(len(names), dtype=np.float32)
        splits[split] = [(f, EncodedLabels(row.astype(np.float32), ones, np.zeros(0, dtype=np.int64)))
                         for f, row in zip(files, labels)]
    return schema, splits


# ----------------------------------------------------------------------------------------------
# Market-1501-attribute / DukeMTMC-attribute
# ----------------------------------------------------------------------------------------------
def read_identity_attributes(path: str, variable: str, groups: Mapping[str, AttributeGroup] | None = None,
                             ) -> tuple[AttributeSchema, dict[str, dict[int, EncodedLabels]]]:
    """``(schema, {"train"|"test": {pid: labels}})`` of an identity-level attribute ``.mat``.

    ``groups`` names the fields that are categorical (values 1..K) instead of binary (1 = no, 2 = yes).
    Binary attributes keep the file's field names, in the order of the ``train`` struct.
    """
    groups = dict(groups or {})
    root = _variable(load_mat(path), variable, path)
    splits = {}
    field_order: list[str] | None = None
    for split in ("train", "test"):
        if not hasattr(root, split):
            raise DatasetLayoutError(f"{path}: struct {variable!r} has no field {split!r} "
                                     f"(fields: {list(getattr(root, '_fieldnames', []))})")
        struct = getattr(root, split)
        fields = [f for f in getattr(struct, "_fieldnames", []) if f != "image_index"]
        if "image_index" not in getattr(struct, "_fieldnames", []):
            raise DatasetLayoutError(f"{path}: {variable}.{split} has no 'image_index' field")
        if field_order is None:
            field_order = fields
        elif sorted(fields) != sorted(field_order):
            raise DatasetLayoutError(f"{path}: {variable}.train and .test have different fields: "
                                     f"{sorted(field_order)} vs {sorted(fields)}")
        pids = [int(p) for p in _strings(struct.image_index)]
        columns = {f: np.atleast_1d(np.asarray(getattr(struct, f))).ravel() for f in fields}
        for name, column in columns.items():
            if column.shape[0] != len(pids):
                raise DatasetLayoutError(f"{path}: {variable}.{split}.{name} has {column.shape[0]} values for "
                                         f"{len(pids)} identities")
            allowed = range(1, len(groups[name].classes) + 1) if name in groups else (1, 2)
            bad = sorted(set(column.tolist()) - set(allowed))
            if bad:
                raise DatasetLayoutError(f"{path}: {variable}.{split}.{name} holds {bad}; expected values in "
                                         f"{list(allowed)}")
        splits[split] = columns, pids
    assert field_order is not None
    schema = AttributeSchema(tuple(f for f in field_order if f not in groups),
                             tuple(groups[f] for f in field_order if f in groups))
    out: dict[str, dict[int, EncodedLabels]] = {}
    for split, (columns, pids) in splits.items():
        out[split] = {}
        for k, pid in enumerate(pids):
            values: dict[str, Any] = {f: int(columns[f][k]) - 1 for f in schema.binary}
            values.update({g.name: int(columns[g.name][k]) - 1 for g in schema.groups})
            out[split][pid] = schema.encode(values, where=f"{path}: {variable}.{split} identity {pid}: ")
    return schema, out


def split_identities(pids: list[int], fraction: float, seed: int = 0) -> tuple[set[int], set[int]]:
    """``(train pids, validation pids)``: a seeded ``fraction`` of the identities held out for validation.

    Validation is carved from the training identities so that model selection never sees the test set.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction}")
    unique = sorted(set(pids))
    count = int(round(fraction * len(unique)))
    if fraction > 0 and count == 0 and len(unique) > 1:
        count = 1
    order = np.random.default_rng(seed).permutation(len(unique))
    val = {unique[i] for i in order[:count]}
    return set(unique) - val, val


# ----------------------------------------------------------------------------------------------
# CSV formats
# ----------------------------------------------------------------------------------------------
def _parse_header_cell(cell: str, where: str) -> tuple[str, tuple[str, ...] | None]:
    name, sep, classes = cell.partition(":")
    name = name.strip()
    if not name:
        raise DatasetLayoutError(f"{where}: empty column name in the header")
    if not sep:
        return name, None
    values = tuple(c.strip() for c in classes.split("|") if c.strip())
    if len(values) < 2:
        raise DatasetLayoutError(f"{where}: group column {cell!r} must list at least two classes as "
                                 "'name:class1|class2'")
    return name, values


def read_attribute_csv(path: str) -> tuple[AttributeSchema, list[tuple[str, EncodedLabels]]]:
    """``(schema, [(image path, labels)])`` from ``path,attr1,...`` rows (header required).

    Relative image paths are resolved against the CSV file's folder; empty cells are unknown labels.
    """
    header, rows = read_csv_list(
        path, "AttributeCSV", header_help="'path,attr1,attr2,...' (categorical: 'name:class1|class2')")
    where_header = f"AttributeCSV: {path}, header"
    columns = [_parse_header_cell(c, where_header) for c in header[1:]]
    try:
        schema = AttributeSchema(tuple(n for n, c in columns if c is None),
                                 tuple(AttributeGroup(n, c) for n, c in columns if c is not None))
    except ValueError as exc:
        raise DatasetLayoutError(f"{where_header}: {exc}") from None
    items = []
    for row in rows:
        where = f"{row.where}: "
        try:
            labels = schema.encode({name: value for (name, _), value in zip(columns, row.cells)}, where=where)
        except ValueError as exc:
            raise DatasetLayoutError(str(exc)) from None
        items.append((row.image, labels))
    return schema, items


# The synthetic data's attributes.csv: binary attributes are (column, positive value); the other
# described columns are one-of-K groups with the generator's classes.
SYNTHETIC_BINARY = (("short_sleeves", "sleeves", "short"), ("long_hair", "hair_length", "long"),
                    ("broad_body", "body_type", "broad"), ("hat", "hat", "1"), ("bag", "bag", "1"),
                    ("backpack", "backpack", "1"))


def synthetic_schema() -> AttributeSchema:
    """The attributes of :mod:`omnireid.data.synthetic` identities."""
    from omnireid.data import synthetic as S

    colours = tuple(S.COLOURS)
    return AttributeSchema(
        tuple(name for name, _, _ in SYNTHETIC_BINARY),
        (AttributeGroup("upper_colour", colours), AttributeGroup("upper_pattern", tuple(S.UPPER_PATTERNS)),
         AttributeGroup("pattern_colour", ("none",) + colours), AttributeGroup("lower_colour", colours),
         AttributeGroup("lower_style", tuple(S.LOWER_STYLES)), AttributeGroup("hair_colour", tuple(S.HAIR_COLOURS))))


def read_synthetic_attributes(path: str) -> tuple[AttributeSchema, dict[int, EncodedLabels]]:
    """``(schema, {pid: labels})`` of the synthetic data's per-identity ``attributes.csv``."""
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"synthetic attributes not found: {path} (write the data with "
                                 "'omnireid data synth --out DIR')")
    schema = synthetic_schema()
    out: dict[int, EncodedLabels] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"pid"} | {c for _, c, _ in SYNTHETIC_BINARY} | {g.name for g in schema.groups}
        missing = sorted(needed - set(reader.fieldnames or ()))
        if missing:
            raise DatasetLayoutError(f"{path}: missing columns {missing}")
        for row in reader:
            where = f"{path}, line {reader.line_num}: "
            values: dict[str, Any] = {name: int(row[col].strip() == positive) if row[col].strip() else None
                                      for name, col, positive in SYNTHETIC_BINARY}
            values.update({g.name: row[g.name] for g in schema.groups})
            try:
                out[int(row["pid"])] = schema.encode(values, where=where)
            except ValueError as exc:
                raise DatasetLayoutError(str(exc)) from None
    return schema, out
