"""The Flower apps of ``spikeforge federated``: a ServerApp (integer FedAvg) and a ClientApp (one chip).

Protocol, one message pair per worker and round: the server sends the global weights
(``ArrayRecord`` "weights", one integer array per layer, in the narrowest numpy integer
type that holds ``weight_bits``) and a ``ConfigRecord`` "task" (round, and the run spec as
JSON: resolved config, seed, local epochs, partition, each worker's backend); the worker
loads them into its chip (``model``: :class:`~spikeforge.host.chip.ModelChip`; ``sim``:
:class:`~spikeforge.host.link.LinkChip` over a :class:`~spikeforge.sim.pipe.PipeSim`
started for the round), trains ``local_epochs`` epochs on its shard and replies with the
chip's weights, a ``MetricRecord`` "metrics" (partition-id, num-examples, train-accuracy,
seconds, chip-cycles: simulated cycles, 0 on the model) and a ``ConfigRecord`` "chip"
(backend: what it ran on).

Round policy (worker loss): before a round the server waits up to ``join_timeout`` for all
``workers`` SuperNodes, then sends to those connected (at least ``quorum``). The round
closes when every addressed worker answered; or, once ``quorum`` answered, after a grace
period of ``grace_fraction`` (default 0.5) of the time the quorum took (at least
``min_grace`` s); or at ``round_timeout``.
It aggregates the answers it has if they are at least ``quorum``; otherwise the round
fails and the global weights stay unchanged. Late answers are dropped. A worker that
reconnects (a new SuperNode with the same partition-id) takes part from the next round.

The server appends one JSON line per event to the spec's ``status_file`` (the runner
follows it) and writes the report to ``report_file`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ..host.chip import weights_sha256  # the digest every backend reports

__all__ = ["server_app", "client_app", "stream_seed", "weights_sha256", "wire_dtype", "local_train",
           "worker_backend"]

server_app = ServerApp()
client_app = ClientApp()


# ------------------------------------------------------------------------------ shared
def stream_seed(*parts) -> int:
    """A 63-bit seed from the run seed and labels (worker, round, stream): stable across processes."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def wire_dtype(weight_bits: int):
    """The narrowest numpy integer type that holds a ``weight_bits``-wide signed weight."""
    for dt in (np.int8, np.int16, np.int32):
        if weight_bits <= np.iinfo(dt).bits:
            return dt
    return np.int64


def to_record(weights: list[torch.Tensor], weight_bits: int) -> ArrayRecord:
    dt = wire_dtype(weight_bits)
    return ArrayRecord(array_dict={f"w{l}": Array(w.numpy().astype(dt)) for l, w in enumerate(weights)})


def from_record(rec: ArrayRecord) -> list[torch.Tensor]:
    return [torch.from_numpy(rec[f"w{l}"].numpy().astype(np.int64)) for l in range(len(rec))]


def record_bytes(rec: ArrayRecord) -> int:
    """Serialized parameter bytes of an ArrayRecord (the arrays' payloads)."""
    return sum(len(a.data) for a in rec.values())


_DATA: dict = {}


def _dataset(name: str):
    from ..model.data import load_dataset

    if name not in _DATA:
        _DATA[name] = load_dataset(name)
    return _DATA[name]


# ------------------------------------------------------------------------------ worker
def worker_backend(spec: dict, partition_id: int) -> str:
    """The backend of worker ``partition_id``: ``spec["backends"]`` (a list), else ``model``."""
    backends = spec.get("backends") or ["model"] * spec["workers"]
    return backends[partition_id]


def local_train(spec: dict, partition_id: int, round_no: int, weights: list[torch.Tensor]):
    """One worker's round on its backend's chip: returns (weights, n, accuracy, chip info).

    ``sim``: a fresh simulator for the round (built before the federation started; cached),
    closed when the round ends. ``board``: the chip on the worker's serial port
    (``spec["ports"]``), opened for the round. Chip info: ``{"backend": ..., "cycles": simulated cycles}``.
    """
    from ..gen.config import config_from_dict

    cfg = config_from_dict(spec["config"])
    backend = worker_backend(spec, partition_id)
    if backend == "model":
        from ..host.chip import ModelChip

        out = _train_on(ModelChip(cfg), cfg, spec, partition_id, round_no, weights)
        return (*out, {"backend": backend, "cycles": 0})
    if backend == "sim":
        from ..host.link import LinkChip
        from ..sim.pipe import PipeSim, build_pipe_sim

        with PipeSim(build_pipe_sim(cfg, quiet=True)) as sim:
            out = _train_on(LinkChip(cfg, sim), cfg, spec, partition_id, round_no, weights)
            return (*out, {"backend": backend, "cycles": sim.cycles})
    if backend == "board":
        from ..host.link import LinkChip, SerialTransport

        t = SerialTransport(spec["ports"][str(partition_id)], spec["baud"], timeout=2.0)
        try:
            out = _train_on(LinkChip(cfg, t), cfg, spec, partition_id, round_no, weights)
        finally:
            t.close()
        return (*out, {"backend": backend, "cycles": 0})
    raise ValueError(f"worker {partition_id}: unknown backend {backend!r}")


