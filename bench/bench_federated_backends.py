"""Federated wall time: every worker on the model vs one worker on the simulated chip.

    python bench/bench_federated_backends.py [--workers 5] [--rounds 2] [--local-epochs 1]
                                             [--seed 0] [--config federated-worker] [--json FILE]

Builds the config's pipe simulator first (timed on its own: cached after the first time),
then runs the same federation (Flower deployment mode on 127.0.0.1, full shards) with
``--backend model`` and with ``--backend sim:1`` and prints, per run, the wall time, the
seconds per round and the slowest worker's seconds per round, and whether every round's
``weights_sha256`` is the same in both runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="federated-worker")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    from spikeforge.federated.cli import worker_backends
    from spikeforge.federated.runner import run_federated
    from spikeforge.gen.config import load_config
    from spikeforge.sim.pipe import build_pipe_sim

    cfg = load_config(a.config)
    t0 = time.perf_counter()
    build_pipe_sim(cfg.replace(train={"seed": a.seed}), quiet=True)
    build_s = time.perf_counter() - t0
    say = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    runs = {}
    for spec in ("model", "sim:1"):
        print(f"--backend {spec} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rep, _ = run_federated(cfg, workers=a.workers, rounds=a.rounds, local_epochs=a.local_epochs,
                               seed=a.seed, backends=worker_backends(spec, a.workers), progress=say)
        rep["bench_seconds"] = time.perf_counter() - t0
        runs[spec] = rep

    print(f"{a.config}: {'-'.join(map(str, cfg.network.layers))}, {a.workers} workers, {a.rounds} rounds "
          f"x {a.local_epochs} local epoch(s), seed {a.seed}, full shards")
    print(f"pipe simulator build (before the run; cached afterwards): {build_s:.1f} s")
    print(f"{'backend':<8} {'wall s':>7} {'s/round':>8} {'model worker s/round':>21} "
          f"{'sim worker s/round':>19} {'final acc':>9}")
    for spec, rep in runs.items():
        rounds = rep["rounds"][1:]
        ws = {b: [s for e in rounds for p, s in e["worker_seconds"].items()
                  if e["worker_backends"][p] == b] for b in ("model", "sim")}
        mean = lambda xs: f"{sum(xs) / len(xs):.1f}" if xs else "-"  # noqa: E731
        print(f"{spec:<8} {rep['bench_seconds']:>7.1f} {rep['wall_seconds'] / len(rounds):>8.1f} "
              f"{mean(ws['model']):>21} {mean(ws['sim']):>19} {100 * rep['final_accuracy']:>8.2f}%")
    same = ([e["weights_sha256"] for e in runs["model"]["rounds"]]
            == [e["weights_sha256"] for e in runs["sim:1"]["rounds"]])
    print(f"every round's weights_sha256 equal: {same} (final {runs['model']['weights_sha256'][:16]}...)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"build_seconds": build_s, "runs": runs}, f, indent=2)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
