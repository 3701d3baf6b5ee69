"""Federated averaging in integers: exact weighted sums, then one rounding.

``W = round(sum_k n_k W_k / sum_k n_k)`` per weight, where ``n_k`` is the number of
training samples worker ``k`` trained on. The weighted sum is exact (int64; its bound is
checked), and the division rounds once, half up (:func:`~spikeforge.model.fixedpoint.div_round_half_up`:
``floor((2 S + N) / (2 N))``). No float touches a weight, so a federated run is
reproducible bit for bit, whatever order the workers' replies arrive in.
"""

from __future__ import annotations

import torch

from ..model import fixedpoint as fx

__all__ = ["fedavg"]


def fedavg(weight_sets: list[list[torch.Tensor]], counts: list[int]) -> list[torch.Tensor]:
    """The sample-weighted integer average of the workers' weights (one list of layers per worker)."""
    if not weight_sets or len(weight_sets) != len(counts):
        raise ValueError(f"{len(weight_sets)} weight sets for {len(counts)} sample counts")
    if any(int(n) < 1 for n in counts):
        raise ValueError(f"sample counts must be >= 1, got {counts}")
    total = sum(int(n) for n in counts)
    n_layers = len(weight_sets[0])
    out = []
    for l in range(n_layers):
        shape = weight_sets[0][l].shape
        acc = torch.zeros(shape, dtype=torch.int64)
        peak = 0
        for ws in weight_sets:
            w = ws[l]
            if w.shape != shape or w.dtype.is_floating_point:
                raise ValueError(f"layer {l}: weights of shape {tuple(w.shape)} / {w.dtype}, "
                                 f"expected integer {tuple(shape)}")
            peak = max(peak, int(w.abs().max()) if w.numel() else 0)
        if (2 * peak + 1) * total * 2 >= 1 << 62:  # 2 S + N must fit int64
            raise ValueError("weighted sum would overflow int64")
        for ws, n in zip(weight_sets, counts):
            acc += int(n) * ws[l].to(torch.int64)
        out.append(fx.div_round_half_up(acc, total))
    return out
