"""Every RTL component emits Verilog that passes ``verilator --lint-only -Wall`` with only
the project's waiver file (sim/spikeforge.vlt), for a few parameter sets.

The core contains the BP and WG engines; tests/test_bp.py and tests/test_wg.py lint those
alone as well.
"""

from __future__ import annotations

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


COMPONENTS = {"lif": _lif, "fp": _fp, "core": _core}

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
