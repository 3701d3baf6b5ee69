"""FPGA cost of the chip's per-core adapters (rtl/chip.py) with the project's open flow.

    python bench/bench_chip_area.py [--config trainer-20core] [--synth-only]

Each adapter of the preset's chip -- the timestep barrier (``SpikeMerge``) of a first-layer
core (fan-in from the host) and of a second-layer core, the error reduction
(``ErrorReduce``) of a hidden core, the spike and error senders, the host agent, the input
source -- synthesised and placed out of context on the board's FPGA like one router in
bench/bench_noc.py (Yosys ``synth_ecp5`` with the flow's options, nextpnr-ecp5
``--out-of-context``). Prints LUT4 sites (nextpnr's COMB count), FF, EBR and fmax per
adapter and the sum per core kind; then every router of the chip as the chip builds it
(only the ports of its traffic, ``rtl/chip.py`` ``chip_flows``, counters off) beside the
generic router with every port, and their sum.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO.parent))


def _noc_bench():
    spec = importlib.util.spec_from_file_location("bench_noc", REPO / "bench" / "bench_noc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="trainer-20core")
    ap.add_argument("--target-mhz", type=float, default=100.0)
    ap.add_argument("--synth-only", action="store_true")
    ap.add_argument("--out", default=str(REPO / "build" / "bench" / "chip_area"))
    args = ap.parse_args(argv)

    from spikeforge.fpga.boards import BOARDS
    from spikeforge.gen.config import load_config
    from spikeforge.rtl import chip as C
    from spikeforge.rtl.geometry import ChipGeometry

    cfg = load_config(args.config)
    geo = ChipGeometry.from_config(cfg)
    board = BOARDS[cfg.board]
    last = len(cfg.network.layers) - 2
    first = geo.layer_cores(0)[0]
    out = geo.layer_cores(last)[0]
    P = cfg.hardware.lanes
    comps = [("SpikeMerge, layer 0 (host)", "first", lambda: C.SpikeMerge(cfg, first.geom, 1)),
             ("SpikeSource", "first", lambda: C.SpikeSource(cfg, geo, first.core)),
             ("HostAgent", "all", lambda: C.HostAgent(geo, first.core, cfg.hardware.wg_dataflow != "inplace")),
             ("InputSource (core 0 only)", "chip", lambda: C.InputSource(cfg, geo))]
    if last > 0:
        comps += [("ErrorReduce, hidden", "first", lambda: C.ErrorReduce(cfg, first.geom, len(geo.layer_cores(1)),
                                                                        first.offset // P)),
                  (f"SpikeMerge, layer {last}", "last",
                   lambda: C.SpikeMerge(cfg, out.geom, len(geo.layer_cores(last - 1)))),
                  ("ErrorSource", "last", lambda: C.ErrorSource(cfg, geo, out.core))]
    from spikeforge.rtl.noc import MeshShape, Router, used_ports
    mesh = MeshShape.from_chip(geo)
    mid = mesh.node(min(1, mesh.rows - 1), min(1, mesh.cols - 1))
    planes = C.chip_planes(cfg, geo)
    noc = _noc_bench()
    print(f"{args.config}: chip adapters on {board.name}, out of context, target {args.target_mhz:g} MHz")
    print("| adapter | on | LUT4 sites | FF | EBR | fmax MHz | critical path |")
    print("|---|---|---|---|---|---|---|")
    per = {"first": 0, "last": 0}
    for name, where, make in comps:
        tag = name.split(",")[0].split(" ")[0].strip("()") + "-" + where
        row = noc._build(name, make(), board, Path(args.out) / tag, target_mhz=args.target_mhz,
                         synth_only=args.synth_only)
        res = row["resources"]
        cp = row["critical_path"] or {}
        fm = f"{row['fmax_mhz']:.1f}" if row["fmax_mhz"] else "-"
        est = "~" if row["estimated"] else ""
        print(f"| {name} | {where} | {est}{res['comb']:,} | {res['ff']:,} | {res['ebr']} | {fm} | "
              f"{cp.get('from', '')} -> {cp.get('to', '')} {cp.get('ns', '')} |", flush=True)
        if where in per:
            per[where] += res["comb"]
        elif where == "all":
            per = {k: v + res["comb"] for k, v in per.items()}
    print(f"adapters per layer-0 core: {per['first']:,} LUT4 sites; per layer-{last} core: "
          f"{per['last']:,}")

    # the routers: generic (every port) against each one the chip builds
    used = {p: used_ports(mesh, f) for p, f in C.chip_flows(geo).items()}
    routers = [(f"generic router, all ports (position {mesh.position(mid)})",
                lambda: Router(mesh, mid, planes, counters=False))]
    routers += [(f"router {k} {mesh.position(k)}: " + ", ".join(
                    f"{p} {len(u[k].ins)}/{len(u[k].outs)}" for p, u in used.items()),
                 (lambda k=k: Router(mesh, k, planes, counters=False, used={p: u[k] for p, u in used.items()})))
                for k in range(mesh.nodes)]
    print()
    print("| router (plane inputs/outputs used) | LUT4 sites | FF | fmax MHz |")
    print("|---|---|---|---|")
    total = 0
    for i, (name, make) in enumerate(routers):
        row = noc._build(name, make(), board, Path(args.out) / f"router{i - 1 if i else 'all'}",
                         target_mhz=args.target_mhz, synth_only=args.synth_only)
        res = row["resources"]
        fm = f"{row['fmax_mhz']:.1f}" if row["fmax_mhz"] else "-"
        est = "~" if row["estimated"] else ""
        print(f"| {name} | {est}{res['comb']:,} | {res['ff']:,} | {fm} |", flush=True)
        if i:
            total += res["comb"]
        else:
            generic = res["comb"]
    print(f"routers of the chip: {total:,} LUT4 sites in all, {total / mesh.nodes:,.0f} a router on "
          f"average ({generic:,} each with every port: {generic * mesh.nodes:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
