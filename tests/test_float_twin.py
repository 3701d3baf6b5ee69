"""The float twin computes what the standard SNN libraries compute.

The same network is built from SpikingJelly's ``LIFNode`` and from snnTorch's ``Leaky``
(each with a rectangular surrogate written in that library's conventions: SpikingJelly's
``heaviside`` fires on ``>= 0``, snnTorch's surrogates on ``> 0``), driven by the same
input spikes and weights, with the same loss; forward spikes must be identical and the
weight gradients equal to 1e-6 (relative to the largest gradient). Inputs whose membrane
lands within 1e-4 of the threshold or of a surrogate window edge are rejected and redrawn
(float32 rounding differs there between ``beta * v`` and ``v - v / tau``).

The peer libraries are dev dependencies (the README's test command installs them).
"""

from __future__ import annotations

import random

import pytest
import torch

from spikeforge.gen.config import ArithmeticConfig, Config, NetworkConfig, NeuronConfig, TrainConfig
from spikeforge.model import fixedpoint as fx
from spikeforge.model.float_twin import FloatTwin
from spikeforge.model.snn import FixedPointSNN

snn = pytest.importorskip("snntorch", reason="dev dependency: pip install --no-deps snntorch")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron",
                                reason="dev dependency: pip install --no-deps spikingjelly")
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

MARGIN = 1e-4


# ------------------------------------------------------------------ peer surrogates
class _SJRectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return sj_surrogate.heaviside(x)          # x >= 0

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.alpha / 2).to(grad.dtype) / ctx.alpha, None


class SJRect(sj_surrogate.SurrogateFunctionBase):
    """SpikingJelly surrogate module: rectangle of width alpha and height 1/alpha."""

    def __init__(self, alpha: float, spiking: bool = True):
        super().__init__(spiking, alpha=alpha)

    @staticmethod
    def spiking_function(x, alpha):
        return _SJRectFn.apply(x, alpha)

    @staticmethod
    def primitive_function(x, alpha):
        return (x / alpha + 0.5).clamp(0, 1)


