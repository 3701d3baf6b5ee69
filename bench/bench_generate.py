"""Wall time of ``spikeforge generate`` at several core counts.

    python bench/bench_generate.py [--config trainer-20core] [--cores 20 40 80] [--small 2 8 32]

Each row is one ``spikeforge generate --cores N -q`` run as the user runs it (a fresh Python
process: imports, mapping check, elaboration, Verilog emission by Amaranth's built-in Yosys,
manifest and report), written into a temporary directory. ``--small`` adds rows for a small
network (12-32-8, T = 4, lanes 1) to show how the time grows with the mesh alone. Prints the
wall time, the size of ``chip.v`` and the mesh per row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run(config: str, cores: int, tmp: Path) -> dict:
    """One ``spikeforge generate`` in a fresh process; its wall time and what it wrote."""
    out = tmp / f"chip-{Path(config).stem}-{cores}"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", "generate", "--config", config,
                        "--cores", str(cores), "-o", str(out), "-q"], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"generate --config {config} --cores {cores} failed:\n{r.stderr}")
    man = json.loads((out / "manifest.json").read_text())
    return {"wall_s": wall, "verilog_mb": (out / "chip.v").stat().st_size / 1e6,
            "mesh": f"{man['mesh']['rows']} x {man['mesh']['cols']}",
            "network": "-".join(map(str, man["config"]["network"]["layers"])),
            "comb": man["resource_estimate"]["total"]["comb"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="trainer-20core", help="config or preset (default trainer-20core)")
    ap.add_argument("--cores", type=int, nargs="*", default=[20, 40, 80], help="core counts of --config")
    ap.add_argument("--small", type=int, nargs="*", default=[2, 8, 32],
                    help="core counts of the small 12-32-8 network")
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
            rows.append((Path(config).stem, n, row))
            print(f"  {Path(config).stem} --cores {n}: {row['wall_s']:.1f} s", file=sys.stderr)
    print(f"{'config':<16} {'network':<12} {'cores':>5} {'mesh':>7} {'wall s':>7} {'chip.v MB':>9} "
          f"{'est. LUT4':>10}")
    for name, n, r in rows:
        print(f"{name:<16} {r['network']:<12} {n:>5} {r['mesh']:>7} {r['wall_s']:>7.1f} "
              f"{r['verilog_mb']:>9.1f} {r['comb']:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
