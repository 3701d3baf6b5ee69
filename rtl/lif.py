"""The LIF unit: one leaky integrate-and-fire update of ``P`` neurons (combinational).

Per lane, exactly :meth:`spikeforge.model.snn.FixedPointSNN.forward_layer`::

    v = sat(h - (h >> k) + I, membrane_bits)      # shift leak, saturation
    s = v >= threshold                             # spike
    m = |v - threshold| < 2**(surrogate_shift-1)   # surrogate mask
    h' = 0 if s else v                             # hard reset

``lane_en`` gates padding lanes (neurons past ``N`` in the last block): a disabled lane
never spikes, its mask is 0 and its ``h'`` is 0. With ``pipelined=False`` the unit is purely
combinational. With ``pipelined=True`` it registers ``v`` and ``lane_en`` (when ``advance``
is high) between the leak-and-add and the spike/mask/reset logic: ``v``, ``spikes``,
``mask`` and ``h_next`` then belong to the inputs of the cycle before -- two carry chains
in two cycles instead of one, for 100 MHz. The FP engine registers inputs and outputs.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import arith

__all__ = ["LIF"]


class LIF(wiring.Component):
    """``P`` LIF neurons; ``current_bits`` is the signed width of the input current ``I``.

    Ports (arrays of ``P``): ``h`` (In, signed membrane_bits), ``current`` (In, signed
    current_bits), ``lane_en`` (In, P bits); ``v``, ``h_next`` (Out, signed membrane_bits),
    ``spikes``, ``mask`` (Out, P bits, lane ``q`` = bit ``q``).
    """

    def __init__(self, cfg, lanes: int, current_bits: int, *, pipelined: bool = False):
        if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1):
            raise ValueError(f"LIF: lanes={lanes!r} must be a power of two >= 1")
        if not isinstance(current_bits, int) or current_bits < 2:
            raise ValueError(f"LIF: current_bits={current_bits!r} must be an integer >= 2")
        self.cfg = cfg
        self.lanes = lanes
        self.current_bits = current_bits
        self.pipelined = bool(pipelined)
        mb = cfg.arithmetic.membrane_bits
        ports = {}
        if self.pipelined:
            ports["advance"] = In(1)
        super().__init__(ports | {
            "h": In(signed(mb)).array(lanes),
            "current": In(signed(current_bits)).array(lanes),
            "lane_en": In(lanes),
            "v": Out(signed(mb)).array(lanes),
            "h_next": Out(signed(mb)).array(lanes),
            "spikes": Out(lanes),
            "mask": Out(lanes),
        })

    def elaborate(self, platform):
        m = Module()
        n, a = self.cfg.neuron, self.cfg.arithmetic
        if self.pipelined:
            en = Signal(self.lanes)
            with m.If(self.advance):
                m.d.sync += en.eq(self.lane_en)
        else:
            en = self.lane_en
        for q in range(self.lanes):
            v = arith.sat(arith.leak(self.h[q], n.leak_shift) + self.current[q], a.membrane_bits)
            s = arith.spike(self.v[q], n.threshold) & en[q]
            mk = arith.surrogate_mask(self.v[q], n.threshold, n.surrogate_shift) & en[q]
            if self.pipelined:
                with m.If(self.advance):
                    m.d.sync += self.v[q].eq(v)
            else:
                m.d.comb += self.v[q].eq(v)
            m.d.comb += [
                self.spikes[q].eq(s),
                self.mask[q].eq(mk),
                self.h_next[q].eq(Mux(s | ~en[q], 0, self.v[q])),
            ]
        return m
