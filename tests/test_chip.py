"""The N-core chip (rtl/chip.py) in Verilator: multi-layer training over the NoC, every
message that crosses a core boundary and every weight write-back checked against the
bit-exact model as it happens (sim/chip_tb.py)."""

from __future__ import annotations

import cocotb
import pytest

from spikeforge.gen.config import Config, load_config
from spikeforge.sim.chip_tb import run_chip_sim, train_chip


@cocotb.test()
async def chip_train(dut):
    await train_chip(dut)


def _cfg(layers, cores, *, lanes=1, max_neurons=8, dataflow="accumulate", batch=2, T=4,
         rounding="nearest"):
    return Config().replace(
        network={"layers": layers, "timesteps": T},
        hardware={"cores": cores, "lanes": lanes, "max_neurons": max_neurons,
                  "max_inputs": max(layers), "wg_dataflow": dataflow},
        train={"batch_size": 1 if dataflow == "inplace" else batch},
        arithmetic={"rounding": rounding})


CHIPS = [
    pytest.param(_cfg([12, 6, 4], 2), id="2c-12-6-4-acc-P1"),
    pytest.param(_cfg([12, 10, 5], 3, dataflow="inplace", max_neurons=5), id="3c-12-10-5-inplace-P1"),
    pytest.param(_cfg([16, 12, 8, 6], 7, lanes=2, max_neurons=4, rounding="stochastic"),
                 id="7c-16-12-8-6-acc-P2-stochastic"),
]


@pytest.mark.parametrize("cfg", CHIPS)
@pytest.mark.parametrize("seed", [1])
def test_chip_trains_bit_exact(cfg, seed):
    run_chip_sim(cfg, seed=seed, samples=4, source="random", density=0.3)
