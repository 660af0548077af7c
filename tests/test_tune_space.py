"""Search spaces: YAML parsing, errors that name the key and the entry, translation for every algorithm."""
from __future__ import annotations

import glob
import os

import pytest
import yaml

from omnireid.engine import setup_cfg
from omnireid.tune.space import (DOMAIN_REGISTRY, Choice, LogUniform, QLogUniform, QUniform, RandInt,
                                 SearchSpaceError, Uniform, load_search_space, parse_search_space)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPACE = {
    "SOLVER": {"BASE_LR": {"loguniform": [1.0e-4, 1.0e-2]}, "IMS_PER_BATCH": {"choice": [32, 64]}},
    "DATALOADER.NUM_INSTANCE": {"randint": [2, 8]},
    "MODEL.LOSSES.TRI.MARGIN": {"quniform": [0.1, 0.5, 0.1]},
    "MODEL.HEADS.SCALE": {"qloguniform": [16, 256, 16]},
    "MODEL.LOSSES.CE.EPSILON": {"uniform": [0.0, 0.2]},
    "INPUT.SIZE_TRAIN": {"choice": [[64, 32], [128, 64]]},
    "MODEL.BACKBONE.DEPTH": "18x",
    "SOLVER.MAX_EPOCH": 3,
}


@pytest.fixture(scope="module")
def cfg():
    return setup_cfg(None)


def parse(data, cfg):
    return parse_search_space(data, cfg, source="space.yml")


def test_parses_every_distribution_and_fixed_values(cfg):
    space = parse(SPACE, cfg)
    assert space.domains == {
        "SOLVER.BASE_LR": LogUniform(1.0e-4, 1.0e-2),
        "SOLVER.IMS_PER_BATCH": Choice((32, 64)),
        "DATALOADER.NUM_INSTANCE": RandInt(2, 8),
        "MODEL.LOSSES.TRI.MARGIN": QUniform(0.1, 0.5, 0.1),
        "MODEL.HEADS.SCALE": QLogUniform(16, 256, 16),
        "MODEL.LOSSES.CE.EPSILON": Uniform(0.0, 0.2),
        "INPUT.SIZE_TRAIN": Choice(((64, 32), (128, 64))),
    }
    assert space.fixed == {"MODEL.BACKBONE.DEPTH": "18x", "SOLVER.MAX_EPOCH": 3}
    assert set(DOMAIN_REGISTRY.names()) == {"choice", "uniform", "loguniform", "randint", "quniform", "qloguniform"}


def test_apply_merges_fixed_and_sampled_values_into_a_copy(cfg):
    space = parse(SPACE, cfg)
    sampled = {"SOLVER.BASE_LR": 0.001, "SOLVER.IMS_PER_BATCH": 64, "DATALOADER.NUM_INSTANCE": 5,
               "MODEL.LOSSES.TRI.MARGIN": 0.30000000000000004, "MODEL.HEADS.SCALE": 60.0,
               "MODEL.LOSSES.CE.EPSILON": 0.05, "INPUT.SIZE_TRAIN": "[128, 64]"}
    out = space.apply(cfg, sampled)
    assert out.SOLVER.BASE_LR == 0.001 and out.SOLVER.IMS_PER_BATCH == 64
    assert out.DATALOADER.NUM_INSTANCE == 5 and out.MODEL.LOSSES.TRI.MARGIN == 0.3
    assert out.MODEL.HEADS.SCALE == 64.0  # 60 rounded to the nearest multiple of 16
    assert out.INPUT.SIZE_TRAIN == [128, 64] and out.MODEL.BACKBONE.DEPTH == "18x" and out.SOLVER.MAX_EPOCH == 3
    assert cfg.SOLVER.BASE_LR != 0.001 and cfg.MODEL.BACKBONE.DEPTH == "50x"  # the input is untouched


