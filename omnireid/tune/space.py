"""Search spaces written in YAML, one format for every search algorithm.

Keys are config keys (flat ``SOLVER.BASE_LR`` or nested under their sections); a value is either a
fixed value (set in every trial) or a one-key mapping naming a distribution::

    SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}     # log-uniform in [low, high]
    SOLVER.IMS_PER_BATCH: {choice: [32, 64, 128]}       # one of the listed values
    DATALOADER.NUM_INSTANCE: {randint: [2, 8]}          # an integer in low..high, both included
    MODEL.LOSSES.TRI.MARGIN: {quniform: [0.1, 0.5, 0.1]}  # uniform, rounded to a multiple of q
    MODEL.BACKBONE.DEPTH: 18x                           # fixed

The space is checked against the config it will be merged into, so a typo in a key or a value of
the wrong type is an error before any trial starts. :meth:`SearchSpace.to_ray` gives Ray Tune's
domains (random, optuna, hyperopt); :meth:`SearchSpace.to_configspace` builds the ConfigSpace that
BOHB samples from (built here, since Ray's own conversion lags behind ConfigSpace's API). Both
encode values the same way; :meth:`SearchSpace.decode` turns a sampled trial config back into
config values.
"""
from __future__ import annotations

import abc
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from omnireid.config import CfgNode, ConfigError
from omnireid.config.fastreid import nest
from omnireid.utils.errors import MissingFileError
from omnireid.utils.registry import Registry

# distribution name (the YAML key) -> Domain subclass
DOMAIN_REGISTRY = Registry("search distribution")

# Keys a trial sets itself; searching them would break the experiment's bookkeeping.
RESERVED_KEYS = ("OUTPUT_DIR",)


