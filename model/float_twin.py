"""The float32 autograd twin of the fixed-point SNN.

Same network, same equations, real numbers instead of integers, gradients from
``torch.autograd`` instead of the hand-written BPTT of :mod:`spikeforge.model.snn`.
The mapping from the integer configuration (``k = leak_shift``, ``wf = weight_frac``,
``ss = surrogate_shift``):

==================  =========================================  ================================
quantity            fixed point (integers)                     float twin
==================  =========================================  ================================
weight              ``W_int``                                  ``W = W_int / 2**wf``
threshold           ``threshold``                              ``theta = threshold / 2**wf``
membrane            ``v_int``                                  ``v = v_int / 2**wf``
leak                ``h - (h >> k)``                           ``h - h * 2**-k`` (beta = 1 - 2**-k)
spike               ``v_int >= threshold``                     ``v >= theta``
reset               ``h = 0 if s else v``                      ``h = v * (1 - s.detach())``
surrogate           mask ``|v_int - threshold| < 2**(ss-1)``   ``1/a`` on ``|v - theta| < a/2``,
                    (its value 1/a is folded into scales)      ``a = 2**(ss - wf)``
loss                ``ds = (count - target) << loss_shift``    ``0.5 * sum_b,i (count - target)**2``
update              ``W -= round(G >> lr_shift)``              SGD, ``lr = float_learning_rate(cfg)``
==================  =========================================  ================================

``lr`` (:func:`spikeforge.model.fixedpoint.float_learning_rate`) is exactly the step one
integer update takes: ``dv_int = dL/dv * 2**(loss_shift + ss - wf)``, ``G_int`` carries the
same scale, and ``W_int -= G_int / 2**lr_shift`` is ``W -= lr * dL/dW`` in real units. The
two differ only by the rounding/saturation of the integer model (and the floor in its
leak), which is what the training comparison measures.

Peer libraries. The twin's neuron is, equation for equation,

* **SpikingJelly** (``spikingjelly.activation_based``, checked against 2.0.0)::

      neuron.LIFNode(tau=2.0**k, decay_input=False, v_threshold=theta, v_reset=0.0,
                     detach_reset=True, surrogate_function=<rectangular, width a, height 1/a>)

  charge ``H[t] = V[t-1] - V[t-1]/tau + X[t]`` (bit-identical to our ``h - h * 2**-k + I``
  because ``1/tau`` is a power of two), fire ``S = H - theta >= 0`` (the same ``>=`` as ours),
  hard reset ``V = H * (1 - S.detach())``. Forward spikes are identical; gradients agree to
  float32 rounding. SpikingJelly's own ``surrogate.Rect`` is not the same window (its
  width/height parametrisation differs), so pass a custom one (see
  ``tests/test_float_twin.py``).

* **snnTorch** (``snntorch``, checked against 1.0.0)::

      snn.Leaky(beta=1 - 2**-k, threshold=theta, reset_mechanism="zero",
                spike_grad=<rectangular>, reset_delay=True)   # reset_delay=True is the default

  snnTorch computes ``reset = spike_grad(mem[t-1] - theta).detach()`` at the start of a step,
  then ``mem[t] = beta * (1 - reset) * mem[t-1] + I[t]`` and ``spk[t] = spike_grad(mem[t] -
  theta)``: exactly our ``v[t] = beta * h[t-1] + I[t]`` with the detached hard reset, and the
  returned ``mem`` is our ``v`` (before reset). Differences: (1) snnTorch's stock surrogates
  fire on ``mem > theta`` (ours on ``>=``), so results differ only when ``v == theta`` exactly;
  a ``spike_grad`` that fires on ``>= 0`` removes even that; (2) ``beta * mem`` rounds
  differently from ``mem - mem * 2**-k`` in float32 (relative 1e-7). ``reset_delay=False``
  is *not* equivalent: it zeroes the returned membrane through a non-detached spike.

Shapes as in :mod:`spikeforge.model.snn`: inputs ``(B, T, n_in)``, weights ``(n_out, n_in)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import fixedpoint as fx

__all__ = ["RectSurrogate", "rect_spike", "FloatTwin", "FloatTrace", "to_integer_weights",
           "neuron_constants"]


class RectSurrogate(torch.autograd.Function):
    """Heaviside ``x >= 0`` forward; rectangular surrogate ``1/a`` on ``|x| < a/2`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, width: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.width
        window = (x.abs() < a / 2).to(grad.dtype)
        return grad * window * (1.0 / a), None


def rect_spike(x: torch.Tensor, width: float) -> torch.Tensor:
    return RectSurrogate.apply(x, width)


def to_integer_weights(w: torch.Tensor, cfg) -> torch.Tensor:
    """Real-unit weights -> the integer format: ``sat(floor(w * 2**wf + 1/2))`` (half up, saturated).

    The one rule by which the twin, the importers (:mod:`spikeforge.gen.interchange`) and
    anything else turn a float weight into the integer the chip stores.
    """
    a = cfg.arithmetic
    return fx.sat(torch.floor(w.detach().to(torch.float64) * 2.0 ** a.weight_frac + 0.5).to(torch.int64),
                  a.weight_bits)


def neuron_constants(cfg) -> dict:
    """The neuron of ``cfg`` in real units: ``theta``, ``beta`` (= 1 - ``decay``), ``decay``,
    ``tau_steps`` (= 2**k: beta = 1 - 1/tau_steps), surrogate ``width`` (see the table above)."""
    n, wf = cfg.neuron, cfg.arithmetic.weight_frac
    decay = 2.0 ** -n.leak_shift
    return {"theta": n.threshold / 2.0 ** wf, "decay": decay, "beta": 1.0 - decay,
            "tau_steps": 2.0 ** n.leak_shift, "width": 2.0 ** (n.surrogate_shift - wf)}


@dataclass
class FloatTrace:
    """One layer's forward pass (float32); ``v`` keeps its gradient after ``backward``."""

    x: torch.Tensor   #: (B, T, n_in) input spikes
    v: torch.Tensor   #: (B, T, n_out) membrane before reset
    s: torch.Tensor   #: (B, T, n_out) output spikes
    v_steps: list | None = None  #: the T tensors v[t] of the graph (their .grad is dL/dv[t])

    @property
    def dv(self) -> torch.Tensor | None:
        """(B, T, n_out) dL/dv after ``backward`` (needs ``keep_v_grad=True``), else None."""
        if not self.v_steps or any(v.grad is None for v in self.v_steps):
            return None
        return torch.stack([v.grad for v in self.v_steps], 1)

    @property
    def count(self) -> torch.Tensor:
        return self.s.sum(dim=1)


class FloatTwin:
    """The float32 twin: same layers, same LIF, autograd BPTT, plain SGD."""

    def __init__(self, cfg, weights: list[torch.Tensor] | None = None, seed: int | None = None):
        from .snn import init_weights

        self.cfg = cfg
        wf = cfg.arithmetic.weight_frac
        if weights is None:
            g = torch.Generator().manual_seed(cfg.train.seed if seed is None else seed)
            weights = init_weights(cfg, g)
        self.weights = []
        for w in weights:
            w = w.to(torch.float32) / 2.0 ** wf if not w.is_floating_point() else w.to(torch.float32)
            self.weights.append(w.clone().requires_grad_(True))
        c = neuron_constants(cfg)
        self.theta = c["theta"]
        self.decay = c["decay"]                    # beta = 1 - decay
        self.beta = c["beta"]
        self.width = c["width"]
        self.lr = fx.float_learning_rate(cfg)

    @classmethod
    def from_fixed(cls, model) -> "FloatTwin":
        """The twin of a :class:`~spikeforge.model.snn.FixedPointSNN` (its integer weights scaled)."""
        return cls(model.cfg, weights=[w.clone() for w in model.weights])

    def forward_layer(self, l: int, x: torch.Tensor, keep_v_grad: bool = False) -> FloatTrace:
        w = self.weights[l]
        B, T, n_in = x.shape
        current = (x.reshape(B * T, n_in) @ w.t()).reshape(B, T, -1)
        h = torch.zeros(B, w.shape[0], dtype=torch.float32)
        vs, ss = [], []
        for t in range(T):
            v = h - h * self.decay + current[:, t]
            if keep_v_grad and v.requires_grad:
                v.retain_grad()
            s = rect_spike(v - self.theta, self.width)
            vs.append(v)
            ss.append(s)
            h = v * (1.0 - s.detach())
        return FloatTrace(x=x, v=torch.stack(vs, 1), s=torch.stack(ss, 1),
                          v_steps=vs if keep_v_grad else None)

    def forward(self, x: torch.Tensor, keep_v_grad: bool = False) -> list[FloatTrace]:
        """All layers on spikes ``x`` (B, T, n_in) (any dtype, converted to float32)."""
        x = x.to(torch.float32)
        traces = []
        for l in range(len(self.weights)):
            tr = self.forward_layer(l, x, keep_v_grad)
            traces.append(tr)
            x = tr.s
        return traces

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        n_out = self.cfg.network.layers[-1]
        y = torch.zeros(labels.shape[0], n_out, dtype=torch.float32)
        y[torch.arange(labels.shape[0]), labels.to(torch.int64)] = float(self.cfg.target_count)
        return y

    def loss(self, traces: list[FloatTrace], labels: torch.Tensor) -> torch.Tensor:
        """``0.5 * sum over batch and output neurons of (count - target)**2``."""
        return 0.5 * ((traces[-1].count - self.targets(labels)) ** 2).sum()

    def gradients(self, x: torch.Tensor, labels: torch.Tensor, keep_v_grad: bool = False):
        """Forward + backward without an update: (traces, loss, [dL/dW per layer])."""
        for w in self.weights:
            w.grad = None
        traces = self.forward(x, keep_v_grad)
        loss = self.loss(traces, labels)
        loss.backward()
        return traces, loss.detach(), [w.grad.clone() for w in self.weights]

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, keep_v_grad: bool = False):
        """One mini-batch: forward, backward, ``W -= lr * dL/dW``. Returns the traces."""
        traces, _, grads = self.gradients(x, labels, keep_v_grad)
        with torch.no_grad():
            for w, g in zip(self.weights, grads):
                w -= self.lr * g
                w.grad = None
        return traces

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1].count.argmax(dim=1)

    def integer_weights(self) -> list[torch.Tensor]:
        """The weights rounded (half up) and saturated to the integer format."""
        return [to_integer_weights(w, self.cfg) for w in self.weights]
