"""LIF unit (rtl/lif.py) against the model's LIF step, lane by lane, in Verilator.

Random membrane/current vectors plus the corner cases: saturation at both ends of
``membrane_bits``, ``v`` exactly at the threshold and at both edges of the surrogate window,
the largest and smallest currents, disabled (padding) lanes.
"""

from __future__ import annotations

import random

import cocotb
import pytest
import torch
from cocotb.triggers import Timer

from spikeforge.gen.config import Config
from spikeforge.model import fixedpoint as fx
from spikeforge.rtl.arith import acc_width
from spikeforge.rtl.lif import LIF
from spikeforge.sim.cocotb_utils import load_params, ports, to_signed
from spikeforge.sim.runner import run_cocotb

VECTORS_PER_SEED = 400


def model_lif(cfg, h, cur, en):
    """The model's LIF step (FixedPointSNN.forward_layer) on int64 tensors; padding lanes off."""
    n, a = cfg.neuron, cfg.arithmetic
    v = fx.sat(fx.leak(h, n.leak_shift) + cur, a.membrane_bits)
    s = (v >= n.threshold).to(torch.int64) * en
    m = fx.surrogate_mask(v, n.threshold, n.surrogate_shift) * en
    h2 = torch.where(s.bool() | (en == 0), torch.zeros_like(v), v)
    return v, s, m, h2


def vectors(cfg, lanes, cbits, rng: random.Random, count: int):
    """(h, current, lane_en) rows: random values and the corner cases."""
    mb = cfg.arithmetic.membrane_bits
    n = cfg.neuron
    hmin, hmax = -(1 << (mb - 1)), (1 << (mb - 1)) - 1
    cmin, cmax = -(1 << (cbits - 1)), (1 << (cbits - 1)) - 1
    half = 1 << (n.surrogate_shift - 1)
    th = n.threshold
    special_h = [0, 1, -1, hmin, hmax, th, th - 1, th + half, th - half]
    special_i = [0, 1, -1, cmin, cmax, th, hmax, hmin, th - half + 1, th + half - 1, th - half, th + half]
    rows = []
    for c in range(count):
        h, i, en = [], [], 0
        for q in range(lanes):
            kind = rng.random()
            if kind < 0.3:
                hv, iv = rng.choice(special_h), rng.choice(special_i)
            elif kind < 0.5:
                # land v near the threshold / window edges exactly: h = 0 -> v = sat(I)
                hv = 0
                iv = rng.choice([th, th - 1, th + half - 1, th + half, th - half, th - half + 1])
            elif kind < 0.7:
                hv, iv = rng.randint(hmin, hmax), rng.randint(cmin, cmax)
            else:
                hv = rng.randint(-4 * th, 4 * th)
                iv = rng.randint(-2 * th, 2 * th)
            h.append(max(hmin, min(hmax, hv)))
            i.append(max(cmin, min(cmax, iv)))
            en |= (rng.random() < 0.9) << q
        rows.append((h, i, en))
    return rows


@cocotb.test()
async def lif_random(dut):
    p = load_params()
    cfg, lanes, cbits = p.config, p.lanes, p.current_bits
    mb = cfg.arithmetic.membrane_bits
    h_p, i_p = ports(dut, "h", lanes), ports(dut, "current", lanes)
    v_p, hn_p = ports(dut, "v", lanes), ports(dut, "h_next", lanes)
    for seed in p.seeds:
        rng = random.Random(seed)
        rows = vectors(cfg, lanes, cbits, rng, VECTORS_PER_SEED)
        h = torch.tensor([r[0] for r in rows], dtype=torch.int64)
        cur = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        en = torch.tensor([[(r[2] >> q) & 1 for q in range(lanes)] for r in rows], dtype=torch.int64)
        ev, es, em, eh = (x.tolist() for x in model_lif(cfg, h, cur, en))
        for k, (hv, iv, env) in enumerate(rows):
            for q in range(lanes):
                h_p[q].value = hv[q] & ((1 << mb) - 1)
                i_p[q].value = iv[q] & ((1 << cbits) - 1)
            dut.lane_en.value = env
            await Timer(1, unit="ns")
            spikes, mask = int(dut.spikes.value), int(dut.mask.value)
            for q in range(lanes):
                got = (to_signed(int(v_p[q].value), mb), (spikes >> q) & 1, (mask >> q) & 1,
                       to_signed(int(hn_p[q].value), mb))
                exp = (ev[k][q], es[k][q], em[k][q], eh[k][q])
                assert got == exp, (
                    f"seed={seed} vector={k} lane={q}: h={hv[q]} I={iv[q]} en={(env >> q) & 1}: "
                    f"(v, s, m, h') RTL {got} != model {exp}")
    dut._log.info(f"LIF P={lanes}: {len(p.seeds) * VECTORS_PER_SEED} vectors x {lanes} lanes match "
                  f"(seeds {p.seeds})")


# ------------------------------------------------------------------------------- pytest side
NARROW = {"arithmetic": {"membrane_bits": 10, "weight_bits": 8, "weight_frac": 4},
          "neuron": {"threshold": 100, "leak_shift": 2, "surrogate_shift": 5}}

CASES = [
    pytest.param(1, {}, 64, id="P1-default"),
    pytest.param(2, NARROW, 16, id="P2-narrow"),
    pytest.param(4, {}, 1024, id="P4-default"),
    pytest.param(8, NARROW, 7, id="P8-narrow"),
]


@pytest.mark.parametrize("lanes,overrides,n_in", CASES)
def test_lif(lanes, overrides, n_in):
    cfg = Config().replace(hardware={"lanes": lanes}, **overrides)
    cbits = acc_width(cfg.arithmetic.weight_bits, n_in)
    run_cocotb(name="lif", component=lambda: LIF(cfg, lanes, cbits), test_module=__name__,
               cfg=cfg, build_key={"lanes": lanes, "current_bits": cbits},
               params={"lanes": lanes, "current_bits": cbits, "seeds": [1, 2, 3]})


def test_run_cocotb_fails_when_no_test_ran():
    """A testcase name that matches no cocotb test is an error, not a pass (sim/runner.py)."""
    cfg = Config().replace(hardware={"lanes": 1})
    cbits = acc_width(cfg.arithmetic.weight_bits, 64)
    with pytest.raises(AssertionError, match="no cocotb test ran"):
        run_cocotb(name="lif", component=lambda: LIF(cfg, 1, cbits), test_module=__name__,
                   testcase="no_such_test", cfg=cfg, build_key={"lanes": 1, "current_bits": cbits},
                   params={"lanes": 1, "current_bits": cbits, "seeds": [1]},
                   run_name="no-test")