def _train_on(chip, cfg, spec: dict, partition_id: int, round_no: int, weights):
    """Train ``chip`` for the worker's round: (weights, n, accuracy)."""
    from ..model.train import epoch_batches
    from .partition import partition

    ds = _dataset(cfg.train.dataset)
    shard = partition(ds.y_train, spec["workers"], spec["partition"], spec["seed"])[partition_id]
    if spec.get("shard_limit"):  # smoke runs and tests: the first N samples of the shard
        shard = shard[:spec["shard_limit"]]
    x, y = ds.x_train[shard], ds.y_train[shard]
    chip.load_weights(weights)
    chip.set_seeds(stream_seed(spec["seed"], partition_id, round_no, "lfsr") & 0xFFFF_FFFF)
    g_shuffle = torch.Generator().manual_seed(stream_seed(spec["seed"], partition_id, round_no, "shuffle"))
    g_spikes = torch.Generator().manual_seed(stream_seed(spec["seed"], partition_id, round_no, "spikes"))
    correct = seen = 0
    for _ in range(spec["local_epochs"]):
        for spikes, labels in epoch_batches(x, y, cfg.train.batch_size, cfg.network.timesteps,
                                            g_shuffle, g_spikes):
            counts = chip.train_batch(spikes, labels)
            correct += int((counts.argmax(dim=1) == labels).sum())
            seen += int(labels.shape[0])
    return chip.read_weights(), int(x.shape[0]), correct / max(1, seen)


@client_app.train()
def _worker(msg: Message, context: Context) -> Message:
    t0 = time.perf_counter()
    task = msg.content["task"]
    spec = json.loads(task["spec"])
    pid = int(context.node_config["partition-id"])
    weights, n, acc, chip = local_train(spec, pid, int(task["round"]), from_record(msg.content["weights"]))
    bits = spec["config"]["arithmetic"]["weight_bits"]
    metrics = MetricRecord({"partition-id": pid, "num-examples": n, "train-accuracy": acc,
                            "seconds": time.perf_counter() - t0, "chip-cycles": chip["cycles"]})
    return Message(RecordDict({"weights": to_record(weights, bits), "metrics": metrics,
                               "chip": ConfigRecord({"backend": chip["backend"]})}), reply_to=msg)


# ------------------------------------------------------------------------------ server
class _Status:
    """JSON-lines event log the runner follows."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def __call__(self, event: str, **kw) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"event": event, "t": time.time(), **kw}) + "\n")


def _wait_for_nodes(grid: Grid, want: int, suspects: set[int], timeout: float) -> list[int]:
    """Connected nodes, once ``want`` of them are not ``suspects`` (or at ``timeout``).

    Suspects missed the last round: the SuperLink lists a vanished node for a minute or
    more (its heartbeat patience), so they are addressed but not counted, and a worker
    that reconnects (under a new node id) is waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(set(nodes) - suspects) >= want or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.2)


