"""The bit-exact fixed-point SNN: forward LIF, BPTT with a rectangular surrogate, SGD.

Vectorised over the mini-batch with integer tensors. Every narrow operation goes through
:mod:`spikeforge.model.fixedpoint`; this module only sequences them. Each layer's
per-timestep intermediate values are kept in a :class:`LayerTrace`, because the RTL
testbenches compare against them transaction by transaction.

Shapes: spikes and per-neuron values are ``(B, T, n)``; weights are ``(n_out, n_in)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import fixedpoint as fx

__all__ = ["LayerTrace", "FixedPointSNN", "exact_matmul", "init_weights", "work_counts"]


def exact_matmul(a: torch.Tensor, b: torch.Tensor, bound_bits: int) -> torch.Tensor:
    """Integer ``a @ b``, exact. ``bound_bits``: every partial sum is below ``2**bound_bits``.

    float64 represents every integer below 2**53 exactly and its sums of such integers are
    exact in any order, so BLAS gives the exact integer result much faster than int64.
    """
    if bound_bits <= 52:
        return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int64)
    return a.to(torch.int64) @ b.to(torch.int64)


@dataclass
class LayerTrace:
    """Everything one layer computed for one mini-batch (all ``torch.int64``)."""

    x: torch.Tensor            #: (B, T, n_in) input spikes
    current: torch.Tensor      #: (B, T, n_out) I[t] = W x[t], full width
    v: torch.Tensor            #: (B, T, n_out) membrane before reset, saturated
    s: torch.Tensor            #: (B, T, n_out) output spikes
    mask: torch.Tensor         #: (B, T, n_out) surrogate mask
    ds: torch.Tensor | None = None        #: (B, T, n_out) error arriving at the spikes
    dv: torch.Tensor | None = None        #: (B, T, n_out) membrane gradient
    e: torch.Tensor | None = None         #: (B, T, n_in) W^T dv[t], full width
    ds_below: torch.Tensor | None = None  #: (B, T, n_in) e narrowed for the layer below
    grad: torch.Tensor | None = None      #: (n_out, n_in) G summed over the batch, saturated

    @property
    def count(self) -> torch.Tensor:
        """(B, n_out) spike counts over the T timesteps."""
        return self.s.sum(dim=1)


def init_weights(cfg, generator: torch.Generator) -> list[torch.Tensor]:
    """Seeded integer initial weights: uniform in +-(threshold * gain / sqrt(n_in)).

    The bound scales with the threshold so that a layer starts near firing for
    rate-coded inputs of moderate density.
    """
    ws = []
    theta = cfg.neuron.threshold
    for n_in, n_out in zip(cfg.network.layers[:-1], cfg.network.layers[1:]):
        bound = max(1, int(round(2.0 * theta / n_in ** 0.5)))
        w = torch.randint(-bound, bound + 1, (n_out, n_in), generator=generator, dtype=torch.int64)
        ws.append(fx.sat(w, cfg.arithmetic.weight_bits))
    return ws


class FixedPointSNN:
    """The reference model: the specification of what the hardware computes."""

    def __init__(self, cfg, weights: list[torch.Tensor] | None = None, seed: int | None = None):
        self.cfg = cfg
        layers = cfg.network.layers
        if weights is None:
            g = torch.Generator().manual_seed(cfg.train.seed if seed is None else seed)
            weights = init_weights(cfg, g)
        if len(weights) != len(layers) - 1:
            raise ValueError(f"expected {len(layers) - 1} weight matrices, got {len(weights)}")
        self.weights = []
        for l, w in enumerate(weights):
            shape = (layers[l + 1], layers[l])
            if tuple(w.shape) != shape:
                raise ValueError(f"layer {l}: weights of shape {tuple(w.shape)}, expected {shape}")
            self.weights.append(w.to(torch.int64).clone())
        #: Per-neuron xorshift32 states of stochastic rounding, one tensor per layer.
        self.rng_state = [fx.neuron_seeds(cfg.arithmetic.lfsr_seed, l, layers[l + 1])
                          for l in range(len(layers) - 1)]

    # ----------------------------------------------------------------------------- forward
    def forward_layer(self, l: int, x: torch.Tensor) -> LayerTrace:
        cfg, a, n = self.cfg, self.cfg.arithmetic, self.cfg.neuron
        w = self.weights[l]
        B, T, n_in = x.shape
        current = exact_matmul(x.reshape(B * T, n_in), w.t(),
                               fx.acc_width(a.weight_bits, n_in)).reshape(B, T, -1)
        h = torch.zeros(B, w.shape[0], dtype=torch.int64)
        v_all, s_all, m_all = [], [], []
        for t in range(T):
            v = fx.sat(fx.leak(h, n.leak_shift) + current[:, t], a.membrane_bits)
            s = (v >= n.threshold).to(torch.int64)
            v_all.append(v)
            s_all.append(s)
            m_all.append(fx.surrogate_mask(v, n.threshold, n.surrogate_shift))
            h = torch.where(s.bool(), torch.zeros_like(v), v)
        return LayerTrace(x=x, current=current, v=torch.stack(v_all, 1), s=torch.stack(s_all, 1),
                          mask=torch.stack(m_all, 1))

    def forward(self, x: torch.Tensor) -> list[LayerTrace]:
        """Run all layers on input spikes ``x`` of shape (B, T, n_in)."""
        x = self._check_input(x)
        traces = []
        for l in range(len(self.weights)):
            tr = self.forward_layer(l, x)
            traces.append(tr)
            x = tr.s
        return traces

    # ---------------------------------------------------------------------------- backward
    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, n_out) target spike counts: ``target_count`` for the label, 0 otherwise."""
        n_out = self.cfg.network.layers[-1]
        y = torch.zeros(labels.shape[0], n_out, dtype=torch.int64)
        y[torch.arange(labels.shape[0]), labels.to(torch.int64)] = self.cfg.target_count
        return y

    def backward_layer(self, l: int, tr: LayerTrace, ds: torch.Tensor) -> None:
        """Fill ``tr.ds, dv, e, ds_below, grad`` from the error ``ds`` (B, T, n_out)."""
        a, n = self.cfg.arithmetic, self.cfg.neuron
        w = self.weights[l]
        B, T, n_out = ds.shape
        dv = torch.zeros_like(ds)
        d = torch.zeros(B, n_out, dtype=torch.int64)
        for t in reversed(range(T)):
            d = fx.sat(tr.mask[:, t] * ds[:, t] + (1 - tr.s[:, t]) * fx.leak(d, n.leak_shift), a.dv_bits)
            dv[:, t] = d
        tr.ds, tr.dv = ds, dv
        n_in = w.shape[1]
        tr.e = exact_matmul(dv.reshape(B * T, n_out), w,
                            a.weight_bits + a.dv_bits + n_out.bit_length()).reshape(B, T, n_in)
        tr.ds_below = fx.sat(fx.shift_right_round(tr.e, fx.error_shift(self.cfg)), a.error_bits)
        g = exact_matmul(dv.reshape(B * T, n_out).t(), tr.x.reshape(B * T, n_in),
                         a.dv_bits + (B * T).bit_length())
        tr.grad = fx.sat(g, a.grad_bits)

    def backward(self, traces: list[LayerTrace], labels: torch.Tensor) -> None:
        """BPTT from the output loss down to the first layer (reset path detached)."""
        a = self.cfg.arithmetic
        out = traces[-1]
        T = out.s.shape[1]
        err = fx.output_error(out.count, self.targets(labels), a.loss_shift, a.error_bits)
        ds = err[:, None, :].expand(-1, T, -1).contiguous()
        for l in reversed(range(len(traces))):
            self.backward_layer(l, traces[l], ds)
            ds = traces[l].ds_below

    # ------------------------------------------------------------------------------ update
    def update_deltas(self, l: int, grad: torch.Tensor) -> torch.Tensor:
        """The rounded step ``round(G >> lr_shift)`` of layer ``l``; advances its rng streams."""
        a = self.cfg.arithmetic
        if a.rounding == "nearest":
            return fx.round_update(grad, a.lr_shift)
        # Each neuron's stream steps once per weight of its row with G != 0, in column
        # order (a zero G rounds to 0 whatever r is, and the hardware skips it):
        # steps[:, k] is the state after k + 1 steps; weight j uses step nz[j] - 1.
        nz = (grad != 0).to(torch.int64)
        used = nz.cumsum(dim=1)
        n = int(used[:, -1].max()) if grad.numel() else 0
        if n == 0:
            return torch.zeros_like(grad)
        steps = fx.xorshift32_steps(self.rng_state[l], n)
        r = torch.gather(steps, 1, (used - 1).clamp(min=0)) * nz
        last = used[:, -1]
        self.rng_state[l] = torch.where(
            last > 0, torch.gather(steps, 1, (last - 1).clamp(min=0)[:, None])[:, 0],
            self.rng_state[l])
        return fx.round_update(grad, a.lr_shift, r)

    def update(self, traces: list[LayerTrace]) -> None:
        a = self.cfg.arithmetic
        for l, tr in enumerate(traces):
            self.weights[l] = fx.sat(self.weights[l] - self.update_deltas(l, tr.grad), a.weight_bits)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> list[LayerTrace]:
        """One mini-batch: forward, backward, one weight update. Returns the traces."""
        traces = self.forward(x)
        self.backward(traces, labels)
        self.update(traces)
        return traces

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) predicted class: the output neuron with the most spikes (lowest index on ties)."""
        return self.forward(x)[-1].count.argmax(dim=1)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        n_in, T = self.cfg.network.layers[0], self.cfg.network.timesteps
        if x.dim() != 3 or x.shape[1] != T or x.shape[2] != n_in:
            raise ValueError(f"input spikes of shape {tuple(x.shape)}, expected (B, {T}, {n_in})")
        return x.to(torch.int64)


def work_counts(traces: list[LayerTrace]) -> list[dict[str, int]]:
    """Per layer and phase: useful operations and their dense equivalent.

    fp: one accumulation per (input spike event, output neuron);
    bp: one multiply-accumulate per (non-zero dv, input);
    wg: one accumulation per (input spike, non-zero dv) in the same timestep.
    """
    out = []
    for tr in traces:
        B, T, n_in = tr.x.shape
        n_out = tr.s.shape[2]
        dense = B * T * n_in * n_out
        events = int(tr.x.sum())
        row = {
            "spike_events": events,
            "output_spikes": int(tr.s.sum()),
            "fp_ops": events * n_out,
            "dense_ops": dense,
            "neuron_steps": B * T * n_out,
        }
        if tr.dv is not None:
            nz = (tr.dv != 0).to(torch.int64)
            row["nonzero_dv"] = int(nz.sum())
            row["bp_ops"] = row["nonzero_dv"] * n_in
            row["wg_ops"] = int((tr.x.sum(dim=2) * nz.sum(dim=2)).sum())
        out.append(row)
    return out
