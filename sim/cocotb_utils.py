"""Helpers for cocotb testbenches (they run inside the simulator).

* :func:`load_params` -- the parameters :func:`spikeforge.sim.runner.run_cocotb` passed
  (``config`` rebuilt as a :class:`~spikeforge.gen.config.Config`, ``geometry`` as a
  :class:`~spikeforge.rtl.geometry.CoreGeometry`, everything else as given).
* :func:`start_clock`, :func:`reset` -- clock ``dut.clk`` and pulse ``dut.rst``.
* :func:`port`, :func:`ports` -- handles of flattened Amaranth ports (``a__b``, arrays ``a__0..``).
* :func:`to_signed`, :func:`pack`, :func:`unpack` -- values of flattened struct/array ports.
* :class:`Mismatch` / :func:`check` -- an assertion that names seed, cycle and what differs.

Performance: Python runs once per awaited edge, so loops await ``RisingEdge(dut.clk)`` and
read signals; no per-cycle ``Timer``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

__all__ = [
    "load_params", "start_clock", "reset", "port", "ports", "to_signed", "pack", "unpack",
    "check", "CycleCounter", "CLOCK_PERIOD_NS", "decode",
]

CLOCK_PERIOD_NS = 10


def load_params() -> SimpleNamespace:
    """The JSON written by ``run_cocotb`` as a namespace (``p.config``, ``p.geometry``, ...)."""
    path = os.environ.get("SPIKEFORGE_PARAMS")
    if not path:
        raise RuntimeError("SPIKEFORGE_PARAMS is not set: run this cocotb module through "
                           "spikeforge.sim.runner.run_cocotb")
    with open(path) as f:
        raw = json.load(f)
    ns = SimpleNamespace(**raw)
    ns.raw = raw
    if raw.get("config") is not None:
        from ..gen.config import config_from_dict

        ns.config = config_from_dict(raw["config"])
    if raw.get("geometry") is not None:
        from ..rtl.geometry import CoreGeometry

        ns.geometry = CoreGeometry(**raw["geometry"])
    return ns


def start_clock(dut, period_ns: int = CLOCK_PERIOD_NS):
    """Start a free-running clock on ``dut.clk``."""
    import cocotb
    from cocotb.clock import Clock

    return cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles: int = 2, clock: bool = True) -> None:
    """(Start the clock and) hold ``dut.rst`` high for ``cycles`` rising edges."""
    from cocotb.triggers import RisingEdge

    if clock:
        start_clock(dut)
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def port(dut, *path):
    """Handle of a flattened Amaranth port: ``port(dut, "lists", "payload")`` -> ``dut.lists__payload``."""
    return getattr(dut, "__".join(str(p) for p in path))


def ports(dut, name: str, n: int) -> list:
    """Handles of an array port ``name__0 .. name__{n-1}``."""
    return [getattr(dut, f"{name}__{i}") for i in range(n)]


def to_signed(value: int, bits: int) -> int:
    """Two's-complement interpretation of the low ``bits`` of ``value``."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def pack(fields: list[tuple[int, int]]) -> int:
    """Pack ``[(value, width), ...]`` (first = least significant, Amaranth's layout order)."""
    out, shift = 0, 0
    for value, width in fields:
        out |= (int(value) & ((1 << width) - 1)) << shift
        shift += width
    return out


def unpack(word: int, widths: list[int], signed: list[bool] | None = None) -> list[int]:
    """Inverse of :func:`pack`; ``signed[i]`` interprets field ``i`` as two's complement."""
    out, shift = [], 0
    for i, w in enumerate(widths):
        v = (int(word) >> shift) & ((1 << w) - 1)
        if signed and signed[i]:
            v = to_signed(v, w)
        out.append(v)
        shift += w
    return out


def check(cond: bool, msg: str, **ctx: Any) -> None:
    """``assert cond`` with ``msg`` and ``key=value`` context (seed, cycle, t, neuron, ...)."""
    if not cond:
        details = ", ".join(f"{k}={v}" for k, v in ctx.items())
        raise AssertionError(f"{msg} [{details}]" if details else msg)


@dataclass
class CycleCounter:
    """Counts rising edges of ``dut.clk`` in the background (``.now`` = cycle number)."""

    dut: Any
    now: int = 0
    _task: Any = field(default=None, repr=False)

    def start(self) -> "CycleCounter":
        import cocotb
        from cocotb.triggers import RisingEdge

        async def _count():
            edge = RisingEdge(self.dut.clk)
            while True:
                await edge
                self.now += 1

        self._task = cocotb.start_soon(_count())
        return self


def decode(layout, value: int):
    """An integer read from a port of Amaranth shape ``layout`` as Python values: a dict per
    ``StructLayout``, a list per ``ArrayLayout``, an int (signed where the shape is) otherwise."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    value = int(value)
    if isinstance(layout, data.StructLayout):
        return {name: decode(f.shape, (value >> f.offset) & ((1 << Shape.cast(f.shape).width) - 1))
                for name, f in layout}
    if isinstance(layout, data.ArrayLayout):
        w = Shape.cast(layout.elem_shape).width
        return [decode(layout.elem_shape, (value >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    s = Shape.cast(layout)
    return to_signed(value, s.width) if s.signed else value & ((1 << s.width) - 1)
