"""Amaranth mirrors of :mod:`spikeforge.model.fixedpoint` (the arithmetic spec).

Each function builds the hardware expression of the model function of the same name, bit
for bit; ``rtl/`` does narrow arithmetic only through these. Values are signed Amaranth
expressions; ``>>`` of a signed value is an arithmetic (floor) shift, as in the model.
This module imports nothing of ``spikeforge.model`` (the model checks the RTL).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Value, signed

__all__ = [
    "acc_width", "sat", "leak", "shift_right_round", "surrogate_mask", "spike", "xorshift32",
    "round_update", "output_error", "MASK32",
]

MASK32 = 0xFFFF_FFFF


def acc_width(value_bits: int, terms: int) -> int:
    """Signed width that holds the sum of ``terms`` signed ``value_bits``-wide values exactly."""
    return value_bits + max(terms - 1, 0).bit_length()


def sat(x: Value, bits: int) -> Value:
    """``x`` saturated to a signed ``bits``-wide value (result shape ``signed(bits)``)."""
    x = Value.cast(x)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x.shape().signed and len(x) <= bits:
        return x
    if not x.shape().signed and len(x) < bits:
        return x
    return Mux(x > hi, Const(hi, signed(bits)),
               Mux(x < lo, Const(lo, signed(bits)), x[:bits].as_signed()))


def leak(h: Value, k: int) -> Value:
    """``h - (h >> k)``: multiply by ``beta = 1 - 2**-k`` (one bit wider than ``h``)."""
    h = Value.cast(h)
    return h - (h >> k)


def shift_right_round(x: Value, shift: int) -> Value:
    """Round-half-up arithmetic right shift ``(x + 2**(shift-1)) >> shift``."""
    x = Value.cast(x)
    if shift == 0:
        return x
    return (x + (1 << (shift - 1))) >> shift


def spike(v: Value, threshold: int) -> Value:
    """``v >= threshold`` (1 bit)."""
    return Value.cast(v) >= threshold


def surrogate_mask(v: Value, threshold: int, surrogate_shift: int) -> Value:
    """``|v - theta| < 2**(surrogate_shift-1)`` as ``theta - half < v < theta + half`` (1 bit)."""
    v = Value.cast(v)
    half = 1 << (surrogate_shift - 1)
    return (v > threshold - half) & (v < threshold + half)


def output_error(count: Value, target: Value, loss_shift: int, error_bits: int) -> Value:
    """``sat((count - target) << loss_shift, error_bits)``."""
    c = _as_signed(count)
    t = _as_signed(target)
    return sat((c - t) << loss_shift, error_bits)


def _as_signed(x: Value) -> Value:
    """``x`` as a signed value of the same numeric value (zero-extends an unsigned one)."""
    x = Value.cast(x)
    return x if x.shape().signed else Cat(x, Const(0, 1)).as_signed()


def round_update(g: Value, lr_shift: int, r: Value | None = None) -> Value:
    """``round(G >> lr_shift)``: half up, or stochastic with the low ``lr_shift`` bits of ``r``."""
    g = Value.cast(g)
    if lr_shift == 0:
        return g
    if r is None:
        return (g + (1 << (lr_shift - 1))) >> lr_shift
    return (g + Value.cast(r)[:lr_shift].as_unsigned()) >> lr_shift


def xorshift32(x: Value) -> Value:
    """One xorshift32 (13, 17, 5) step of an unsigned 32-bit value (result 32 bits)."""
    x = Value.cast(x)[:32]
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    x = x ^ (x << 5)[:32]
    return x
