"""The build flow: Verilog -> Yosys -> nextpnr, out of context, one core kind at a time.

``--target core`` builds the largest core of each kind of a config
(``ChipGeometry.from_config(cfg).kinds()``) on its own, with no pins: nextpnr's
``--out-of-context`` mode places and routes it without IO buffers or global clock
routing, which gives the core's resources and its register-to-register fmax. Steps per
core (files in ``DIR/<kind>/``):

1. ``core.v``: the Core's Verilog (Amaranth's built-in Yosys; one Verilog module per
   Amaranth submodule, so the hierarchy of core, engines and their parts survives);
2. ``synth.log``, ``stat.json``: ``synth_ecp5 -noflatten`` (or ``synth_ice40``) keeps
   every module, ``stat -json`` counts each module's own cells -- the per-module
   breakdown, whatever the modules are called; ``netlist.json``, ``flat_stat.json``: the
   same synthesis flattened (Yosys optimises across modules: the totals, and what nextpnr
   places);
3. a fit check of the synthesis counts against the device (error: resource, needed,
   available) before the long step (and, before anything, one of the weight bits against
   all the device's RAM bits);
4. ``pnr.log``, ``pnr.json``: nextpnr ``--out-of-context --freq TARGET --report``, which
   flattens the netlist itself; its utilisation and fmax are the report's totals.

See docs/fpga.md for the report and how each resource is counted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .boards import RESOURCE_KEYS, Board
from .tools import run_tool, tool_env

__all__ = ["core_for_build", "FlowError", "DoesNotFit", "TimingMissed", "build_core",
           "weight_bits_bound", "memory_bits_available", "check_fit",
           "build_cores", "synth_resources", "module_breakdown", "LUTRAM_SITES_PER_DPR16X4",
           "build_chip", "chip_units", "chip_weight_bits", "CHIP_TOP", "SYNTH_OPTIONS", "CHIP_PNR_OPTIONS", "KEEP_FLOPS"]

#: Extra ``synth_<family>`` options of every build. ECP5: ``-nowidelut`` maps to LUT4s
#: only. Without it Yosys builds 5- to 7-input functions from LUT4 pairs and PFU muxes and
#: ABC fills many of those LUT4s with constants: measured on the trainer-20core parts
#: (out of context, LFE5U-85F): a 784 -> 8 core 2,861 -> 2,682 LUT4 sites (fmax 89.2 ->
#: 85.7 MHz), a router 1,041 -> 839 (113.6 -> 100.1 MHz); area is what the 20-core chip
#: lacks. iCE40: ``-dsp`` maps multipliers to the SB_MAC16s.
SYNTH_OPTIONS = {"ecp5": "-nowidelut", "ice40": "-dsp"}

#: Extra nextpnr-ecp5 options of a whole-chip build. ``router2``: on the 20-core chip
#: (71k LUT4 sites, 84 % of the 85F) nextpnr's default router1 still had 296,000 arcs to
#: route after 45,000 iterations (25 minutes) and was making no headway; router2
#: (congestion-negotiated, whole nets at a time) routes it (docs/fpga.md).
CHIP_PNR_OPTIONS = ("--router", "router2")

#: Yosys commands run on the design before ``synth_<family>``: a flip-flop whose signal has
#: the ``keep`` attribute (Amaranth ``Signal(attrs={"keep": 1})``) keeps its cell. Yosys
#: merges identical flip-flops, and would make the chip's per-core reset registers
#: (``rtl/chip.py`` ``local_resets``) one again; ``keep`` on the wire alone does not stop it.
KEEP_FLOPS = "proc; setattr -set keep 1 w:* a:keep %i %ci1:+$dff[Q] c:* %i"

#: LUT4 sites one TRELLIS_DPR16X4 (16x4 LUT-RAM) occupies as nextpnr packs it: 4 "RAM LUTs"
#: plus 2 "RAMW LUTs" (nextpnr-ecp5's utilisation log). Used for synthesis-only estimates.
LUTRAM_SITES_PER_DPR16X4 = 6


def core_for_build(cfg, geom):
    """The Core that a build synthesises for ``geom`` (the one place to adapt its options):
    a board build, so without the debug counters and monitors (rtl/debug.py)."""
    from ..rtl.core import Core

    return Core(cfg, geom, debug=False)


class FlowError(Exception):
    """A tool failed; the message names the step and the tool's first error line."""


