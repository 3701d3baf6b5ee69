"""argparse value types shared by the ``spikeforge`` subcommands (one message style)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "seed_int", "unit_float"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: samples, workers, rounds...)."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def seed_int(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    v = _int(text)
    if not 0 <= v < 2 ** 32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {v}")
    return v


def unit_float(text: str) -> float:
    """A number in [0, 1] (a density, a probability)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v
