"""Federated learning on digits: IID vs Dirichlet 0.5 / 0.1 vs centralised training.

    python bench/bench_federated.py [--workers 5] [--rounds 10] [--local-epochs 3] [--seed 0]
                                    [--png federated.png] [--json federated.json] [--repeat-iid]

Runs ``spikeforge federated`` (model backend, Flower deployment mode on 127.0.0.1) once per
partition, then centralised training of the same network on the whole training set for
``rounds * local_epochs`` epochs, prints a table (final accuracy, rounds, wall time, bytes
per round) and writes the accuracy-against-round PNG. ``--repeat-iid`` runs IID a second
time with the same seed and reports whether the weights are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partitions", default="iid,dirichlet:0.5,dirichlet:0.1")
    ap.add_argument("--png", default="federated.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat-iid", action="store_true")
    a = ap.parse_args(argv)

    from spikeforge.federated.report import centralised_curve, plot_accuracy
    from spikeforge.federated.runner import run_federated
    from spikeforge.gen.config import load_config

    cfg = load_config("federated-worker")
    say = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    runs = {}
    for spec in a.partitions.split(","):
        print(f"FedAvg {spec} ...", file=sys.stderr, flush=True)
        runs[spec], _ = run_federated(cfg, workers=a.workers, rounds=a.rounds,
                                      local_epochs=a.local_epochs, partition=spec, seed=a.seed,
                                      progress=say)
    repeat = None
    if a.repeat_iid and "iid" in runs:
        print("FedAvg iid again (same seed) ...", file=sys.stderr, flush=True)
        repeat, _ = run_federated(cfg, workers=a.workers, rounds=a.rounds, local_epochs=a.local_epochs,
                                  partition="iid", seed=a.seed, progress=say)
    print("centralised ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    central = centralised_curve(cfg.replace(train={"seed": a.seed}), a.rounds * a.local_epochs)
    central_s = time.perf_counter() - t0

    print(f"digits, 64-128-10, {a.workers} workers, {a.rounds} rounds x {a.local_epochs} local epochs, "
          f"seed {a.seed}")
    print(f"{'run':<18} {'final acc':>9} {'best acc':>9} {'rounds':>6} {'wall s':>7} {'s/round':>7} "
          f"{'bytes/round':>11}")
    for spec, rep in runs.items():
        accs = [e["accuracy"] for e in rep["rounds"][1:]]
        per_round = (rep["bytes_down"] + rep["bytes_up"]) / max(1, len(accs))
        print(f"{'FedAvg ' + spec:<18} {100 * rep['final_accuracy']:>8.2f}% {100 * max(accs):>8.2f}% "
              f"{len(accs):>6} {rep['total_seconds']:>7.0f} {rep['wall_seconds'] / len(accs):>7.1f} "
              f"{per_round:>11.0f}")
    print(f"{'centralised':<18} {100 * central[-1]['accuracy']:>8.2f}% "
          f"{100 * max(c['accuracy'] for c in central):>8.2f}% {'-':>6} {central_s:>7.0f} {'-':>7} {'-':>11}"
          f"   ({len(central)} epochs)")
    for spec, rep in runs.items():
        print(f"weights_sha256 {spec}: {rep['weights_sha256']}")
    if repeat is not None:
        same = repeat["weights_sha256"] == runs["iid"]["weights_sha256"]
        print(f"iid repeated with the same seed: {'bit-identical' if same else 'DIFFERENT'} weights")
    plot_accuracy(a.png, {f"FedAvg {s}": r for s, r in runs.items()}, central, a.local_epochs)
    print(f"plot: {a.png}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "centralised": central, "centralised_seconds": central_s,
                       "repeat_iid": repeat}, f, indent=2)


if __name__ == "__main__":
    main()