class SearchSpaceError(ConfigError):
    """A search-space file is invalid; the message names the file, the key and the bad entry."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_multiple(value: float, q: float) -> bool:
    return abs(round(value / q) * q - value) <= 1e-9 * max(1.0, abs(value))


class Domain(abc.ABC):
    """One searched key: how to sample it in Ray, in ConfigSpace, and how to read a sample back."""

    name: ClassVar[str]  # the YAML key
    usage: ClassVar[str]  # the expected arguments, for error messages

    @classmethod
    @abc.abstractmethod
    def parse(cls, args: Any, where: str) -> "Domain":
        """Build from the YAML arguments; ``where`` prefixes error messages (file: key)."""

    @abc.abstractmethod
    def candidates(self) -> list[Any]:
        """Values that show whether the config key accepts this domain (bounds, every choice)."""

    @abc.abstractmethod
    def to_ray(self) -> Any:
        """The Ray Tune domain (``ray.tune`` is imported by the caller's process already)."""

    @abc.abstractmethod
    def to_configspace(self, name: str) -> Any:
        """A ConfigSpace hyperparameter named ``name``."""

    def decode(self, raw: Any) -> Any:
        """The config value for a sampled ``raw`` value (native Python types)."""
        return raw

    def describe(self) -> str:
        return f"{self.name}{list(self.candidates())}"

    def is_integer(self) -> bool:
        return False

    @staticmethod
    def _numbers(args: Any, count: int, where: str, usage: str) -> list[float]:
        if not isinstance(args, (list, tuple)) or len(args) != count or not all(_is_number(a) for a in args):
            raise SearchSpaceError(f"{where}: expected {usage}, got {args!r}")
        return list(args)


def register_domain(cls: type[Domain]) -> type[Domain]:
    DOMAIN_REGISTRY.register(cls.name)(cls)
    return cls


def _encode_choice(value: Any) -> Any:
    """Scalars stay as they are; lists (e.g. an input size) become their YAML flow text.

    Optuna and ConfigSpace accept only scalar categories; text keeps the table readable.
    """
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return value


@register_domain
@dataclass(frozen=True)
class Choice(Domain):
    """One of the listed values (any YAML values: numbers, strings, booleans, lists)."""

    values: tuple
    name: ClassVar[str] = "choice"
    usage: ClassVar[str] = "a non-empty list of values, e.g. {choice: [32, 64, 128]}"

    @classmethod
    def parse(cls, args: Any, where: str) -> "Choice":
        if not isinstance(args, (list, tuple)) or not args:
            raise SearchSpaceError(f"{where}: expected {cls.usage}, got {args!r}")
        encoded = [_encode_choice(v) for v in args]
        duplicates = sorted({repr(e) for e in encoded if encoded.count(e) > 1})
        if duplicates:
            raise SearchSpaceError(f"{where}: choice lists {', '.join(duplicates)} more than once")
        return cls(tuple(tuple(v) if isinstance(v, list) else v for v in args))

    def candidates(self) -> list[Any]:
        return [list(v) if isinstance(v, tuple) else v for v in self.values]

    def _encoded(self) -> list[Any]:
        return [_encode_choice(v) for v in self.candidates()]

    def to_ray(self) -> Any:
        from ray import tune

        return tune.choice(self._encoded())

    def to_configspace(self, name: str) -> Any:
        import ConfigSpace

        return ConfigSpace.CategoricalHyperparameter(name, self._encoded())

    def decode(self, raw: Any) -> Any:
        raw = raw.item() if hasattr(raw, "item") else raw  # numpy scalars from a sampler
        for encoded, value in zip(self._encoded(), self.candidates()):
            if encoded == raw and isinstance(encoded, bool) == isinstance(raw, bool):
                return value
        raise SearchSpaceError(f"{raw!r} is not one of the choices {self.candidates()}")

    def describe(self) -> str:
        return f"choice{self.candidates()}"


@dataclass(frozen=True)
class _Interval(Domain):
    """``[low, high]`` (and ``q`` for the quantized forms)."""

    low: float
    high: float
    q: float | None = None
    log: ClassVar[bool] = False
    quantized: ClassVar[bool] = False

    @classmethod
    def parse(cls, args: Any, where: str) -> "_Interval":
        values = cls._numbers(args, 3 if cls.quantized else 2, where, cls.usage)
        low, high = values[0], values[1]
        if not low < high:
            raise SearchSpaceError(f"{where}: {cls.name} needs low < high, got {args!r}")
        if cls.log and low <= 0:
            raise SearchSpaceError(f"{where}: {cls.name} needs 0 < low < high, got {args!r}")
        q = values[2] if cls.quantized else None
        if q is not None:
            if q <= 0:
                raise SearchSpaceError(f"{where}: {cls.name} needs q > 0, got {args!r}")
            if not (_is_multiple(low, q) and _is_multiple(high, q)):
                raise SearchSpaceError(f"{where}: {cls.name} needs low and high to be multiples of q, got {args!r}")
        return cls(low, high, q)

    def is_integer(self) -> bool:
        return all(_is_int(v) for v in (self.low, self.high, self.q) if v is not None) and self.q is not None

    def candidates(self) -> list[Any]:
        if self.is_integer():
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    # Quantized domains are sampled continuously and rounded in decode(), the same way for every
    # algorithm: Optuna rejects a quantized log scale, ConfigSpace >= 1 has no quantization at all.
    def to_ray(self) -> Any:
        from ray import tune

        return (tune.loguniform if self.log else tune.uniform)(float(self.low), float(self.high))

    def to_configspace(self, name: str) -> Any:
        import ConfigSpace

        return ConfigSpace.UniformFloatHyperparameter(name, lower=float(self.low), upper=float(self.high),
                                                      log=self.log)

    def decode(self, raw: Any) -> Any:
        value = float(raw)
        if self.q is not None:
            steps = round(value / self.q)
            value = min(max(steps * self.q, self.low), self.high)
            if self.is_integer():
                return int(round(value))
            # round away the binary noise of steps * q (0.30000000000000004 -> 0.3)
            return float(f"{value:.12g}")
        return value

    def describe(self) -> str:
        args = [self.low, self.high] + ([self.q] if self.q is not None else [])
        return f"{self.name}{args}"


@register_domain
@dataclass(frozen=True)
class Uniform(_Interval):
    """A float drawn uniformly from ``[low, high]``."""

    name: ClassVar[str] = "uniform"
    usage: ClassVar[str] = "[low, high], e.g. {uniform: [0.1, 0.5]}"


@register_domain
@dataclass(frozen=True)
class LogUniform(_Interval):
    """A float whose logarithm is uniform in ``[log low, log high]`` (learning rates, weight decay)."""

    name: ClassVar[str] = "loguniform"
    usage: ClassVar[str] = "[low, high] with 0 < low, e.g. {loguniform: [1.0e-4, 1.0e-2]}"
    log: ClassVar[bool] = True


@register_domain
@dataclass(frozen=True)
class QUniform(_Interval):
    """Uniform in ``[low, high]`` rounded to a multiple of ``q`` (integers when all three are)."""

    name: ClassVar[str] = "quniform"
    usage: ClassVar[str] = "[low, high, q], e.g. {quniform: [16, 64, 8]}"
    quantized: ClassVar[bool] = True


@register_domain
@dataclass(frozen=True)
class QLogUniform(_Interval):
    """Log-uniform in ``[low, high]`` rounded to a multiple of ``q`` (integers when all three are)."""

    name: ClassVar[str] = "qloguniform"
    usage: ClassVar[str] = "[low, high, q] with 0 < low, e.g. {qloguniform: [16, 256, 16]}"
    log: ClassVar[bool] = True
    quantized: ClassVar[bool] = True


@register_domain
@dataclass(frozen=True)
class RandInt(Domain):
    """An integer drawn uniformly from ``low..high``, both ends included."""

    low: int
    high: int
    name: ClassVar[str] = "randint"
    usage: ClassVar[str] = "[low, high] integers (both included), e.g. {randint: [2, 8]}"

    @classmethod
    def parse(cls, args: Any, where: str) -> "RandInt":
        values = cls._numbers(args, 2, where, cls.usage)
        if not all(_is_int(v) for v in values):
            raise SearchSpaceError(f"{where}: randint needs integer bounds, got {args!r}")
        if not values[0] < values[1]:
            raise SearchSpaceError(f"{where}: randint needs low < high, got {args!r}")
        return cls(values[0], values[1])

    def is_integer(self) -> bool:
        return True

    def candidates(self) -> list[Any]:
        return [self.low, self.high]

    def to_ray(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)  # Ray's upper bound is exclusive

    def to_configspace(self, name: str) -> Any:
        import ConfigSpace

        return ConfigSpace.UniformIntegerHyperparameter(name, lower=self.low, upper=self.high)

    def decode(self, raw: Any) -> Any:
        return int(raw)


@dataclass(frozen=True)
class SearchSpace:
    """Searched keys (``domains``) and keys set to the same value in every trial (``fixed``)."""

    domains: dict[str, Domain]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = "<search space>"

    # translation -----------------------------------------------------------------------------
    def to_ray(self) -> dict[str, Any]:
        """Ray Tune's ``param_space`` (flat, keyed by config key)."""
        return {key: domain.to_ray() for key, domain in self.domains.items()}

    def to_configspace(self, seed: int | None = None) -> Any:
        """A ``ConfigSpace.ConfigurationSpace`` with one hyperparameter per searched key."""
        import ConfigSpace

        space = ConfigSpace.ConfigurationSpace(seed=seed)
        space.add([domain.to_configspace(key) for key, domain in self.domains.items()])
        return space

    def decode(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Config key -> value for one trial: the fixed values, then the decoded samples."""
        missing = sorted(set(self.domains) - set(sampled))
        if missing:
            raise SearchSpaceError(f"{self.source}: the sampled config has no value for {', '.join(missing)}")
        values = dict(self.fixed)
        values.update({key: domain.decode(sampled[key]) for key, domain in self.domains.items()})
        return values

    def apply(self, cfg: CfgNode, sampled: dict[str, Any]) -> CfgNode:
        """A copy of ``cfg`` with this trial's values merged in (``cfg`` is left untouched)."""
        out = cfg.clone().defrost()
        out.merge_from_dict(nest(self.decode(sampled)), source=self.source)
        return out

    def describe(self) -> dict[str, str]:
        return {key: domain.describe() for key, domain in self.domains.items()}


def load_search_space(path: str, cfg: CfgNode) -> SearchSpace:
    """Read and check a search-space YAML file against ``cfg`` (the config the trials start from)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"search space file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise SearchSpaceError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    return parse_search_space(data, cfg, source=path)


def parse_search_space(data: Any, cfg: CfgNode, source: str = "<search space>") -> SearchSpace:
    """Check ``data`` (the loaded YAML) against ``cfg`` and build the :class:`SearchSpace`."""
    if not isinstance(data, dict) or not data:
        raise SearchSpaceError(f"{source}: a search space is a non-empty mapping of config keys, got {data!r}")
    domains: dict[str, Domain] = {}
    fixed: dict[str, Any] = {}
    for key, value in _flatten_entries(data, cfg, source):
        if key in domains or key in fixed:
            raise SearchSpaceError(f"{source}: {key} is given twice")
        if key in RESERVED_KEYS:
            raise SearchSpaceError(f"{source}: {key} cannot be searched or fixed here: each trial sets its own")
        where = f"{source}: {key}"
        if _names_a_distribution(value):
            (dist, args), = value.items()
            domain = _domain_class(dist, where).parse(args, where)
            _check_domain_fits(cfg, key, domain, source)
            domains[key] = domain
        else:
            _check_value(cfg, key, value, source)
            fixed[key] = value
    return SearchSpace(domains=domains, fixed=fixed, source=source)


def _names_a_distribution(value: Any) -> bool:
    """A one-key mapping whose key is not a config key (those are upper case): ``{loguniform: [...]}``."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str) \
        and not next(iter(value)).isupper()


def _domain_class(name: str, where: str) -> type[Domain]:
    if name in DOMAIN_REGISTRY:
        return DOMAIN_REGISTRY.get(name)
    known = sorted(DOMAIN_REGISTRY.names())
    close = difflib.get_close_matches(name.lower(), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SearchSpaceError(f"{where}: unknown distribution {name!r}.{hint} Known: {', '.join(known)}")


def _flatten_entries(data: dict, cfg: CfgNode, source: str, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested sections (``SOLVER: {BASE_LR: ...}``) into ``("SOLVER.BASE_LR", ...)``."""
    entries = []
    for key, value in data.items():
        if not isinstance(key, str):
            raise SearchSpaceError(f"{source}: keys are config keys such as SOLVER.BASE_LR, got {key!r}")
        full = f"{prefix}{key}"
        node = _lookup(cfg, full)
        if isinstance(node, CfgNode) and isinstance(value, dict) and not _names_a_distribution(value):
            entries.extend(_flatten_entries(value, cfg, source, prefix=full + "."))
        else:
            entries.append((full, value))
    return entries


def _lookup(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return None
        node = node[part]
    return node


def _check_value(cfg: CfgNode, key: str, value: Any, source: str) -> None:
    """Merge ``value`` into a copy of ``cfg``: the config's own checks name unknown keys and bad types."""
    if isinstance(_lookup(cfg, key), CfgNode):
        raise SearchSpaceError(f"{source}: {key} is a config section; give a key inside it, e.g. "
                               f"{key}.{next(iter(_lookup(cfg, key)))}")
    probe = cfg.clone().defrost()
    try:
        probe.merge_from_dict(nest({key: value}), source=source)
    except ConfigError as exc:
        raise SearchSpaceError(str(exc)) from None


def _check_domain_fits(cfg: CfgNode, key: str, domain: Domain, source: str) -> None:
    current = _lookup(cfg, key)
    if _is_int(current) and not domain.is_integer() and not isinstance(domain, Choice):
        raise SearchSpaceError(
            f"{source}: {key} is an integer but {domain.describe()} draws floats; use randint, or quniform / "
            "qloguniform with integer low, high and q")
    for value in domain.candidates():
        try:
            _check_value(cfg, key, value, source)
        except SearchSpaceError as exc:
            raise SearchSpaceError(f"{exc} (in {key}: {domain.describe()})") from None


def space_summary(space: SearchSpace) -> list[str]:
    """Human-readable lines, e.g. for the command's start-up log."""
    lines = [f"{key}: {text}" for key, text in space.describe().items()]
    lines += [f"{key}: {value!r} (fixed)" for key, value in space.fixed.items()]
    return lines
