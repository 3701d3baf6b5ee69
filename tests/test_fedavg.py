"""Integer FedAvg against a naive Python-integer reference; seeded partitions of the data."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from spikeforge.federated.fedavg import fedavg
from spikeforge.federated.partition import MIN_SHARD, parse_partition, partition
from spikeforge.model import data
from spikeforge.model.fixedpoint import div_round_half_up


def naive_fedavg(sets, counts):
    """sum n_k W_k / sum n_k, rounded to nearest with ties up, in exact rationals."""
    total = sum(counts)
    out = []
    for l in range(len(sets[0])):
        flat = [w[l].flatten().tolist() for w in sets]
        vals = []
        for j in range(len(flat[0])):
            q = Fraction(sum(n * f[j] for n, f in zip(counts, flat)), total)
            vals.append(math.floor(q + Fraction(1, 2)))
        out.append(torch.tensor(vals, dtype=torch.int64).reshape(sets[0][l].shape))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fedavg_matches_naive_reference(seed):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    workers = rng.randint(1, 7)
    bits = rng.choice([8, 12, 16])
    shapes = [(rng.randint(1, 9), rng.randint(1, 9)) for _ in range(rng.randint(1, 3))]
    sets = [[torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), s, generator=g) for s in shapes]
            for _ in range(workers)]
    counts = [rng.randint(1, 500) for _ in range(workers)]
    got = fedavg(sets, counts)
    want = naive_fedavg(sets, counts)
    assert all(torch.equal(a, b) for a, b in zip(got, want)), f"seed {seed}"
    # the average of in-range weights is in range: nothing saturates
    assert all(int(w.max()) < 1 << (bits - 1) and int(w.min()) >= -(1 << (bits - 1)) for w in got)


def test_fedavg_ties_round_up_and_order_does_not_matter():
    a, b = [torch.tensor([[1, -1, 3]])], [torch.tensor([[2, -2, 4]])]
    # (1+2)/2 = 1.5 -> 2, (-1-2)/2 = -1.5 -> -1, (3+4)/2 = 3.5 -> 4
    assert fedavg([a, b], [1, 1])[0].tolist() == [[2, -1, 4]]
    assert fedavg([b, a], [1, 1])[0].tolist() == [[2, -1, 4]]
    # weighted: (3*1 + 1*2) / 4 = 1.25 -> 1
    assert fedavg([a, b], [3, 1])[0].tolist()[0][0] == 1
    assert div_round_half_up(torch.tensor([-5, -3, 5, 7]), 2).tolist() == [-2, -1, 3, 4]


def test_fedavg_rejects_bad_input():
    w = [torch.zeros(2, 2, dtype=torch.int64)]
    with pytest.raises(ValueError):
        fedavg([w, w], [1])
    with pytest.raises(ValueError):
        fedavg([w], [0])
    with pytest.raises(ValueError):
        fedavg([w, [torch.zeros(2, 3, dtype=torch.int64)]], [1, 1])
    with pytest.raises(ValueError):
        fedavg([[w[0].float()]], [1])


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "dirichlet:0.1"])
def test_partition_disjoint_covering_seeded(spec):
    y = data.load_digits().y_train
    seed = 7
    shards = partition(y, 5, spec, seed)
    assert len(shards) == 5
    allidx = torch.cat(shards)
    assert torch.equal(allidx.sort().values, torch.arange(y.shape[0])), spec  # disjoint and covering
    assert min(s.shape[0] for s in shards) >= MIN_SHARD
    again = partition(y, 5, spec, seed)
    assert all(torch.equal(a, b) for a, b in zip(shards, again))
    other = partition(y, 5, spec, seed + 1)
    assert not all(torch.equal(a, b) for a, b in zip(shards, other))


def test_dirichlet_skews_labels():
    """Smaller ALPHA, fewer classes per worker (share of the worker's largest class)."""
    y = data.load_digits().y_train

    def top_share(spec):
        shares = []
        for s in partition(y, 5, spec, 0):
            counts = torch.bincount(y[s], minlength=10)
            shares.append(float(counts.max()) / float(counts.sum()))
        return sum(shares) / len(shares)

    iid, d05, d01 = top_share("iid"), top_share("dirichlet:0.5"), top_share("dirichlet:0.1")
    assert iid < 0.2 and iid < d05 < d01, (iid, d05, d01)
    sizes = [s.shape[0] for s in partition(y, 5, "iid", 0)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("spec", ["", "dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:x", "noniid"])
def test_parse_partition_rejects(spec):
    with pytest.raises(ValueError, match="partition"):
        parse_partition(spec)
