"""Host-side training loop: the contract ``spikeforge train`` calls.

``train(cfg, backend="model")`` trains the fixed-point :class:`~spikeforge.model.snn.FixedPointSNN`
(integers only: the bits the hardware must reproduce); ``backend="float"`` trains the
float32 :class:`~spikeforge.model.float_twin.FloatTwin` the same way: same initial weights
(scaled by ``2**-weight_frac``), same shuffling, same encoder spikes, same batches, plain SGD
with the learning rate one integer step implements.

Determinism: everything random is drawn from ``torch.Generator`` objects seeded from
``cfg.train.seed`` (initial weights; shuffling; training spikes; test spikes, the same
raster at every evaluation), so the same config gives the same bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import data as data_mod
from .float_twin import FloatTwin
from .snn import FixedPointSNN

__all__ = ["TrainResult", "train", "evaluate", "measure_sparsity", "make_model", "epoch_batches",
           "BACKENDS", "EVAL_CHUNK"]

BACKENDS = ("model", "float")
#: Samples per forward pass when evaluating (memory bound only; results do not depend on it).
EVAL_CHUNK = 1000


@dataclass
class TrainResult:
    """What a training run reports."""

    test_accuracy: float
    train_accuracy: float
    #: Per epoch: ``epoch``, ``train_accuracy`` (on the training batches, before each update),
    #: ``test_accuracy``, ``seconds``.
    epochs: list[dict] = field(default_factory=list)
    #: Per layer, measured on the test set after training (forward + backward, no update):
    #: ``layer``, ``input_rate`` / ``output_rate`` (spikes per neuron and timestep),
    #: ``zero_dv_fraction`` (share of (sample, t, neuron) with dv == 0: skipped BP work).
    sparsity: list[dict] = field(default_factory=list)
    #: Final weights: int64 tensors (model) or float32 tensors in real units (float).
    weights: list = field(default_factory=list)


def _gen(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) << 4) + stream)


def make_model(cfg, backend: str, init: list[torch.Tensor] | None = None):
    """The network of ``backend``, both from the same integer weights: the seeded init, or
    ``init`` (integer tensors, e.g. imported ones: fine-tuning)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    model = FixedPointSNN(cfg, weights=init)
    return model if backend == "model" else FloatTwin.from_fixed(model)


def _check(cfg, ds: data_mod.Dataset) -> None:
    layers = cfg.network.layers
    if layers[0] != ds.n_inputs:
        raise ValueError(f"network.layers[0] = {layers[0]} but data set {ds.name!r} has "
                         f"{ds.n_inputs} inputs")
    if layers[-1] < ds.n_classes:
        raise ValueError(f"network.layers[-1] = {layers[-1]} but data set {ds.name!r} has "
                         f"{ds.n_classes} classes")


def _test_spikes(cfg, x: torch.Tensor):
    """The test raster in chunks: the same bits at every evaluation."""
    g = _gen(cfg.train.seed, 3)
    for i in range(0, x.shape[0], EVAL_CHUNK):
        yield i, data_mod.rate_encode(x[i:i + EVAL_CHUNK], cfg.network.timesteps, g)


