"""The Core (rtl/core.py) trains a single-layer network bit-identically to the model.

A 64 -> 10 network (the digits data set: real samples, rate-encoded by the host's seeded
encoder) is loaded through the command port and trained for several mini-batches (B = 1
and B > 1, nearest and stochastic rounding). Every transaction is checked against
``FixedPointSNN`` the cycle it appears:

* forward: every ``S``/``M``/count/``h`` write and every spike word on ``spikes_out``;
* backward: every block's ``dv`` (BP's ``dvw``, in the order t = T-1 .. 0, b = 0 .. NB-1),
  every error partial-sum word on ``err_out``, every gradient write of WG (running sum over
  the mini-batch, in WG's ``t = T-1 .. 0`` order);
* update: every weight write-back equals the model's updated weight, each exactly once;
* counters: FP, BP, WG and update cycles, WG's waiting cycles and the forward, backward and
  update phase cycles == ``model/perf.py`` exactly (``fp_cycles``, ``core_backward_schedule``
  -- BP and WG run concurrently and wait for each other --, ``update_cycles``,
  ``core_*_cycles``), work counters exactly.

A hidden-layer core (error from above through ``ds_in``) runs the same checks.

At the end every weight is read back through ``read_w`` and compared.

The driver, the scoreboards and the run itself are the core's verification library,
sim/core_tb.py (also behind ``spikeforge sim core`` and bench/bench_core.py); this module
holds the cocotb test that runs it and the pytest cases.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cocotb
import pytest

from spikeforge.gen.config import Config
from spikeforge.rtl.core import Core
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.sim.core_tb import train_core
from spikeforge.sim.runner import run_cocotb


# ------------------------------------------------------------------------------ the test
@cocotb.test()
async def core_train(dut):
    """One training run of the Core (sim/core_tb.py: :func:`train_core`)."""
    await train_core(dut)


# ------------------------------------------------------------------------------- pytest side
def _run(lanes, T, B, rounding, batches, seed, gain=1.0, layers=(64, 10), dataflow="accumulate"):
    cfg = Config().replace(network={"layers": list(layers), "timesteps": T},
                           hardware={"lanes": lanes, "wg_dataflow": dataflow},
                           train={"batch_size": B, "seed": seed},
                           arithmetic={"rounding": rounding})
    geom = CoreGeometry.from_config(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run_cocotb(name="core", component=lambda: Core(cfg, geom), test_module=__name__,
                   cfg=cfg, geometry=geom,
                   params={"seeds": [seed], "batches": batches, "gain": gain,
                           "report_file": str(report)})
        # the run really trained (a test body that returns at once passes too)
        rep = json.loads(report.read_text())
    assert len(rep["samples"]) == batches * B and len(rep["updates"]) == batches, rep.keys()


def test_core_spikes_backpressure():
    """Random back-pressure on spikes_out: FP freezes, nothing is lost or repeated."""
    cfg = Config().replace(network={"layers": [64, 10], "timesteps": 4}, hardware={"lanes": 4},
                           train={"batch_size": 2, "seed": 7})
    geom = CoreGeometry.from_config(cfg)
    run_cocotb(name="core", component=lambda: Core(cfg, geom), test_module=__name__,
               cfg=cfg, geometry=geom,
               params={"seeds": [7], "batches": 2, "gain": 1.5, "spikes_ready_p": 0.5})


def test_core_hidden_layer():
    """A hidden-layer core: ds from above through ds_in instead of the label."""
    cfg = Config().replace(network={"layers": [24, 12], "timesteps": 4}, hardware={"lanes": 4},
                           train={"batch_size": 2, "seed": 5})
    geom = CoreGeometry(n_in=24, n_neurons=12, timesteps=4, lanes=4, output_layer=False)
    run_cocotb(name="core", component=lambda: Core(cfg, geom), test_module=__name__,
               cfg=cfg, geometry=geom,
               params={"seeds": [5], "batches": 2, "input": "random", "density": 0.3})


@pytest.mark.parametrize("lanes,T,B,rounding,batches,seed", [
    pytest.param(4, 8, 1, "nearest", 3, 1, id="P4-T8-B1-nearest"),
    pytest.param(2, 4, 3, "stochastic", 2, 2, id="P2-T4-B3-stochastic"),
])
def test_core_train(lanes, T, B, rounding, batches, seed):
    _run(lanes, T, B, rounding, batches, seed)


@pytest.mark.slow
@pytest.mark.parametrize("lanes,T,B,rounding,batches,seed", [
    pytest.param(8, 8, 4, "stochastic", 3, 3, id="P8-T8-B4-stochastic"),
    pytest.param(1, 1, 2, "nearest", 3, 4, id="P1-T1-B2-nearest"),
    pytest.param(4, 8, 8, "nearest", 8, 6, id="P4-T8-B8-nearest-64samples"),
])
def test_core_train_slow(lanes, T, B, rounding, batches, seed):
    _run(lanes, T, B, rounding, batches, seed)


# ------------------------------------------------ the in-place weight-gradient dataflow
@pytest.mark.parametrize("lanes,T,rounding,samples,seed", [
    pytest.param(4, 8, "stochastic", 4, 11, id="P4-T8-stochastic"),
    pytest.param(2, 4, "nearest", 4, 12, id="P2-T4-nearest"),
])
def test_core_train_inplace(lanes, T, rounding, samples, seed):
    """hardware.wg_dataflow = inplace: train = forward, backward, update in place; weights
    bit-identical to the model after every sample, every write-back scoreboarded."""
    _run(lanes, T, 1, rounding, samples, seed, dataflow="inplace")


@pytest.mark.slow
@pytest.mark.parametrize("lanes,T,rounding,samples,seed", [
    pytest.param(1, 4, "stochastic", 4, 13, id="P1-T4-stochastic"),
    pytest.param(8, 8, "nearest", 4, 14, id="P8-T8-nearest"),
    pytest.param(8, 8, "stochastic", 3, 15, id="P8-T8-stochastic"),
    pytest.param(4, 1, "nearest", 4, 16, id="P4-T1-nearest"),
])
def test_core_train_inplace_slow(lanes, T, rounding, samples, seed):
    _run(lanes, T, 1, rounding, samples, seed, dataflow="inplace")


@pytest.mark.slow
def test_core_hidden_layer_inplace():
    """A hidden-layer core in the in-place dataflow (ds from above through ds_in)."""
    cfg = Config().replace(network={"layers": [24, 12], "timesteps": 4},
                           hardware={"lanes": 4, "wg_dataflow": "inplace"},
                           train={"batch_size": 1, "seed": 17}, arithmetic={"rounding": "stochastic"})
    geom = CoreGeometry(n_in=24, n_neurons=12, timesteps=4, lanes=4, output_layer=False)
    run_cocotb(name="core", component=lambda: Core(cfg, geom), test_module=__name__,
               cfg=cfg, geometry=geom,
               params={"seeds": [17], "batches": 3, "input": "random", "density": 0.3})
