"""``spikeforge federated``: integer FedAvg over W chip workers on Flower.

``gen/cli.py`` wires this in with ``add_federated_parser(subparsers)``::

    spikeforge federated [--workers W] [--backend model|sim|sim:N|board|board:N] [--ports DEV,...]
                         [--baud BAUD] [--rounds R] [--local-epochs E]
                         [--partition iid|dirichlet:ALPHA] [--seed S] [--quorum Q]
                         [--config FILE|PRESET] [--report FILE.json] [--plot FILE.png] [-q]

Starts a Flower SuperLink and W SuperNodes on 127.0.0.1 (see :mod:`.runner`), runs R
rounds, and prints one line per round (accuracy of the global model, participants, bytes,
seconds) and the final ``weights_sha256`` on stdout. Progress goes to stderr. Backends:
``model`` (every worker on the bit-exact model), ``sim`` (every worker on the Verilated
chip behind its host link) or ``sim:N`` (workers 0..N-1 on the simulated chip, the rest on
the model); ``board`` / ``board:N`` likewise with chips on serial ports (``--ports``, one per
board worker, in worker order).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from ..gen.argtypes import positive_int, seed_int

__all__ = ["add_federated_parser", "cmd_federated", "FEDERATED_BACKENDS", "format_report",
           "parse_backend", "worker_backends"]

#: Chip backends a worker can drive (static: `spikeforge --help` must not import torch).
FEDERATED_BACKENDS = ("model", "sim", "board")

_BACKEND_CHOICES = ("model, sim, sim:N, board or board:N (workers 0..N-1 on the simulated chip or on "
                    "boards, the rest on the model)")


def parse_backend(text: str) -> tuple[str, int | None]:
    """``--backend`` text -> ``(backend, N)``: ``("model", None)``, ``("sim", None)``, ``("sim", N)``."""
    name, sep, count = text.partition(":")
    if name not in FEDERATED_BACKENDS or (sep and name == "model"):
        raise ValueError(f"{text!r}: choose {_BACKEND_CHOICES}")
    if not sep:
        return name, None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{text!r}: N in {name}:N must be a whole number of workers, at least 1")
    return name, int(count)


def worker_backends(text: str, workers: int) -> list[str]:
    """The backend of each of ``workers`` workers for ``--backend`` ``text`` (ValueError if bad)."""
    try:
        name, n = parse_backend(text)
    except ValueError as e:
        raise ValueError(f"--backend {e}") from None
    if n is None:
        return [name] * workers
    if n > workers:
        where = "the simulated chip" if name == "sim" else "boards"
        raise ValueError(f"--backend {text}: {n} workers on {where}, but only {workers} "
                         f"workers (--workers)")
    return [name] * n + ["model"] * (workers - n)


def _checked(check):
    """An argparse type that keeps the text once ``check(text)`` accepts it (ValueError: usage error)."""
    def argtype(text: str) -> str:
        try:
            check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return argtype


def _parse_partition(text: str):
    from .partition import parse_partition

    return parse_partition(text)


_backend = _checked(parse_backend)
_partition = _checked(_parse_partition)


def add_federated_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``federated`` to the ``spikeforge`` subparsers; returns it."""
    p = subparsers.add_parser(
        "federated", help="federated averaging over W chip workers (Flower, integer FedAvg)",
        description="Run a Flower SuperLink and one SuperNode per worker on this host (127.0.0.1); "
                    "each worker trains its chip on its shard for E epochs per round, the server "
                    "averages the weights in integers (weighted by sample counts, one half-up "
                    "rounding) and evaluates the global model on the test set.")
    p.add_argument("--workers", type=positive_int, default=5, metavar="W", help="workers (default 5)")
    p.add_argument("--backend", type=_backend, default="model", metavar="model|sim|sim:N|board|board:N",
                   help="chip of the workers. model: the bit-exact fixed-point model (default); "
                        "sim: the Verilated chip behind its host link (built once before the run, "
                        "20-90 s the first time, then cached in build/sim); sim:N: workers 0..N-1 "
                        "on the simulated chip, the others on the model; board, board:N: likewise "
                        "with chips on serial ports (--ports)")
    p.add_argument("--ports", default=None, metavar="DEV,...",
                   help="board workers: their serial ports, comma-separated, one per board worker "
                        "in worker order (e.g. /dev/ttyUSB0,/dev/ttyUSB1)")
    p.add_argument("--baud", type=positive_int, default=None, metavar="BAUD",
                   help="board workers: the serial rate, 8N1 (default: the config's hardware.baud)")
    p.add_argument("--rounds", type=positive_int, default=10, metavar="R", help="rounds (default 10)")
    p.add_argument("--local-epochs", type=positive_int, default=3, metavar="E", dest="local_epochs",
                   help="epochs over its shard each worker trains per round (default 3)")
    p.add_argument("--partition", type=_partition, default="iid", metavar="iid|dirichlet:ALPHA",
                   help="split of the training set: iid, or label skew dirichlet:ALPHA (default iid)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S",
                   help="initial weights, shards, shuffling and spikes (default 0)")
    p.add_argument("--quorum", type=positive_int, default=None, metavar="Q",
                   help="answers a round needs to update the model (default ceil(W/2))")
    p.add_argument("--config", metavar="FILE|PRESET", default="federated-worker",
                   help="config of one worker (default: the federated-worker preset)")
    p.add_argument("--report", metavar="FILE.json", default=None,
                   help="also write the per-round report as JSON")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also plot accuracy against round beside centralised training on the same "
                        "data for R*E epochs (runs that training too)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=cmd_federated)
    return p