def evaluate(net, cfg, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``net`` (model or float twin) on intensities ``x``, labels ``y``."""
    correct = 0
    with torch.no_grad():
        for i, spikes in _test_spikes(cfg, x):
            pred = net.predict(spikes)
            correct += int((pred == y[i:i + spikes.shape[0]]).sum())
    return correct / max(1, x.shape[0])


def measure_sparsity(net, cfg, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Per-layer spike rates and zero-dv fraction on ``x`` (forward + backward, no update)."""
    n_layers = len(cfg.network.layers) - 1
    acc = [dict(inp=0, inp_n=0, out=0, out_n=0, zdv=0, dv_n=0) for _ in range(n_layers)]
    for i, spikes in _test_spikes(cfg, x):
        labels = y[i:i + spikes.shape[0]]
        if isinstance(net, FixedPointSNN):
            traces = net.forward(spikes)
            net.backward(traces, labels)
            dvs = [tr.dv for tr in traces]
        else:
            traces, _, _ = net.gradients(spikes, labels, keep_v_grad=True)
            dvs = [tr.dv if tr.dv is not None else torch.zeros_like(tr.v) for tr in traces]
            for w in net.weights:
                w.grad = None
        for l, (tr, dv) in enumerate(zip(traces, dvs)):
            a = acc[l]
            a["inp"] += float(tr.x.detach().sum()); a["inp_n"] += tr.x.numel()
            a["out"] += float(tr.s.detach().sum()); a["out_n"] += tr.s.numel()
            a["zdv"] += int((dv == 0).sum()); a["dv_n"] += dv.numel()
    return [{"layer": l, "input_rate": a["inp"] / a["inp_n"], "output_rate": a["out"] / a["out_n"],
             "zero_dv_fraction": a["zdv"] / a["dv_n"]} for l, a in enumerate(acc)]


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, timesteps: int,
                  g_shuffle: torch.Generator, g_spikes: torch.Generator):
    """One epoch's mini-batches ``(spikes, labels)``: a seeded shuffle, then rate-encoded batches.

    The order in which training draws from its generators; a chip fed these batches in
    this order trains exactly what :func:`train` trains (the last batch may be short).
    """
    n = x.shape[0]
    perm = torch.randperm(n, generator=g_shuffle)
    for b in range((n + batch_size - 1) // batch_size):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        yield data_mod.rate_encode(x[idx], timesteps, g_spikes), y[idx]


def train(cfg, *, backend: str = "model", progress: Callable[[int, int, dict], None] | None = None,
          dataset: data_mod.Dataset | None = None, train_subset: int | None = None,
          init: list[torch.Tensor] | None = None, chip=None) -> TrainResult:
    """Train on ``cfg.train.dataset`` for ``cfg.train.epochs`` epochs of ``cfg.train.batch_size``.

    ``progress(done_steps, total_steps, info)`` is called after every batch (``info``:
    ``epoch``, ``batch``, ``loss``, ``train_accuracy`` so far in the epoch). ``dataset``
    overrides loading (tests); ``train_subset`` uses only the first N (shuffled once,
    seeded) training samples; ``init`` starts from these integer weights instead of the
    seeded initialisation.

    ``chip`` (a :class:`spikeforge.host.chip.Chip`, e.g. the simulated chip over its host
    link) trains instead of the model (``backend`` must be "model"): it gets the same initial
    weights and seeds and the same batches in the same order, so it must end with the same
    bits. Accuracies are then the model's on the weights read back from the chip after each
    epoch (inference on a simulated chip would cost minutes and can only give the same counts).
    """
    ds = dataset if dataset is not None else data_mod.load_dataset(cfg.train.dataset)
    _check(cfg, ds)
    net = make_model(cfg, backend, init)
    if chip is not None:
        if backend != "model":
            raise ValueError(f"a chip trains the integer model, not backend {backend!r}")
        chip.load_weights(net.weights)
        chip.set_seeds(cfg.arithmetic.lfsr_seed)
    T, B = cfg.network.timesteps, cfg.train.batch_size
    x_train, y_train = ds.x_train, ds.y_train
    if train_subset is not None and train_subset < x_train.shape[0]:
        sel = torch.randperm(x_train.shape[0], generator=_gen(cfg.train.seed, 4))[:train_subset]
        x_train, y_train = x_train[sel], y_train[sel]
    n = x_train.shape[0]
    steps_per_epoch = (n + B - 1) // B
    total = steps_per_epoch * cfg.train.epochs
    g_shuffle, g_spikes = _gen(cfg.train.seed, 1), _gen(cfg.train.seed, 2)
    epochs, done = [], 0
    train_acc = 0.0
    for epoch in range(cfg.train.epochs):
        t0 = time.perf_counter()
        correct = seen = 0
        for b, (spikes, labels) in enumerate(epoch_batches(x_train, y_train, B, T, g_shuffle, g_spikes)):
            count = net.train_step(spikes, labels)[-1].count if chip is None else chip.train_batch(spikes, labels)
            correct += int((count.argmax(dim=1) == labels).sum())
            seen += labels.shape[0]
            done += 1
            if progress is not None:
                tgt = net.targets(labels).to(count.dtype)
                loss = 0.5 * float(((count.detach() - tgt) ** 2).sum())
                progress(done, total, {"epoch": epoch, "batch": b, "loss": loss,
                                       "train_accuracy": correct / seen})
        train_acc = correct / max(1, seen)
        if chip is not None:
            net = FixedPointSNN(cfg, chip.read_weights())
        test_acc = evaluate(net, cfg, ds.x_test, ds.y_test)
        epochs.append({"epoch": epoch, "train_accuracy": train_acc, "test_accuracy": test_acc,
                       "seconds": time.perf_counter() - t0})
    sparsity = measure_sparsity(net, cfg, ds.x_test, ds.y_test)
    if backend == "model":
        weights = [w.clone() for w in net.weights]
    else:
        weights = [w.detach().clone() for w in net.weights]
    return TrainResult(test_accuracy=epochs[-1]["test_accuracy"], train_accuracy=train_acc,
                       epochs=epochs, sparsity=sparsity, weights=weights)
