"""How a foreign neuron maps onto the chip's neuron: the rules the importers apply.

The chip's neuron (see :mod:`spikeforge.model.float_twin` for its real-unit form) is
``v[t] = beta * h[t-1] + W x[t]`` with ``beta = 1 - 2**-k``, a spike when ``v >= theta``
and a reset to zero. A foreign LIF neuron is described by its time constant in steps,
``tau_steps = tau / dt`` (NIR, SpikingJelly's ``tau``) or by ``beta`` (snnTorch). The
discretisation is forward Euler, as in snnTorch's NIR exporter and NIR's reference
simulators: ``beta = 1 - dt / tau`` and an input gain ``r * dt / tau``. So
``tau_steps = 2**k`` is exact, and any other ``tau_steps`` is rounded to the nearest power
of two in the log domain. A threshold ``theta_src`` is matched by scaling the neuron's
incoming weights by ``theta / theta_src``: with a reset to zero and no leak potential the
spikes of ``(c W, c theta)`` equal those of ``(W, theta)`` for any ``c > 0``. NIR and
snnTorch fire on ``v > theta``, the chip on ``v >= theta``: they differ only where a
membrane lands exactly on the threshold (not an approximation the importer can report).
"""

from __future__ import annotations

import math

__all__ = ["leak_shift_for", "beta_to_tau_steps", "max_leak_shift"]


def max_leak_shift(cfg) -> int:
    """The largest leak shift ``cfg`` accepts: what stands in for "no leak" (IF neurons)."""
    return min(16, cfg.arithmetic.membrane_bits - 1)


def leak_shift_for(tau_steps: float, cfg) -> int:
    """The leak shift ``k`` whose ``2**k`` is nearest to ``tau_steps`` (log domain), clamped
    to the range the config allows; ``inf`` (no leak) gives :func:`max_leak_shift`."""
    if math.isinf(tau_steps):
        return max_leak_shift(cfg)
    k = int(math.floor(math.log2(tau_steps) + 0.5))
    return max(1, min(k, max_leak_shift(cfg)))


def beta_to_tau_steps(beta: float) -> float:
    """snnTorch's ``beta`` as a time constant in steps: ``beta = 1 - 1 / tau_steps``."""
    return math.inf if beta >= 1.0 else 1.0 / (1.0 - beta)
