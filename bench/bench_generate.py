"""Wall time of ``spikeforge generate`` at several core counts.

    python bench/bench_generate.py [--config trainer-20core] [--cores 20 40 80] [--small 2 8 32] [--flat]

Each row is one ``spikeforge generate --cores N -q`` run as the user runs it (a fresh Python
process: imports, mapping check, elaboration, Verilog emission by Amaranth's built-in Yosys,
manifest and report), written into a temporary directory. ``--small`` adds rows for a small
network (12-32-8, T = 4, lanes 1) to show how the time grows with the mesh alone. Prints the
wall time, the CPU time (user + system of the process: what a loaded machine does not
inflate), the size of ``chip.v`` and the mesh per row. ``--flat`` adds, per ``--config`` row,
the same chip emitted with every core elaborated and emitted on its own
(``Chip(shared_cores=False)``, how ``generate`` worked before each core kind became one
Verilog module), in a fresh process too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _timed(cmd) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; its result, wall seconds and CPU seconds (user + system)."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r, wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


_FLAT = """
import sys, warnings
from spikeforge.gen.chipgen import check_mapping
from spikeforge.gen.config import load_config
from spikeforge.gen.verilog import emit_verilog
from spikeforge.rtl.chip import Chip
cfg = load_config(sys.argv[1]).replace(hardware={"cores": int(sys.argv[2])})
open(sys.argv[3], "w").write(emit_verilog(Chip(cfg, check_mapping(cfg), debug=False), "spikeforge_chip"))
"""


def run_flat(config: str, cores: int, tmp: Path) -> dict:
    """The same chip with every core elaborated and emitted on its own (no manifest)."""
    out = tmp / f"flat-{Path(config).stem}-{cores}.v"
    r, wall, cpu = _timed([sys.executable, "-c", _FLAT, config, str(cores), str(out)])
    if r.returncode != 0:
        raise SystemExit(f"flat emission of {config} at {cores} cores failed:\n{r.stderr}")
    return {"wall_s": wall, "cpu_s": cpu, "verilog_mb": out.stat().st_size / 1e6}


def run(config: str, cores: int, tmp: Path) -> dict:
    """One ``spikeforge generate`` in a fresh process; its wall time and what it wrote."""
    out = tmp / f"chip-{Path(config).stem}-{cores}"
    r, wall, cpu = _timed([sys.executable, "-m", "spikeforge.gen.cli", "generate", "--config", config,
                           "--cores", str(cores), "-o", str(out), "-q"])
    if r.returncode != 0:
        raise SystemExit(f"generate --config {config} --cores {cores} failed:\n{r.stderr}")
    man = json.loads((out / "manifest.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "verilog_mb": (out / "chip.v").stat().st_size / 1e6,
            "mesh": f"{man['mesh']['rows']} x {man['mesh']['cols']}",
            "network": "-".join(map(str, man["config"]["network"]["layers"])),
            "comb": man["resource_estimate"]["total"]["comb"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="trainer-20core", help="config or preset (default trainer-20core)")
    ap.add_argument("--cores", type=int, nargs="*", default=[20, 40, 80], help="core counts of --config")
    ap.add_argument("--small", type=int, nargs="*", default=[2, 8, 32],
                    help="core counts of the small 12-32-8 network")
    ap.add_argument("--flat", action="store_true",
                    help="also time the --config chips with every core emitted on its own")
    args = ap.parse_args(argv)

    from spikeforge.gen.config import Config

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_generate.") as d:
        tmp = Path(d)
        small = tmp / "small.yaml"
        small.write_text(yaml.safe_dump(Config().replace(
            network={"layers": [12, 32, 8], "timesteps": 4},
            hardware={"lanes": 1, "max_neurons": 32, "max_inputs": 32}).to_dict()))
        cases = [(args.config, n) for n in args.cores] + [(str(small), n) for n in args.small]
        for config, n in cases:
            row = run(config, n, tmp)
            if args.flat and config == args.config:
                row["flat"] = run_flat(config, n, tmp)
            rows.append((Path(config).stem, n, row))
            print(f"  {Path(config).stem} --cores {n}: {row['wall_s']:.1f} s", file=sys.stderr)
    print("| config | network | cores | mesh | wall s | CPU s | chip.v MB | est. LUT4 | flat: wall s | CPU s | MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, r in rows:
        f = r.get("flat")
        flat = f"{f['wall_s']:.1f} | {f['cpu_s']:.1f} | {f['verilog_mb']:.1f}" if f else "- | - | -"
        print(f"| {name} | {r['network']} | {n} | {r['mesh']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['verilog_mb']:.1f} | {r['comb']:,} | {flat} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
