"""Config: inheritance, overrides, type checks and helpful errors."""
import pytest

from omnireid.config import ConfigError, get_cfg
from omnireid.utils.registry import Registry


def write(path, text):
    path.write_text(text)
    return str(path)


def test_base_inheritance_is_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yml", "SOLVER:\n  MAX_EPOCH: 7\n  BASE_LR: 0.1\nSEED: 3\n")
    child = write(tmp_path / "sub" / "child.yml", "_BASE_: ../base.yml\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = get_cfg().merge_from_file(child)
    assert (cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.BASE_LR, cfg.SEED) == (7, 0.5, 3)


def test_circular_base_is_an_error(tmp_path):
    write(tmp_path / "a.yml", "_BASE_: b.yml\n")
    write(tmp_path / "b.yml", "_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="circular"):
        get_cfg().merge_from_file(str(tmp_path / "a.yml"))


def test_unknown_key_names_file_and_suggests(tmp_path):
    path = write(tmp_path / "bad.yml", "SOLVER:\n  MAX_EPOC: 3\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(path)
    assert "bad.yml" in str(err.value) and "SOLVER.MAX_EPOC" in str(err.value)
    assert "Did you mean SOLVER.MAX_EPOCH" in str(err.value)


def test_unknown_section_on_command_line_suggests():
    with pytest.raises(ConfigError, match="Did you mean SOLVER"):
        get_cfg().merge_from_list(["SOLVR.BASE_LR", "0.1"])


def test_command_line_overrides_are_typed():
    cfg = get_cfg().merge_from_list([
        "SOLVER.MAX_EPOCH", "10", "MODEL.BACKBONE.DEPTH", "18x", "SOLVER.BASE_LR", "1e-3",
        "INPUT.FLIP.ENABLED", "True", "INPUT.SIZE_TRAIN", "[64, 32]", "DATASETS.NAMES", "DukeMTMC",
    ])
    assert cfg.SOLVER.MAX_EPOCH == 10 and cfg.MODEL.BACKBONE.DEPTH == "18x"
    assert cfg.SOLVER.BASE_LR == pytest.approx(1e-3) and cfg.INPUT.FLIP.ENABLED is True
    assert cfg.INPUT.SIZE_TRAIN == [64, 32] and cfg.DATASETS.NAMES == ["DukeMTMC"]


@pytest.mark.parametrize("key,value,expected", [
    ("SOLVER.MAX_EPOCH", "ten", "expects an int"),
    ("INPUT.FLIP.ENABLED", "3", "expects a bool"),
    ("SOLVER.BASE_LR", "fast", "expects a number"),
    ("INPUT.SIZE_TRAIN", "[64, 'a']", "expects an int"),
    ("MODEL.BACKBONE", "x", "is a section"),
])
def test_type_errors_name_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        get_cfg().merge_from_list([key, value])
    assert key.split(".")[0] in str(err.value)


def test_odd_override_count():
    with pytest.raises(ConfigError, match="pairs"):
        get_cfg().merge_from_list(["SOLVER.MAX_EPOCH"])


def test_fastreid_tuple_strings_become_lists(tmp_path):
    path = write(tmp_path / "f.yml", 'MODEL:\n  LOSSES:\n    NAME: ("CrossEntropyLoss", "TripletLoss",)\n'
                                     'DATASETS:\n  NAMES: ("Market1501",)\n')
    cfg = get_cfg().merge_from_file(path)
    assert cfg.MODEL.LOSSES.NAME == ["CrossEntropyLoss", "TripletLoss"]
    assert cfg.DATASETS.NAMES == ["Market1501"]


def test_int_is_accepted_for_float_and_integral_float_for_int():
    cfg = get_cfg().merge_from_dict({"MODEL": {"HEADS": {"SCALE": 64}}, "SOLVER": {"MAX_EPOCH": 60.0}})
    assert isinstance(cfg.MODEL.HEADS.SCALE, float) and cfg.SOLVER.MAX_EPOCH == 60


def test_frozen_config_rejects_changes_and_dump_round_trips(tmp_path):
    cfg = get_cfg().freeze()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.SEED = 4
    path = write(tmp_path / "dump.yml", cfg.dump())
    again = get_cfg().merge_from_file(path)
    assert again.to_dict() == cfg.to_dict()


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.MODEL.LOSSES.NAME.append("TripletLoss")
    assert b.MODEL.LOSSES.NAME == ["CrossEntropyLoss"]


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yml"))
    path = write(tmp_path / "broken.yml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yml"):
        get_cfg().merge_from_file(path)


def test_recipes_load():
    import glob
    import os

    import omnireid.tasks  # noqa: F401  the task recipes' config sections (the CLI imports it the same way)

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    files = glob.glob(os.path.join(root, "**", "*.yml"), recursive=True)
    assert files
    for path in files:
        if path.endswith("_space.yml"):  # `omnireid tune` search spaces: test_tune_space.py checks them
            continue
        get_cfg().merge_from_file(path)


def test_registry_suggests_and_rejects_duplicates():
    reg = Registry("widget")

    @reg.register(aliases=("gadget",))
    def sprocket():
        return 1

    assert reg.get("gadget") is sprocket and "sprocket" in reg
    with pytest.raises(KeyError, match="Did you mean 'sprocket'"):
        reg.get("sprockt")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("sprocket")(lambda: 2)


def test_cli_reports_config_errors_in_one_line(capsys):
    from omnireid.cli.main import main

    assert main(["train", "SOLVER.MAX_EPOC", "3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'SOLVER.MAX_EPOC'" in err and "Traceback" not in err
