"""The chip driven over its host link: ``host/link.py`` LinkChip on the fast simulation
transport (``sim/pipe.py``: HostChip Verilated with a C++ main, bytes over pipes), checked
against the bit-exact model (``host/chip.py`` ModelChip) batch by batch, and
``spikeforge train --backend sim`` against ``--backend model`` (same ``weights_sha256``).

Seeded: ``SPIKEFORGE_SEED`` repeats a run; the seed is in every assertion message.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import yaml
import torch

from spikeforge.gen.config import Config, load_config
from spikeforge.host import protocol as hp
from spikeforge.host.chip import ModelChip, weights_sha256
from spikeforge.host.link import LinkChip, LinkError
from spikeforge.model.snn import FixedPointSNN
from spikeforge.sim.pipe import PipeSim, PtyBridge

#: 2 cores, mini-batches (accumulate, nearest rounding): the smallest chip with an update op.
ACC = Config().replace(
    network={"layers": [12, 6, 4], "timesteps": 4},
    hardware={"cores": 2, "lanes": 1, "max_neurons": 8, "max_inputs": 12, "wg_dataflow": "accumulate"},
    train={"batch_size": 2})
#: three weight layers on digits, 64-24-16-10 over 5 cores (the hidden layers split over 2
#: cores each, P = 4), in place with stochastic rounding (the seeds must cross the link right)
DEEP = load_config("digits").replace(
    network={"layers": [64, 24, 16, 10]},
    hardware={"cores": 5, "lanes": 4, "max_neurons": 12, "max_inputs": 64, "wg_dataflow": "inplace"},
    train={"batch_size": 1}, arithmetic={"rounding": "stochastic"})
CHIPS = {"2c-accumulate": ACC, "5c-3layers-inplace-stochastic": DEEP}


def _seed() -> int:
    return int(os.environ.get("SPIKEFORGE_SEED", random.randrange(1 << 30)))


@pytest.mark.parametrize("name", list(CHIPS))
def test_link_chip_matches_model(name):
    """Random batches: every batch's output counts, and the weights after the run, equal the model's."""
    cfg = CHIPS[name]
    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat)")
    g = torch.Generator().manual_seed(seed)
    sizes, T, B = cfg.network.layers, cfg.network.timesteps, cfg.train.batch_size
    w0 = FixedPointSNN(cfg).weights
    model = ModelChip(cfg)
    with PipeSim.for_config(cfg) as sim:
        chip = LinkChip(cfg, sim)
        for c in (chip, model):
            c.load_weights(w0)
            c.set_seeds(seed & 0xFFFF_FFFF or 1)
        assert [torch.equal(a, b) for a, b in zip(chip.read_weights(), w0)] == [True] * len(w0), \
            f"weights read back after loading differ [seed={seed}]"
        for b in range(12):
            rate = float(torch.rand(1, generator=g)) * 0.6
            x = (torch.rand(B, T, sizes[0], generator=g) < rate).to(torch.int64)
            y = torch.randint(0, sizes[-1], (B,), generator=g)
            got, want = chip.train_batch(x, y), model.train_batch(x, y)
            assert torch.equal(got, want), f"batch {b}: counts {got.tolist()} != model {want.tolist()} [seed={seed}]"
        x = (torch.rand(T, sizes[0], generator=g) < 0.3).to(torch.int64)
        assert torch.equal(chip.infer(x), model.infer(x)), f"infer differs [seed={seed}]"
        for l, (a, w) in enumerate(zip(chip.read_weights(), model.read_weights())):
            assert torch.equal(a, w), f"layer {l}: weights differ from the model's after training [seed={seed}]"
        c = chip.counters()
        assert c["device_samples"] == 12 * B and c["link_retries"] == 0, c


class _CorruptOnce:
    """A transport that flips one bit of the first reply it sees of op ``victim``: the
    host must retry with the same seq and get the device's cached reply."""

    def __init__(self, inner, victim: int):
        self.inner, self.victim, self.done = inner, victim, False

    def exchange(self, frame: bytes) -> bytes:
        out = self.inner.exchange(frame)
        body = hp.decode_body(frame.lstrip(b"\x00")[:-1])
        if not self.done and body.code == self.victim:
            self.done = True
            return bytes([out[0] ^ 0x10]) + out[1:]
        return out


def test_link_chip_retries_a_corrupted_reply_without_training_twice():
    cfg = ACC
    w0 = FixedPointSNN(cfg).weights
    x = (torch.rand(2, 4, 12, generator=torch.Generator().manual_seed(5)) < 0.4).to(torch.int64)
    y = torch.tensor([1, 3])
    model = ModelChip(cfg)
    model.load_weights(w0)
    want = model.train_batch(x, y)
    with PipeSim.for_config(cfg) as sim:
        chip = LinkChip(cfg, _CorruptOnce(sim, hp.Op.TRAIN))
        chip.load_weights(w0)
        got = chip.train_batch(x, y)
        c = chip.counters()
        assert c["link_retries"] == 1 and c["device_samples"] == 2, c
        assert torch.equal(got, want)
        assert all(torch.equal(a, b) for a, b in zip(chip.read_weights(), model.read_weights()))


