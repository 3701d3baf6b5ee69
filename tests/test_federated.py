"""``spikeforge federated`` on the real Flower (SuperLink + SuperNodes on 127.0.0.1).

Default regression: one 5-worker run on small shards in which 1 and then 2 workers are
killed mid-round; the rounds complete, the workers rejoin, and the global weights equal an
in-process replay (each participant's local training + the naive FedAvg reference) bit for
bit; and one 3-worker run with worker 0 on the simulated chip (LinkChip over PipeSim)
whose every round's weights equal the all-model federation's. ``-m slow``: full 5-worker
runs (same seed twice: identical weights; IID within 2 points of centralised training),
and the CLI with ``--backend sim:1`` against ``--backend model`` on full shards;
bench/bench_federated.py and bench/bench_federated_backends.py measure them.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from spikeforge.federated.app import local_train, weights_sha256
from spikeforge.federated.runner import FLOWER_ENV, Fault, run_federated
from spikeforge.gen.config import load_config
from spikeforge.model import data
from spikeforge.model.snn import FixedPointSNN
from spikeforge.model.train import evaluate

from .test_cli import assert_user_error, run
from .test_fedavg import naive_fedavg


def _replay(cfg, rep, spec_extra, shas=None):
    """The run's global weights recomputed in this process from the rounds' participants, every
    worker on the model (an all-model run); ``shas`` gets each round's ``weights_sha256``."""
    spec = {"config": cfg.to_dict(), "workers": rep["workers"], "seed": rep["seed"],
            "local_epochs": rep["local_epochs"], "partition": rep["partition"], **spec_extra}
    weights = FixedPointSNN(cfg).weights
    accs = []
    if shas is not None:
        shas.append(weights_sha256(weights))
    for e in rep["rounds"][1:]:
        outs = [local_train(spec, p, e["round"], weights) for p in e["participants"]]
        assert all(o[3]["backend"] == "model" for o in outs)
        if e["aggregated"]:
            weights = naive_fedavg([o[0] for o in outs], [o[1] for o in outs])
        accs.append(evaluate(FixedPointSNN(cfg, weights), cfg, *_test_set()))
        if shas is not None:
            shas.append(weights_sha256(weights))
    return weights, accs


def _small_cfg(seed):
    """64-16-10 on 2 cores, stochastic rounding (so the LFSR seeds count too): a quick build."""
    return load_config("federated-worker").replace(
        network={"layers": [64, 16, 10]}, hardware={"cores": 2, "max_inputs": 64, "max_neurons": 16},
        arithmetic={"rounding": "stochastic"}, train={"seed": seed})


def _test_set():
    ds = data.load_digits()
    return ds.x_test, ds.y_test


def test_kill_and_rejoin_rounds_complete_bit_exact():
    seed, limit = 3, 40
    cfg = load_config("federated-worker").replace(train={"seed": seed})
    faults = (Fault(round=1, workers=(4,)), Fault(round=2, workers=(1, 3)))
    t0 = time.monotonic()
    rep, weights = run_federated(cfg, workers=5, rounds=3, local_epochs=1, seed=seed, faults=faults,
                                 shard_limit=limit, join_timeout=180, timeout=600)
    wall = time.monotonic() - t0
    rounds = rep["rounds"]
    assert [e["round"] for e in rounds] == [0, 1, 2, 3]
    assert all(e["aggregated"] for e in rounds[1:]), rounds
    # killed mid-round: missing from that round; restarted: back in the next one
    assert rounds[1]["participants"] == [0, 1, 2, 3], (seed, rounds[1])
    assert rounds[2]["participants"] == [0, 2, 4], (seed, rounds[2])
    assert rounds[3]["participants"] == [0, 1, 2, 3, 4], (seed, rounds[3])
    assert rep["rejoins"] == {"1": 1, "3": 1, "4": 1}
    # bytes: every message carries the 64x128 + 128x10 int16 weights (plus small array headers)
    n_weights = 64 * 128 + 128 * 10
    for e in rounds[1:]:
        per_msg = e["bytes_down"] / e["addressed"]
        assert per_msg == int(per_msg) and 2 * n_weights <= per_msg < 2 * n_weights + 512, e
        assert e["bytes_up"] == per_msg * len(e["participants"]), e
    # the same bits as a replay in this process (Flower, processes and kills change nothing)
    want, accs = _replay(cfg, rep, {"shard_limit": limit})
    assert all(torch.equal(a, b) for a, b in zip(weights, want)), f"seed {seed}"
    assert rep["weights_sha256"] == weights_sha256(want)
    assert [e["accuracy"] for e in rounds[1:]] == accs
    assert wall < 600


