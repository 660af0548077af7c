"""Search algorithms and trial schedulers by name (``--search-alg`` / ``--scheduler``).

Each entry builds the Ray object from the one search-space format. Budgets are counted in
evaluations (Ray's ``training_iteration``: one per report), so HyperBand, ASHA and PBT decide at
evaluation points, where every trial has a whole-state checkpoint to resume from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from omnireid.config import ConfigError
from omnireid.utils.registry import Registry

from .space import SearchSpace

SEARCH_ALGORITHMS = Registry("search algorithm")
SCHEDULERS = Registry("scheduler")

TIME_ATTR = "training_iteration"  # Ray counts reports: one per evaluation


def _plain_hyperband() -> type:
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler


def _bohb_hyperband() -> type:
    from ray.tune.schedulers import HyperBandForBOHB

    return HyperBandForBOHB


@dataclass(frozen=True)
class SearchSettings:
    """What a search algorithm is built from."""

    space: SearchSpace
    seed: int
    metric: str
    mode: str
    max_concurrent: int  # 0: no limit


@dataclass(frozen=True)
class SearchAlgorithm:
    """``build(settings) -> (search algorithm, param_space)``; ``schedulers``: the ones it works with."""

    build: Callable[[SearchSettings], tuple[Any, dict]]
    description: str
    schedulers: tuple[str, ...] | None = None
    hyperband_class: Callable[[], type] = _plain_hyperband


@dataclass(frozen=True)
class SchedulerSettings:
    """What a scheduler is built from."""

    max_t: int  # evaluations in a full trial
    reduction_factor: float
    space: SearchSpace
    algorithm: SearchAlgorithm


@dataclass(frozen=True)
class Scheduler:
    """``budget_warning(max_t, reduction_factor)``: why this budget wastes trials, or None."""

    build: Callable[[SchedulerSettings], Any]
    description: str
    search_algorithms: tuple[str, ...] | None = None
    budget_warning: Callable[[int, float], str | None] = lambda max_t, reduction_factor: None


def _register(registry: Registry, name: str, entry: Any) -> None:
    registry.register(name)(entry)


def _random(s: SearchSettings) -> tuple[Any, dict]:
    from ray.tune.search import BasicVariantGenerator

    # Not a Searcher: Ray's max_concurrent_trials does not reach it, it takes its own limit.
    return BasicVariantGenerator(random_state=s.seed, max_concurrent=s.max_concurrent), s.space.to_ray()


def _limited(searcher: Any, s: SearchSettings) -> Any:
    from ray.tune.search import ConcurrencyLimiter

    return ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent) if s.max_concurrent else searcher


def _optuna(s: SearchSettings) -> tuple[Any, dict]:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed), metric=s.metric, mode=s.mode)
    return _limited(searcher, s), s.space.to_ray()


def _hyperopt(s: SearchSettings) -> tuple[Any, dict]:
    from ray.tune.search.hyperopt import HyperOptSearch

    return _limited(HyperOptSearch(random_state_seed=s.seed, metric=s.metric, mode=s.mode), s), s.space.to_ray()


def _bohb(s: SearchSettings) -> tuple[Any, dict]:
    from ray.tune.search.bohb import TuneBOHB

    if not s.space.domains:
        raise ConfigError(f"{s.space.source}: bohb needs at least one distribution to search")
    # BOHB samples from a ConfigSpace built here (Ray's conversion does not follow ConfigSpace >= 1).
    searcher = TuneBOHB(space=s.space.to_configspace(seed=s.seed), seed=s.seed, metric=s.metric, mode=s.mode)
    return _limited(searcher, s), {}


_register(SEARCH_ALGORITHMS, "random", SearchAlgorithm(_random, "random sampling"))
_register(SEARCH_ALGORITHMS, "optuna", SearchAlgorithm(_optuna, "Optuna's TPE sampler"))
_register(SEARCH_ALGORITHMS, "hyperopt", SearchAlgorithm(_hyperopt, "HyperOpt's TPE"))
_register(SEARCH_ALGORITHMS, "bohb", SearchAlgorithm(_bohb, "BOHB (HpBandSter's model-based HyperBand)",
                                                     schedulers=("hyperband",), hyperband_class=_bohb_hyperband))


def _fifo(settings: SchedulerSettings) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _hyperband(settings: SchedulerSettings) -> Any:
    cls = settings.algorithm.hyperband_class()
    return cls(time_attr=TIME_ATTR, max_t=settings.max_t, reduction_factor=settings.reduction_factor)


def hyperband_short_rungs(max_t: int, reduction_factor: float) -> list[int]:
    """Top rungs of HyperBand brackets that end below ``max_t``, as Ray builds them.

    Ray starts bracket ``s`` at ``r0 = int(max_t / eta**s)`` and multiplies by ``eta`` ``s`` times
    (capped at ``max_t``), so unless ``max_t`` is a multiple of ``eta**s`` the trials a bracket
    promotes stop short of a full trial and can never be the reproducible best.
    """
    brackets = int(round(math.log(max_t) / math.log(reduction_factor))) + 1 if max_t > 1 else 1
    short = set()
    for s in range(1, brackets):
        rung = int(max_t * reduction_factor ** (-s))
        if rung == 0:  # Ray skips such brackets
            continue
        for _ in range(s):
            rung = int(min(rung * reduction_factor, max_t))
        if rung < max_t:
            short.add(rung)
    return sorted(short)


def _hyperband_budget_warning(max_t: int, reduction_factor: float) -> str | None:
    short = hyperband_short_rungs(max_t, reduction_factor)
    if not short:
        return None
    return (f"with {max_t} evaluations per trial and reduction factor {reduction_factor:g}, HyperBand brackets "
            f"stop their best trials after {', '.join(map(str, short))} evaluations, before the end of training; "
            f"make the evaluations per trial a power of {reduction_factor:g} (or set --max-t / --reduction-factor)")


def _asha(settings: SchedulerSettings) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=TIME_ATTR, max_t=settings.max_t, grace_period=1,
                         reduction_factor=settings.reduction_factor)


def _pbt(settings: SchedulerSettings) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    if not settings.space.domains:
        raise ConfigError(f"{settings.space.source}: pbt needs at least one distribution to mutate")
    return PopulationBasedTraining(time_attr=TIME_ATTR, perturbation_interval=1,
                                   hyperparam_mutations=settings.space.to_ray())


_register(SCHEDULERS, "fifo", Scheduler(_fifo, "every trial runs to the end"))
_register(SCHEDULERS, "hyperband", Scheduler(_hyperband, "HyperBand: brackets of successive halving "
                                                         "(BOHB's variant with --search-alg bohb)",
                                             budget_warning=_hyperband_budget_warning))
_register(SCHEDULERS, "asha", Scheduler(_asha, "asynchronous successive halving"))
_register(SCHEDULERS, "pbt", Scheduler(_pbt, "population based training: copy the best trials' state, "
                                             "mutate hyperparameters", search_algorithms=("random",)))


def check_combination(search_alg: str, scheduler: str) -> None:
    """Raise a ConfigError when the two do not work together (e.g. BOHB without HyperBand)."""
    algorithm, sched = SEARCH_ALGORITHMS.get(search_alg), SCHEDULERS.get(scheduler)
    if algorithm.schedulers is not None and scheduler not in algorithm.schedulers:
        raise ConfigError(f"--search-alg {search_alg} works only with --scheduler {' or '.join(algorithm.schedulers)}")
    if sched.search_algorithms is not None and search_alg not in sched.search_algorithms:
        raise ConfigError(f"--scheduler {scheduler} works only with --search-alg "
                          f"{' or '.join(sched.search_algorithms)} (it samples the population itself)")