def test_link_chip_refuses_another_chip_and_bad_weights():
    with PipeSim.for_config(ACC) as sim:
        other = ACC.replace(network={"layers": [12, 6, 5]})
        with pytest.raises(ValueError, match=r"layers \[12, 6, 4\].*layers \[12, 6, 5\]"):
            LinkChip(other, sim)
        chip = LinkChip(ACC, sim)
        w = FixedPointSNN(ACC).weights
        with pytest.raises(ValueError, match="layer 1: weights of shape"):
            chip.load_weights([w[0], w[1][:, :3]])
        with pytest.raises(LinkError, match="bad_index"):
            chip.request(hp.Op.READ_WEIGHTS, hp.pack_read_weights(7, 0, 0, 1))


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _train(*args, report):
    r = _cli("train", "-q", *args, "--report", str(report))
    assert r.returncode == 0, r.stderr
    return json.loads(report.read_text())


@pytest.mark.parametrize("net", ["digits", "digits-3layers"])
def test_train_backend_sim_gives_the_model_digest(tmp_path, net):
    """``spikeforge train --backend sim`` ends with the weights ``--backend model`` ends with:
    the digits preset (2 cores, mini-batches of 8) and DEEP (5 cores, three layers, in place)."""
    if net == "digits":
        args = ["--config", "digits", "--limit", "48", "--batch-size", "8"]
    else:
        path = tmp_path / "net.yaml"
        path.write_text(yaml.safe_dump(DEEP.to_dict()))
        args = ["--config", str(path), "--limit", "24"]
    args += ["--epochs", "1", "--seed", "7"]
    sim = _train("--backend", "sim", *args, report=tmp_path / "sim.json")
    model = _train("--backend", "model", *args, report=tmp_path / "model.json")
    assert sim["weights_sha256"] == model["weights_sha256"]
    assert sim["test_accuracy"] == model["test_accuracy"]
    link = sim["host_link"]
    n = 48 if net == "digits" else 24
    assert link["samples_trained"] == n and link["cycles_per_sample"] > 0
    # every train request and reply is counted: at least a header, CRC and delimiter each way
    assert link["bytes_per_op"]["train"]["tx"] >= n * (hp.OVERHEAD_BYTES + 1)
    assert "host_link" not in model


def test_weights_sha256_is_of_the_integers():
    w = [torch.tensor([[1, -2]]), torch.tensor([[3], [4]], dtype=torch.int16)]
    assert weights_sha256(w) == weights_sha256([t.to(torch.int64) for t in w])
    assert weights_sha256(w) != weights_sha256([w[0], w[1] + 1])


DIGITS_SHORT = ["--config", "digits", "--limit", "32", "--batch-size", "8", "--epochs", "1", "--seed", "11"]


def test_train_backend_board_over_a_serial_port(tmp_path):
    """``--backend board``: pyserial on a pseudo-terminal behind which the simulated chip
    answers (what a board's USB UART is to the host) -- the same digest as the model."""
    cfg = load_config("digits").replace(train={"batch_size": 8, "seed": 11})
    with PipeSim.for_config(cfg) as sim, PtyBridge(sim) as pty:
        board = _train("--backend", "board", "--port", pty.port, *DIGITS_SHORT, report=tmp_path / "b.json")
    model = _train("--backend", "model", *DIGITS_SHORT, report=tmp_path / "m.json")
    assert board["weights_sha256"] == model["weights_sha256"]
    assert board["host_link"]["samples_trained"] == 32 and "cycles" not in board["host_link"]


def _user_error(r, *needles):
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("args,needles", [
    (["--backend", "board"], ["--backend board needs --port"]),
    (["--port", "/dev/null"], ["--port DEV goes with --backend board"]),
    (["--backend", "board", "--port", "/nonexistent/ttyX"], ["--port", "/nonexistent/ttyX"]),
    (["--backend", "board", "--port", "/dev/null", "--baud", "0"], ["--baud", "0"]),
])
def test_train_board_flag_errors(args, needles):
    _user_error(_cli("train", *args), *needles)


def test_train_board_with_nothing_answering():
    import pty

    master, slave = pty.openpty()
    try:
        r = _cli("train", "--backend", "board", "--port", os.ttyname(slave), *DIGITS_SHORT, timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    _user_error(r, "no spikeforge chip answered", "version")