class DoesNotFit(FlowError):
    """The design needs more of a resource than the device has."""

    def __init__(self, what: str, resource: str, needed: int, available: int, device: str):
        self.resource, self.needed, self.available = resource, needed, available
        super().__init__(f"{what} does not fit {device}: {resource} needed {needed}, "
                         f"available {available}")


class TimingMissed(Exception):
    """fmax below the target (raised by the CLI after the reports are written)."""


@dataclass
class Step:
    """A progress callback pair: ``start(label)`` then ``tick()`` while a tool runs."""

    start: object = lambda label: None
    tick: object = lambda: None


def _seed_args(seed: int | None) -> list[str]:
    """nextpnr's ``--seed`` when one was asked for."""
    return [] if seed is None else ["--seed", str(seed)]


def _first_error(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    for line in text.splitlines():
        if "ERROR" in line:
            return line.strip()
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else "no output"


# ------------------------------------------------------------------------ synthesis counts
def _cells_to_resources(cells: dict[str, int], family: str) -> dict[str, int]:
    """Report keys from Yosys cell counts (``comb`` is then an estimate, docs/fpga.md)."""
    if family == "ice40":
        lut4 = cells.get("SB_LUT4", 0)
        ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        return dict(comb=lut4, lut4=lut4, carry=cells.get("SB_CARRY", 0), lutram=0, ff=ff,
                    ebr=cells.get("SB_RAM40_4K", 0), dsp=cells.get("SB_MAC16", 0))
    lut4 = cells.get("LUT4", 0)
    carry = 2 * cells.get("CCU2C", 0)
    lutram = LUTRAM_SITES_PER_DPR16X4 * cells.get("TRELLIS_DPR16X4", 0)
    return dict(comb=lut4 + carry + lutram, lut4=lut4, carry=carry, lutram=lutram,
                ff=cells.get("TRELLIS_FF", 0), ebr=cells.get("DP16KD", 0),
                dsp=cells.get("MULT18X18D", 0))


def module_breakdown(stat: dict, top: str, family: str) -> list[dict]:
    """Per module of Yosys' ``stat -json``: ``name`` (hierarchical path below the top,
    ``top`` itself for the glue logic), ``resources`` (the module with its submodules) and
    ``self`` (its own cells only). Modules are named by Amaranth after their place in the
    hierarchy (``core.fp.lif``), one Verilog module per instance."""
    own = {}
    for mname, m in stat["modules"].items():
        path = mname.lstrip("\\")
        cells = {k: v for k, v in m.get("num_cells_by_type", {}).items()}
        own[path] = _cells_to_resources(cells, family)
    out = []
    for path in sorted(own, key=lambda p: (p != top, p)):
        inc = {k: 0 for k in RESOURCE_KEYS}
        for p, r in own.items():
            if p == path or p.startswith(path + "."):
                for k in RESOURCE_KEYS:
                    inc[k] += r[k]
        name = top if path == top else path[len(top) + 1:] if path.startswith(top + ".") else path
        out.append({"name": name, "resources": inc, "self": own[path]})
    return out


def synth_resources(stat: dict, family: str) -> dict[str, int]:
    """Whole-design report keys from ``stat -json`` (estimates: before nextpnr's packing)."""
    return _cells_to_resources(stat["design"].get("num_cells_by_type", {}), family)


# ----------------------------------------------------------------------- nextpnr's figures
_LOG_LUTS = {"lut4": "logic LUTs", "carry": "carry LUTs", "ram": "RAM LUTs", "ramw": "RAMW LUTs"}


def pnr_resources(report: dict, log_text: str, family: str, synth: dict[str, int]) -> dict[str, int]:
    """Report keys after place and route: nextpnr's utilisation (``comb`` = TRELLIS_COMB
    cells = LUT4 sites) and its log's split of LUT4s into logic / carry / RAM / RAMW."""
    u = {k: v["used"] for k, v in report["utilization"].items()}
    if family == "ice40":
        return dict(synth, comb=u.get("ICESTORM_LC", 0), ebr=u.get("ICESTORM_RAM", 0),
                    dsp=u.get("ICESTORM_DSP", 0))
    split = {}
    for key, label in _LOG_LUTS.items():
        m = re.search(rf"^Info:\s+{label}:\s+(\d+)/", log_text, re.M)
        split[key] = int(m.group(1)) if m else None
    res = dict(comb=u.get("TRELLIS_COMB", 0), ff=u.get("TRELLIS_FF", 0), ebr=u.get("DP16KD", 0),
               dsp=u.get("MULT18X18D", 0))
    res["lut4"] = split["lut4"] if split["lut4"] is not None else synth["lut4"]
    res["carry"] = split["carry"] if split["carry"] is not None else synth["carry"]
    res["lutram"] = (split["ram"] + split["ramw"] if None not in (split["ram"], split["ramw"])
                     else synth["lutram"])
    return {k: res[k] for k in RESOURCE_KEYS}


def critical_path(report: dict) -> tuple[float | None, dict | None]:
    """(fmax in MHz of the slowest clock, its critical path {from, to, ns}) of a nextpnr
    ``--report``; the path's ``ns`` is the sum of its cell and routing delays."""
    fmax = [v["achieved"] for v in report.get("fmax", {}).values() if "achieved" in v]
    best = None
    for cp in report.get("critical_paths", []):
        path = cp.get("path") or []
        if not path:
            continue
        ns = sum(seg.get("delay", 0.0) for seg in path)
        if best is None or ns > best["ns"]:
            best = {"from": path[0]["from"]["cell"], "to": path[-1]["to"]["cell"], "ns": round(ns, 3)}
    return (round(min(fmax), 2) if fmax else None), best


def weight_bits_bound(cfg, geom) -> int:
    """Bits any core of ``geom`` must store on chip: its weights, n_in x neurons x weight_bits."""
    return geom.n_in * geom.n_neurons * cfg.arithmetic.weight_bits


def memory_bits_available(board: Board) -> int:
    """An upper bound of the device's RAM bits: every block RAM (18 kbit on the ECP5; 4 kbit
    plus the four 256 kbit SPRAMs on the UP5K) and, on the ECP5, LUT-RAM in every slice that
    can hold it (64 bits per TRELLIS_DPR16X4 of 6 LUT4 sites)."""
    a = board.available
    if board.family == "ice40":
        return a["ebr"] * 4096 + 4 * 256 * 1024
    return a["ebr"] * 18432 + (a["comb"] // LUTRAM_SITES_PER_DPR16X4) * 64


def check_fit(res: dict[str, int], board: Board, what: str) -> None:
    """Raise :class:`DoesNotFit` for the first of LUT4 sites, FF, EBR, DSP that ``res``
    needs more of than ``board``'s device has."""
    avail = board.available
    for key in ("comb", "ff", "ebr", "dsp"):
        if res[key] > avail[key]:
            raise DoesNotFit(what, key, res[key], avail[key], f"{board.name} ({board.device})")


# --------------------------------------------------------------------------------- one core
def _synth_results(r, outdir: Path, what: str, top: str, family: str, board) -> tuple[dict, list]:
    """After Yosys: its resources (flat) and per-module table (hierarchical), the design
    checked against the board; :class:`FlowError` naming the first error if it failed."""
    if r.returncode != 0 or not (outdir / "flat_stat.json").exists():
        err = _first_error(outdir / "synth.out")
        if err in ("no log", "no output"):
            err = _first_error(outdir / "synth.log")
        raise FlowError(f"synthesis of {what} failed (exit {r.returncode}): {err} "
                        f"(log: {outdir / 'synth.log'})")
    stat = json.loads((outdir / "stat.json").read_text())
    synth = synth_resources(json.loads((outdir / "flat_stat.json").read_text()), family)
    modules = module_breakdown(stat, top, family)
    check_fit(synth, board, what)
    return synth, modules


def build_core(cfg, name: str, geom, board: Board, outdir: Path, *, target_mhz: float = 100.0,
               synth_only: bool = False, step: Step | None = None, env: dict | None = None,
               verilog: str | None = None, seed: int | None = None) -> dict:
    """Build one core kind into ``outdir``; returns its ``cores`` entry of report.json.

    ``verilog``: the core's Verilog text (top module ``core``) made elsewhere, e.g. from
    another git revision (bench/bench_fpga.py ``--rev``); default: :func:`core_for_build`.
    Raises :class:`DoesNotFit` when the synthesis counts exceed the device, and
    :class:`FlowError` when a tool fails.
    """
    from ..gen.verilog import write_verilog

    step = step or Step()
    family = board.family
    env = env or tool_env(("YOSYS", "NEXTPNR_ICE40" if family == "ice40" else "NEXTPNR_ECP5"))
    outdir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    what = f"core {name} ({geom.n_in} -> {geom.n_neurons}, P={geom.lanes})"

    need, have = weight_bits_bound(cfg, geom), memory_bits_available(board)
    if need > have:  # refuse before minutes of synthesis
        raise DoesNotFit(what, "memory bits (the weights alone)", need, have,
                         f"{board.name} ({board.device})")

    step.start(f"{name}: Verilog")
    t0 = time.monotonic()
    top = "core"
    if verilog is None:
        write_verilog(core_for_build(cfg, geom), outdir / "core.v", name=top)
    else:
        (outdir / "core.v").write_text(verilog)
    seconds["verilog"] = round(time.monotonic() - t0, 2)

    step.start(f"{name}: synthesis (yosys synth_{family})")
    # Twice: hierarchy kept (stat.json: the per-module breakdown), then flattened
    # (netlist.json, flat_stat.json: the totals and what nextpnr places), because keeping
    # the hierarchy stops Yosys optimising across module boundaries (about 6 % more LUTs).
    opts = SYNTH_OPTIONS[family]
    script = (f"read_verilog -sv core.v; synth_{family} -noflatten {opts} -top {top}; "
              f"tee -q -o stat.json stat -json; design -reset; "
              f"read_verilog -sv core.v; synth_{family} {opts} -top {top} -json netlist.json; "
              f"tee -q -o flat_stat.json stat -json")
    (outdir / "stat.json").unlink(missing_ok=True)
    (outdir / "flat_stat.json").unlink(missing_ok=True)
    # the full log goes to synth.log (-l); stdout/stderr (warnings, errors) to synth.out
    r = run_tool([env["YOSYS"], "-q", "-l", "synth.log", "-p", script], outdir / "synth.out", outdir,
                 env, step.tick)
    seconds["synth"] = round(r.seconds, 2)
    synth, modules = _synth_results(r, outdir, what, top, family, board)

    entry = {"name": name, "n_in": geom.n_in, "n_neurons": geom.n_neurons,
             "timesteps": geom.timesteps, "lanes": geom.lanes, "output_layer": geom.output_layer,
             "estimated": synth_only, "resources": synth, "synth_resources": synth,
             "fmax_mhz": None, "critical_path": None, "seed": seed, "modules": modules,
             "seconds": seconds}
    if synth_only:
        return entry

    step.start(f"{name}: place and route (nextpnr-{family}, out of context)")
    pnr = "NEXTPNR_ICE40" if family == "ice40" else "NEXTPNR_ECP5"
    argv = [env[pnr], *board.nextpnr_args(), "--json", "netlist.json", "--freq", f"{target_mhz:g}",
            "--report", "pnr.json", *_seed_args(seed), "-q", "-l", "pnr.log"]
    if family == "ecp5":
        argv.insert(1, "--out-of-context")
    report_file = outdir / "pnr.json"
    report_file.unlink(missing_ok=True)
    # nextpnr's own log goes to pnr.log (-l); stdout/stderr (errors) to pnr.out
    r = run_tool(argv, outdir / "pnr.out", outdir, env, step.tick)
    seconds["pnr"] = round(r.seconds, 2)
    log = outdir / "pnr.log"
    log_text = log.read_text(errors="replace") if log.exists() else ""
    # nextpnr exits 1 when timing fails but still writes its report: the report decides.
    if not report_file.exists():
        raise FlowError(f"place and route of {what} failed (exit {r.returncode}): "
                        f"{_first_error(outdir / 'pnr.out')} (log: {outdir / 'pnr.out'})")
    rep = json.loads(report_file.read_text())
    res = pnr_resources(rep, log_text, family, synth)
    fmax, path = critical_path(rep)
    entry.update(resources=res, fmax_mhz=fmax, critical_path=path)
    return entry


# --------------------------------------------------------------------------- the board chip
#: Yosys module path of the board top (``fpga/flow.py: build_chip``) and of its parts.
CHIP_TOP = "top"


def chip_weight_bits(cfg, geo) -> int:
    """Bits the whole chip must store on chip: every core's weights."""
    return sum(weight_bits_bound(cfg, pl.geom) for pl in geo.cores)


def chip_units(modules: list[dict], n_cores: int) -> list[dict]:
    """The chip's parts from the per-module breakdown: each core (``hostchip.chip.core<k>``),
    each router (``hostchip.chip.noc.r<k>``), the host interface (UART + host link +
    executor), the chip's adapters and glue (``hostchip.chip`` less cores and NoC), and the
    board glue (PLL, reset, LEDs)."""
    by = {m["name"]: m for m in modules}
    zero = {k: 0 for k in RESOURCE_KEYS}

    def res(name):
        return dict(by[name]["resources"]) if name in by else dict(zero)

    def add(*rs):
        return {k: sum(r[k] for r in rs) for k in RESOURCE_KEYS}

    def sub(a, *rs):
        return {k: a[k] - sum(r[k] for r in rs) for k in RESOURCE_KEYS}

    units = []
    cores = [res(f"hostchip.chip.core{k}") for k in range(n_cores)]
    routers = [res(f"hostchip.chip.noc.r{k}") for k in range(n_cores)]
    for k in range(n_cores):
        units.append({"name": f"core{k}", "kind": "core", "module": f"hostchip.chip.core{k}",
                      "resources": cores[k]})
    for k in range(n_cores):
        units.append({"name": f"router{k}", "kind": "router", "module": f"hostchip.chip.noc.r{k}",
                      "resources": routers[k]})
    host = add(res("uart"), res("hostchip.link"), res("hostchip.executor"))
    units.append({"name": "host interface", "kind": "host",
                  "module": "uart + hostchip.link + hostchip.executor", "resources": host})
    glue = sub(res("hostchip.chip"), res("hostchip.chip.noc"), *cores)
    units.append({"name": "chip adapters", "kind": "adapters",
                  "module": "hostchip.chip less cores and noc (spike/error sources, merges, "
                            "reductions, agents, inputs)", "resources": glue})
    board = sub(res(CHIP_TOP), res("hostchip.chip"), host)
    units.append({"name": "board glue", "kind": "board",
                  "module": "top less hostchip.chip and the host interface (PLL, reset, "
                            "LEDs, activity)", "resources": board})
    return units


def build_chip(cfg, board: Board, outdir: Path, *, target_mhz: float = 100.0,
               synth_only: bool = False, step: Step | None = None, env: dict | None = None,
               seed: int | None = None) -> dict:
    """Build the whole chip on ``board`` into ``outdir``: the board top (rtl/board.py, PLL
    to ``target_mhz``) synthesised, placed and routed with the board's pins, packed into
    ``top.bit``. Returns the ``chip`` entry of report.json. Raises ``ValueError`` for a board
    or clock the chip cannot use (a user error), :class:`DoesNotFit`, :class:`FlowError`."""
    from ..rtl.board import BoardTop
    from ..rtl.geometry import ChipGeometry

    step = step or Step()
    family = board.family
    if family != "ecp5":
        raise ValueError(f"--target chip: {board.name} is an {board.device} ({family}); the board "
                         f"top (rtl/board.py) needs an ECP5 PLL; use --target core there")
    if not board.uart_pins:
        raise ValueError(f"--target chip: {board.name} has no UART pins for the host link (its "
                         f"USB goes to the FPGA directly); choose a board with a USB UART")
    top = BoardTop(cfg, target_mhz, board_clk_hz=board.clock_hz)   # PLL and baud checked here
    env = env or tool_env(("YOSYS", "NEXTPNR_ECP5", "ECPPACK"))
    geo = ChipGeometry.from_config(cfg)
    what = f"the {len(geo.cores)}-core chip ({'-'.join(map(str, cfg.network.layers))})"
    need, have = chip_weight_bits(cfg, geo), memory_bits_available(board)
    if need > have:
        raise DoesNotFit(what, "memory bits (the weights alone)", need, have,
                         f"{board.name} ({board.device})")
    outdir.mkdir(parents=True, exist_ok=True)
    seconds = {}

    step.start("elaborate the board top (RTLIL, pin constraints)")
    t0 = time.monotonic()
    platform = board.platform()
    plan = platform.prepare(top, name=CHIP_TOP)
    for f in ("top.il", "top.lpf"):
        (outdir / f).unlink(missing_ok=True)
    plan.extract(str(outdir))
    seconds["elaborate"] = round(time.monotonic() - t0, 2)

    step.start(f"synthesis (yosys synth_{family}, the whole chip)")
    opts = SYNTH_OPTIONS[family]
    script = (f"read_rtlil {CHIP_TOP}.il; {KEEP_FLOPS}; synth_{family} -noflatten {opts} -top {CHIP_TOP}; "
              f"tee -q -o stat.json stat -json; design -reset; "
              f"read_rtlil {CHIP_TOP}.il; {KEEP_FLOPS}; synth_{family} {opts} -top {CHIP_TOP} -json netlist.json; "
              f"tee -q -o flat_stat.json stat -json")
    for f in ("stat.json", "flat_stat.json", "netlist.json"):
        (outdir / f).unlink(missing_ok=True)
    r = run_tool([env["YOSYS"], "-q", "-l", "synth.log", "-p", script], outdir / "synth.out", outdir,
                 env, step.tick)
    seconds["synth"] = round(r.seconds, 2)
    synth, modules = _synth_results(r, outdir, what, CHIP_TOP, family, board)

    pll = top.pll
    entry = {"n_cores": len(geo.cores), "layers": list(cfg.network.layers),
             "timesteps": cfg.network.timesteps, "lanes": cfg.hardware.lanes,
             "clock": {"board_mhz": round(pll.f_in / 1e6, 6), "target_mhz": target_mhz,
                       "pll_mhz": round(pll.f_out / 1e6, 6),
                       "pll": {"clki_div": pll.clki_div, "clkfb_div": pll.clkfb_div,
                               "clkop_div": pll.clkop_div, "vco_mhz": round(pll.f_vco / 1e6, 3)}},
             "uart": {"baud": top.baud, "actual_baud": round(top.divisor.actual_baud),
                      "error_percent": round(100 * top.divisor.error, 3), "pins": board.uart_pins},
             "reset_button": top.reset_button, "leds": [list(x) for x in top.leds],
             "estimated": synth_only, "resources": synth, "synth_resources": synth,
             "fmax_mhz": None, "critical_path": None, "bitstream": None,
             "seed": seed, "units": chip_units(modules, len(geo.cores)), "modules": modules,
             "seconds": seconds}
    if synth_only:
        return entry

    step.start(f"place and route (nextpnr-{family}, with the board's pins)")
    argv = [env["NEXTPNR_ECP5"], *board.nextpnr_args(), "--speed", str(platform.speed),
            "--json", "netlist.json", "--lpf", f"{CHIP_TOP}.lpf", "--textcfg", f"{CHIP_TOP}.config",
            "--freq", f"{target_mhz:g}", "--timing-allow-fail", "--report", "pnr.json",
            *CHIP_PNR_OPTIONS, *_seed_args(seed), "-q", "-l", "pnr.log"]
    for f in ("pnr.json", f"{CHIP_TOP}.config", f"{CHIP_TOP}.bit"):
        (outdir / f).unlink(missing_ok=True)
    r = run_tool(argv, outdir / "pnr.out", outdir, env, step.tick)
    seconds["pnr"] = round(r.seconds, 2)
    log_text = (outdir / "pnr.log").read_text(errors="replace") if (outdir / "pnr.log").exists() else ""
    if r.returncode != 0 or not (outdir / "pnr.json").exists() or not (outdir / f"{CHIP_TOP}.config").exists():
        raise FlowError(f"place and route of {what} failed (exit {r.returncode}): "
                        f"{_first_error(outdir / 'pnr.out')} (log: {outdir / 'pnr.log'})")
    rep = json.loads((outdir / "pnr.json").read_text())
    res = pnr_resources(rep, log_text, family, synth)
    fmax, path = critical_path(rep)

    step.start("bitstream (ecppack)")
    bit = outdir / f"{CHIP_TOP}.bit"
    r = run_tool([env["ECPPACK"], "--compress", "--input", f"{CHIP_TOP}.config", "--bit", bit.name],
                 outdir / "pack.log", outdir, env, step.tick)
    seconds["pack"] = round(r.seconds, 2)
    if r.returncode != 0 or not bit.exists() or bit.stat().st_size == 0:
        raise FlowError(f"ecppack failed (exit {r.returncode}): {_first_error(outdir / 'pack.log')} "
                        f"(log: {outdir / 'pack.log'})")
    entry.update(resources=res, fmax_mhz=fmax, critical_path=path,
                 bitstream={"path": str(bit), "bytes": bit.stat().st_size})
    return entry
