"""Cycles of one simulated Core per training sample at several input spike densities.

Runs the bit-exact core simulation (sim/core_tb.py through ``run_core_sim``: every
transaction is checked against the model, so a number printed here comes from a run that
matched) on Bernoulli input spikes of each density and prints, per density:

* ``cycles/sample``: measured forward + backward phase cycles per training sample, and the
  update phase amortised over the mini-batch;
* ``dense``: the same schedule if every input spiked at every step and every dv were
  non-zero (``model/perf.py``), and ``dense/meas`` (the sparsity gain);
* ``ideal``: useful work / P (FP work plus the larger of BP and WG work, which run
  concurrently), and ``meas/ideal`` (schedule overhead over the ideal);
* ``overlap``: the fraction of the shorter of BP and WG hidden under the longer one,
  ``(bp + wg - backward phase) / min(bp, wg)``;
* ``sim cyc/s``: simulated cycles per wall-clock second under cocotb (host loading included).

Then the two weight-gradient dataflows side by side at ``B = 1`` (``hardware.wg_dataflow``,
docs/core.md "Weight-gradient dataflows"): the same samples (same seed, same weights, so
the same spikes) trained once with ``accumulate`` and once ``inplace``; per sample the
measured forward, backward and update phase cycles and their total, BP's and WG's own
cycles in the backward phase, and the memory bits each dataflow adds to the core
(gradient memory + dv lists vs input-spike bits + dv history, ``perf.wg_memory_bits``),
also for the 784 x 8 core of the 20-core trainer.

    python bench/bench_core.py [--config FILE|PRESET] [--densities 0.02,0.1,0.3] [--samples 4]
                               [--compare-density 0.1] [--dataflows-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def dense_cycles(geom):
    from spikeforge.model import perf

    P, T, N, n_in = geom.lanes, geom.timesteps, geom.n_neurons, geom.n_in
    lens = [perf.wg_lane_lengths([1] * N, P)] * T
    bwd = perf.core_backward_schedule(geom.blocks, geom.col_blocks, [N] * T, [n_in] * T, lens)["phase"]
    return perf.core_forward_cycles([n_in] * T, N, P) + bwd


def summarise(rep, geom):
    P = geom.lanes
    s = rep["samples"]
    n = len(s)
    meas = sum(x["fwd_phase"] + x["bwd_phase"] for x in s) / n
    upd = sum(u["upd_phase"] for u in rep["updates"]) / n
    ideal = sum(x["fp_work"] / P + max(x["bp_work"], x["wg_work"]) / P for x in s) / n
    ov = [(x["bp_cycles"] + x["wg_cycles"] - x["bwd_phase"]) / max(1, min(x["bp_cycles"], x["wg_cycles"]))
          for x in s]
    dens = sum(sum(x["events"]) for x in s) / (n * geom.timesteps * geom.n_in)
    nnz = sum(sum(x["nnz_dv"]) for x in s) / (n * geom.timesteps * geom.n_neurons)
    return {"density": dens, "dv_density": nnz, "cycles": meas, "update": upd, "dense": dense_cycles(geom),
            "ideal": ideal, "overlap": sum(ov) / n,
            "sim_cps": rep["sim_cycles"] / rep["wall_s"] if rep.get("wall_s") else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="YAML config or preset (default: 64->10 digits-like)")
    ap.add_argument("--densities", default="0.02,0.05,0.1,0.2,0.4")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--compare-density", type=float, default=0.1,
                    help="input density of the accumulate vs inplace comparison (B = 1)")
    ap.add_argument("--dataflows-only", action="store_true",
                    help="only the accumulate vs inplace comparison")
    args = ap.parse_args(argv)

    from spikeforge.gen.config import Config, load_config
    from spikeforge.rtl.geometry import CoreGeometry
    from spikeforge.sim.cli import stdout_to_stderr
    from spikeforge.sim.core_tb import run_core_sim

    cfg = load_config(args.config) if args.config else Config().replace(
        network={"layers": [64, 10], "timesteps": 8}, train={"batch_size": 4})
    geom = CoreGeometry.from_config(cfg)
    rows = []
    for d in ([] if args.dataflows_only else [float(x) for x in args.densities.split(",")]):
        rep_file = Path(tempfile.mkstemp(suffix=".json")[1])
        with stdout_to_stderr():      # simulator chatter to stderr, the table to stdout
            run_core_sim(cfg, seed=args.seed, samples=args.samples, source="random", density=d,
                         report_file=rep_file, run_name=f"bench-d{d}")
        row = summarise(json.loads(rep_file.read_text()), geom)
        row["requested_density"] = d
        rows.append(row)
    if not args.dataflows_only:
        print_density_table(rows, geom, cfg, args.samples)
    comp = compare_dataflows(cfg, geom, args.compare_density, args.samples, args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps({"densities": rows, "dataflows": comp}, indent=1))


def compare_dataflows(cfg, geom, density, samples, seed):
    """Train the same samples at B = 1 with each dataflow; print and return the comparison."""
    from spikeforge.model import perf
    from spikeforge.sim.cli import stdout_to_stderr
    from spikeforge.sim.core_tb import run_core_sim

    out = {}
    for df in ("accumulate", "inplace"):
        c = cfg.replace(train={"batch_size": 1}, hardware={"wg_dataflow": df})
        rep_file = Path(tempfile.mkstemp(suffix=".json")[1])
        with stdout_to_stderr():
            run_core_sim(c, seed=seed, samples=samples, source="random", density=density,
                         report_file=rep_file, run_name=f"bench-{df}-d{density}")
        rep = json.loads(rep_file.read_text())
        s, u = rep["samples"], rep["updates"]
        n = len(s)
        a = c.arithmetic
        row = {k: sum(x[k] for x in s) / n for k in ("fwd_phase", "bwd_phase", "bp_cycles", "wg_cycles")}
        row["upd_phase"] = sum(x["upd_phase"] for x in u) / n
        row["total"] = row["fwd_phase"] + row["bwd_phase"] + row["upd_phase"]
        row["density"] = sum(sum(x["events"]) for x in s) / (n * geom.timesteps * geom.n_in)
        row["mem"] = perf.wg_memory_bits(geom.n_in, geom.n_neurons, geom.lanes, geom.timesteps,
                                         a.dv_bits, a.grad_bits, df)
        row["mem_trainer"] = perf.wg_memory_bits(784, 8, geom.lanes, geom.timesteps,
                                                 a.dv_bits, a.grad_bits, df)
        out[df] = row
    print(f"\nweight-gradient dataflows at B=1: core {geom.n_in} -> {geom.n_neurons}, T={geom.timesteps}, "
          f"P={geom.lanes}, input density {out['inplace']['density']:.3f}, {samples} samples "
          f"(cycles per sample, mean)")
    print(f"{'dataflow':>10} {'forward':>8} {'backward':>8} {'(bp':>6} {'wg)':>6} {'update':>7} "
          f"{'total':>8} {'WG memory bits':>26} {'784x8 core':>26}")

    def mem(m):
        parts = " + ".join(f"{v}" for k, v in m.items() if k != "total")
        return f"{m['total']} ({parts})"

    for df, r in out.items():
        print(f"{df:>10} {r['fwd_phase']:>8.1f} {r['bwd_phase']:>8.1f} {r['bp_cycles']:>6.1f} "
              f"{r['wg_cycles']:>6.1f} {r['upd_phase']:>7.1f} {r['total']:>8.1f} "
              f"{mem(r['mem']):>26} {mem(r['mem_trainer']):>26}")
    print("  WG memory: accumulate = gradient memory + dv lists; inplace = input-spike bits + dv history")
    acc, ip = out["accumulate"], out["inplace"]
    print(f"  inplace / accumulate: cycles {ip['total'] / acc['total']:.3f}, "
          f"WG memory {ip['mem']['total'] / acc['mem']['total']:.3f} "
          f"(784x8: {ip['mem_trainer']['total'] / acc['mem_trainer']['total']:.3f})")
    return out


def print_density_table(rows, geom, cfg, samples):
    print(f"core {geom.n_in} -> {geom.n_neurons}, T={geom.timesteps}, P={geom.lanes}, "
          f"B={cfg.train.batch_size}, {samples} samples per density")
    print(f"{'in dens':>7} {'dv dens':>7} {'cyc/sample':>10} {'+update':>8} {'dense':>7} {'dense/meas':>10} "
          f"{'ideal':>7} {'meas/ideal':>10} {'overlap':>7} {'sim cyc/s':>9}")
    for r in rows:
        print(f"{r['density']:>7.3f} {r['dv_density']:>7.3f} {r['cycles']:>10.1f} {r['update']:>8.1f} "
              f"{r['dense']:>7d} {r['dense'] / r['cycles']:>10.2f} {r['ideal']:>7.1f} "
              f"{r['cycles'] / max(r['ideal'], 1e-9):>10.2f} {r['overlap']:>7.2f} {r['sim_cps']:>9.0f}")


if __name__ == "__main__":
    main()