@pytest.mark.parametrize("data, message", [
    ({"SOLVER.BASE_RL": {"uniform": [0.1, 0.2]}}, r"space.yml: unknown config key 'SOLVER.BASE_RL'.*SOLVER.BASE_LR"),
    ({"SOLVER": {"BASE_RL": 0.1}}, r"unknown config key 'SOLVER.BASE_RL'"),
    ({"SOLVER.BASE_LR": {"logunifrom": [1e-4, 1e-2]}},
     r"space.yml: SOLVER.BASE_LR: unknown distribution 'logunifrom'. Did you mean 'loguniform'"),
    ({"SOLVER.BASE_LR": {"Uniform": [1e-4, 1e-2]}}, r"unknown distribution 'Uniform'. Did you mean 'uniform'"),
    ({"SOLVER.BASE_LR": {"loguniform": [0, 1e-2]}}, r"SOLVER.BASE_LR: loguniform needs 0 < low < high, got \[0"),
    ({"SOLVER.BASE_LR": {"uniform": [0.2, 0.1]}}, r"SOLVER.BASE_LR: uniform needs low < high"),
    ({"SOLVER.BASE_LR": {"uniform": [0.1]}}, r"SOLVER.BASE_LR: expected \[low, high\].*got \[0.1\]"),
    ({"SOLVER.BASE_LR": {"uniform": ["a", 1]}}, r"SOLVER.BASE_LR: expected \[low, high\]"),
    ({"SOLVER.IMS_PER_BATCH": {"uniform": [32, 128]}},
     r"SOLVER.IMS_PER_BATCH is an integer but uniform\[32, 128\] draws floats; use randint"),
    ({"SOLVER.IMS_PER_BATCH": {"quniform": [32, 128, 0.5]}}, r"SOLVER.IMS_PER_BATCH is an integer but quniform"),
    ({"DATALOADER.NUM_INSTANCE": {"randint": [2.5, 8]}}, r"NUM_INSTANCE: randint needs integer bounds"),
    ({"MODEL.LOSSES.TRI.MARGIN": {"quniform": [0.1, 0.55, 0.1]}}, r"TRI.MARGIN: quniform needs low and high to be "
                                                                  r"multiples of q, got \[0.1, 0.55, 0.1\]"),
    ({"MODEL.LOSSES.TRI.MARGIN": {"quniform": [0.1, 0.5, 0]}}, r"quniform needs q > 0"),
    ({"SOLVER.IMS_PER_BATCH": {"choice": []}}, r"SOLVER.IMS_PER_BATCH: expected a non-empty list"),
    ({"SOLVER.IMS_PER_BATCH": {"choice": [32, 32]}}, r"SOLVER.IMS_PER_BATCH: choice lists 32 more than once"),
    ({"SOLVER.IMS_PER_BATCH": {"choice": [32, "big"]}},
     r"SOLVER.IMS_PER_BATCH expects an int, got 'big' \(in SOLVER.IMS_PER_BATCH: choice\[32, 'big'\]\)"),
    ({"MODEL.HEADS.WITH_BNNECK": {"randint": [0, 1]}}, r"WITH_BNNECK expects a bool"),
    ({"SOLVER.MAX_EPOCH": "ten"}, r"space.yml: SOLVER.MAX_EPOCH expects an int, got 'ten'"),
    ({"SOLVER": {"uniform": [0.1, 0.2]}}, r"SOLVER is a config section"),
    ({"OUTPUT_DIR": "elsewhere"}, r"OUTPUT_DIR cannot be searched or fixed here"),
    ({"SOLVER.BASE_LR": 0.1, "SOLVER": {"BASE_LR": 0.2}}, r"SOLVER.BASE_LR is given twice"),
    ([1, 2], r"space.yml: a search space is a non-empty mapping"),
    ({}, r"a search space is a non-empty mapping"),
])
def test_errors_name_the_key_and_the_bad_entry(cfg, data, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse(data, cfg)


def test_file_errors(tmp_path, cfg):
    bad = tmp_path / "bad.yml"
    bad.write_text("SOLVER.BASE_LR: {loguniform: [1, 2]\nSOLVER.MAX_EPOCH: 3\n")
    with pytest.raises(SearchSpaceError, match=r"bad.yml: not valid YAML \(line \d+\)"):
        load_search_space(str(bad), cfg)
    with pytest.raises(FileNotFoundError, match="search space file not found"):
        load_search_space(str(tmp_path / "missing.yml"), cfg)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "Tune", "*space*.yml"))))
