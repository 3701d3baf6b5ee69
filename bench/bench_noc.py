"""FPGA cost of one NoC router (rtl/noc.py) with the project's open flow.

Builds, out of context, the router of an interior core (all four neighbours: the most
ports) of a ``--rows x --cols`` mesh (default 4 x 5, the 20-core trainer's mesh) with the
default payloads of the lean core (P = 1): all three planes together (``router``, what
one core needs), and each plane alone (``spike``, ``error``, ``host``), with and without the
debug counters. Same steps as ``spikeforge build --target core`` (``fpga/flow.py``):
Yosys ``synth_ecp5`` (flattened), then ``nextpnr-ecp5 --85k --package CABGA381 --speed 6
--out-of-context --freq TARGET``; prints one row per build: LUT4 sites (nextpnr's COMB
count), of them logic / carry / LUT-RAM, FF, EBR (DP16KD), fmax and the critical path.

    python bench/bench_noc.py [--rows 4 --cols 5] [--node K] [--counters both|on|off]
        [--only router,spike,error,host] [--widelut both|on|off] [--synth-only]
        [--target-mhz 100] [-o DIR] [--json FILE]

``synth_ecp5`` with wide LUTs (``--widelut on``) builds functions of 5 to 7 inputs from
LUT4 pairs and PFU muxes; for this control-heavy logic ABC then fills many LUT4s with
constants. ``-nowidelut`` (``off``) maps to LUT4s only and is what the project's flow runs
(``fpga/flow.py`` ``SYNTH_OPTIONS``); both are printed by default (docs/noc.md). The
routers the chip instantiates have only the ports of its traffic: bench/bench_chip_area.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _build(name: str, component, board, outdir: Path, *, target_mhz: float, synth_only: bool,
           synth_opts: str | None = None) -> dict:
    """Synthesis and out-of-context place and route of ``component`` (top ``router``),
    with the functions of fpga/flow.py (``synth_opts``: default the flow's options);
    returns the report keys, fmax and critical path."""
    from spikeforge.fpga import flow
    from spikeforge.fpga.tools import run_tool, tool_env
    from spikeforge.gen.verilog import write_verilog

    if synth_opts is None:
        synth_opts = flow.SYNTH_OPTIONS["ecp5"]
    env = tool_env(("YOSYS", "NEXTPNR_ECP5"))
    outdir.mkdir(parents=True, exist_ok=True)
    top = "router"
    write_verilog(component, outdir / "router.v", name=top)
    script = (f"read_verilog -sv router.v; synth_ecp5 {synth_opts} -top {top} -json netlist.json; "
              f"tee -q -o flat_stat.json stat -json")
    t0 = time.monotonic()
    r = run_tool([env["YOSYS"], "-q", "-l", "synth.log", "-p", script], outdir / "synth.out", outdir, env)
    if r.returncode != 0:
        raise flow.FlowError(f"synthesis of {name} failed: see {outdir / 'synth.log'}")
    synth = flow.synth_resources(json.loads((outdir / "flat_stat.json").read_text()), "ecp5")
    row = {"name": name, "resources": synth, "estimated": True, "fmax_mhz": None,
           "critical_path": None, "seconds": {"synth": round(time.monotonic() - t0, 1)}}
    if synth_only:
        return row
    argv = [env["NEXTPNR_ECP5"], "--out-of-context", *board.nextpnr_args(), "--json", "netlist.json",
            "--freq", f"{target_mhz:g}", "--report", "pnr.json", "-q", "-l", "pnr.log"]
    (outdir / "pnr.json").unlink(missing_ok=True)
    r = run_tool(argv, outdir / "pnr.out", outdir, env)
    row["seconds"]["pnr"] = round(r.seconds, 1)
    if not (outdir / "pnr.json").exists():
        raise flow.FlowError(f"place and route of {name} failed: see {outdir / 'pnr.out'}")
    rep = json.loads((outdir / "pnr.json").read_text())
    log = (outdir / "pnr.log").read_text(errors="replace")
    row["resources"] = flow.pnr_resources(rep, log, "ecp5", synth)
    row["fmax_mhz"], row["critical_path"] = flow.critical_path(rep)
    row["estimated"] = False
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=None, help="default rows * cols")
    ap.add_argument("--node", type=int, default=None,
                    help="which router (default: an interior one, row 1, column 1)")
    ap.add_argument("--counters", choices=("both", "on", "off"), default="both")
    ap.add_argument("--only", default="router,spike,error,host")
    ap.add_argument("--synth-only", action="store_true")
    ap.add_argument("--widelut", choices=("both", "on", "off"), default="both",
                    help="on: synth_ecp5 with wide LUTs (LUT5-7 from PFU muxes); "
                         "off: synth_ecp5 -nowidelut (LUT4 only, the flow's); both: a row each")
    ap.add_argument("--target-mhz", type=float, default=100.0)
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("-o", "--out", default=str(REPO / "build" / "bench_noc"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from spikeforge.fpga.boards import BOARDS
    from spikeforge.rtl.noc import DEFAULT_PLANES, MeshShape, PlaneRouter, Router

    mesh = MeshShape(args.rows, args.cols, args.nodes or args.rows * args.cols)
    node = args.node if args.node is not None else (
        mesh.node(min(1, mesh.rows - 1), min(1, mesh.cols - 1)))
    board = BOARDS[args.board]
    counters = {"both": (False, True), "on": (True,), "off": (False,)}[args.counters]
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    specs = {s.name: s for s in DEFAULT_PLANES}
    rows = []
    print(f"router {node} at {mesh.position(node)} of a {mesh.rows} x {mesh.cols} mesh "
          f"({mesh.nodes} nodes), {board.name}, out of context, target {args.target_mhz:g} MHz",
          flush=True)
    hdr = (f"{'build':<32} {'LUT4 sites':>10} {'logic':>6} {'carry':>6} {'LUTRAM':>6} {'FF':>6} "
           f"{'EBR':>4} {'fmax MHz':>9}  critical path")
    print(hdr)
    print("-" * len(hdr))
    wides = {"both": (True, False), "on": (True,), "off": (False,)}[args.widelut]
    for ctr, wide, what in [(c, w, x) for c in counters for w in wides for x in wanted]:
        if True:
            if what == "router":
                comp = Router(mesh, node, DEFAULT_PLANES, counters=ctr)
            else:
                s = specs[what]
                comp = PlaneRouter(mesh, node, s.payload, multicast=s.multicast, counters=ctr)
            name = f"{what}{'+counters' if ctr else ''}{'' if wide else ' nowidelut'}"
            row = _build(name, comp, board, Path(args.out) / name.replace(" ", "-"),
                         target_mhz=args.target_mhz, synth_only=args.synth_only,
                         synth_opts="" if wide else "-nowidelut")
            res = row["resources"]
            est = "~" if row["estimated"] else ""
            cp = row["critical_path"] or {}
            fm = f"{row['fmax_mhz']:.1f}" if row["fmax_mhz"] else "-"
            print(f"{name:<32} {est + str(res['comb']):>10} {res['lut4']:>6} {res['carry']:>6} "
                  f"{res['lutram']:>6} {res['ff']:>6} {res['ebr']:>4} {fm:>9}  "
                  f"{cp.get('from', '')} -> {cp.get('to', '')} {cp.get('ns', '')}", flush=True)
            rows.append(dict(row, counters=ctr, plane=what, widelut=wide))
    if args.json:
        Path(args.json).write_text(json.dumps({"mesh": [mesh.rows, mesh.cols, mesh.nodes],
                                               "node": node, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
