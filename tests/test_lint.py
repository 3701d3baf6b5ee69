"""Every RTL component emits Verilog that passes ``verilator --lint-only -Wall`` with only
the project's waiver file (sim/spikeforge.vlt), for a few parameter sets.

The core contains the BP and WG engines; tests/test_bp.py and tests/test_wg.py lint those
alone as well.
"""

from __future__ import annotations

import re

import pytest

from spikeforge.gen.config import Config
from spikeforge.gen.verilog import write_verilog
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.sim.runner import build_root, lint_verilog


def _lif(cfg, geom):
    from spikeforge.rtl.arith import acc_width
    from spikeforge.rtl.lif import LIF

    return LIF(cfg, geom.lanes, acc_width(cfg.arithmetic.weight_bits, geom.n_in))


def _fp(cfg, geom):
    from spikeforge.rtl.fp import FPEngine

    return FPEngine(cfg, geom)


def _core(cfg, geom):
    from spikeforge.rtl.core import Core

    return Core(cfg, geom)


def _lif_pipelined(cfg, geom):
    from spikeforge.rtl.arith import acc_width
    from spikeforge.rtl.lif import LIF

    return LIF(cfg, geom.lanes, acc_width(cfg.arithmetic.weight_bits, geom.n_in), pipelined=True)


def _core_board(cfg, geom):
    """The Core as a board build makes it: no debug counters or monitors."""
    from spikeforge.rtl.core import Core

    return Core(cfg, geom, debug=False)


COMPONENTS = {"lif": _lif, "lif_pipelined": _lif_pipelined, "fp": _fp, "core": _core,
              "core_board": _core_board}

GEOMETRIES = [
    pytest.param(CoreGeometry(n_in=64, n_neurons=10, timesteps=8, lanes=4), id="64x10-T8-P4"),
    pytest.param(CoreGeometry(n_in=7, n_neurons=3, timesteps=1, lanes=1), id="7x3-T1-P1"),
    pytest.param(CoreGeometry(n_in=20, n_neurons=9, timesteps=4, lanes=8, output_layer=False),
                 id="20x9-T4-P8-hidden"),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("comp", list(COMPONENTS))
def test_lint(comp, geom):
    factory = COMPONENTS[comp]
    cfg = Config().replace(network={"layers": [geom.n_in, geom.n_neurons], "timesteps": geom.timesteps},
                           hardware={"lanes": geom.lanes})
    vfile = build_root() / "lint" / f"{comp}-{geom.n_in}x{geom.n_neurons}-T{geom.timesteps}-P{geom.lanes}.v"
    write_verilog(factory(cfg, geom), vfile, name=comp)
    lint_verilog(vfile, comp)


# ------------------------------------------------ the in-place weight-gradient dataflow
def _memories(vfile):
    """{name: (width, depth)} of every memory array in the emitted Verilog."""
    import re

    mems = {}
    for m in re.finditer(r"^\s*reg \[(\d+):0\] (\w+) \[(\d+):0\];", vfile.read_text(), re.M):
        mems[m.group(2)] = (int(m.group(1)) + 1, int(m.group(3)) + 1)
    return mems


@pytest.mark.parametrize("lanes,rounding", [(4, "stochastic"), (1, "nearest")])
def test_core_dataflow_memories_and_lint(lanes, rounding):
    """Both dataflows of the Core lint clean with only the waiver file; the in-place build
    has no gradient memory and no dv lists, and the memory bits that depend on the dataflow
    are exactly ``perf.wg_memory_bits`` in both (G + dv lists + event list vs input-spike
    bits + dv history + one-timestep event buffer)."""
    from spikeforge.model import perf
    from spikeforge.rtl.core import Core

    geom = CoreGeometry(n_in=64, n_neurons=10, timesteps=8, lanes=lanes)
    mems = {}
    for df in ("accumulate", "inplace"):
        cfg = Config().replace(network={"layers": [64, 10], "timesteps": 8},
                               hardware={"lanes": lanes, "wg_dataflow": df},
                               train={"batch_size": 1}, arithmetic={"rounding": rounding})
        vfile = build_root() / "lint" / f"core-{df}-64x10-T8-P{lanes}-{rounding}.v"
        write_verilog(Core(cfg, geom), vfile, name="core")
        lint_verilog(vfile, "core")
        mems[df] = _memories(vfile)
        a = cfg.arithmetic
        exp = perf.wg_memory_bits(64, 10, lanes, 8, a.dv_bits, a.grad_bits, df)
        if df == "accumulate":
            g = [f"g{k}" for k in range(lanes)]
            dvl = [f"dvl{k}" for k in range(lanes)]
            assert all(mems[df][n] == (a.grad_bits, geom.weight_depth) for n in g), mems[df]
            got = {"grad_memory": sum(w * d for n, (w, d) in mems[df].items() if n in g),
                   "dv_lists": sum(w * d for n, (w, d) in mems[df].items() if n in dvl)}
        else:
            assert not [n for n in mems[df] if n.startswith(("g", "dvl"))], \
                f"in-place core instantiates a gradient memory or dv lists: {sorted(mems[df])}"
            got = {"x_bits": mems[df]["xbits"][0] * mems[df]["xbits"][1],
                   "dv_history": sum(w * d for n, (w, d) in mems[df].items() if n.startswith("dvh"))}
        got["events"] = sum(w * d for n, (w, d) in mems[df].items() if n.startswith("ev_"))
        got["total"] = sum(got.values())
        assert got == exp, f"{df}: memory bits {got} != perf.wg_memory_bits {exp}"
    # every other memory is the same in both
    common = {n: v for n, v in mems["accumulate"].items() if not n.startswith(("g", "dvl", "ev_"))}
    assert common == {n: v for n, v in mems["inplace"].items() if not n.startswith(("xbits", "dvh", "ev_"))}


def test_board_core_has_no_debug_logic():
    """debug=False drops the monitor ports and every performance counter register."""
    from spikeforge.gen.verilog import emit_verilog
    from spikeforge.rtl.core import Core

    geom = CoreGeometry(n_in=16, n_neurons=4, timesteps=4, lanes=2)
    cfg = Config().replace(network={"layers": [16, 4], "timesteps": 4}, hardware={"lanes": 2})
    board, debug = emit_verilog(Core(cfg, geom, debug=False)), emit_verilog(Core(cfg, geom))

    def counters(text):     # registers named like a counter that something assigns
        return re.findall(r"\b(?:ctr_\w+|cycles|work|stalls) <=", text)

    def monitor_ports(text):
        return re.findall(r"(?:input|output)\b[^;]*\bmon_", text)

    assert len(counters(debug)) >= 14 and monitor_ports(debug)      # the checks can see them
    assert counters(board) == [] and monitor_ports(board) == []
