"""Bring your own network: import from NIR, snnTorch and SpikingJelly; export trained weights back.

Sources (:func:`read_source`):

* a **NIR** graph file (``nir.read``): a feed-forward chain ``Input -> (Linear|Affine ->
  LIF|CubaLIF|IF)+ -> Output``. NIR is continuous-time: ``dt`` turns ``tau`` into steps.
* a **description** (YAML) of a snnTorch (``Leaky``) or SpikingJelly (``LIFNode``/``IFNode``)
  feed-forward network whose ``state_dict`` was saved with ``torch.save``; it is read with
  ``torch.load(weights_only=True)``, never as an arbitrary pickle::

      library: snntorch           # or spikingjelly
      state_dict: net.pt          # relative to this file
      timesteps: 8                # optional (default: the base preset's)
      layers:                     # input to output: one Linear + one neuron each
        - {linear: "0", neuron: "1"}      # snnTorch: beta/threshold/reset come from the state_dict
        - {linear: "2", neuron: {name: "3", type: LIFNode, tau: 8.0, decay_input: false,
                                 v_threshold: 1.0, v_reset: 0.0}}    # SpikingJelly: from here

Every parameter is mapped with the rules of :mod:`spikeforge.model.interchange` and the
integer rule of :func:`spikeforge.model.float_twin.to_integer_weights`; what had to be
approximated comes back as notes, what the chip cannot run raises
:class:`InterchangeError` naming the node. Exports (:func:`export`) write the integer
weights in real units with the neuron's parameters, plus metadata (the whole config) so
that export -> import is bit-exact. Weights files (:func:`save_weights`) are what ``train
--save-weights`` writes and ``train --init`` / ``export --from`` read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..model import interchange as rules
from ..model.float_twin import neuron_constants, rect_spike, to_integer_weights
from .config import Config, ConfigError, config_from_dict, load_config

__all__ = ["InterchangeError", "SourceLayer", "Source", "Imported", "read_source", "read_nir",
           "read_description", "map_to_chip", "import_network", "export", "save_weights", "weights_payload",
           "load_weights", "check_init", "load_snntorch", "load_spikingjelly", "RectSpikeGrad",
           "FORMATS", "WEIGHTS_FORMAT"]

FORMATS = ("nir", "snntorch", "spikingjelly")
WEIGHTS_FORMAT = "spikeforge-weights"
META = "spikeforge."          # prefix of every metadata key spikeforge writes into NIR
_NEURONS_NIR = ("LIF", "CubaLIF", "IF")
_WEIGHTS_NIR = ("Linear", "Affine")


class InterchangeError(ValueError):
    """A source or target the chip cannot take; the message names the node/key and the value."""


# ------------------------------------------------------------------------------ small helpers
def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _atomic_write(writes: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write each file to a temporary name next to it, then rename all: no partial output."""
    temps = []
    try:
        for path, write in writes:
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            temps.append((Path(tmp), path))
            write(Path(tmp))
        for tmp, path in temps:
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def _check_writable(path: Path, flag: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InterchangeError(f"{flag}: cannot write {path}: {parent} is not a writable directory")


def _vector(node: str, key: str, value: Any, n: int) -> np.ndarray:
    """A neuron parameter as a finite float64 vector of length ``n`` (scalars broadcast)."""
    if value is None:
        raise InterchangeError(f"node {node!r}: {key} is missing")
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InterchangeError(f"node {node!r}: {key} is not numeric: {_one_line(value)[:60]}") from None
    if arr.size == 1:
        arr = np.full(n, float(arr.reshape(-1)[0]))
    elif arr.size == n:
        arr = arr.reshape(n)
    else:
        raise InterchangeError(f"node {node!r}: {key} has {arr.size} values, expected 1 or {n} "
                               f"(one per neuron)")
    if not np.all(np.isfinite(arr)):
        raise InterchangeError(f"node {node!r}: {key} is not finite ({arr[~np.isfinite(arr)][0]})")
    return arr


def _weight(node: str, value: Any) -> np.ndarray:
    try:
        w = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InterchangeError(f"node {node!r}: weight is not numeric") from None
    if w.ndim > 2:
        raise InterchangeError(f"node {node!r}: weight of shape {tuple(w.shape)} is a convolution kernel: "
                               f"convolution is not supported yet (Linear/Affine only)")
    if w.ndim != 2 or 0 in w.shape:
        raise InterchangeError(f"node {node!r}: weight of shape {tuple(w.shape)}, expected (n_out, n_in)")
    if not np.all(np.isfinite(w)):
        raise InterchangeError(f"node {node!r}: weight holds a non-finite value")
    return w


def _span(arr: np.ndarray) -> str:
    lo, hi = float(arr.min()), float(arr.max())
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


# ------------------------------------------------------------------------ the common IR
@dataclass
class SourceLayer:
    """One Linear + neuron pair of a foreign network, in its own real units.

    ``weight`` already carries the neuron's input gain (NIR ``r * dt / tau``, SpikingJelly's
    ``1/tau`` with ``decay_input``); ``tau_steps`` is ``inf`` for a neuron without leak.
    """

    linear: str
    neuron: str
    weight: np.ndarray           #: (n_out, n_in) float64
    tau_steps: np.ndarray        #: (n_out,)
    threshold: np.ndarray        #: (n_out,)


@dataclass
class Source:
    kind: str
    layers: list[SourceLayer]
    timesteps: int | None = None
    config: dict | None = None   #: spikeforge's own config from metadata (exact round trip)
    info: list[str] = field(default_factory=list)


@dataclass
class Imported:
    cfg: Config
    weights: list[torch.Tensor]
    notes: list[str]             #: what had to be approximated
    info: list[str] = field(default_factory=list)   #: where values came from (not approximations)


# ---------------------------------------------------------------------------------- NIR
def _nir():
    try:
        import nir
    except ImportError:
        raise InterchangeError("NIR needs the package nir: pip install 'spikeforge[nir]'") from None
    return nir


def _meta_config(meta: dict, where: str) -> dict | None:
    text = meta.get(META + "config")
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        raise InterchangeError(f"{where}: metadata {META}config is not valid JSON") from None
    if not isinstance(d, dict):
        raise InterchangeError(f"{where}: metadata {META}config is not a mapping")
    return d


def read_nir(path: str | Path, dt: float = 1e-3) -> Source:
    """A NIR graph file as a :class:`Source` (feed-forward chain only; see the module doc)."""
    nir = _nir()
    path = Path(path)
    try:
        graph = nir.read(str(path), type_check=False)   # shapes are checked below, per node
    except Exception as e:  # h5py/KeyError/ValueError/...: a malformed or foreign file
        raise InterchangeError(f"{path}: not a readable NIR file ({type(e).__name__}: "
                               f"{_one_line(e)[:120]})") from None
    meta = dict(getattr(graph, "metadata", None) or {})
    info: list[str] = []
    config = _meta_config(meta, str(path))
    if META + "dt" in meta:
        dt_meta = float(meta[META + "dt"])
        if dt_meta != dt:
            info.append(f"dt {dt_meta:g} s from the file's spikeforge metadata (not {dt:g})")
        dt = dt_meta
    nodes, edges = graph.nodes, list(graph.edges)
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind in ("Input", "Output", *_WEIGHTS_NIR, *_NEURONS_NIR):
            continue
        if kind == "NIRGraph":
            raise InterchangeError(f"node {name!r}: a nested graph (e.g. a recurrent layer) is not "
                                   f"supported: the chip runs feed-forward Linear + LIF chains")
        if kind.startswith("Conv"):
            raise InterchangeError(f"node {name!r}: {kind}: convolution is not supported yet "
                                   f"(Linear/Affine + LIF/CubaLIF/IF only)")
        raise InterchangeError(f"node {name!r}: node type {kind} is not supported (supported: Input, "
                               f"Output, {', '.join(_WEIGHTS_NIR + _NEURONS_NIR)})")
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        for x in (a, b):
            if x not in nodes:
                raise InterchangeError(f"edge {a} -> {b}: node {x!r} does not exist")
        succ[a].append(b)
        pred[b].append(a)
    _refuse_cycles(succ)
    ins = [n for n, v in nodes.items() if type(v).__name__ == "Input"]
    outs = [n for n, v in nodes.items() if type(v).__name__ == "Output"]
    if len(ins) != 1 or len(outs) != 1:
        raise InterchangeError(f"{path}: expected one Input and one Output node, found "
                               f"{len(ins)} Input and {len(outs)} Output")
    chain, cur = [ins[0]], ins[0]
    while cur != outs[0]:
        if len(succ[cur]) != 1:
            what = "leads nowhere" if not succ[cur] else f"fans out to {', '.join(succ[cur])}"
            raise InterchangeError(f"node {cur!r} {what}: only a feed-forward chain from input to "
                                   f"output is supported")
        cur = succ[cur][0]
        if len(pred[cur]) != 1:
            raise InterchangeError(f"node {cur!r} has {len(pred[cur])} inputs ({', '.join(pred[cur])}): "
                                   f"only a feed-forward chain is supported")
        chain.append(cur)
    stray = [n for n in nodes if n not in chain]
    if stray:
        raise InterchangeError(f"node {stray[0]!r} is not on the path from input to output")
    body = chain[1:-1]
    layers = []
    for i in range(0, len(body), 2):
        lin = body[i]
        if type(nodes[lin]).__name__ not in _WEIGHTS_NIR:
            raise InterchangeError(f"node {lin!r}: a {type(nodes[lin]).__name__} without a Linear/Affine "
                                   f"before it: every neuron layer needs its own weights")
        if i + 1 >= len(body) or type(nodes[body[i + 1]]).__name__ not in _NEURONS_NIR:
            nxt = body[i + 1] if i + 1 < len(body) else outs[0]
            raise InterchangeError(f"node {lin!r}: followed by {nxt!r} ({type(nodes[nxt]).__name__}), "
                                   f"expected a spiking neuron (LIF, CubaLIF, IF): the chip's layers "
                                   f"are Linear + LIF")
        layers.append(_nir_layer(lin, nodes[lin], body[i + 1], nodes[body[i + 1]], dt))
    if not layers:
        raise InterchangeError(f"{path}: the graph holds no Linear + neuron layer")
    for a, b in zip(layers, layers[1:]):
        if b.weight.shape[1] != a.weight.shape[0]:
            raise InterchangeError(f"node {b.linear!r}: takes {b.weight.shape[1]} inputs, but "
                                   f"{a.neuron!r} has {a.weight.shape[0]} neurons")
    shape = getattr(nodes[ins[0]], "input_type", {}).get("input")
    if shape is not None and int(np.prod(shape)) != layers[0].weight.shape[1]:
        raise InterchangeError(f"node {ins[0]!r}: input of {int(np.prod(shape))} values, but node "
                               f"{layers[0].linear!r} takes {layers[0].weight.shape[1]}")
    ts = meta.get(META + "timesteps")
    return Source("nir", layers, timesteps=None if ts is None else int(ts), config=config, info=info)


def _refuse_cycles(succ: dict[str, list[str]]) -> None:
    """Refuse the first edge that closes a cycle (a recurrent connection), naming it."""
    state: dict[str, int] = {}
    for root in succ:
        if state.get(root):
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise InterchangeError(f"recurrent edge {node} -> {nxt}: the chip runs feed-forward "
                                       f"networks only")
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))


