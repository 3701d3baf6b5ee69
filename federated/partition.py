"""Seeded splits of a training set over workers: IID or label-skewed (Dirichlet).

``iid``: a seeded shuffle cut into ``W`` near-equal shards. ``dirichlet:ALPHA``: for every
class, the share of each worker is drawn from ``Dirichlet(ALPHA, ..., ALPHA)`` (small ALPHA:
each worker sees few classes), as in Hsu et al. 2019; draws are repeated (bounded) until
every worker holds at least :data:`MIN_SHARD` samples. The same seed gives the same shards
on every worker and host.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["parse_partition", "partition", "MIN_SHARD"]

#: Smallest shard a worker gets (a worker must be able to fill a few mini-batches).
MIN_SHARD = 10
_MAX_DRAWS = 1000


def parse_partition(spec: str) -> tuple[str, float | None]:
    """``"iid"`` -> ("iid", None); ``"dirichlet:0.5"`` -> ("dirichlet", 0.5). Raises ValueError."""
    if spec == "iid":
        return "iid", None
    kind, _, value = spec.partition(":")
    if kind == "dirichlet":
        try:
            alpha = float(value)
        except ValueError:
            alpha = float("nan")
        if not (alpha > 0 and alpha < float("inf")):
            raise ValueError(f"partition {spec!r}: dirichlet needs a positive ALPHA, e.g. dirichlet:0.5")
        return "dirichlet", alpha
    raise ValueError(f"partition {spec!r}: choose iid or dirichlet:ALPHA")


def partition(labels: torch.Tensor, workers: int, spec: str, seed: int) -> list[torch.Tensor]:
    """Indices into ``labels`` of each worker's shard (sorted; the shards are disjoint and cover all)."""
    kind, alpha = parse_partition(spec)
    n = labels.shape[0]
    if workers < 1 or n < workers * MIN_SHARD:
        raise ValueError(f"{n} samples cannot give {workers} workers {MIN_SHARD} samples each")
    rng = np.random.Generator(np.random.PCG64(seed))
    y = labels.numpy()
    if kind == "iid":
        perm = rng.permutation(n)
        return [torch.from_numpy(np.sort(s)).to(torch.int64) for s in np.array_split(perm, workers)]
    classes = np.unique(y)
    for _ in range(_MAX_DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(workers)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            share = rng.dirichlet(np.full(workers, alpha))
            cuts = (np.cumsum(share)[:-1] * idx.shape[0]).astype(np.int64)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].append(part)
        out = [np.sort(np.concatenate(s)) for s in shards]
        if min(s.shape[0] for s in out) >= MIN_SHARD:
            return [torch.from_numpy(s).to(torch.int64) for s in out]
    raise ValueError(f"partition {spec!r}: no draw in {_MAX_DRAWS} gave every one of {workers} "
                     f"workers {MIN_SHARD} samples (use a larger ALPHA or fewer workers)")
