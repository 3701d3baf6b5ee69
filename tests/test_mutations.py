"""The regression catches deliberately broken RTL.

Each mutant changes one line of an RTL source (the kind of slip a designer makes: a
rounding flipped, the leak shift off by one, the zero-dv skip dropped, the (1 - s)
gate of the backward leak dropped), elaborates the Core from the mutated module and
runs the ordinary core testbench of tests/test_core.py on it. The testbench must fail. The unmutated Core passes
the same testbench in tests/test_core.py. (A strict threshold compare, ``v > theta``, is
caught by tests/test_lif.py, which drives v onto the threshold on purpose.)
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from spikeforge.gen.config import Config
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.sim.runner import run_cocotb

RTL = Path(__file__).resolve().parent.parent / "rtl"

#: name -> (rtl module, original line, mutated line)
MUTANTS = {
    "round-half-down": ("arith", "return (g + (1 << (lr_shift - 1))) >> lr_shift",
                        "return (g + (1 << (lr_shift - 1)) - 1) >> lr_shift"),
    "leak-shift-off-by-one": ("arith", "return h - (h >> k)", "return h - (h >> (k + 1))"),
    "no-zero-dv-skip": ("bp", "nz3[q].eq(dv != 0)", "nz3[q].eq(1)"),
    "reset-gate-dropped": ("bp", "lk2.eq(Mux(self.s_rdata[q], 0, lk))", "lk2.eq(lk)"),
}


def _install_mutant(monkeypatch, module: str, old: str, new: str) -> None:
    """Replace every function and class of ``spikeforge.rtl.<module>`` (and the names other
    rtl modules imported from it) by those of the mutated source."""
    name = f"spikeforge.rtl.{module}"
    orig = sys.modules.get(name) or __import__(name, fromlist=["_"])
    src = (RTL / f"{module}.py").read_text()
    assert src.count(old) == 1, f"mutant line not found exactly once in rtl/{module}.py: {old!r}"
    mutant = types.ModuleType(name)
    mutant.__package__ = "spikeforge.rtl"
    mutant.__file__ = str(RTL / f"{module}.py")
    exec(compile(src.replace(old, new), mutant.__file__, "exec"), mutant.__dict__)
    for attr, value in vars(mutant).items():
        if getattr(value, "__module__", None) != name:
            continue
        original = getattr(orig, attr)
        for mod in [m for k, m in sys.modules.items() if k.startswith("spikeforge.rtl.")]:
            if getattr(mod, attr, None) is original:
                monkeypatch.setattr(mod, attr, value)


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_core_regression_catches(mutant, monkeypatch):
    from spikeforge.rtl.core import Core   # noqa: F401  (import before patching)
    import spikeforge.rtl.core as core_mod

    module, old, new = MUTANTS[mutant]
    _install_mutant(monkeypatch, module, old, new)
    cfg = Config().replace(network={"layers": [64, 10], "timesteps": 4}, hardware={"lanes": 4},
                           train={"batch_size": 2, "seed": 3}, arithmetic={"rounding": "nearest"})
    geom = CoreGeometry.from_config(cfg)
    with pytest.raises(AssertionError) as failure:
        run_cocotb(name="core", component=lambda: core_mod.Core(cfg, geom),
                   test_module="spikeforge.tests.test_core", testcase="core_train",
                   cfg=cfg, geometry=geom, build_key=("mutant", module, old, new),
                   run_name=f"mutant-{mutant}", params={"seeds": [3], "batches": 2})
    message = str(failure.value)
    assert "cocotb tests failed: core_train" in message, message   # a mismatch, not a broken build
    print(f"{mutant}: caught: {message.splitlines()[0]}")
