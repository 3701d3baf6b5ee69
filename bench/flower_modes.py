"""Flower deployment mode vs the simulation engine, same apps, same work: wall time of a run.

    python bench/flower_modes.py [--workers 5] [--rounds 3] [--local-epochs 1]

Deployment: spikeforge's runner (SuperLink + one SuperNode process per worker over HTTP on
127.0.0.1, a new ClientApp process per message). Simulation: ``flwr.simulation.run_simulation``
(Ray actors in this process's Ray cluster; needs ``pip install 'flwr[simulation]'`` and the
loopback interface up). Both run the same ServerApp logic (``run_rounds``) and ClientApp,
and print wall time and the final weights' SHA-256 (the same in both: the result does not
depend on the transport).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def simulation(cfg, workers, rounds, local_epochs, seed):
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from spikeforge.federated import app as fl_app
    from spikeforge.federated.runner import FLOWER_ENV

    os.environ.update(FLOWER_ENV)
    cfg = cfg.replace(train={"seed": seed})
    wd = Path(tempfile.mkdtemp(prefix="spikeforge-flsim-"))
    spec = {"config": cfg.to_dict(), "workers": workers, "rounds": rounds, "local_epochs": local_epochs,
            "partition": "iid", "seed": seed, "quorum": (workers + 1) // 2, "round_timeout": 600.0,
            "join_timeout": 30.0, "min_grace": 2.0}
    out = {}
    server = ServerApp()

    @server.main()
    def _main(grid, context):
        out["report"], _ = fl_app.run_rounds(grid, spec)

    t0 = time.perf_counter()
    run_simulation(server_app=server, client_app=fl_app.client_app, num_supernodes=workers,
                   backend_config={"client_resources": {"num_cpus": 1}})
    wall = time.perf_counter() - t0
    rep = out.get("report")
    if rep is None:  # the ServerApp ran in another process or failed
        raise SystemExit("simulation produced no report")
    return wall, rep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=("both", "deployment", "simulation"), default="both")
    a = ap.parse_args(argv)
    from spikeforge.gen.config import load_config
    from spikeforge.federated.runner import run_federated

    cfg = load_config("federated-worker")
    rows = []
    if a.mode in ("both", "deployment"):
        t0 = time.perf_counter()
        rep, _ = run_federated(cfg, workers=a.workers, rounds=a.rounds, local_epochs=a.local_epochs,
                               seed=a.seed)
        rows.append(("deployment", time.perf_counter() - t0, rep))
    if a.mode in ("both", "simulation"):
        wall, rep = simulation(cfg, a.workers, a.rounds, a.local_epochs, a.seed)
        rows.append(("simulation", wall, rep))
    print(f"{a.workers} workers x {a.rounds} rounds x {a.local_epochs} local epochs, digits, seed {a.seed}")
    print(f"{'mode':<11} {'wall s':>7} {'final acc':>9}  weights_sha256")
    for mode, wall, rep in rows:
        print(f"{mode:<11} {wall:>7.1f} {100 * rep['final_accuracy']:>8.2f}%  {rep['weights_sha256']}")
    print(json.dumps([{"mode": m, "wall_s": w, "worker_seconds": [e.get("worker_seconds") for e in r["rounds"]]}
                      for m, w, r in rows]), file=sys.stderr)


if __name__ == "__main__":
    main()