class _SnnRectFn(torch.autograd.Function):
    """snnTorch-style spike_grad: fires on ``x > 0`` like snnTorch's own surrogates."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.alpha / 2).to(grad.dtype) / ctx.alpha, None


def snn_rect(alpha: float):
    return lambda x: _SnnRectFn.apply(x, alpha)


# ------------------------------------------------------------------ peer networks
def loss_of(count: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((count - target) ** 2).sum()


def spikingjelly_run(twin: FloatTwin, x: torch.Tensor, target: torch.Tensor):
    """x (B, T, n_in) -> (spikes per layer (B, T, n), grads per layer)."""
    cfg = twin.cfg
    ws = [w.detach().clone().requires_grad_(True) for w in twin.weights]
    inp = x.to(torch.float32).transpose(0, 1)        # SpikingJelly multi-step: [T, B, n]
    spikes = []
    for w in ws:
        node = sj_neuron.LIFNode(tau=2.0 ** cfg.neuron.leak_shift, decay_input=False,
                                 v_threshold=twin.theta, v_reset=0.0, detach_reset=True,
                                 surrogate_function=SJRect(twin.width), step_mode="m")
        inp = node(torch.nn.functional.linear(inp, w))
        spikes.append(inp.transpose(0, 1))
    loss_of(inp.sum(0), target).backward()
    return spikes, [w.grad for w in ws]


def snntorch_run(twin: FloatTwin, x: torch.Tensor, target: torch.Tensor):
    cfg = twin.cfg
    ws = [w.detach().clone().requires_grad_(True) for w in twin.weights]
    inp = x.to(torch.float32)
    spikes = []
    for w in ws:
        lif = snn.Leaky(beta=1.0 - 2.0 ** -cfg.neuron.leak_shift, threshold=twin.theta,
                        reset_mechanism="zero", spike_grad=snn_rect(twin.width))
        mem = lif.reset_mem()
        cur = torch.nn.functional.linear(inp, w)     # (B, T, n_out)
        out = []
        for t in range(cur.shape[1]):
            spk, mem = lif(cur[:, t], mem)
            out.append(spk)
        inp = torch.stack(out, 1)
        spikes.append(inp)
    loss_of(inp.sum(1), target).backward()
    return spikes, [w.grad for w in ws]


# ------------------------------------------------------------------ cases
def random_case(rng: random.Random):
    T = rng.randint(2, 10)
    layers = (rng.randint(4, 40), rng.randint(2, 30), rng.randint(2, 10))
    threshold = rng.choice([64, 100, 256, 300, 1000])
    wf = rng.randint(4, 10)
    cfg = Config(
        network=NetworkConfig(layers=layers, timesteps=T),
        neuron=NeuronConfig(threshold=threshold, leak_shift=rng.randint(1, 5),
                            surrogate_shift=max(1, threshold.bit_length() + rng.randint(-1, 1))),
        arithmetic=ArithmeticConfig(weight_frac=wf, weight_bits=max(16, wf + 4),
                                    membrane_bits=24),
        train=TrainConfig(batch_size=rng.randint(1, 6), seed=rng.randint(0, 10000)),
    )
    B = cfg.train.batch_size
    g = torch.Generator().manual_seed(rng.randint(0, 2 ** 31))
    # weights in real units around the init scale, random (not integer) values
    ws = []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        scale = 3.0 * (threshold / 2 ** wf) / n_in ** 0.5
        ws.append((torch.rand(n_out, n_in, generator=g) * 2 - 0.6) * scale)
    twin = FloatTwin(cfg, weights=ws)
    x = (torch.rand(B, T, layers[0], generator=g) < rng.uniform(0.1, 0.9)).to(torch.int64)
    labels = torch.randint(0, layers[-1], (B,), generator=g)
    return cfg, twin, x, labels


def margins_ok(twin: FloatTwin, traces) -> bool:
    for tr in traces:
        d = (tr.v.detach() - twin.theta).abs()
        if d.min() < MARGIN or (d - twin.width / 2).abs().min() < MARGIN:
            return False
    return True


def _cases(n: int, seed: int):
    rng = random.Random(seed)
    got = 0
    for _ in range(20 * n):
        case_seed = rng.randint(0, 2 ** 31)
        cfg, twin, x, labels = random_case(random.Random(case_seed))
        traces, loss, grads = twin.gradients(x, labels)
        if not margins_ok(twin, traces):
            continue
        got += 1
        yield case_seed, cfg, twin, x, labels, traces, grads
        if got == n:
            return
    raise AssertionError(f"seed {seed}: too few cases clear of the threshold margin")


def _check(case_seed, name, twin, labels, traces, grads, peer_spikes, peer_grads):
    for l, (tr, ps) in enumerate(zip(traces, peer_spikes)):
        assert torch.equal(tr.s.detach(), ps.detach()), f"case seed {case_seed}: {name} layer {l} spikes differ"
    nonzero = 0
    for l, (g, pg) in enumerate(zip(grads, peer_grads)):
        scale = max(1.0, float(g.abs().max()))
        err = float((g - pg).abs().max()) / scale
        assert err <= 1e-6, f"case seed {case_seed}: {name} layer {l} gradient differs by {err:.2e} (relative)"
        nonzero += int((g != 0).sum())
    return nonzero


@pytest.mark.parametrize("peer", ["spikingjelly", "snntorch"])
def test_gradients_equal_peer_library(peer):
    run = spikingjelly_run if peer == "spikingjelly" else snntorch_run
    nonzero = spikes = 0
    for case_seed, cfg, twin, x, labels, traces, grads in _cases(25, seed=7 if peer == "snntorch" else 11):
        ps, pg = run(twin, x, twin.targets(labels))
        nonzero += _check(case_seed, peer, twin, labels, traces, grads, ps, pg)
        spikes += sum(int(tr.s.sum()) for tr in traces)
    assert nonzero > 0 and spikes > 0, "the sweep produced no spikes or no gradients: it proves nothing"


def test_spikingjelly_fires_on_threshold_like_the_twin():
    """At v == theta exactly both fire (>=); the snnTorch convention (>) would not."""
    cfg = Config(network=NetworkConfig(layers=(1, 1), timesteps=1),
                 neuron=NeuronConfig(threshold=256), arithmetic=ArithmeticConfig(weight_frac=8))
    twin = FloatTwin(cfg, weights=[torch.tensor([[1.0]])])
    x = torch.ones(1, 1, 1, dtype=torch.int64)
    ours = twin.forward(x)[-1].s
    sj, _ = spikingjelly_run(twin, x, torch.zeros(1, 1))
    assert ours.item() == 1.0 and sj[-1].item() == 1.0


def test_twin_gradient_tracks_fixed_point_model():
    """Gradient of the twin at the model's weights ~ the model's G / 2**dv_scale_exp."""
    rng = random.Random(3)
    cfg = Config(network=NetworkConfig(layers=(64, 48, 10), timesteps=8),
                 train=TrainConfig(batch_size=32, seed=5))
    model = FixedPointSNN(cfg)
    twin = FloatTwin.from_fixed(model)
    g = torch.Generator().manual_seed(rng.randint(0, 1000))
    x = (torch.rand(32, 8, 64, generator=g) < 0.3).to(torch.int64)
    labels = torch.randint(0, 10, (32,), generator=g)
    traces = model.forward(x)
    model.backward(traces, labels)
    _, _, grads = twin.gradients(x, labels)
    scale = 2.0 ** fx.dv_scale_exp(cfg)
    for l, (tr, gf) in enumerate(zip(traces, grads)):
        gm = tr.grad.to(torch.float32) / scale
        cos = torch.nn.functional.cosine_similarity(gm.flatten(), gf.flatten(), dim=0)
        assert cos > 0.9, f"layer {l}: cosine {cos:.3f} between model and twin gradients"
