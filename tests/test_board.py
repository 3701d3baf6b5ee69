"""The chip on a board (rtl/board.py) and ``spikeforge build --target chip`` (fpga/flow.py
``build_chip``): the ECP5 PLL's dividers, ``HostChip.activity`` (the status LEDs' source)
in simulation, the CLI's refusals, and one small chip built for the ULX3S to a bitstream
with the real YoWASP Yosys, nextpnr and ecppack.
"""

from __future__ import annotations

import json
import time

import pytest

from spikeforge.fpga.boards import RESOURCE_KEYS
from spikeforge.gen.config import Config, load_config
from spikeforge.host import protocol as hp
from spikeforge.rtl.board import F_VCO, PllConfig, ecp5_pll
from spikeforge.rtl.chip import RESET_STAGES

from .test_cli import assert_user_error, run

#: The 2-core 12-6-4 chip of tests/test_executor.py (accumulate dataflow), as YAML.
SMALL_CHIP = """\
network:
  layers: [12, 6, 4]
  timesteps: 4
hardware:
  cores: 2
  lanes: 1
  max_inputs: 12
  max_neurons: 8
train:
  batch_size: 2
"""


# ------------------------------------------------------------------------------ the PLL
@pytest.mark.parametrize("f_in, f_out, divs", [
    # prjtrellis' ecppll (yowasp-ecppll -i F_IN -o F_OUT) gives the same dividers
    (25e6, 100e6, (1, 4, 6)), (25e6, 33.3e6, (3, 4, 18)), (25e6, 50e6, (1, 2, 12)),
    (100e6, 25e6, (4, 1, 24)), (48e6, 60e6, (4, 5, 10)),
])
def test_pll_dividers(f_in, f_out, divs):
    p = ecp5_pll(f_in, f_out)
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == divs, p
    assert p.f_out == pytest.approx(f_in / divs[0] * divs[1])
    assert F_VCO[0] <= p.f_vco <= F_VCO[1]


def test_pll_sweep_within_tolerance():
    """Every integer MHz the ULX3S's 25 MHz makes within 1 %, in range, the rest refused."""
    made = 0
    for mhz in range(4, 401):
        try:
            p = ecp5_pll(25e6, mhz * 1e6)
        except ValueError as e:
            assert f"{mhz:g} MHz is not reachable from 25 MHz within 1 %" in str(e)
            continue
        made += 1
        assert abs(p.f_out - mhz * 1e6) <= 0.01 * mhz * 1e6, p
        assert F_VCO[0] <= p.f_vco <= F_VCO[1] and p.f_pfd >= 3.125e6, p
    assert made > 300


def test_pll_refusals_name_the_numbers():
    with pytest.raises(ValueError, match=r"500 MHz is not reachable: the PLL's output range is 3.125..400 MHz"):
        ecp5_pll(25e6, 500e6)
    with pytest.raises(ValueError, match=r"48 MHz is not reachable from 25 MHz within 1 %; the nearest "
                                         r"is 25 MHz / 8 \* 15 = 46.88 MHz"):
        ecp5_pll(25e6, 48e6)
    with pytest.raises(ValueError, match=r"input clock 2 MHz is outside the PLL's 8..400 MHz"):
        ecp5_pll(2e6, 50e6)
    with pytest.raises(ValueError, match=r"f_out must be a positive number, not -1"):
        ecp5_pll(25e6, -1)
    assert str(PllConfig(25e6, 1, 4, 6)) == "25 MHz / 1 * 4 = 100 MHz (VCO 600 MHz / 6)"


def test_board_top_refuses_a_baud_rate_the_clock_cannot_make():
    from spikeforge.rtl.board import BoardTop

    cfg = Config().replace(hardware={"baud": 3_000_000})
    with pytest.raises(ValueError, match="10 MHz / 3e\\+06 baud = 3.33 clock cycles per bit"):
        BoardTop(cfg, 10, board_clk_hz=25e6)
    with pytest.raises(ValueError, match="clk_mhz must be a positive number, not 0"):
        BoardTop(cfg, 0)
    top = BoardTop(cfg.replace(hardware={"baud": 115200}), 10, board_clk_hz=25e6)
    assert top.pll.f_out == 10e6 and top.baud == 115200


def test_config_baud():
    from spikeforge.gen.config import ConfigError, config_from_dict

    assert Config().hardware.baud == 3_000_000
    with pytest.raises(ConfigError, match=r"hardware.baud: 20000000 is out of range, allowed in \[300, 12000000\]"):
        config_from_dict({"hardware": {"baud": 20_000_000}})


