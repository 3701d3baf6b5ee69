"""rtl/interfaces.py: the skewed weight layout and the codes."""

from __future__ import annotations

import pytest
from amaranth.hdl import Module, Shape, Signal
from amaranth.sim import Simulator

from spikeforge.gen.config import Config
from spikeforge.rtl import interfaces
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.rtl.interfaces import OPS, STATUS, Op, Status, weight_index, weight_location


@pytest.mark.parametrize("P, n_in, N", [(1, 5, 3), (2, 7, 5), (4, 16, 10), (8, 9, 21)])
def test_weight_layout_is_a_bijection(P, n_in, N):
    NB = -(-N // P)
    seen = set()
    for i in range(NB * P):
        for j in range(n_in):
            bank, addr = weight_location(i, j, P, n_in)
            assert 0 <= bank < P and 0 <= addr < NB * n_in
            assert weight_index(bank, addr, P, n_in) == (i, j)
            seen.add((bank, addr))
    assert len(seen) == NB * P * n_in


@pytest.mark.parametrize("P, n_in", [(1, 5), (4, 10), (8, 9)])
def test_weight_layout_rtl_form_matches_integers(P, n_in):
    i, j = Signal(16), Signal(16)
    bank, addr = weight_location(i, j, P, n_in)
    cases = [(a, b) for a in range(0, 3 * P + 2) for b in range(n_in)]

    async def bench(ctx):
        for a, b in cases:
            ctx.set(i, a)
            ctx.set(j, b)
            want_bank, want_addr = weight_location(a, b, P, n_in)
            assert ctx.get(bank) == (want_bank if P > 1 else 0) and ctx.get(addr) == want_addr

    sim = Simulator(Module())
    sim.add_testbench(bench)
    sim.run()


def test_codes():
    assert OPS["write_w"] == Op.WRITE_W.value == 1 and OPS["status"] == 11 and len(OPS) == 13
    assert OPS["train_ds"] == Op.TRAIN_DS.value == 12
    assert STATUS == {"ok": 0, "bad_op": 1, "bad_index": 2}
    assert Shape.cast(Op).width == 4 and Shape.cast(Status).width == 2
    assert interfaces.cmd_layout().size == 4 + 16 + 16 + 32 and interfaces.rsp_layout().size == 34