def _nir_layer(lin: str, ln, neu: str, nn_, dt: float) -> SourceLayer:
    w = _weight(lin, ln.weight)
    n = w.shape[0]
    if type(ln).__name__ == "Affine":
        b = _vector(lin, "bias", ln.bias, n)
        if np.any(b != 0):
            raise InterchangeError(f"node {lin!r}: Affine with a non-zero bias ({_span(b)}): the chip's "
                                   f"neurons have no bias")
    kind = type(nn_).__name__
    meta = dict(getattr(nn_, "metadata", None) or {})
    reset = meta.get("reset_mechanism", meta.get("reset"))
    if isinstance(reset, bytes):
        reset = reset.decode()
    if reset is not None and str(reset) not in ("zero", "hard"):
        raise InterchangeError(f"node {neu!r}: reset {reset!r}: the chip resets to zero (subtractive "
                               f"or no reset is not supported)")
    thr = _vector(neu, "v_threshold", nn_.v_threshold, n)
    r = _vector(neu, "r", nn_.r, n)
    if getattr(nn_, "v_reset", None) is not None:
        vr = _vector(neu, "v_reset", nn_.v_reset, n)
        if np.any(vr != 0):
            raise InterchangeError(f"node {neu!r}: v_reset = {_span(vr)}: the chip resets to 0")
    if kind == "IF":
        return SourceLayer(lin, neu, w * (r * dt)[:, None], np.full(n, math.inf), thr)
    vl = _vector(neu, "v_leak", nn_.v_leak, n)
    if np.any(vl != 0):
        raise InterchangeError(f"node {neu!r}: v_leak = {_span(vl)}: the chip leaks towards 0")
    tau = _vector(neu, "tau" if kind == "LIF" else "tau_mem", nn_.tau if kind == "LIF" else nn_.tau_mem, n)
    gain = r * dt / tau
    if kind == "CubaLIF":
        syn = _vector(neu, "tau_syn", nn_.tau_syn, n) / dt
        if np.any(np.abs(syn - 1.0) > 1e-6):
            raise InterchangeError(f"node {neu!r}: CubaLIF with tau_syn/dt = {_span(syn)} steps: the chip's "
                                   f"neuron has no synaptic current (needs tau_syn = dt)")
        gain = gain * _vector(neu, "w_in", nn_.w_in, n)
    steps = tau / dt
    if np.any(steps < 1.0):
        raise InterchangeError(f"node {neu!r}: tau/dt = {_span(steps)} steps is below one step "
                               f"(dt = {dt:g} s; snnTorch's exporter uses dt = 1e-4: pass --dt)")
    return SourceLayer(lin, neu, w * gain[:, None], steps, thr)


