"""Property-based tests: whatever a user writes into a CSV list, a config file, a ``KEY VALUE`` override
or a dataset's list files and file names, the readers return a result or raise a ``UserError`` naming
what is wrong -- never another exception (which the CLI would show as a traceback, i.e. a bug)."""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnireid.config import get_cfg, load_yaml_with_base, parse_value
from omnireid.data.datasets import DATASET_REGISTRY
from omnireid.data.datasets.custom_csv import read_csv_items
from omnireid.utils.errors import UserError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a user's file may hold: any characters (including NUL, separators, digits of other scripts),
# biased towards the characters that matter to the parsers.
RELEVANT = st.sampled_from(list(",;:_/.-0123456789 \t\n\r\"'[](){}#&*!|>%@`\\x?cjpgJPG") + ["²", "٣", "\x00", "\ufeff"])
TEXT = st.text(alphabet=st.one_of(RELEVANT, st.characters()), max_size=80)
BYTES = st.one_of(TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=80))


def write_bytes(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# CSV lists ----------------------------------------------------------------------------------------
ROW = st.lists(st.one_of(TEXT, st.integers(-10**30, 10**30).map(str), st.sampled_from(["path", "pid", "camid", ""])),
               min_size=0, max_size=5).map(lambda cells: ",".join(cells))


@SETTINGS
@given(st.one_of(BYTES, st.lists(ROW, max_size=6).map(lambda rows: "\n".join(rows).encode("utf-8", "surrogatepass"))))
def test_csv_reader_returns_items_or_a_user_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = write_bytes(folder, "list.csv", content)
        try:
            items = read_csv_items(path)
        except UserError as exc:
            assert "list.csv" in str(exc)
            return
        for item in items:
            assert isinstance(item["img_path"], str) and item["img_path"]
            assert type(item["targets"]) is int and type(item["camids"]) is int


@SETTINGS
@given(st.lists(st.tuples(st.integers(-5, 10**6), st.integers(-5, 50)), min_size=1, max_size=5))
def test_csv_reader_reads_what_was_written(rows):
    with tempfile.TemporaryDirectory() as folder:
        lines = ["path,pid,camid"] + [f"img/{i}.jpg,{pid},{cam}" for i, (pid, cam) in enumerate(rows)]
        path = write_bytes(folder, "list.csv", "\n".join(lines).encode())
        items = read_csv_items(path)
    assert [(item["targets"], item["camids"]) for item in items] == rows
    assert all(item["img_path"].endswith(f"img{os.sep}{i}.jpg") for i, item in enumerate(items))


# Config files and overrides -----------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**400, 10**400), st.floats(allow_nan=True),
                    TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
EXISTING_KEYS = get_cfg().flat_keys()
KEYS = st.one_of(st.sampled_from(EXISTING_KEYS), st.sampled_from(["MODEL", "SOLVER.AMP", "INPUT.CJ", "KD"]),
                 st.sampled_from(EXISTING_KEYS).map(lambda k: k + "X"), TEXT,
                 st.sampled_from(["INPUT.DO_FLIP", "INPUT.PADDING", "DATALOADER.PK_SAMPLER", "SOLVER.SWA.ENABLED",
                                  "MODEL.OPEN_LAYERS", "SOLVER.LOG_PERIOD", "MODEL.HEADS.NORM_SPLIT",
                                  "DATALOADER.SET_WEIGHT", "SEED.X", "MODEL.BACKBONE.DEPTH.X"]))


@SETTINGS
@given(st.lists(st.tuples(KEYS, st.one_of(TEXT, SCALARS.map(str), VALUES.map(repr))), max_size=4),
       st.booleans())
def test_overrides_merge_or_raise_a_config_error(pairs, odd):
    opts = [part for pair in pairs for part in pair] + (["SEED"] if odd else [])
    cfg = get_cfg()
    try:
        cfg.merge_from_list(opts)
    except UserError:
        return
    assert not odd
    for key, _ in pairs:  # what was accepted is now in the config with the default's type
        if key in EXISTING_KEYS:
            node = cfg
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            default = get_cfg()
            for part in parents:
                default = default[part]
            if default[leaf] is not None and node[leaf] is not None:
                expected = float if isinstance(default[leaf], float) else type(default[leaf])
                assert isinstance(node[leaf], expected), (key, node[leaf])


@SETTINGS
@given(TEXT)
def test_parse_value_never_raises(text):
    parse_value(text)


@SETTINGS
@given(st.one_of(BYTES, st.dictionaries(st.one_of(KEYS, st.just("_BASE_")), VALUES, max_size=4).map(
    lambda d: __import__("yaml").safe_dump(d, allow_unicode=True).encode("utf-8", "surrogatepass"))))
def test_config_files_merge_or_raise_a_config_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = write_bytes(folder, "cfg.yaml", content)
        write_bytes(folder, "base.yaml", b"SEED: 3\n")
        try:
            get_cfg().merge_from_file(path)
        except UserError as exc:
            assert "cfg.yaml" in str(exc) or "base.yaml" in str(exc) or "<" not in str(exc)
            return
        load_yaml_with_base(path)  # what merged is a mapping that loads on its own


@SETTINGS
@given(st.one_of(BYTES, st.dictionaries(KEYS, VALUES, max_size=4).map(
    lambda d: __import__("yaml").safe_dump(d, allow_unicode=True).encode("utf-8", "surrogatepass"))))
def test_fastreid_conversion_translates_or_raises_a_config_error(content):
    from omnireid.compat import translate_fastreid_config

    with tempfile.TemporaryDirectory() as folder:
        path = write_bytes(folder, "fastreid.yml", content)
        try:
            translate_fastreid_config(path)
        except UserError:
            pass


# Dataset layouts: list files and file names --------------------------------------------------------
NAME = st.text(alphabet=st.one_of(RELEVANT, st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=40)


def valid_file_name(name: str) -> bool:
    return "/" not in name and "\x00" not in name and name not in (".", "..") and len(name.encode()) <= 200


@SETTINGS
@given(st.lists(NAME.filter(valid_file_name).map(lambda n: n if n.lower().endswith(".jpg") else n + ".jpg"),
                min_size=1, max_size=5, unique=True))
def test_market1501_file_names_parse_or_raise_a_layout_error(names):
    with tempfile.TemporaryDirectory() as root:
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            for name in names:
                write_bytes(os.path.join(root, "Market-1501-v15.09.15", folder), name, b"")
        try:
            dataset = DATASET_REGISTRY.get("Market1501")(root=root)
        except UserError as exc:
            assert "Market1501" in str(exc)
            return
        for item in dataset.train + dataset.query + dataset.gallery:
            assert type(item["targets"]) is int and type(item["camids"]) is int and item["camids"] >= 0


LIST_LINES = st.lists(st.one_of(TEXT, st.builds(lambda a, b: f"{a} {b}", TEXT, st.integers(-3, 10**9)),
                                st.builds(lambda a, b, c: f"{a}/{b};{c};x", st.integers(0, 99), TEXT, TEXT)),
                      max_size=5).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def _msmt17(root: str, data: bytes) -> None:
    folder = os.path.join(root, "MSMT17_V1")
    for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        write_bytes(folder, name, data)
    os.makedirs(os.path.join(folder, "train"), exist_ok=True)
    os.makedirs(os.path.join(folder, "test"), exist_ok=True)


def _vehicleid(root: str, data: bytes) -> None:
    split = os.path.join(root, "VehicleID_V1.0", "train_test_split")
    for name in ("train_list.txt", "test_list_800.txt"):
        write_bytes(split, name, data)
    os.makedirs(os.path.join(root, "VehicleID_V1.0", "image"), exist_ok=True)


def _veriwild(root: str, data: bytes) -> None:
    split = os.path.join(root, "VERI-Wild", "train_test_split")
    for name in ("train_list.txt", "test_3000.txt", "test_3000_query.txt"):
        write_bytes(split, name, data)
    write_bytes(split, "vehicle_info.txt", b"id/image;Camera ID;Time\n" + data)
    os.makedirs(os.path.join(root, "VERI-Wild", "images"), exist_ok=True)


LIST_DATASETS = {"MSMT17": _msmt17, "VehicleID": _vehicleid, "VeRiWild": _veriwild}


@pytest.mark.parametrize("name", sorted(LIST_DATASETS))
@SETTINGS
@given(data=st.one_of(BYTES, LIST_LINES))
def test_list_file_datasets_parse_or_raise_a_layout_error(name, data):
    with tempfile.TemporaryDirectory() as root:
        LIST_DATASETS[name](root, data)
        try:
            dataset = DATASET_REGISTRY.get(name)(root=root)
        except UserError as exc:
            assert name in str(exc) or ".txt" in str(exc)
            return
        for item in dataset.train + dataset.query + dataset.gallery:
            assert isinstance(item["img_path"], str) and type(item["targets"]) is int and type(item["camids"]) is int


def test_the_readers_find_known_bad_spellings(tmp_path):
    """The cases the properties found: digits int() refuses, repeated signs, binary list files."""
    for row in ("a.jpg,²,0", "a.jpg,--5,0", "a.jpg,1,٣"):
        path = tmp_path / "x.csv"
        path.write_text(row + "\n")
        with pytest.raises(UserError, match="must be an integer"):
            read_csv_items(str(path))
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00a,1,2\n")
    with pytest.raises(UserError, match="not a readable CSV"):
        read_csv_items(str(path))
    assert parse_value("{[1]: 2}") == "{[1]: 2}" and parse_value("[" * 200 + "]" * 200) is not None
    with pytest.raises(UserError, match="too large"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR", str(10**400)])
    (tmp_path / "b.yaml").write_text("_BASE_: [a.yaml]\n")
    with pytest.raises(UserError, match="_BASE_ must name one config file"):
        get_cfg().merge_from_file(str(tmp_path / "b.yaml"))