def _writable(flag: str, path: str | None) -> None:
    from ..gen.cli import UserError

    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{flag}: cannot write {path}: {parent} is not a writable directory")


def format_report(rep: dict) -> str:
    lines = [f"{'round':>5} {'accuracy':>9} {'participants':<16} {'bytes down':>10} {'bytes up':>9} "
             f"{'seconds':>8}"]
    for e in rep["rounds"]:
        parts = ",".join(map(str, e["participants"])) if e["round"] else "(initial)"
        if e["round"] and not e.get("aggregated", True):
            parts += " (no quorum)"
        lines.append(f"{e['round']:>5} {100 * e['accuracy']:>8.2f}% {parts:<16} {e['bytes_down']:>10} "
                     f"{e['bytes_up']:>9} {e['seconds']:>8.1f}")
    lines.append(f"final accuracy: {100 * rep['final_accuracy']:.2f} % ({rep['workers']} workers, "
                 f"{len(rep['rounds']) - 1} rounds x {rep['local_epochs']} epochs, {rep['partition']}, "
                 f"seed {rep['seed']}; {rep['total_seconds']:.0f} s)")
    backends = rep.get("backends") or []
    if set(backends) - {"model"}:
        lines.append("backends: " + ", ".join(f"worker {k} {b}" for k, b in enumerate(backends)))
    lines.append(f"weights_sha256: {rep['weights_sha256']}")
    return "\n".join(lines) + "\n"


def cmd_federated(args, out: TextIO) -> int:
    """Run ``federated``; the table on ``out``, progress on stderr."""
    from ..gen.cli import UserError, _check_dataset_fit, _load

    cfg = _load(args.config)
    _check_dataset_fit(cfg)
    quorum = args.quorum if args.quorum is not None else (args.workers + 1) // 2
    if quorum > args.workers:
        raise UserError(f"--quorum {quorum} is more than the {args.workers} workers")
    try:
        backends = worker_backends(args.backend, args.workers)
    except ValueError as e:
        raise UserError(str(e)) from None
    ports = [p for p in (args.ports or "").split(",") if p]
    boards = backends.count("board")
    if boards and len(ports) != boards:
        raise UserError(f"--ports: {len(ports)} serial port{'s' if len(ports) != 1 else ''} for "
                        f"{boards} board worker{'s' if boards != 1 else ''} (--backend {args.backend})")
    if ports and not boards:
        raise UserError("--ports goes with --backend board or board:N")
    _writable("--report", args.report)
    _writable("--plot", args.plot)
    from .partition import partition
    from .runner import BoardError, FederatedError, find_tool, run_federated

    try:
        from ..model.data import DatasetError, load_dataset

        ds = load_dataset(cfg.train.dataset)
        partition(ds.y_train, args.workers, args.partition, args.seed)
        for tool in ("flower-superlink", "flower-supernode", "flwr"):
            find_tool(tool)
    except (DatasetError, FederatedError, ValueError) as e:
        raise UserError(str(e)) from None
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"spikeforge: {msg}", file=sys.stderr,
                                                                   flush=True))
    try:
        rep, _ = run_federated(cfg, workers=args.workers, rounds=args.rounds,
                               local_epochs=args.local_epochs, partition=args.partition,
                               seed=args.seed, quorum=quorum, backends=backends, progress=say,
                               ports=ports, baud=args.baud if args.baud is not None else cfg.hardware.baud)
    except BoardError as e:
        raise UserError(str(e)) from None
    except FederatedError as e:
        print(f"spikeforge: error: {e}", file=sys.stderr)
        return 1
    rep["backend"] = args.backend  # as given; rep["backends"]: each worker's
    if args.plot:
        from .report import centralised_curve, plot_accuracy

        say(f"centralised training for {args.rounds * args.local_epochs} epochs (for the plot)")
        central = centralised_curve(cfg.replace(train={"seed": args.seed}), args.rounds * args.local_epochs)
        rep["centralised"] = central
        plot_accuracy(args.plot, {f"FedAvg {args.partition}": rep}, central, args.local_epochs)
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(rep, indent=2) + "\n")
        except OSError as e:
            raise UserError(f"--report: cannot write {args.report}: {e.strerror or e}") from None
    out.write(format_report(rep))
    return 0