# ----------------------------------------------------------------- snnTorch / SpikingJelly
_DESC_KEYS = {"library", "state_dict", "timesteps", "layers", "spikeforge"}


def _load_state_dict(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InterchangeError(f"{path}: no such state_dict file") from None
    except Exception as e:  # an arbitrary pickle, a truncated file, ...
        import pickle

        why = ("torch.load(weights_only=True) refused an object in it: arbitrary pickles are never loaded"
               if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {_one_line(e)[:100]}")
        raise InterchangeError(f"{path}: not a weights-only state_dict ({why})") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in sd.items()):
        raise InterchangeError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return sd


def read_description(path: str | Path) -> Source:
    """A snnTorch/SpikingJelly description + its state_dict as a :class:`Source`."""
    import yaml

    path = Path(path)
    try:
        desc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InterchangeError(f"{path}: not a readable description ({_one_line(e)[:100]})") from None
    if not isinstance(desc, dict):
        raise InterchangeError(f"{path}: expected a mapping with library, state_dict, layers")
    for key in desc:
        if key not in _DESC_KEYS:
            raise InterchangeError(f"{path}: unknown key {key!r}, allowed {', '.join(sorted(_DESC_KEYS))}")
    lib = desc.get("library")
    if lib not in ("snntorch", "spikingjelly"):
        raise InterchangeError(f"{path}: library: {lib!r} is not supported, choose snntorch or spikingjelly")
    if not isinstance(desc.get("state_dict"), str):
        raise InterchangeError(f"{path}: state_dict: expected the path of the saved state_dict")
    ts = desc.get("timesteps")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or ts < 1):
        raise InterchangeError(f"{path}: timesteps: expected an integer >= 1, got {ts!r}")
    entries = desc.get("layers")
    if not isinstance(entries, list) or not entries:
        raise InterchangeError(f"{path}: layers: expected a non-empty list of {{linear, neuron}}")
    sd = _load_state_dict(path.parent / desc["state_dict"])
    used: set[str] = set()
    layers = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) - {"linear", "neuron"} or "linear" not in e or "neuron" not in e:
            raise InterchangeError(f"{path}: layers[{i}]: expected a mapping with keys linear and neuron")
        lin = str(e["linear"])
        if f"{lin}.weight" not in sd:
            raise InterchangeError(f"layers[{i}]: state_dict has no key '{lin}.weight'")
        w = _weight(lin, sd[f"{lin}.weight"])
        used.add(f"{lin}.weight")
        if f"{lin}.bias" in sd:
            used.add(f"{lin}.bias")
            b = _vector(lin, "bias", sd[f"{lin}.bias"], w.shape[0])
            if np.any(b != 0):
                raise InterchangeError(f"node {lin!r}: Linear with a non-zero bias ({_span(b)}): the chip's "
                                       f"neurons have no bias")
        if lib == "snntorch":
            layers.append(_snntorch_layer(lin, w, e["neuron"], sd, used))
        else:
            layers.append(_spikingjelly_layer(lin, w, e["neuron"], i))
    for a, b in zip(layers, layers[1:]):
        if b.weight.shape[1] != a.weight.shape[0]:
            raise InterchangeError(f"node {b.linear!r}: takes {b.weight.shape[1]} inputs, but "
                                   f"{a.neuron!r} has {a.weight.shape[0]} neurons")
    extra = sorted(k for k in sd if k not in used)
    if extra:
        raise InterchangeError(f"state_dict key {extra[0]!r} belongs to no layer of {path.name}: the chip "
                               f"runs Linear + {'Leaky' if lib == 'snntorch' else 'LIFNode'} layers only "
                               f"(recurrent or other modules are not supported)")
    sf = desc.get("spikeforge")
    config = sf.get("config") if isinstance(sf, dict) else None
    return Source(lib, layers, timesteps=ts, config=config if isinstance(config, dict) else None)


