"""Local resets: a clock domain on ``sync``'s clock whose reset is a few registers after
``sync``'s, for a part of a large design (a core of the chip with its adapters and router).

Why: Amaranth's synchronous reset is one net to every flip-flop of a domain. On the
20-core chip on an ECP5-85F that net (40,000 loads) was the limiting path at 45 MHz. A
register per part puts the last stage beside its loads. The registers carry ``keep`` so
that the FPGA flow keeps them apart (``fpga/flow.py`` ``KEEP_FLOPS``): Yosys merges
identical flip-flops.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, ResetSignal, Signal

__all__ = ["local_reset_domain"]


def local_reset_domain(m, name: str, stages: int, source: str = "sync") -> str:
    """Add local domain ``name`` to module ``m``: ``source``'s clock, a reset ``stages``
    registers after ``source``'s (so it is held and released ``stages`` cycles later).
    Returns ``name``, for ``DomainRenamer``."""
    if stages < 1:
        raise ValueError(f"local_reset_domain: stages must be at least 1, got {stages}")
    cd = ClockDomain(name, local=True)
    m.domains += cd
    prev = ResetSignal(source)
    for i in range(stages):
        r = Signal(init=1, reset_less=True, name=f"{name}_rst{i}", attrs={"keep": 1})
        m.d[source] += r.eq(prev)
        prev = r
    m.d.comb += [cd.clk.eq(ClockSignal(source)), cd.rst.eq(prev)]
    return name