def test_one_sim_worker_same_bits_as_all_model():
    """Worker 0 on the Verilated chip (LinkChip over PipeSim), 1 and 2 on the model: every
    round's global weights equal those of the all-model federation, bit for bit."""
    seed, limit = 7, 24
    cfg = _small_cfg(seed)
    said = []
    rep, weights = run_federated(cfg, workers=3, rounds=2, local_epochs=1, seed=seed, quorum=3,
                                 backends=["sim", "model", "model"], shard_limit=limit,
                                 join_timeout=120, timeout=400, progress=said.append)
    assert any(m.startswith("building the simulated chip") for m in said), said
    assert rep["backends"] == ["sim", "model", "model"]
    for e in rep["rounds"][1:]:
        assert e["participants"] == [0, 1, 2] and e["aggregated"], e
        # what the workers report they ran on: worker 0 clocked the simulated chip
        assert e["worker_backends"] == {"0": "sim", "1": "model", "2": "model"}, e
        assert list(e["chip_cycles"]) == ["0"] and e["chip_cycles"]["0"] > 10_000, e
    shas = []
    want, accs = _replay(cfg, rep, {"shard_limit": limit}, shas)
    assert [e["weights_sha256"] for e in rep["rounds"]] == shas
    assert rep["weights_sha256"] == shas[-1] == weights_sha256(weights)
    assert all(torch.equal(a, b) for a, b in zip(weights, want))
    assert [e["accuracy"] for e in rep["rounds"][1:]] == accs
    assert len(set(shas)) == len(shas), "training changed nothing: the test would prove nothing"


def test_cli_federated_user_errors(tmp_path):
    assert_user_error(run("federated", "--partition", "dirichlet:0"), "dirichlet", "ALPHA")
    assert_user_error(run("federated", "--partition", "skewed"), "skewed")
    assert_user_error(run("federated", "--backend", "board"), "--ports", "0 serial ports for 5 board workers")
    assert_user_error(run("federated", "--backend", "board:2", "--ports", "/dev/a"), "1 serial port for 2")
    assert_user_error(run("federated", "--ports", "/dev/a"), "--ports goes with --backend board")
    assert_user_error(run("federated", "--backend", "board:1", "--ports", "/nonexistent/tty9"),
                      "worker 0", "/nonexistent/tty9")
    assert_user_error(run("federated", "--backend", "gpu"), "'gpu'", "model, sim, sim:N, board or board:N")
    assert_user_error(run("federated", "--backend", "sim:0"), "'sim:0'", "at least 1")
    assert_user_error(run("federated", "--backend", "sim:two"), "'sim:two'")
    assert_user_error(run("federated", "--backend", "model:1"), "'model:1'")
    assert_user_error(run("federated", "--workers", "3", "--backend", "sim:4"), "sim:4", "3 workers")
    assert_user_error(run("federated", "--workers", "0"), "--workers")
    assert_user_error(run("federated", "--workers", "3", "--quorum", "4"), "--quorum")
    assert_user_error(run("federated", "--workers", "200"), "200 workers")
    bad = tmp_path / "mnist-on-64.yaml"
    bad.write_text("train:\n  dataset: mnist\n")  # default 64-input network on 784-input data
    assert_user_error(run("federated", "--config", str(bad)), "network.layers[0]")
    assert_user_error(run("federated", "--report", str(tmp_path / "no" / "r.json")), "--report")
    assert_user_error(run("federated", "--config", str(tmp_path / "none.yaml")), "none.yaml")


def test_cli_federated_help_lists_only_working_backends():
    r = run("federated", "--help")
    assert r.returncode == 0
    assert "--backend model|sim|sim:N|board|board:N" in r.stdout and "--ports" in r.stdout
    assert "federated" in run("--help").stdout


def test_worker_backends():
    from spikeforge.federated.cli import worker_backends

    assert worker_backends("model", 3) == ["model"] * 3
    assert worker_backends("sim", 2) == ["sim"] * 2
    assert worker_backends("sim:1", 5) == ["sim", "model", "model", "model", "model"]
    assert worker_backends("sim:3", 3) == ["sim"] * 3
    with pytest.raises(ValueError, match="only 2 workers"):
        worker_backends("sim:3", 2)
    assert worker_backends("board:2", 4) == ["board", "board", "model", "model"]
    with pytest.raises(ValueError, match="3 workers on boards, but only 2"):
        worker_backends("board:3", 2)