def _snntorch_layer(lin: str, w: np.ndarray, neu: Any, sd: dict, used: set) -> SourceLayer:
    if not isinstance(neu, (str, int)):
        raise InterchangeError(f"node {lin!r}: neuron: expected the name of the Leaky module in the "
                               f"state_dict (snnTorch keeps beta and threshold there)")
    neu = str(neu)
    n = w.shape[0]
    for key in ("beta", "threshold"):
        if f"{neu}.{key}" not in sd:
            raise InterchangeError(f"node {neu!r}: state_dict has no key '{neu}.{key}' (a snnTorch Leaky "
                                   f"has one)")
    for k in sd:
        if k.startswith(f"{neu}."):
            used.add(k)
    unknown = [k for k in sd if k.startswith(f"{neu}.") and k.split(".", 1)[1] not in
               ("beta", "threshold", "graded_spikes_factor", "reset_mechanism_val")]
    if unknown:
        raise InterchangeError(f"node {neu!r}: state_dict key {unknown[0]!r}: not a Leaky (recurrent "
                               f"and synaptic neurons are not supported)")
    rm = sd.get(f"{neu}.reset_mechanism_val")
    if rm is not None and int(rm) != 1:
        what = {0: "subtract", 2: "none"}.get(int(rm), str(int(rm)))
        raise InterchangeError(f"node {neu!r}: reset_mechanism {what!r}: the chip resets to zero "
                               f"(use reset_mechanism='zero')")
    gsf = sd.get(f"{neu}.graded_spikes_factor")
    if gsf is not None and np.any(_vector(neu, "graded_spikes_factor", gsf, n) != 1.0):
        raise InterchangeError(f"node {neu!r}: graded_spikes_factor != 1: the chip's spikes are binary")
    beta = _vector(neu, "beta", sd[f"{neu}.beta"], n)
    if np.any(beta < 0) or np.any(beta > 1):
        raise InterchangeError(f"node {neu!r}: beta = {_span(beta)} is outside [0, 1]")
    steps = np.array([rules.beta_to_tau_steps(float(b)) for b in beta])
    return SourceLayer(lin, neu, w, steps, _vector(neu, "threshold", sd[f"{neu}.threshold"], n))


_SJ_KEYS = {"name", "type", "tau", "decay_input", "v_threshold", "v_reset", "detach_reset"}


