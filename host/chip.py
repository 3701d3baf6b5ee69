"""The host's view of one training chip: load weights, train, infer, read weights back.

:class:`Chip` is the interface every transport implements (the bit-exact model here; the
simulated RTL and a board over UART later), so that host code -- ``spikeforge train``,
federated workers -- drives any of them the same way. Weights cross it as integer
tensors, one ``(n_out, n_in)`` matrix per layer, exactly as the chip stores them.

Batch semantics are the chip's: :meth:`Chip.train` takes one sample and the chip applies
the weight update after every ``train.batch_size`` samples (the gradient of a mini-batch
is computed with the weights of its start and saturates once, as in the model);
:meth:`Chip.flush` applies a short final batch. :meth:`Chip.train_batch` is the same for a
whole mini-batch at once.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch

__all__ = ["Chip", "ModelChip", "weights_sha256"]


def weights_sha256(weights: list[torch.Tensor]) -> str:
    """SHA-256 of integer weights as little-endian int64, layer after layer (row-major):
    the digest two backends must agree on."""
    h = hashlib.sha256()
    for w in weights:
        h.update(w.to(torch.int64).contiguous().numpy().astype("<i8").tobytes())
    return h.hexdigest()


class Chip(ABC):
    """One training chip as the host sees it."""

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def load_weights(self, weights: list[torch.Tensor]) -> None:
        """Write every layer's integer weights (shapes ``(n_out, n_in)``, in range of ``weight_bits``)."""

    @abstractmethod
    def read_weights(self) -> list[torch.Tensor]:
        """Read every layer's weights back as ``torch.int64`` tensors."""

    @abstractmethod
    def train_batch(self, spikes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Train on one mini-batch ``(B, T, n_in)`` 0/1 with labels ``(B,)``: one weight update.

        Returns the output spike counts ``(B, n_out)`` seen during training (before the update).
        """

    @abstractmethod
    def infer(self, spikes: torch.Tensor) -> torch.Tensor:
        """Output spike counts ``(n_out,)`` for one raster ``(T, n_in)``, or ``(B, n_out)`` for ``(B, T, n_in)``."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """Activity counters since construction (samples, updates, weight transfers, ...)."""

    def set_seeds(self, lfsr_seed: int) -> None:
        """Reseed the per-neuron stochastic-rounding streams (no effect under nearest rounding)."""

    # Per-sample training with the chip's batch semantics, on top of train_batch.
    def train(self, spikes: torch.Tensor, label: int) -> None:
        """Queue one sample ``(T, n_in)``; the update happens after ``train.batch_size`` samples."""
        pending = self.__dict__.setdefault("_pending", [])
        pending.append((self._raster(spikes), int(label)))
        if len(pending) == self.cfg.train.batch_size:
            self.flush()

    def flush(self) -> None:
        """Apply the update of the samples queued so far (a short last batch); no-op when none."""
        pending = self.__dict__.get("_pending")
        if pending:
            self._pending = []
            self.train_batch(torch.stack([s for s, _ in pending]),
                             torch.tensor([lab for _, lab in pending], dtype=torch.int64))

    def _raster(self, spikes: torch.Tensor) -> torch.Tensor:
        T, n_in = self.cfg.network.timesteps, self.cfg.network.layers[0]
        if tuple(spikes.shape) != (T, n_in):
            raise ValueError(f"sample of shape {tuple(spikes.shape)}, expected ({T}, {n_in})")
        if spikes.dtype not in (torch.bool, torch.uint8, torch.int64, torch.int32):
            raise ValueError(f"sample of dtype {spikes.dtype}: spikes are bool or integer 0/1")
        return spikes.to(torch.int64)


class ModelChip(Chip):
    """A chip that is the bit-exact model :class:`~spikeforge.model.snn.FixedPointSNN`."""

    def __init__(self, cfg, weights: list[torch.Tensor] | None = None):
        from ..model.snn import FixedPointSNN

        super().__init__(cfg)
        self.net = FixedPointSNN(cfg, weights)
        self._count = {"samples_trained": 0, "updates": 0, "samples_inferred": 0,
                       "weight_loads": 0, "weight_reads": 0}

    def load_weights(self, weights: list[torch.Tensor]) -> None:
        from ..model.snn import FixedPointSNN

        bits = self.cfg.arithmetic.weight_bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for l, w in enumerate(weights):
            if w.dtype.is_floating_point or w.dtype == torch.bool:
                raise ValueError(f"layer {l}: weights of dtype {w.dtype}, expected an integer dtype")
            if w.numel() and (int(w.min()) < lo or int(w.max()) > hi):
                raise ValueError(f"layer {l}: weights outside the {bits}-bit range [{lo}, {hi}]")
        # Validates the shapes; keeps the stochastic-rounding streams running.
        rng = self.net.rng_state
        self.net = FixedPointSNN(self.cfg, list(weights))
        self.net.rng_state = rng
        self._count["weight_loads"] += 1

    def read_weights(self) -> list[torch.Tensor]:
        self._count["weight_reads"] += 1
        return [w.clone() for w in self.net.weights]

    def train_batch(self, spikes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        traces = self.net.train_step(spikes, labels)
        self._count["samples_trained"] += int(labels.shape[0])
        self._count["updates"] += 1
        return traces[-1].count

    def infer(self, spikes: torch.Tensor) -> torch.Tensor:
        single = spikes.dim() == 2
        x = spikes[None] if single else spikes
        with torch.no_grad():
            counts = self.net.forward(x)[-1].count
        self._count["samples_inferred"] += int(x.shape[0])
        return counts[0] if single else counts

    def counters(self) -> dict[str, int]:
        return dict(self._count)

    def set_seeds(self, lfsr_seed: int) -> None:
        from ..model import fixedpoint as fx

        layers = self.cfg.network.layers
        self.net.rng_state = [fx.neuron_seeds(lfsr_seed, l, layers[l + 1]) for l in range(len(layers) - 1)]