# ------------------------------------------------------------------ HostChip.activity
def test_hostchip_activity():
    """``activity`` in Amaranth's simulator: ``busy`` while a ``version`` request is handled,
    ``training`` while an ``update`` is (accumulate dataflow), ``error`` pulses once for a
    frame with a bad CRC and once for an error reply (``read_counters`` of a core without
    counters: ``unknown_op``), and never for good requests."""
    from amaranth.sim import Simulator

    from spikeforge.rtl.top import HostChip
    from spikeforge.tests.test_executor import _cfg

    dut = HostChip(_cfg("accumulate"), debug=False, timeout_cycles=4096)
    seen = []

    async def bench(ctx):
        async def send(wire: bytes, wait: int):
            for b in wire:
                ctx.set(dut.rx.payload, b)
                ctx.set(dut.rx.valid, 1)
                await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            log = {"busy": 0, "training": 0, "error": 0, "tx": bytearray()}
            ctx.set(dut.tx.ready, 1)
            for _ in range(wait):
                for k in ("busy", "training", "error"):
                    log[k] += ctx.get(getattr(dut.activity, k))
                if ctx.get(dut.tx.valid):
                    log["tx"].append(ctx.get(dut.tx.payload))
                await ctx.tick()
            return log

        seen.append(("version", await send(hp.encode_frame(1, hp.Op.VERSION), 600)))
        bad = bytearray(hp.encode_frame(2, hp.Op.STATUS))
        bad[1] ^= 0x40                                      # a bit flipped: CRC error
        seen.append(("bad crc", await send(bytes(bad), 200)))
        seen.append(("update", await send(hp.encode_frame(3, hp.Op.UPDATE), 600)))
        seen.append(("counters", await send(hp.encode_frame(4, hp.Op.READ_COUNTERS,
                                                            hp.pack_read_counters(0, 0, 1)), 400)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    logs = dict(seen)
    v = logs["version"]
    assert v["busy"] > 0 and v["training"] == 0 and v["error"] == 0, v
    assert v["tx"] and v["tx"][-1] == 0, "no reply to version"
    assert logs["bad crc"]["error"] == 1 and not logs["bad crc"]["tx"], logs["bad crc"]
    u = logs["update"]
    assert u["training"] > 0 and u["error"] == 0, u
    c = logs["counters"]
    assert c["error"] == 1 and c["busy"] > 0 and c["training"] == 0, c


# --------------------------------------------------------------------------- the CLI
def test_build_chip_refusals(tmp_path):
    """Refused before any tool runs, one message each, exit 2, nothing written."""
    out = tmp_path / "b"
    r = run("build", "--board", "icebreaker", "--target", "chip", "-o", str(out))
    assert_user_error(r, "--target chip", "icebreaker", "ECP5 PLL", "--target core")
    r = run("build", "--board", "orangecrab-25f", "-o", str(out))      # chip is the default
    assert_user_error(r, "orangecrab-25f has no UART pins")
    r = run("build", "--board", "ulx3s-85f", "--target-mhz", "48", "-o", str(out))
    assert_user_error(r, "--target-mhz 48", "48 MHz is not reachable from 25 MHz", "46.88 MHz")
    cfg = tmp_path / "slow-uart.yaml"
    cfg.write_text(SMALL_CHIP.replace("  lanes: 1\n", "  lanes: 1\n  baud: 3000000\n"))
    r = run("build", "--board", "ulx3s-12f", "--config", str(cfg), "--target-mhz", "10", "-o", str(out))
    assert_user_error(r, "3.33 clock cycles per bit")
    r = run("build", "--board", "ulx3s-12f", "--config", str(cfg), "--cores", "99", "-o", str(out))
    assert_user_error(r, "--cores: 99 cores")
    for bad in ("-1", "x", str(2 ** 31)):
        assert_user_error(run("build", "--board", "ulx3s-85f", "--seed", bad, "-o", str(out)), "--seed")
    assert not (out / "report.json").exists()


def test_build_chip_too_big_for_the_device(tmp_path):
    """1024 x 64 + 64 x 32 16-bit weights are 1,081,344 bits: more than the 12F's RAM
    (refused before synthesis, one message with the numbers)."""
    cfg = tmp_path / "big.yaml"
    cfg.write_text("network:\n  layers: [1024, 64, 32]\n  timesteps: 2\n"
                   "hardware:\n  cores: 2\n  lanes: 1\n  max_inputs: 1024\n  max_neurons: 64\n")
    out = tmp_path / "b"
    r = run("build", "--board", "ulx3s-12f", "--config", str(cfg), "-o", str(out), "-q")
    assert_user_error(r, "the 2-core chip (1024-64-32) does not fit ulx3s-12f (LFE5U-12F)",
                      f"memory bits (the weights alone) needed {(1024 * 64 + 64 * 32) * 16}",
                      f"available {32 * 18432 + 12096 // 6 * 64}")
    assert not (out / "report.json").exists()


def test_build_small_chip(tmp_path):
    """The 2-core 12-6-4 chip in its board top on the ULX3S-25F, to a bitstream: synthesis,
    place and route with the pins, ecppack; the report names every core, every router and
    the host interface, and gives fmax and the PLL's clock."""
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(SMALL_CHIP)
    out = tmp_path / "build"
    t0 = time.monotonic()
    r = run("build", "--board", "ulx3s-25f", "--config", str(cfg_file), "--target-mhz", "50",
            "--seed", "5", "-o", str(out), "--allow-slow")
    print(f"build: {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0, r.stderr
    bit = out / "top.bit"
    assert bit.exists() and bit.stat().st_size > 0
    assert bit.read_bytes()[:64].find(b"\xff\xff\xbd\xb3") >= 0, "no ECP5 preamble"
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == "chip" and rep["board"] == "ulx3s-25f" and rep["device"] == "LFE5U-25F"
    assert rep["config"] == {"name": str(cfg_file), "digest": load_config(str(cfg_file)).digest()}
    c = rep["chip"]
    assert c["n_cores"] == 2 and c["layers"] == [12, 6, 4]
    assert c["clock"]["pll_mhz"] == 50 and c["clock"]["board_mhz"] == 25
    assert c["uart"]["baud"] == 3_000_000 and c["uart"]["pins"] == {"rx": "M1", "tx": "L4"}
    assert c["bitstream"] == {"path": str(bit), "bytes": bit.stat().st_size}
    assert 0 < c["fmax_mhz"] < 1000 and c["seed"] == 5
    cp = c["critical_path"]
    assert cp["from"] and cp["to"] and cp["ns"] > 0
    res, avail = c["resources"], rep["available"]
    assert set(res) == set(RESOURCE_KEYS)
    for k in ("comb", "lut4", "ff", "ebr"):
        assert 0 < res[k] <= avail[k], k
    names = [m["name"] for m in c["modules"]]
    assert names[0] == "top"
    for want in ("uart", "hostchip.link", "hostchip.executor", "hostchip.chip.core0",
                 "hostchip.chip.core1", "hostchip.chip.noc.r0", "hostchip.chip.noc.r1",
                 "hostchip.chip.core0.fp"):
        assert want in names, (want, names)
    units = {u["name"]: u for u in c["units"]}
    assert {"core0", "core1", "router0", "router1", "host interface"} <= set(units)
    for name in ("core0", "core1", "router0", "router1", "host interface"):
        assert units[name]["resources"]["comb"] > 0, name
    for k in RESOURCE_KEYS:    # the parts add up to the hierarchical whole
        assert sum(u["resources"][k] for u in c["units"]) == c["modules"][0]["resources"][k], k
    # each core's local reset is its own pair of flip-flops (fpga/flow.py KEEP_FLOPS: Yosys
    # would merge them into one register driving the whole chip)
    nets = json.loads((out / "netlist.json").read_text())["modules"]["top"]["netnames"]
    rst = {k: nets[f"hostchip.chip.core{k}_sync_rst{RESET_STAGES - 1}"]["bits"] for k in (0, 1)}
    assert rst[0] != rst[1], rst
    assert sum(1 for n in nets if n.startswith("hostchip.chip.core") and "_sync_rst" in n) >= 2 * RESET_STAGES
    # the pins: nextpnr placed the UART and the clock where the LPF says
    lpf = (out / "top.lpf").read_text()
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in lpf and 'SITE "G2"' in lpf
    text = (out / "report.txt").read_text()
    for s in ("fmax", "core0", "router1", "host interface", "top.bit", "PLL 50 MHz", "nextpnr seed 5"):
        assert s in text, s
    assert "host interface" in r.stdout and "bitstream:" in r.stdout
    # spikeforge flash accepts it for this board (device in the header), not for another
    f = run("flash", "--board", "ulx3s-25f", "--dry-run", str(bit))
    assert f.returncode == 0 and "-b ulx3s -m" in f.stdout, f.stderr
    assert_user_error(run("flash", "--board", "ulx3s-85f", "--dry-run", str(bit)),
                      "built for LFE5U-25F")


@pytest.mark.slow
@pytest.mark.parametrize("board, preset, cores", [("ulx3s-85f", "trainer-20core", 20),
                                                  ("ulx3s-45f", "federated-worker", 5)])
def test_preset_fits_its_board(tmp_path, board, preset, cores):
    """Resource budget of the board presets (synthesis counts are deterministic): the whole
    chip in its board top, synthesised flattened (what nextpnr places), within the device
    with the routers as the chip builds them. The 20-core chip takes about 20 minutes."""
    out = tmp_path / "b"
    r = run("build", "--board", board, "--synth-only", "-o", str(out), "-q", timeout=3600)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    c, avail = rep["chip"], rep["available"]
    assert rep["config"]["name"] == preset and c["n_cores"] == cores
    print({k: f"{c['resources'][k]} / {avail[k]}" for k in RESOURCE_KEYS})
    for k in RESOURCE_KEYS:
        assert c["resources"][k] <= avail[k], (k, c["resources"][k], avail[k])
    # LUT4 sites with room for nextpnr's packing (it adds about 6 % on the 20-core chip)
    assert c["resources"]["comb"] <= 0.85 * avail["comb"], c["resources"]["comb"]
