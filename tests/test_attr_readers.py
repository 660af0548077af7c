"""Attribute annotation readers against fixture files in the official structure."""
import numpy as np
import pytest
from scipy.io import loadmat

from attr_fixtures import MARKET_BINARY, PA100K_NAMES, cell, make_market_attribute, make_pa100k
from omnireid.data.datasets import DatasetLayoutError
from omnireid.tasks.attributes.readers import (MARKET_AGE, read_attribute_csv, read_identity_attributes,
                                               read_pa100k, read_synthetic_attributes, split_identities)


def test_fixture_mat_has_the_official_matlab_layout(tmp_path):
    folder, _ = make_market_attribute(tmp_path)
    # How the published readers index the real file: a 1x1 struct of 1x1 structs of 1xK rows.
    data = loadmat(str(folder / "market_attribute.mat"))["market_attribute"][0][0]
    assert set(data.dtype.names) == {"train", "test"}
    train = data["train"][0][0]
    assert train["age"].shape == (1, 2)
    assert train["image_index"][0][1][0] == "0007"
    pa_folder, _ = make_pa100k(tmp_path)
    pa = loadmat(str(pa_folder / "annotation.mat"))
    assert pa["attributes"][2][0][0] == "Hat"
    assert pa["train_images_name"][0][0][0] == "000001.jpg"


def test_market_attribute_mat(tmp_path):
    folder, structs = make_market_attribute(tmp_path)
    schema, splits = read_identity_attributes(str(folder / "market_attribute.mat"), "market_attribute",
                                              {"age": MARKET_AGE})
    assert schema.binary == MARKET_BINARY  # the train struct's order; the test struct's differs
    assert [g.name for g in schema.groups] == ["age"]
    assert set(splits["train"]) == {2, 7} and set(splits["test"]) == {1, 3}
    for split, pids in (("train", [2, 7]), ("test", [1, 3])):
        for k, pid in enumerate(pids):
            labels = splits[split][pid]
            expected = [structs[split][f][0, k] - 1 for f in MARKET_BINARY]
            np.testing.assert_array_equal(labels.attributes, expected)
            assert labels.mask.all()
            assert labels.groups.tolist() == [structs[split]["age"][0, k] - 1]  # a class index, not a BCE target


def test_market_attribute_bad_values_name_the_field(tmp_path):
    from scipy.io import savemat

    path = tmp_path / "bad.mat"
    rows = {"hat": np.array([[1.0, 3.0]]), "image_index": cell(["0001", "0002"], (1, 2))}
    savemat(str(path), {"market_attribute": {"train": rows, "test": rows}})
    with pytest.raises(DatasetLayoutError, match=r"market_attribute.train.hat holds \[3.0\]"):
        read_identity_attributes(str(path), "market_attribute")
    with pytest.raises(DatasetLayoutError, match="no variable 'duke_attribute'"):
        read_identity_attributes(str(path), "duke_attribute")


def test_pa100k_annotation(tmp_path):
    folder, mat = make_pa100k(tmp_path)
    schema, splits = read_pa100k(str(folder / "annotation.mat"))
    assert schema.binary == PA100K_NAMES and schema.groups == ()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 3]
    name, labels = splits["val"][1]
    assert name == "000008.jpg"
    np.testing.assert_array_equal(labels.attributes, mat["val_label"][1])


def test_split_identities_is_seeded_and_disjoint():
    train, val = split_identities(list(range(1, 21)) * 3, 0.25, seed=0)
    assert len(val) == 5 and not (train & val) and train | val == set(range(1, 21))
    assert split_identities(list(range(1, 21)), 0.25, seed=0)[1] == val
    assert split_identities([4, 5], 0.01)[1] != set()  # a requested validation split is never empty
    assert split_identities([4, 5], 0.0)[1] == set()


def test_attribute_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("path,hat,bag,age:young|adult|old\n"
                    "imgs/a.jpg,1,0,adult\n"
                    "/abs/b.jpg,,1,\n"
                    "\n"
                    "c.jpg,0,,old\n")
    schema, items = read_attribute_csv(str(path))
    assert schema.binary == ("hat", "bag")
    assert schema.groups[0].classes == ("young", "adult", "old")
    assert [p for p, _ in items] == [str(tmp_path / "imgs/a.jpg"), "/abs/b.jpg", str(tmp_path / "c.jpg")]
    np.testing.assert_array_equal(np.stack([l.mask for _, l in items]), [[1, 1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(np.stack([l.attributes for _, l in items]), [[1, 0], [0, 1], [0, 0]])
    assert [int(l.groups[0]) for _, l in items] == [1, -1, 2]


@pytest.mark.parametrize("text,match", [
    ("path,hat\na.jpg,2\n", "line 2: binary attribute 'hat' must be 0 or 1"),
    ("path,age:young|old\na.jpg,teen\n", r"line 2: attribute 'age' must be one of \['young', 'old'\]"),
    ("path,hat\na.jpg,1,0\n", "line 2: expected 2 columns"),
    ("image,hat\na.jpg,1\n", "line 1: the header must be"),
    ("path,age:young\n", "at least two classes"),
    ("path,hat,hat\n", "repeated"),
])
def test_attribute_csv_errors_name_the_line(tmp_path, text, match):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DatasetLayoutError, match=match):
        read_attribute_csv(str(path))


def test_synthetic_attributes_csv(tmp_path):
    from omnireid.data.synthetic import plan_synthetic_reid, write_synthetic_reid

    write_synthetic_reid(str(tmp_path), seed=3, num_train_ids=4, num_test_ids=3, num_cameras=2,
                         num_distractors=2, num_junk=1)
    schema, labels = read_synthetic_attributes(str(tmp_path / "attributes.csv"))
    _, identities = plan_synthetic_reid(seed=3, num_train_ids=4, num_test_ids=3, num_cameras=2,
                                        num_distractors=2, num_junk=1)
    assert set(labels) == {i.pid for i in identities}
    for identity in identities:
        enc = labels[identity.pid]
        expected = [identity.sleeves == "short", identity.hair_length == "long", identity.body_type == "broad",
                    identity.hat, identity.bag, identity.backpack]
        np.testing.assert_array_equal(enc.attributes, np.array(expected, dtype=np.float32))
        groups = dict(zip([g.name for g in schema.groups], enc.groups.tolist()))
        upper = schema.groups[0]
        assert upper.classes[groups["upper_colour"]] == identity.upper_colour
        pattern = schema.groups[2].classes[groups["pattern_colour"]]
        assert pattern == (identity.pattern_colour if identity.upper_pattern != "plain" else "none")
