"""The shape of one core's work: the integers every RTL component is sized from."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreGeometry", "check_geometry"]


@dataclass(frozen=True)
class CoreGeometry:
    """One core: ``n_neurons`` neurons of a layer with fan-in ``n_in``, ``timesteps`` T, ``lanes`` P."""

    #: Fan-in: inputs (columns of W) of the layer.
    n_in: int
    #: Neurons N this core owns (rows of its W slice).
    n_neurons: int
    #: Timesteps T per sample.
    timesteps: int
    #: Lanes P per engine (a power of two).
    lanes: int
    #: True on the output layer: BP forms ds from spike counts and the label.
    output_layer: bool = True

    def __post_init__(self):
        for name in ("n_in", "n_neurons", "timesteps", "lanes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CoreGeometry.{name}: {v!r} must be a positive integer")
        if self.lanes & (self.lanes - 1):
            raise ValueError(f"CoreGeometry.lanes: {self.lanes} is not a power of two")

    @classmethod
    def from_config(cls, cfg, layer: int = -1) -> "CoreGeometry":
        """The whole of weight layer ``layer`` of ``cfg.network`` on one core."""
        sizes = cfg.network.layers
        n_layers = len(sizes) - 1
        l = layer % n_layers
        return cls(n_in=sizes[l], n_neurons=sizes[l + 1], timesteps=cfg.network.timesteps,
                   lanes=cfg.hardware.lanes, output_layer=(l == n_layers - 1))

    @property
    def blocks(self) -> int:
        """NB = ceil(N / P): neuron blocks."""
        return -(-self.n_neurons // self.lanes)

    @property
    def col_blocks(self) -> int:
        """JB = ceil(n_in / P): column blocks of the error phase."""
        return -(-self.n_in // self.lanes)

    @property
    def weight_depth(self) -> int:
        """Words per weight (and gradient) bank: NB * n_in."""
        return self.blocks * self.n_in

    @property
    def max_events(self) -> int:
        """Largest number of input spike events in one sample: T * n_in."""
        return self.timesteps * self.n_in


def check_geometry(who: str, cfg, geom, *, timesteps: bool = True) -> None:
    """Refuse a geometry that is not a :class:`CoreGeometry` or disagrees with ``cfg``
    (lanes, and optionally timesteps), naming the component and both values."""
    if not isinstance(geom, CoreGeometry):
        raise TypeError(f"{who}: geom must be a CoreGeometry, got {type(geom).__name__}")
    if cfg.hardware.lanes != geom.lanes:
        raise ValueError(f"{who}: geometry has lanes={geom.lanes} but the config has "
                         f"hardware.lanes={cfg.hardware.lanes}; they must agree")
    if timesteps and geom.timesteps != cfg.network.timesteps:
        raise ValueError(f"{who}: geometry has timesteps={geom.timesteps} but the config has "
                         f"network.timesteps={cfg.network.timesteps}; they must agree")