def _spikingjelly_layer(lin: str, w: np.ndarray, neu: Any, i: int) -> SourceLayer:
    if not isinstance(neu, dict):
        raise InterchangeError(f"layers[{i}].neuron: expected a mapping (type, tau, decay_input, "
                               f"v_threshold, v_reset): SpikingJelly does not save them in the state_dict")
    name = str(neu.get("name", f"layers[{i}].neuron"))
    for k in neu:
        if k not in _SJ_KEYS:
            raise InterchangeError(f"node {name!r}: unknown key {k!r}, allowed {', '.join(sorted(_SJ_KEYS))}")
    kind = neu.get("type", "LIFNode")
    if kind not in ("LIFNode", "IFNode"):
        raise InterchangeError(f"node {name!r}: type {kind!r} is not supported (LIFNode, IFNode)")
    if "v_reset" in neu and neu["v_reset"] is None:
        raise InterchangeError(f"node {name!r}: v_reset: null is SpikingJelly's subtractive (soft) reset: "
                               f"the chip resets to zero")
    n = w.shape[0]
    vr = _vector(name, "v_reset", neu.get("v_reset", 0.0), n)
    if np.any(vr != 0):
        raise InterchangeError(f"node {name!r}: v_reset = {_span(vr)}: the chip resets to 0")
    thr = _vector(name, "v_threshold", neu.get("v_threshold", 1.0), n)
    if kind == "IFNode":
        return SourceLayer(lin, name, w, np.full(n, math.inf), thr)
    tau = _vector(name, "tau", neu.get("tau", 2.0), n)
    if np.any(tau < 1.0):
        raise InterchangeError(f"node {name!r}: tau = {_span(tau)} is below 1 step")
    gain = 1.0 / tau if neu.get("decay_input", True) else np.ones(n)
    return SourceLayer(lin, name, w * gain[:, None], tau, thr)