def test_one_board_worker_over_a_serial_port_same_bits_as_all_model():
    """Worker 0 drives a chip over a serial port (pyserial on a pseudo-terminal with the
    simulated chip behind it, ``sim.pipe.PtyBridge``): every round's global weights equal
    those of the all-model federation."""
    from spikeforge.sim.pipe import PipeSim, PtyBridge

    seed, limit = 5, 16
    cfg = _small_cfg(seed)
    said = []
    with PipeSim.for_config(cfg) as sim, PtyBridge(sim) as pty:
        rep, weights = run_federated(cfg, workers=3, rounds=2, local_epochs=1, seed=seed, quorum=3,
                                     backends=["board", "model", "model"], ports=[pty.port],
                                     shard_limit=limit, join_timeout=120, timeout=400, progress=said.append)
    assert f"worker 0: chip found on {pty.port}" in said, said
    for e in rep["rounds"][1:]:
        assert e["participants"] == [0, 1, 2] and e["worker_backends"]["0"] == "board", e
    shas = []
    want, _ = _replay(cfg, rep, {"shard_limit": limit}, shas)
    assert [e["weights_sha256"] for e in rep["rounds"]] == shas
    assert all(torch.equal(a, b) for a, b in zip(weights, want))
    assert len(set(shas)) == len(shas), "training changed nothing: the test would prove nothing"


def test_flower_runs_offline_env():
    assert FLOWER_ENV == {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                          "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


@pytest.mark.slow
def test_same_seed_same_bits_five_workers():
    cfg = load_config("federated-worker")
    a, wa = run_federated(cfg, workers=5, rounds=3, local_epochs=1, seed=1)
    b, wb = run_federated(cfg, workers=5, rounds=3, local_epochs=1, seed=1)
    assert a["weights_sha256"] == b["weights_sha256"]
    assert all(torch.equal(x, y) for x, y in zip(wa, wb))
    assert [e["participants"] for e in a["rounds"][1:]] == [[0, 1, 2, 3, 4]] * 3


@pytest.mark.slow
def test_iid_fedavg_within_two_points_of_centralised():
    from spikeforge.federated.report import centralised_curve

    rounds, epochs, seed = 10, 3, 0
    cfg = load_config("federated-worker")
    rep, _ = run_federated(cfg, workers=5, rounds=rounds, local_epochs=epochs, seed=seed)
    central = centralised_curve(cfg.replace(train={"seed": seed}), rounds * epochs)
    assert rep["final_accuracy"] >= central[-1]["accuracy"] - 0.02, (rep["final_accuracy"], central[-1])


@pytest.mark.slow
def test_cli_one_sim_worker_full_shards_same_bits_as_all_model(tmp_path):
    """``spikeforge federated --backend sim:1`` and ``--backend model`` on the preset, full
    shards: the same weights_sha256 every round; the report and the table name each worker's
    backend. Default quorum (3 of 5): the sim worker, about 3x slower, still makes every
    round (the mixed-run grace; with the plain grace it would be dropped as late)."""
    reps, errs = {}, {}
    for backend in ("model", "sim:1"):
        report = tmp_path / f"{backend}.json"
        r = run("federated", "--workers", "5", "--rounds", "2", "--local-epochs", "1", "--seed", "0",
                "--backend", backend, "--report", str(report))
        assert r.returncode == 0, r.stderr
        reps[backend], errs[backend] = json.loads(report.read_text()), r.stderr
        assert reps[backend]["backend"] == backend
        assert ("backends: worker 0 sim, worker 1 model" in r.stdout) == (backend == "sim:1")
    assert reps["model"]["backends"] == ["model"] * 5
    assert reps["sim:1"]["backends"] == ["sim"] + ["model"] * 4
    assert "building the simulated chip" in errs["sim:1"] and "simulated" not in errs["model"]
    for e in reps["sim:1"]["rounds"][1:]:
        assert e["participants"] == [0, 1, 2, 3, 4], e
        assert e["worker_backends"]["0"] == "sim" and e["chip_cycles"]["0"] > 0, e
    assert [e["weights_sha256"] for e in reps["sim:1"]["rounds"]] == \
        [e["weights_sha256"] for e in reps["model"]["rounds"]]
