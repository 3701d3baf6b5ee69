"""The fixed-point number format: every width, shift, rounding and saturation of spikeforge.

This module is the specification the RTL implements. Everything else in ``model/`` calls
these functions and nothing else does arithmetic on narrow values. All values are signed
two's-complement integers held in ``torch.int64`` tensors; ``>>`` is an arithmetic
(floor) shift, exactly what a hardware shifter of a signed value does.

==========================  ======================  =============================================
quantity                    width (config key)      rule
==========================  ======================  =============================================
weight ``W``                ``weight_bits``         stored saturated; ``2**weight_frac`` is 1.0
input/output spike ``s``    1 bit                   ``s = v >= threshold``
input current ``I``         full width              ``sum_j W[i, j] x[j]``: never rounded
membrane ``v``, ``h``       ``membrane_bits``       ``v = sat(h - (h >> k) + I)``; ``h = 0 if s else v``
surrogate mask ``m``        1 bit                   ``m = |v - theta| < 2**(surrogate_shift - 1)``
spike count ``c``           ``log2(T) + 1``         ``sum_t s[t]``
output error ``ds``         ``error_bits``          ``sat((c - target) << loss_shift)``
membrane grad ``dv``        ``dv_bits``             ``sat(m*ds + (1 - s) * (d - (d >> k)))``, ``d = dv[t+1]``
error partial sum ``e``     full width              ``sum_i W[i, j] dv[i]``: never rounded
error to layer below        ``error_bits``          ``sat((e + 2**(a_s-1)) >> a_s)``, ``a_s = surrogate_shift``
weight gradient ``G``       ``grad_bits``           ``sat(sum_{b,t} dv[i] x[j])``
update                      ``weight_bits``         ``W = sat(W - round(G >> lr_shift))``
round nearest               --                      ``(G + 2**(lr_shift-1)) >> lr_shift`` (half up)
round stochastic            --                      ``(G + (r & (2**lr_shift - 1))) >> lr_shift``
federated average           ``weight_bits``         ``floor((2 * sum n_k W_k + N) / (2 N))``, ``N = sum n_k``
==========================  ======================  =============================================

Scales. ``ds`` of the output layer is ``dL/ds * 2**loss_shift``. The surrogate value ``1/a``
is a power of two, so it is not applied: it moves ``dv`` to the scale
``2**(loss_shift + surrogate_shift - weight_frac)``. ``e = W^T dv`` then carries
``weight_frac + surrogate_shift`` more bits than ``ds``, and shifting it right by
``surrogate_shift`` (= :func:`error_shift`) gives every layer's ``ds`` the same scale. The
float learning rate that one integer update step implements is :func:`float_learning_rate`.

Full-width sums (``I``, ``e``, ``G`` before saturation) are exact integer sums, so the
order in which their terms arrive -- engine lanes, cores, the network-on-chip -- cannot
change a bit. ``G`` saturates once, after the whole mini-batch has been summed.

Stochastic rounding draws ``r`` from one xorshift32 stream per output neuron
(``x ^= x << 13; x ^= x >> 17; x ^= x << 5``, 32-bit), stepped once per weight of that
neuron's row whose ``G`` is not zero, in column order, before the weight is rounded (a zero
``G`` rounds to 0 with any ``r``; not stepping there lets the hardware skip the weights a
sample cannot change -- columns without an input spike, neurons without a non-zero dv). The streams are seeded by
:func:`neuron_seeds` and persist across updates, so that any partition of the neurons
over cores and lanes draws the same numbers.
"""

from __future__ import annotations

import torch

__all__ = [
    "sat", "shift_right_round", "leak", "surrogate_mask", "output_error", "round_update",
    "xorshift32", "xorshift32_steps", "neuron_seeds", "acc_width", "error_shift", "dv_scale_exp",
    "float_learning_rate", "div_round_half_up",
]

MASK32 = 0xFFFF_FFFF


