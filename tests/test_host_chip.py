"""The Chip API on the bit-exact model: a ModelChip trains exactly what model/train.py trains."""

from __future__ import annotations

import pytest
import torch

from spikeforge.gen.config import Config
from spikeforge.host.chip import Chip, ModelChip
from spikeforge.model import data
from spikeforge.model.train import train


def _gen(seed: int, stream: int) -> torch.Generator:
    # The seeding model/train.py documents: one generator per stream, (seed << 4) + stream.
    return torch.Generator().manual_seed((seed << 4) + stream)


@pytest.mark.parametrize("rounding,batch,seed", [("nearest", 16, 3), ("stochastic", 7, 11)])
def test_modelchip_sample_by_sample_matches_train(rounding, batch, seed):
    """Fed the same samples in the same order, one at a time, the chip ends with train()'s weights."""
    subset, epochs = 100, 2  # 100 % 7 != 0: a short last batch every epoch
    cfg = Config().replace(train={"epochs": epochs, "batch_size": batch, "seed": seed},
                           arithmetic={"rounding": rounding})
    ref = train(cfg, backend="model", train_subset=subset)

    ds = data.load_digits()
    sel = torch.randperm(ds.x_train.shape[0], generator=_gen(seed, 4))[:subset]
    x, y = ds.x_train[sel], ds.y_train[sel]
    chip = ModelChip(cfg)
    g_shuffle, g_spikes = _gen(seed, 1), _gen(seed, 2)
    T = cfg.network.timesteps
    for _ in range(epochs):
        perm = torch.randperm(subset, generator=g_shuffle)
        for b in range(0, subset, batch):
            idx = perm[b:b + batch]
            spikes = data.rate_encode(x[idx], T, g_spikes)
            for s, lab in zip(spikes, y[idx]):
                chip.train(s.to(torch.uint8), int(lab))
            chip.flush()  # the epoch's short last batch (no-op after a full one)
    got = chip.read_weights()
    assert all(torch.equal(a, b) for a, b in zip(got, ref.weights)), (rounding, batch, seed)
    c = chip.counters()
    assert c["samples_trained"] == subset * epochs
    assert c["updates"] == epochs * -(-subset // batch)
    assert c["weight_reads"] == 1


def test_modelchip_load_read_infer():
    seed = 5
    cfg = Config()
    g = torch.Generator().manual_seed(seed)
    layers = cfg.network.layers
    ws = [torch.randint(-100, 101, (o, i), generator=g) for i, o in zip(layers[:-1], layers[1:])]
    chip = ModelChip(cfg)
    assert isinstance(chip, Chip)
    chip.load_weights(ws)
    back = chip.read_weights()
    assert all(torch.equal(a, b) for a, b in zip(back, ws)), seed
    back[0][0, 0] += 1  # a copy: the chip is not changed through it
    assert torch.equal(chip.read_weights()[0], ws[0])
    x = data.rate_encode(data.load_digits().x_test[:4], cfg.network.timesteps, g)
    counts = chip.infer(x)
    assert counts.shape == (4, layers[-1])
    assert torch.equal(chip.infer(x[1]), counts[1])
    assert int(counts.max()) <= cfg.network.timesteps and int(counts.min()) >= 0


def test_modelchip_rejects_bad_input():
    cfg = Config()
    chip = ModelChip(cfg)
    ws = chip.read_weights()
    big = [w.clone() for w in ws]
    big[1][0, 0] = 1 << (cfg.arithmetic.weight_bits - 1)
    with pytest.raises(ValueError, match="range"):
        chip.load_weights(big)
    with pytest.raises(ValueError, match="shape"):
        chip.load_weights([ws[0][:, :-1], ws[1]])
    with pytest.raises(ValueError, match="dtype"):
        chip.load_weights([w.float() for w in ws])
    with pytest.raises(ValueError, match="shape"):
        chip.train(torch.zeros(3, 3, dtype=torch.uint8), 0)