def run_rounds(grid: Grid, spec: dict) -> dict:
    """The whole federated run on ``grid``; returns the report."""
    from ..gen.config import config_from_dict
    from ..model.snn import FixedPointSNN
    from ..model.train import evaluate
    from .fedavg import fedavg

    status = _Status(spec.get("status_file"))
    cfg = config_from_dict(spec["config"])
    bits = cfg.arithmetic.weight_bits
    ds = _dataset(cfg.train.dataset)
    weights = FixedPointSNN(cfg).weights
    quorum, W = spec["quorum"], spec["workers"]
    t_run = time.monotonic()
    rounds = [{"round": 0, "accuracy": evaluate(FixedPointSNN(cfg, weights), cfg, ds.x_test, ds.y_test),
               "participants": [], "seconds": 0.0, "bytes_down": 0, "bytes_up": 0,
               "weights_sha256": weights_sha256(weights)}]
    status("start", accuracy=rounds[0]["accuracy"])
    task_spec = json.dumps({k: spec.get(k) for k in ("config", "workers", "seed", "local_epochs",
                                                      "partition", "shard_limit", "backends", "ports", "baud")})
    suspects: set[int] = set()
    for r in range(1, spec["rounds"] + 1):
        t0 = time.monotonic()
        nodes = _wait_for_nodes(grid, W, suspects, spec["join_timeout"])
        entry = {"round": r, "addressed": len(nodes)}
        msgs = []
        for nid in nodes:
            rec = to_record(weights, bits)
            content = RecordDict({"weights": rec,
                                  "task": ConfigRecord({"round": r, "spec": task_spec})})
            msgs.append(Message(content, dst_node_id=nid, message_type="train", group_id=str(r)))
        entry["bytes_down"] = sum(record_bytes(m.content["weights"]) for m in msgs)
        status("round_start", round=r, addressed=len(nodes))
        ids = list(grid.push_messages(msgs)) if msgs else []
        sent = dict(zip(ids, nodes))
        pending = set(ids)
        replies, errors = {}, []
        t_quorum = None
        while pending:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                if reply.has_error():
                    errors.append(reply.error.reason)
                    continue
                m = reply.content["metrics"]
                pid = int(m["partition-id"])
                if pid not in replies:
                    replies[pid] = (from_record(reply.content["weights"]), int(m["num-examples"]),
                                    float(m["train-accuracy"]), record_bytes(reply.content["weights"]),
                                    float(m["seconds"]), str(reply.content["chip"]["backend"]),
                                    int(m["chip-cycles"]))
            now = time.monotonic()
            if len(replies) >= quorum and t_quorum is None:
                t_quorum = now
            grace = max(spec["min_grace"], spec.get("grace_fraction", 0.5) * ((t_quorum or now) - t0))
            if (t_quorum is not None and now - t_quorum >= grace) or now - t0 >= spec["round_timeout"]:
                break
            time.sleep(0.1)
        suspects = {sent[i] for i in pending}
        pids = sorted(replies)
        entry.update(participants=pids, missing=len(pending), errors=errors,
                     worker_seconds={str(p): replies[p][4] for p in pids},
                     bytes_up=sum(replies[p][3] for p in pids),
                     samples={str(p): replies[p][1] for p in pids},
                     worker_train_accuracy={str(p): replies[p][2] for p in pids},
                     worker_backends={str(p): replies[p][5] for p in pids},
                     chip_cycles={str(p): replies[p][6] for p in pids if replies[p][6]})
        if len(pids) >= quorum:
            weights = fedavg([replies[p][0] for p in pids], [replies[p][1] for p in pids])
            entry["aggregated"] = True
        else:
            entry["aggregated"] = False
        entry["weights_sha256"] = weights_sha256(weights)
        entry["accuracy"] = evaluate(FixedPointSNN(cfg, weights), cfg, ds.x_test, ds.y_test)
        entry["seconds"] = time.monotonic() - t0
        rounds.append(entry)
        status("round_end", round=r, participants=pids, accuracy=entry["accuracy"],
               aggregated=entry["aggregated"])
    report = {"workers": W, "backends": spec.get("backends") or ["model"] * W, "rounds": rounds,
              "final_accuracy": rounds[-1]["accuracy"],
              "weights_sha256": weights_sha256(weights), "wall_seconds": time.monotonic() - t_run,
              "bytes_down": sum(e["bytes_down"] for e in rounds),
              "bytes_up": sum(e["bytes_up"] for e in rounds)}
    return report, weights


@server_app.main()
def _server(grid: Grid, context: Context) -> None:
    spec = json.loads(Path(str(context.run_config["spec-file"])).read_text())
    status = _Status(spec.get("status_file"))
    try:
        report, weights = run_rounds(grid, spec)
    except Exception as e:  # tell the runner, then let Flower log it
        status("error", message=f"{type(e).__name__}: {e}")
        raise
    torch.save(weights, spec["weights_file"])
    Path(spec["report_file"]).write_text(json.dumps(report, indent=2) + "\n")
    status("done")
