"""FPGA cost of every core kind of the hardware presets at several lane counts.

For each preset (default ``trainer-20core`` and ``federated-worker``), each lane count P
(default 1, 2, 4) and each core kind of the preset (``ChipGeometry.from_config(cfg).kinds()``,
the largest core of each layer) this builds the core with spikeforge's FPGA flow
(``fpga/flow.py``: Yosys ``synth_ecp5 -noflatten``, then nextpnr ``--out-of-context``)
on the preset's board and prints one row: LUT4 sites (nextpnr's COMB count), LUT4 /
carry / LUT-RAM sites, FF, DP16KD (EBR), MULT18X18D, fmax and the critical path; then the
same figures as a PNG bar chart (matplotlib) with the per-core budget of docs/DESIGN.md
(3,000 LUT4 sites, 9 DP16KD, 100 MHz) drawn in.

``--synth-only`` stops after synthesis (about 4x faster): resources are Yosys estimates
(LUT4 + 2 per CCU2C + 6 per DPR16X4, flagged with ``~``), no fmax.

``--rev GITREV`` measures "before and after" in one run: the core's Verilog is emitted
from GITREV (a ``git worktree`` in a temporary directory; its ``rtl``, ``gen``, ``model``
and ``configs`` are imported in a subprocess) and from the working tree, both go through
this tree's flow, and the table shows old, new and new/old side by side.

    python bench/bench_fpga.py [--presets trainer-20core,federated-worker] [--lanes 1,2,4]
        [--synth-only] [--rev GITREV] [--board BOARD] [--png FILE] [--json FILE] [-o DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in a subprocess whose ``spikeforge`` package is the tree given in argv[1]: emits the
# Verilog of every (preset, lanes) core kind into argv[2] and prints their list as JSON.
_EMIT = r"""
import json, os, sys
os.environ["AMARANTH_USE_YOSYS"] = "builtin"
from amaranth.back import verilog
from spikeforge.gen.config import load_config
from spikeforge.rtl.geometry import ChipGeometry
import inspect
from spikeforge.rtl.core import Core
def core_for_build(cfg, geom):
    # as fpga/flow.py builds it: without the debug counters where the tree has the option
    if "debug" in inspect.signature(Core).parameters:
        return Core(cfg, geom, debug=False)
    return Core(cfg, geom)
jobs, outdir = json.loads(sys.argv[1]), sys.argv[2]
rows = []
for preset, lanes in jobs:
    cfg = load_config(preset).replace(hardware={"lanes": lanes})
    for name, geom in ChipGeometry.from_config(cfg).kinds():
        path = os.path.join(outdir, f"{preset}-P{lanes}-{name}.v")
        with open(path, "w") as f:
            f.write(verilog.convert(core_for_build(cfg, geom), name="core", emit_src=False,
                                    strip_internal_attrs=True))
        rows.append(dict(preset=preset, lanes=lanes, kind=name, n_in=geom.n_in,
                         n_neurons=geom.n_neurons, verilog=path))
print(json.dumps(rows))
"""


def _shim(tree: Path, where: Path) -> Path:
    """A directory whose ``spikeforge`` package maps to ``tree``'s top-level folders."""
    pkg = where / "spikeforge"
    if where.exists():                      # a shim of an earlier run
        shutil.rmtree(where)
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for sub in ("rtl", "gen", "model", "configs", "fpga", "sim"):
        if (tree / sub).is_dir():
            (pkg / sub).symlink_to(tree / sub)
    return where


