"""The shape of one core's work: the integers every RTL component is sized from."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreGeometry", "CorePlacement", "ChipGeometry", "check_geometry"]


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
    #: False on the first layer of a chip: nobody needs the error to the input spikes, so
    #: BP skips its error phase (one cycle a timestep) and sends no error words.
    errors: bool = True

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


@dataclass(frozen=True)
class CorePlacement:
    """One core of the chip: which neurons of which layer it owns, and where it sits."""

    #: Core id, 0 .. cores-1 (row-major position on the mesh).
    core: int
    #: Weight layer (0 = the layer fed by the input spikes).
    layer: int
    #: First neuron of the layer this core owns.
    offset: int
    #: The core's shape (n_in = the layer's fan-in, n_neurons = its slice).
    geom: CoreGeometry
    #: Mesh position (row, column).
    row: int
    col: int


@dataclass(frozen=True)
class ChipGeometry:
    """The whole chip: every core's layer slice and mesh position, derived from a config.

    Each weight layer ``l`` is split by output neurons over ``c_l`` cores in whole blocks of
    ``P = hardware.lanes`` neurons, as evenly as possible (the first cores get one block
    more; only the layer's last core may end in a partial block), so that every core's
    first neuron is a multiple of ``P``; ``c_l`` starts at ``ceil(blocks_l / (max_neurons //
    P))`` and cores left over go, one at a time, to the layer whose largest core has the
    most weights (``n_in * neurons``). Cores are numbered layer
    by layer and placed row-major on a ``rows x cols`` mesh (``cols = ceil(sqrt(cores))``;
    the last row may be partial). The only place per-core sizes come from.
    """

    cores: tuple[CorePlacement, ...]
    rows: int
    cols: int

    @classmethod
    def from_config(cls, cfg, cores: int | None = None) -> "ChipGeometry":
        sizes, hw = cfg.network.layers, cfg.hardware
        n = hw.cores if cores is None else cores
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"hardware.cores: {n!r} must be a positive integer")
        P = hw.lanes
        # a core's slice is whole blocks of P neurons (only a layer's last core may end in a
        # partial block), so that the words a core sends and receives align with its blocks
        per_core_blocks = max(1, hw.max_neurons // P)
        blocks = [-(-sizes[l + 1] // P) for l in range(len(sizes) - 1)]
        per_layer = [-(-blocks[l] // per_core_blocks) for l in range(len(sizes) - 1)]
        if sum(per_layer) > n:
            need = " + ".join(f"{c}" for c in per_layer)
            raise ValueError(
                f"hardware.cores: {n} cores are too few for network.layers={list(sizes)} with "
                f"hardware.max_neurons={hw.max_neurons}: need {need} = {sum(per_layer)}")
        spare = n - sum(per_layer)
        while spare:
            def biggest(l):
                return sizes[l] * -(-blocks[l] // per_layer[l])
            cand = [l for l in range(len(per_layer)) if per_layer[l] < blocks[l]]
            if not cand:
                break
            l = max(cand, key=biggest)
            per_layer[l] += 1
            spare -= 1
        total = sum(per_layer)
        cols = 1
        while cols * cols < total:
            cols += 1
        rows = -(-total // cols)
        placed, k = [], 0
        for l, c in enumerate(per_layer):
            n_out, off = sizes[l + 1], 0
            for m in range(c):
                nb = blocks[l] // c + (1 if m < blocks[l] % c else 0)
                cnt = min(nb * P, n_out - off)
                g = CoreGeometry(n_in=sizes[l], n_neurons=cnt, timesteps=cfg.network.timesteps,
                                 lanes=hw.lanes, output_layer=(l == len(per_layer) - 1),
                                 errors=(l > 0))
                placed.append(CorePlacement(core=k, layer=l, offset=off, geom=g,
                                            row=k // cols, col=k % cols))
                off += cnt
                k += 1
        return cls(cores=tuple(placed), rows=rows, cols=cols)

    def layer_cores(self, layer: int) -> tuple[CorePlacement, ...]:
        """The cores of weight layer ``layer``, in neuron order."""
        return tuple(c for c in self.cores if c.layer == layer)

    def kinds(self) -> list[tuple[str, CoreGeometry]]:
        """The largest core of each layer, named ``layer<l>_<n_in>x<neurons>``: what an
        out-of-context build synthesises (cores of one layer differ by one neuron at most)."""
        out = []
        for l in sorted({c.layer for c in self.cores}):
            g = max((c.geom for c in self.layer_cores(l)), key=lambda g: g.n_neurons)
            out.append((f"layer{l}_{g.n_in}x{g.n_neurons}", g))
        return out


def mul_const(x, k: int):
    """``x * k`` for a constant ``k >= 0`` as a sum of shifted copies of ``x`` (one per set
    bit of ``k``): address arithmetic by a layer size needs no hardware multiplier."""
    from amaranth.hdl import Const, Value

    x = Value.cast(x)
    terms = [x << i for i in range(k.bit_length()) if (k >> i) & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total