def test_example_spaces_parse_against_their_recipe(path):
    recipe = {"bagtricks_space.yml": "configs/Market1501/bagtricks_R50.yml",
              "sbs_space.yml": "configs/Market1501/sbs_R50.yml",
              "demo_space.yml": "configs/Tune/demo_R18.yml"}[os.path.basename(path)]
    space = load_search_space(path, setup_cfg(os.path.join(REPO, recipe)))
    assert space.domains


def _check_decoded(space, values):
    """Every decoded value lies in its domain (and on its grid)."""
    for key, domain in space.domains.items():
        value = values[key]
        if isinstance(domain, Choice):
            assert value in domain.candidates(), key
            continue
        assert domain.low <= value <= domain.high, (key, value)
        if domain.is_integer():
            assert isinstance(value, int), (key, value)
        if getattr(domain, "q", None):
            assert abs(round(value / domain.q) * domain.q - value) < 1e-9, (key, value)


def test_ray_domains_sample_inside_the_space_with_inclusive_randint(cfg):
    space = parse(SPACE, cfg)
    ray_space = space.to_ray()
    seen = set()
    for _ in range(300):
        values = space.decode({k: d.sample() for k, d in ray_space.items()})
        _check_decoded(space, values)
        seen.add(values["DATALOADER.NUM_INSTANCE"])
        assert values["INPUT.SIZE_TRAIN"] in ([64, 32], [128, 64])
        assert isinstance(values["SOLVER.IMS_PER_BATCH"], int)
    assert seen == set(range(2, 9))  # both ends of randint included


def test_configspace_samples_decode_inside_the_space(cfg):
    space = parse(SPACE, cfg)
    cs = space.to_configspace(seed=0)
    assert sorted(cs.keys()) == sorted(space.domains)
    seen = set()
    for config in cs.sample_configuration(300):
        values = space.decode(dict(config))
        _check_decoded(space, values)
        seen.add(values["DATALOADER.NUM_INSTANCE"])
    assert seen == set(range(2, 9))


@pytest.mark.parametrize("name", ["optuna", "hyperopt", "bohb", "random"])
def test_every_search_algorithm_suggests_configs_inside_the_space(cfg, name):
    from omnireid.tune.algorithms import SEARCH_ALGORITHMS, SearchSettings

    space = parse(SPACE, cfg)
    searcher, param_space = SEARCH_ALGORITHMS.get(name).build(SearchSettings(space, 0, "score", "max", 0))
    if name == "random":  # Ray's BasicVariantGenerator samples the domains themselves
        suggestions = [{k: d.sample() for k, d in param_space.items()} for _ in range(5)]
    else:
        searcher.set_search_properties("score", "max", param_space)
        suggestions = [searcher.suggest(f"t{i}") for i in range(5)]
    for suggestion in suggestions:
        values = space.decode(suggestion)
        _check_decoded(space, values)
        space.apply(cfg, suggestion)  # the config accepts every value


def test_yaml_file_round_trip(tmp_path, cfg):
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump(SPACE))
    assert load_search_space(str(path), cfg).domains == parse(SPACE, cfg).domains


@pytest.mark.parametrize("max_t, eta, short", [
    (4, 3, [3]),  # the 4-epoch demo: Ray's bracket s=1 starts at int(4/3)=1 and ends at 3
    (3, 3, []), (9, 3, []), (1, 3, []),
    (10, 3, [9]),  # s=1: 3 -> 9; s=2: 1 -> 3 -> 9
    (4, 2, []),
    (6, 2, [4]),  # s=1: 3 -> 6; s=2: 1 -> 2 -> 4; s=3: r0 = 0, skipped
])
def test_hyperband_rungs_that_stop_before_a_full_trial(max_t, eta, short):
    from omnireid.tune.algorithms import SCHEDULERS, hyperband_short_rungs

    assert hyperband_short_rungs(max_t, eta) == short
    warning = SCHEDULERS.get("hyperband").budget_warning(max_t, eta)
    assert (warning is None) == (not short)
    assert SCHEDULERS.get("asha").budget_warning(max_t, eta) is None
