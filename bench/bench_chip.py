"""Cycles per training sample of the N-core chip in Verilator, against one core doing the
same network layer by layer, with the share of cycles the cores spend waiting on the NoC,
router occupancy, and the simulator's speed.

    python bench/bench_chip.py                                   # the trainer-20core preset
    python bench/bench_chip.py --config digits --cores 2,3,5,9 --plot build/bench/chip_cores.png

For each core count the chip is built and trained on ``--samples`` samples with every
message checked against the model (sim/chip_tb.py: a mismatch stops the bench). Printed:

* ``chip``: measured cycles per sample (mean), from the first command to the last response;
* ``perf model``: ``model.perf.chip_sample_cycles`` on the same samples, and its error;
* ``1 core``: the exact single-core cycle model (model/perf.py) of one core holding each
  whole layer in turn, on the same samples -- what the chip's parallelism is measured against;
* ``fwd wait``: the share of the cores' forward phases spent waiting for input events (the
  timestep barrier and the NoC), ``bwd wait``: of their backward phases waiting for the
  reduced error from above (from the cores' own phase and engine counters);
* ``spike/err link``: flits per cycle on the busiest link of the spike and error planes;
* ``cycles/s``: simulated cycles per second of wall time under the cocotb harness;
* per layer: when its last core answered, on the chip and in the perf model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from spikeforge.gen.config import load_config  # noqa: E402
from spikeforge.model import perf  # noqa: E402
from spikeforge.model.snn import FixedPointSNN, init_weights  # noqa: E402
from spikeforge.rtl.geometry import ChipGeometry, CoreGeometry  # noqa: E402
from spikeforge.sim.chip_tb import _samples, run_chip_sim  # noqa: E402


def one_core_cycles(cfg, x, labels, geo):
    """Cycles per sample of one core running every layer in turn (model/perf.py, exact for a
    core), and per sample the forward phase each chip core would need with its events at hand."""
    model = FixedPointSNN(cfg, weights=init_weights(cfg, torch.Generator().manual_seed(cfg.train.seed)))
    B, P = cfg.train.batch_size, cfg.hardware.lanes
    ip = cfg.hardware.wg_dataflow == "inplace"
    out, alone, est = [], [], []
    for b0 in range(0, x.shape[0], B):
        traces = model.train_step(x[b0:b0 + B], labels[b0:b0 + B])
        for s in range(min(B, x.shape[0] - b0)):
            alone.append({pl.core: perf.core_forward_cycles(
                [int(v) for v in traces[pl.layer].x[s].sum(dim=1)], pl.geom.n_neurons, P, ip)
                for pl in geo.cores})
            est.append(perf.chip_sample_cycles(cfg, geo, traces, s))
            total = 0
            for l, tr in enumerate(traces):
                n_in, n = tr.x.shape[2], tr.s.shape[2]
                ev = [int(v) for v in tr.x[s].sum(dim=1)]
                # the first layer computes no error to the input, on one core as on the chip
                nnz = [int(v) for v in (tr.dv[s] != 0).sum(dim=1)] if l > 0 else [0] * len(ev)
                if ip:
                    ab, ac = perf.inplace_active(tr.x[s], tr.dv[s], P)
                    c = perf.core_inplace_sample_cycles(n_in, n, P, nnz, ev, ab, ac)
                    total += c["forward"] + c["backward"] + c["update"]
                else:
                    g = CoreGeometry(n_in=n_in, n_neurons=n, timesteps=cfg.network.timesteps, lanes=P)
                    lanes = [perf.wg_lane_lengths(tr.dv[s, t], P) for t in range(tr.dv.shape[1])]
                    total += perf.core_forward_cycles(ev, n, P)
                    total += perf.core_backward_schedule(g.blocks, g.col_blocks, nnz, ev, lanes)["phase"]
            out.append(total)
        if not ip:
            out[-1] += sum(perf.core_update_cycles(tr.x.shape[2], tr.s.shape[2], P) for tr in traces)
    return out, alone, est


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="trainer-20core")
    ap.add_argument("--cores", default=None, help="comma-separated core counts (default: the config's)")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--input", default=None, help="digits | mnist | random (default: the data set if it fits)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, help="PNG of cycles per sample against core count")
    args = ap.parse_args(argv)
    base = load_config(args.config)
    counts = [int(c) for c in args.cores.split(",")] if args.cores else [base.hardware.cores]
    sizes = base.network.layers
    fits = {"digits": (64, 10), "mnist": (784, 10)}
    source = args.input or (base.train.dataset if (sizes[0], sizes[-1]) == fits.get(base.train.dataset)
                            else "random")
    rows = []
    print(f"{args.config} ({'-'.join(map(str, sizes))}, T={base.network.timesteps}, "
          f"P={base.hardware.lanes}, {base.hardware.wg_dataflow}), {args.samples} samples of {source}, "
          f"seed {args.seed}")
    print("| cores | mesh | chip cycles/sample | perf model | model error | 1 core (model) | speed-up "
          "| cores waiting | spike link | err link | cycles/s (cocotb) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in counts:
        cfg = base.replace(hardware={"cores": n})
        geo = ChipGeometry.from_config(cfg)
        rep = Path(tempfile.mkstemp(suffix=".json")[1])
        t0 = time.monotonic()
        run_chip_sim(cfg, seed=args.seed, samples=args.samples, source=source, report_file=rep,
                     run_name=f"bench-{n}", counters=True)
        r = json.loads(rep.read_text())
        x, labels = _samples(cfg, source, args.samples, args.seed, 0.2)
        ref, fwd_alone, chip_estimates = one_core_cycles(cfg.replace(train={"seed": args.seed}), x, labels, geo)
        chip = sum(r["cycles_per_sample"]) / len(r["cycles_per_sample"])
        one = sum(ref) / len(ref)
        # waiting: the share of a sample's cycles in which a core is not computing -- its
        # forward phase beyond what it needs with its events at hand (model/perf.py), and
        # every cycle outside its phases (barrier, NoC, the reduced error from above)
        busy = tot = 0
        for s, sample in enumerate(r["core_counters"]):
            for k, c in sample.items():
                own = fwd_alone[s][int(k)]
                busy += own + c["bwd_phase"] + c["upd_phase"]
                tot += r["cycles_per_sample"][s]
        cyc = r["sim_cycles"]
        busiest = {}
        for plane in ("spike", "error"):
            busiest[plane] = max(v[0] for node in r["noc"][plane].values()
                                 for p, v in node.items() if p in ("n", "e", "s", "w")) / cyc
        est = sum(e["total"] for e in chip_estimates) / len(chip_estimates)
        rows.append((n, chip, one, est))
        print(f"| {n} | {geo.rows} x {geo.cols} | {chip:,.0f} | {est:,.0f} | {est / chip - 1:+.1%} | "
              f"{one:,.0f} | {one / chip:.2f}x | "
              f"{1 - busy / max(tot, 1):.0%} | {busiest['spike']:.3f} | {busiest['error']:.3f} | "
              f"{r['sim_cycles'] / r['wall_s']:,.0f} |")
        print(f"  (built and ran in {time.monotonic() - t0:.0f} s)", file=sys.stderr)
        # where the model's error is: each layer's last response, chip against model
        for l in range(len(sizes) - 1):
            ks = [pl.core for pl in geo.layer_cores(l)]
            rtl = sum(max(e[str(k)] for k in ks) for e in r["core_ends"]) / len(r["core_ends"])
            mod = sum(max(e["cores"][k]["end"] for k in ks) for e in chip_estimates) / len(chip_estimates)
            print(f"  layer {l} ({len(ks)} cores): done at {rtl:,.0f} cycles, model {mod:,.0f} "
                  f"({mod / rtl - 1:+.1%})")
    if args.plot and len(rows) > 1:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="chip (Verilator)")
        ax.plot([r[0] for r in rows], [r[3] for r in rows], "^:", label="chip perf model")
        ax.plot([r[0] for r in rows], [r[2] for r in rows], "s--", label="one core, layer by layer (model)")
        ax.set_xlabel("cores")
        ax.set_ylabel("cycles per training sample")
        ax.set_title(f"{args.config}: {'-'.join(map(str, sizes))}")
        ax.legend()
        ax.grid(alpha=0.3)
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