def emit(jobs: list, tree: Path | None, outdir: Path) -> list[dict]:
    """Verilog of every core kind of ``jobs`` [(preset, lanes)], from ``tree`` (None: this
    working tree as installed)."""
    env = dict(os.environ)
    if tree is not None:
        shim = _shim(tree, outdir / "shim")
        env["PYTHONPATH"] = str(shim) + os.pathsep + env.get("PYTHONPATH", "")
    outdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-c", _EMIT, json.dumps(jobs), str(outdir)], env=env,
                       capture_output=True, text=True, cwd=outdir)
    if r.returncode:
        sys.exit(f"bench_fpga: emitting Verilog from {tree or 'the working tree'} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(rows: list[dict], board_for, synth_only: bool, outdir: Path, label: str) -> None:
    """Run the flow on each row's Verilog; adds ``entry`` (the report's core entry)."""
    from spikeforge.fpga.boards import get_board
    from spikeforge.fpga.flow import build_core
    from spikeforge.gen.config import load_config
    from spikeforge.rtl.geometry import CoreGeometry

    for i, row in enumerate(rows):
        cfg = load_config(row["preset"]).replace(hardware={"lanes": row["lanes"]})
        board = get_board(board_for(cfg))
        geom = CoreGeometry(n_in=row["n_in"], n_neurons=row["n_neurons"],
                            timesteps=cfg.network.timesteps, lanes=row["lanes"])
        t0 = time.monotonic()
        print(f"[{label} {i + 1}/{len(rows)}] {row['preset']} P={row['lanes']} {row['kind']} "
              f"on {board.name} ...", file=sys.stderr, flush=True)
        row["board"] = board.name
        row["entry"] = build_core(cfg, row["kind"], geom, board,
                                  outdir / f"{row['preset']}-P{row['lanes']}-{row['kind']}",
                                  synth_only=synth_only, verilog=Path(row["verilog"]).read_text())
        print(f"    {time.monotonic() - t0:.0f} s: {row['entry']['seconds']}", file=sys.stderr, flush=True)


def _fmt_row(e: dict | None, est: bool) -> list[str]:
    if e is None:
        return ["-"] * 9
    r, t = e["resources"], "~" if est else ""
    cp = e.get("critical_path")
    return [f"{t}{r['comb']}", f"{r['lut4']}", f"{r['carry']}", f"{t}{r['lutram']}", f"{r['ff']}",
            f"{r['ebr']}", f"{r['dsp']}", "-" if e["fmax_mhz"] is None else f"{e['fmax_mhz']:.1f}",
            "-" if not cp else f"{cp['ns']:.2f}"]


COLS = ["sites", "lut4", "carry", "lutram", "FF", "DP16KD", "MULT18", "fmax", "crit_ns"]


def print_table(new: list[dict], old: list[dict] | None, est: bool, rev: str | None) -> None:
    key = lambda r: (r["preset"], r["lanes"], r["kind"])  # noqa: E731
    olds = {key(r): r for r in old or []}
    head = f"{'preset':<17}{'P':>2} {'core':<16}{'board':<10}"
    if old is None:
        print(head + "".join(f"{c:>8}" for c in COLS))
        for r in new:
            print(f"{r['preset']:<17}{r['lanes']:>2} {r['kind']:<16}{r['board']:<10}"
                  + "".join(f"{v:>8}" for v in _fmt_row(r["entry"], est)))
        return
    cols = ["sites", "FF", "DP16KD", "MULT18", "fmax"]
    idx = [COLS.index(c) for c in cols]
    print(head + "".join(f"{c + ' old':>12}{c + ' new':>12}{'new/old':>8}" for c in cols)
          + f"   (old = {rev})")
    for r in new:
        o = olds.get(key(r))
        nv = _fmt_row(r["entry"], est)
        ov = _fmt_row(o["entry"] if o else None, est)
        line = f"{r['preset']:<17}{r['lanes']:>2} {r['kind']:<16}{r['board']:<10}"
        for i in idx:
            try:
                ratio = f"{float(nv[i].lstrip('~')) / float(ov[i].lstrip('~')):.2f}"
            except (ValueError, ZeroDivisionError):
                ratio = "-"
            line += f"{ov[i]:>12}{nv[i]:>12}{ratio:>8}"
        print(line)


def plot(new: list[dict], old: list[dict] | None, path: Path, est: bool, rev: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['preset'].split('-')[0]}\n{r['kind'].split('_')[1]}\nP={r['lanes']}" for r in new]
    series = [("new" if old else "this tree", new)]
    if old:
        series.insert(0, (f"old ({rev})", old))
    panels = [("comb", "LUT4 sites" + (" (estimate)" if est else ""), 3000),
              ("ff", "FF", None), ("ebr", "DP16KD (EBR)", 9)]
    if not est:
        panels.append(("fmax", "fmax (MHz)", 100))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, len(new) * 0.9), 3 * len(panels)),
                             sharex=True)
    width = 0.8 / len(series)
    for ax, (key, title, budget) in zip(axes, panels):
        for s, (name, rows) in enumerate(series):
            by = {(r["preset"], r["lanes"], r["kind"]): r for r in rows}
            vals = []
            for r in new:
                e = by.get((r["preset"], r["lanes"], r["kind"]), {}).get("entry")
                v = None if e is None else (e["fmax_mhz"] if key == "fmax" else e["resources"][key])
                vals.append(v or 0)
            ax.bar([i + (s - (len(series) - 1) / 2) * width for i in range(len(new))], vals, width,
                   label=name)
        if budget:
            ax.axhline(budget, color="red", linestyle="--", linewidth=1, label=f"budget {budget}")
        ax.set_ylabel(title)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xticks(range(len(new)))
    axes[-1].set_xticklabels(labels, fontsize=7)
    fig.suptitle("spikeforge: one core out of context, nextpnr-ecp5" if not est
                 else "spikeforge: one core, Yosys synth_ecp5 (estimates)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="trainer-20core,federated-worker")
    ap.add_argument("--lanes", default="1,2,4")
    ap.add_argument("--board", default=None, help="board for every build (default: each preset's board)")
    ap.add_argument("--synth-only", action="store_true", help="Yosys only: estimates, no fmax")
    ap.add_argument("--rev", default=None, help="also build the core from this git revision (before/after)")
    ap.add_argument("-o", "--output", default="build/bench_fpga", help="build directory")
    ap.add_argument("--png", default=None, help="plot file (default: <output>/bench_fpga.png)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    jobs = [(p, int(l)) for p in args.presets.split(",") for l in args.lanes.split(",")]
    out = Path(args.output).resolve()
    board_for = (lambda cfg: args.board) if args.board else (lambda cfg: cfg.board)
    est = args.synth_only
    t0 = time.monotonic()
    new = emit(jobs, None, out / "new")
    old = None
    if args.rev:
        with tempfile.TemporaryDirectory(prefix="spikeforge-rev-") as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree),
                            args.rev], check=True)
            try:
                old = emit(jobs, tree, out / "old")
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               check=False)
        measure(old, board_for, est, out / "old", f"old {args.rev}")
    measure(new, board_for, est, out / "new", "new")
    print(f"# one core out of context per row; sites = nextpnr COMB (LUT4 sites), lut4/carry/lutram "
          f"in LUT4 sites; {'~ = Yosys estimate; ' if est else ''}total {time.monotonic() - t0:.0f} s")
    print_table(new, old, est, args.rev)
    png = Path(args.png) if args.png else out / "bench_fpga.png"
    plot(new, old, png, est, args.rev)
    print(f"# plot: {png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rev": args.rev, "synth_only": est, "new": new, "old": old},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