def read_source(path: str | Path, dt: float = 1e-3) -> Source:
    """NIR by content (an HDF5 file), a description by its YAML/JSON suffix."""
    path = Path(path)
    if not path.exists():
        raise InterchangeError(f"{path}: no such file")
    if path.is_dir():
        raise InterchangeError(f"{path}: is a directory, expected a NIR file or a description (.yaml)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return read_nir(path, dt)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return read_description(path)
    raise InterchangeError(f"{path}: neither a NIR file (HDF5) nor a description (.yaml, .yml, .json)")


# ------------------------------------------------------------------------------ mapping
def map_to_chip(src: Source, base: Config) -> Imported:
    """The chip config and integer weights of ``src``; notes list every approximation."""
    notes: list[str] = []
    info = list(src.info)
    sizes = [src.layers[0].weight.shape[1]] + [l.weight.shape[0] for l in src.layers]
    if src.config is not None:
        try:
            cfg = config_from_dict(src.config, source="metadata config")
        except ConfigError as e:
            raise InterchangeError(f"spikeforge metadata: {e}") from None
        if tuple(cfg.network.layers) != tuple(sizes):
            raise InterchangeError(f"spikeforge metadata: network.layers {list(cfg.network.layers)} but "
                                   f"the graph's layers are {sizes}")
        info.append("configuration from the file's spikeforge metadata (exact round trip)")
    else:
        cfg = base
    ks = []
    for l in src.layers:
        k = sorted({rules.leak_shift_for(float(t), cfg) for t in l.tau_steps})
        if len(k) > 1:
            raise InterchangeError(f"node {l.neuron!r}: tau/dt = {_span(l.tau_steps)} steps maps to leak "
                                   f"shifts {k}: the chip has one leak shift")
        ks.append(k[0])
        exact = 2.0 ** k[0]
        if np.all(np.isinf(l.tau_steps)):
            notes.append(f"{l.neuron}: no leak -> leak shift {k[0]} (beta = 1 - 2^-{k[0]})")
        elif np.any(np.abs(l.tau_steps - exact) > 1e-6 * exact):
            notes.append(f"{l.neuron}: tau {_span(l.tau_steps)} steps -> {exact:g} = 2^{k[0]} "
                         f"(beta {_span(1 - 1 / l.tau_steps)} -> {1 - 1 / exact:g})")
    if len(set(ks)) > 1:
        other = src.layers[ks.index(ks[0])].neuron
        bad = next(l for l, k in zip(src.layers, ks) if k != ks[0])
        raise InterchangeError(f"node {bad.neuron!r}: leak shift {ks[src.layers.index(bad)]} but "
                               f"{other!r} has {ks[0]}: the chip has one leak shift for all layers")
    if src.config is not None:
        if cfg.neuron.leak_shift != ks[0]:
            raise InterchangeError(f"spikeforge metadata: neuron.leak_shift {cfg.neuron.leak_shift} but "
                                   f"the nodes' tau gives {ks[0]}")
    else:
        net = {"layers": sizes}
        if src.timesteps is not None:
            net["timesteps"] = src.timesteps
        try:
            cfg = cfg.replace(network=net, neuron={"leak_shift": ks[0]})
        except ConfigError as e:
            raise InterchangeError(f"the imported network does not fit the base config: {e}") from None
    theta = neuron_constants(cfg)["theta"]
    a = cfg.arithmetic
    hi = (2 ** (a.weight_bits - 1) - 1) / 2.0 ** a.weight_frac
    weights, clipped, total, err = [], 0, 0, 0.0
    for l in src.layers:
        if np.any(l.threshold <= 0):
            raise InterchangeError(f"node {l.neuron!r}: threshold {_span(l.threshold)} must be > 0")
        scale = theta / l.threshold
        if np.any(np.abs(scale - 1) > 1e-9):
            notes.append(f"{l.neuron}: threshold {_span(l.threshold)} -> {theta:g} "
                         f"(weights x {_span(scale)})")
        w = torch.from_numpy(l.weight * scale[:, None])
        wi = to_integer_weights(w, cfg)
        real = w * 2.0 ** a.weight_frac
        over = (torch.floor(real + 0.5) != wi)
        clipped += int(over.sum())
        total += wi.numel()
        inside = ~over
        if inside.any():
            err = max(err, float((wi[inside].to(torch.float64) - real[inside]).abs().max()) / 2.0 ** a.weight_frac)
        weights.append(wi)
    if clipped:
        notes.append(f"weights clipped: {100 * clipped / total:.2g} % ({clipped} of {total}) to "
                     f"+-{hi:g} (arithmetic.weight_bits={a.weight_bits})")
    if err > 1e-12:
        notes.append(f"weights rounded to multiples of 2^-{a.weight_frac}: largest error {err:.3g}")
    return Imported(cfg, weights, notes, info)


def import_network(source: str | Path, base: str | Config = "digits", dt: float = 1e-3) -> Imported:
    """``spikeforge import``: read ``source`` and map it onto the chip (config + integer weights)."""
    if not (dt > 0 and math.isfinite(dt)):
        raise InterchangeError(f"--dt: {dt} must be a positive number of seconds")
    base_cfg = base if isinstance(base, Config) else load_config(base)
    return map_to_chip(read_source(source, dt), base_cfg)


# ------------------------------------------------------------------------- weights files
def weights_payload(cfg: Config, weights: list[torch.Tensor], source: str = "") -> dict:
    """What a weights file holds: plain data only, so ``torch.load(weights_only=True)`` reads it."""
    return {"format": WEIGHTS_FORMAT, "version": 1, "config_digest": cfg.digest(),
            "config": cfg.to_dict(), "source": source,
            "weights": [w.detach().to(torch.int64).clone() for w in weights]}


def save_weights(path: str | Path, cfg: Config, weights: list[torch.Tensor], source: str = "") -> None:
    """Write integer weights + the config (and its digest) atomically."""
    data = weights_payload(cfg, weights, source)
    _check_writable(Path(path), "--save-weights")
    _atomic_write([(Path(path), lambda p: torch.save(data, p))])


def load_weights(path: str | Path) -> tuple[Config, list[torch.Tensor]]:
    """A weights file (or a ``train --report`` JSON naming one in ``weights_file``)."""
    path = Path(path)
    if not path.is_file():
        raise InterchangeError(f"{path}: no such weights file")
    if path.suffix.lower() == ".json":
        try:
            rep = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InterchangeError(f"{path}: not a readable report ({_one_line(e)[:80]})") from None
        wf = rep.get("weights_file") if isinstance(rep, dict) else None
        if not isinstance(wf, str):
            raise InterchangeError(f"{path}: the report names no weights_file (train with --save-weights)")
        return load_weights(path.parent / wf)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InterchangeError(f"{path}: not a spikeforge weights file ({type(e).__name__}: "
                               f"{_one_line(e)[:80]})") from None
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
        raise InterchangeError(f"{path}: not a spikeforge weights file (write one with "
                               f"`spikeforge train --save-weights` or `spikeforge import --weights`)")
    if data.get("version") != 1:
        raise InterchangeError(f"{path}: weights file version {data.get('version')!r}, this spikeforge reads 1")
    try:
        cfg = config_from_dict(data.get("config"), source=str(path))
    except ConfigError as e:
        raise InterchangeError(f"{path}: its config is invalid: {e}") from None
    if cfg.digest() != data.get("config_digest"):
        raise InterchangeError(f"{path}: config digest {data.get('config_digest')!r} does not match its "
                               f"config ({cfg.digest()}): the file was altered")
    ws = data.get("weights")
    layers = cfg.network.layers
    if not isinstance(ws, list) or len(ws) != len(layers) - 1:
        raise InterchangeError(f"{path}: expected {len(layers) - 1} weight tensors")
    lim = 1 << (cfg.arithmetic.weight_bits - 1)
    for l, w in enumerate(ws):
        if not isinstance(w, torch.Tensor) or w.dtype != torch.int64 or tuple(w.shape) != (layers[l + 1], layers[l]):
            raise InterchangeError(f"{path}: weights[{l}] must be int64 of shape ({layers[l + 1]}, {layers[l]})")
        if w.numel() and (int(w.min()) < -lim or int(w.max()) >= lim):
            raise InterchangeError(f"{path}: weights[{l}] exceeds arithmetic.weight_bits="
                                   f"{cfg.arithmetic.weight_bits}")
    return cfg, ws


def check_init(cfg: Config, wcfg: Config, path: str) -> None:
    """``train --init``: the weights mean the same thing under ``cfg`` as where they came from."""
    pairs = [("network.layers", list(cfg.network.layers), list(wcfg.network.layers))]
    pairs += [(f"neuron.{k}", getattr(cfg.neuron, k), getattr(wcfg.neuron, k))
              for k in ("threshold", "leak_shift")]
    pairs += [(f"arithmetic.{k}", getattr(cfg.arithmetic, k), getattr(wcfg.arithmetic, k))
              for k in ("weight_bits", "weight_frac")]
    for key, mine, theirs in pairs:
        if mine != theirs:
            raise InterchangeError(f"--init: {key} is {theirs} in {path} but {mine} in the config "
                                   f"(train with the config the weights were made for)")


# ------------------------------------------------------------------------------ exports
class RectSpikeGrad:
    """The chip's spike for snnTorch's ``spike_grad``: fires on ``x >= 0`` (snnTorch's own
    surrogates fire on ``> 0``), rectangular surrogate of ``width`` (the float twin's)."""

    def __init__(self, width: float):
        self.width = width

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return rect_spike(x, self.width)


def _nir_graph(cfg: Config, weights: list[torch.Tensor], dt: float):
    nir = _nir()
    c, a, n = neuron_constants(cfg), cfg.arithmetic, cfg.neuron
    dtype = np.float32 if a.weight_bits <= 24 else np.float64
    per_node = {META + "leak_shift": n.leak_shift, META + "threshold": n.threshold,
                META + "surrogate_shift": n.surrogate_shift, META + "surrogate_width": c["width"],
                META + "weight_frac": a.weight_frac, META + "reset": "zero"}
    nodes = {"input": nir.Input(input_type={"input": np.array([cfg.network.layers[0]])})}
    edges, prev = [], "input"
    for l, w in enumerate(weights):
        m = w.shape[0]
        fc, lif = f"fc{l + 1}", f"lif{l + 1}"
        nodes[fc] = nir.Linear(weight=(w.to(torch.float64) / 2.0 ** a.weight_frac).numpy().astype(dtype),
                               metadata={META + "weight_bits": a.weight_bits, META + "weight_frac": a.weight_frac})
        nodes[lif] = nir.LIF(tau=np.full(m, dt * c["tau_steps"]), r=np.full(m, c["tau_steps"]),
                             v_leak=np.zeros(m), v_threshold=np.full(m, c["theta"]), v_reset=np.zeros(m),
                             metadata=dict(per_node))
        edges += [(prev, fc), (fc, lif)]
        prev = lif
    nodes["output"] = nir.Output(output_type={"output": np.array([weights[-1].shape[0]])})
    edges.append((prev, "output"))
    meta = {META + "format": 1, META + "config": json.dumps(cfg.to_dict(), sort_keys=True),
            META + "config_digest": cfg.digest(), META + "dt": dt,
            META + "timesteps": cfg.network.timesteps, META + "weight_bits": a.weight_bits,
            META + "discretisation": "forward Euler: beta = 1 - dt/tau, input gain r*dt/tau", **per_node}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _peer_description(lib: str, cfg: Config, sd_name: str) -> dict:
    c, n_layers = neuron_constants(cfg), len(cfg.network.layers) - 1
    if lib == "snntorch":
        layers = [{"linear": str(2 * l), "neuron": str(2 * l + 1)} for l in range(n_layers)]
        build = (f"nn.Sequential of (nn.Linear(n_in, n_out, bias=False), snn.Leaky(beta={c['beta']!r}, "
                 f"threshold={c['theta']!r}, reset_mechanism='zero', init_hidden=True)) per layer; "
                 f"spike_grad: rectangular of width {c['width']!r} firing on >= 0 "
                 f"(spikeforge.gen.interchange.RectSpikeGrad)")
    else:
        layers = [{"linear": str(2 * l), "neuron": {"name": str(2 * l + 1), "type": "LIFNode",
                                                    "tau": c["tau_steps"], "decay_input": False,
                                                    "v_threshold": c["theta"], "v_reset": 0.0,
                                                    "detach_reset": True}}
                  for l in range(n_layers)]
        build = (f"nn.Sequential of (nn.Linear(n_in, n_out, bias=False), neuron.LIFNode(tau="
                 f"{c['tau_steps']!r}, decay_input=False, v_threshold={c['theta']!r}, v_reset=0.0, "
                 f"detach_reset=True, step_mode='m')) per layer; surrogate: rectangular of width "
                 f"{c['width']!r}")
    return {"library": lib, "state_dict": sd_name, "timesteps": cfg.network.timesteps, "layers": layers,
            "spikeforge": {"build": build, "surrogate_width": c["width"], "config": cfg.to_dict(),
                           "config_digest": cfg.digest()}}


def _peer_module(lib: str, cfg: Config, weights: list[torch.Tensor] | None = None):
    """The network in ``lib``'s own modules (with ``weights`` in real units if given)."""
    c = neuron_constants(cfg)
    mods = []
    for n_in, n_out in zip(cfg.network.layers[:-1], cfg.network.layers[1:]):
        mods.append(torch.nn.Linear(n_in, n_out, bias=False))
        if lib == "snntorch":
            import snntorch as snn

            mods.append(snn.Leaky(beta=c["beta"], threshold=c["theta"], reset_mechanism="zero",
                                  init_hidden=True, spike_grad=RectSpikeGrad(c["width"])))
        else:
            from spikingjelly.activation_based import neuron

            mods.append(neuron.LIFNode(tau=c["tau_steps"], decay_input=False, v_threshold=c["theta"],
                                       v_reset=0.0, detach_reset=True, step_mode="m",
                                       surrogate_function=_sj_rect(c["width"])))
    net = torch.nn.Sequential(*mods)
    if weights is not None:
        with torch.no_grad():
            for l, w in enumerate(weights):
                net[2 * l].weight.copy_(w.to(torch.float64) / 2.0 ** cfg.arithmetic.weight_frac)
    return net


def _sj_rect(width: float):
    from spikingjelly.activation_based import surrogate

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return surrogate.heaviside(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() < ctx.alpha / 2).to(grad.dtype) / ctx.alpha, None

    class Rect(surrogate.SurrogateFunctionBase):
        """Rectangle of width alpha, height 1/alpha: the chip's surrogate."""

        def __init__(self, alpha: float, spiking: bool = True):
            super().__init__(spiking, alpha=alpha)

        @staticmethod
        def spiking_function(x, alpha):
            return _Fn.apply(x, alpha)

        @staticmethod
        def primitive_function(x, alpha):
            return (x / alpha + 0.5).clamp(0, 1)

    return Rect(width)


def _require(lib: str):
    try:
        if lib == "snntorch":
            import snntorch  # noqa: F401
        else:
            import spikingjelly.activation_based.neuron  # noqa: F401
    except ImportError:
        raise InterchangeError(f"--format {lib} needs the package {lib}: pip install --no-deps "
                               f"{'snntorch==1.0.0' if lib == 'snntorch' else 'spikingjelly==2.0.0'}") from None


def export(cfg: Config, weights: list[torch.Tensor], fmt: str, out: str | Path, dt: float = 1e-3) -> list[Path]:
    """Write the integer ``weights`` in real units for ``fmt``; returns the files written.

    ``nir``: one NIR file. ``snntorch``/``spikingjelly``: the library's own ``state_dict`` at
    ``out`` and a description (``out`` with suffix ``.yaml``) that says how to build the
    module and that ``spikeforge import`` reads back.
    """
    out = Path(out)
    _check_writable(out, "-o")
    if not (dt > 0 and math.isfinite(dt)):
        raise InterchangeError(f"--dt: {dt} must be a positive number of seconds")
    if fmt == "nir":
        graph = _nir_graph(cfg, weights, dt)
        nir = _nir()
        _atomic_write([(out, lambda p: nir.write(str(p), graph))])
        return [out]
    if fmt not in FORMATS:
        raise InterchangeError(f"--format: {fmt!r} is not supported, choose one of {', '.join(FORMATS)}")
    _require(fmt)
    if cfg.arithmetic.weight_bits > 24:
        raise InterchangeError(f"--format {fmt}: arithmetic.weight_bits={cfg.arithmetic.weight_bits} does not "
                               f"fit {fmt}'s float32 weights exactly (at most 24 bits; use --format nir)")
    import yaml

    desc_path = out.with_suffix(".yaml")
    if desc_path == out:
        raise InterchangeError(f"-o: {out}: the state_dict needs a name that is not .yaml (e.g. net.pt)")
    sd = {k: v.detach().clone() for k, v in _peer_module(fmt, cfg, weights).state_dict().items()}
    desc = _peer_description(fmt, cfg, out.name)
    text = (f"# {fmt} network exported by spikeforge (config digest {cfg.digest()}).\n"
            f"# Read back with: spikeforge import {desc_path.name} -o CONFIG.yaml\n"
            + yaml.safe_dump(desc, sort_keys=False))
    _atomic_write([(out, lambda p: torch.save(sd, p)),
                   (desc_path, lambda p: p.write_text(text, encoding="utf-8"))])
    return [out, desc_path]


def _load_peer(lib: str, desc_path: str | Path):
    src = read_description(desc_path)
    if src.kind != lib:
        raise InterchangeError(f"{desc_path}: library is {src.kind}, not {lib}")
    imp = map_to_chip(src, load_config(None) if src.config is None else config_from_dict(src.config))
    desc_path = Path(desc_path)
    import yaml

    d = yaml.safe_load(desc_path.read_text())
    net = _peer_module(lib, imp.cfg)
    net.load_state_dict(_load_state_dict(desc_path.parent / d["state_dict"]))
    return net, imp.cfg


def load_snntorch(desc_path: str | Path):
    """An exported snnTorch network, built from its description and loaded: ``(module, cfg)``."""
    _require("snntorch")
    return _load_peer("snntorch", desc_path)


def load_spikingjelly(desc_path: str | Path):
    """An exported SpikingJelly network, built from its description and loaded: ``(module, cfg)``."""
    _require("spikingjelly")
    return _load_peer("spikingjelly", desc_path)