def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Saturate to a signed ``bits``-wide two's-complement value."""
    return x.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def shift_right_round(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Arithmetic right shift with round-half-up: ``(x + 2**(shift-1)) >> shift``."""
    if shift == 0:
        return x
    return (x + (1 << (shift - 1))) >> shift


def leak(h: torch.Tensor, k: int) -> torch.Tensor:
    """Multiply by ``beta = 1 - 2**-k`` the hardware way: ``h - (h >> k)``."""
    return h - (h >> k)


def surrogate_mask(v: torch.Tensor, threshold: int, surrogate_shift: int) -> torch.Tensor:
    """Rectangular surrogate window: 1 where ``|v - theta| < a/2`` with ``a = 2**surrogate_shift``.

    The surrogate's value ``1/a`` is a power of two and is folded into the scale of ``dv``
    (and so into ``error_shift`` and ``lr_shift``); the hardware stores and uses the mask.
    """
    half = 1 << (surrogate_shift - 1)
    d = v - threshold
    return ((d > -half) & (d < half)).to(torch.int64)


def output_error(count: torch.Tensor, target: torch.Tensor, loss_shift: int, error_bits: int) -> torch.Tensor:
    """Gradient of ``0.5 * sum (count - target)**2`` w.r.t. each spike, scaled by ``2**loss_shift``."""
    return sat((count - target) << loss_shift, error_bits)


def round_update(g: torch.Tensor, lr_shift: int, r: torch.Tensor | None = None) -> torch.Tensor:
    """The weight step ``round(G >> lr_shift)``: half up, or stochastic with random bits ``r``."""
    if lr_shift == 0:
        return g
    if r is None:
        return (g + (1 << (lr_shift - 1))) >> lr_shift
    return (g + (r & ((1 << lr_shift) - 1))) >> lr_shift


def xorshift32(x: torch.Tensor) -> torch.Tensor:
    """One step of Marsaglia's xorshift32 (13, 17, 5) on unsigned 32-bit values in int64."""
    x = x ^ ((x << 13) & MASK32)
    x = x ^ (x >> 17)
    x = x ^ ((x << 5) & MASK32)
    return x


def xorshift32_steps(x: torch.Tensor, n: int) -> torch.Tensor:
    """The next ``n`` states of each stream: ``out[..., j]`` = :func:`xorshift32` applied ``j + 1`` times.

    Bit-identical to looping :func:`xorshift32` ``n`` times; the loop runs on numpy
    ``uint32`` arrays (wrapping shifts, low per-step overhead) for speed.
    """
    import numpy as np

    state = x.numpy().astype(np.uint32)
    out = np.empty(state.shape + (n,), dtype=np.uint32)
    for j in range(n):
        state ^= state << np.uint32(13)
        state ^= state >> np.uint32(17)
        state ^= state << np.uint32(5)
        out[..., j] = state
    return torch.from_numpy(out.astype(np.int64))


def neuron_seeds(seed: int, layer: int, n: int) -> torch.Tensor:
    """Initial xorshift32 state of each of ``n`` neurons of ``layer`` (never zero).

    A splitmix-style hash on the host; the host loads these states with the weights.
    """
    out = []
    for i in range(n):
        z = (seed * 0x9E3779B9 + (layer << 20) + i + 1) & MASK32
        z = ((z ^ (z >> 16)) * 0x85EBCA6B) & MASK32
        z = ((z ^ (z >> 13)) * 0xC2B2AE35) & MASK32
        z ^= z >> 16
        out.append(z or 0x1234567)
    return torch.tensor(out, dtype=torch.int64)


def acc_width(value_bits: int, terms: int) -> int:
    """Signed width that holds the sum of ``terms`` signed ``value_bits``-wide values exactly."""
    return value_bits + max(terms - 1, 0).bit_length()


def error_shift(cfg) -> int:
    """Right shift (half-up rounded) that narrows ``e = W^T dv`` to the layer below's ``ds``."""
    return cfg.neuron.surrogate_shift


def dv_scale_exp(cfg) -> int:
    """``dv`` holds ``dL/dv * 2**dv_scale_exp(cfg)``."""
    return cfg.arithmetic.loss_shift + cfg.neuron.surrogate_shift - cfg.arithmetic.weight_frac


def float_learning_rate(cfg) -> float:
    """The SGD learning rate (on the batch-summed loss) that one integer update implements."""
    a = cfg.arithmetic
    return 2.0 ** (dv_scale_exp(cfg) - a.lr_shift - a.weight_frac)


def div_round_half_up(num: torch.Tensor, den: int) -> torch.Tensor:
    """``num / den`` rounded to the nearest integer, ties towards +infinity: ``floor(num/den + 1/2)``.

    The one rounding of federated averaging (``num = sum_k n_k W_k``, ``den = sum_k n_k``):
    computed as ``floor((2 num + den) / (2 den))`` in exact integers, so no float ever
    touches the weights. The same rule as :func:`shift_right_round` when ``den`` is a power
    of two.
    """
    if den < 1:
        raise ValueError(f"divisor must be >= 1, got {den}")
    return torch.div(2 * num.to(torch.int64) + den, 2 * den, rounding_mode="floor")
