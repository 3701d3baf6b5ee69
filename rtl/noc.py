"""The network-on-chip: one router per core on a 2-D mesh (docs/noc.md).

* :class:`MeshShape`: ``rows x cols`` positions, ``nodes`` of them used, row-major (core
  id ``k`` at row ``k // cols``, column ``k % cols``; the last row may be partial), as
  :class:`~spikeforge.rtl.geometry.ChipGeometry` places cores.
* Three message classes (:class:`MessageClass`), each on its own physical plane (one
  :class:`PlaneRouter` per class and core, parameterised by the payload layout): ``SPIKE``
  (forward, multicast to a core-id range), ``ERROR`` (backward partial sums, unicast) and
  ``HOST`` (unicast). Planes share no buffer, link or arbiter, so no class can block another.
* :class:`Router`: the three planes of one core; :class:`Mesh`: every router of a mesh wired
  together (tests now, the chip later).

Routing is dimension-ordered (XY: along the row first, then along the column) and
deterministic per (source, destination), links are FIFO, so every pair sees its messages in
order. A multicast destination is a core-id range ``[lo, hi]`` given as two mesh positions;
the copies follow the union of the XY paths from the source to every core of the range, a
tree whose forks are made in the routers (one injection). A source in the partial last
row reaches rows above it through a *lift*: one hop north first (flit bit ``lift``), then
XY from the row above -- the only turns XY does not make are north->east/west, a subset of
the south-last turn model, so the channel dependency graph stays acyclic (docs/noc.md).

One router plane (:class:`PlaneRouter`), all single-flit messages:

* each output (eject, N, E, S, W) is one register (``valid`` + flit); the input links are
  read straight from the neighbours' output registers (no input buffers);
* a shared *bus*, in two stages: *decide* (cycle t) picks one input, round-robin among the
  inputs whose head flit can move (some output it still needs is empty, or it needs none);
  *transfer* (t+1) writes that flit to every output it still needs that is empty (the
  multicast fork: one bus cycle makes all copies it can); the head flit leaves its input
  when every branch has been written (per-input ``done`` mask, asynchronous fork); branches
  never wait for each other;
* an output register counts as empty only when ``valid`` is low (not when it is being
  drained), so ``ready`` depends on this router's registers and the input's held payload
  only: no combinational path crosses more than one link, at the price of throughput: an
  output register is rewritten two cycles after it was drained, so a link carries one flit
  every four cycles, an eject port one every three, an inject port one every two.

Counters (``counters=True``, like ``rtl/debug.py``'s debug option): per port of each plane
(:class:`Port`: inject, eject, N, E, S, W) the flits (``valid & ready``) and stalls
(``valid & ~ready``), ``counter_bits`` wide (wrapping), read through ``ctr_addr`` ->
``ctr_data`` (combinational) at :func:`counter_index`. With ``counters=False`` the read port
stays and reads 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, DomainRenamer, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .debug import counter_domain

__all__ = [
    "MessageClass", "Port", "CounterKind", "MeshShape", "PlaneSpec", "DEFAULT_PLANES",
    "spike_payload", "error_payload", "host_payload", "dest_layout", "inject_layout",
    "flit_layout", "counter_index", "COUNTERS_PER_PLANE", "PLANE_STRIDE", "PlaneRouter", "Router", "Mesh",
    "xy_path", "tree_links", "UsedPorts", "used_ports",
]


class MessageClass(enum.Enum, shape=2):
    """The message classes, one physical plane each."""

    SPIKE = 0   # forward: spike events, multicast to the next layer's cores
    ERROR = 1   # backward: error partial sums, unicast to a core of the layer below
    HOST = 2    # host commands and replies, unicast


class Port(enum.Enum, shape=3):
    """Router ports as the counters number them."""

    INJECT = 0
    EJECT = 1
    N = 2
    E = 3
    S = 4
    W = 5


class CounterKind(enum.Enum, shape=1):
    FLITS = 0    # valid & ready
    STALLS = 1   # valid & ~ready


#: Counters of one plane: 2 kinds x 6 ports (read-port indices 0..11 of a plane).
COUNTERS_PER_PLANE = 2 * len(Port)
#: Read-port index stride between planes (a power of two: the plane is the high bits).
PLANE_STRIDE = 16


def counter_index(plane: int, port: Port | int, kind: CounterKind | int) -> int:
    """Read-port index of a counter: ``plane * 16 + port * 2 + kind``."""
    port = port.value if isinstance(port, Port) else int(port)
    kind = kind.value if isinstance(kind, CounterKind) else int(kind)
    return int(plane) * PLANE_STRIDE + port * 2 + kind


def _ubits(n: int) -> int:
    """Unsigned width that holds ``0 .. n-1`` (at least 1 bit)."""
    return max(1, (n - 1).bit_length())


def _posint(who: str, name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{who}: {name}={v!r} must be a positive integer")
    return v


# ------------------------------------------------------------------------------ the mesh
@dataclass(frozen=True)
class MeshShape:
    """``rows x cols`` mesh with ``nodes`` routers placed row-major; only the last row may be
    partial (``nodes > (rows - 1) * cols``)."""

    rows: int
    cols: int
    nodes: int

    def __post_init__(self):
        for name in ("rows", "cols", "nodes"):
            _posint("MeshShape", name, getattr(self, name))
        if self.nodes > self.rows * self.cols:
            raise ValueError(f"MeshShape: {self.nodes} nodes do not fit {self.rows} x {self.cols}")
        if self.nodes <= (self.rows - 1) * self.cols:
            raise ValueError(f"MeshShape: {self.nodes} nodes leave the last of {self.rows} rows "
                             f"of {self.cols} empty; use {-(-self.nodes // self.cols)} rows")

    @classmethod
    def for_nodes(cls, n: int) -> "MeshShape":
        """The shape :class:`ChipGeometry` uses: ``cols = ceil(sqrt(n))``, ``rows = ceil(n / cols)``."""
        _posint("MeshShape.for_nodes", "n", n)
        cols = 1
        while cols * cols < n:
            cols += 1
        return cls(-(-n // cols), cols, n)

    @classmethod
    def from_chip(cls, chip) -> "MeshShape":
        """The mesh of a :class:`~spikeforge.rtl.geometry.ChipGeometry`."""
        return cls(chip.rows, chip.cols, len(chip.cores))

    @property
    def last_width(self) -> int:
        """Routers in the last row."""
        return self.nodes - (self.rows - 1) * self.cols

    @property
    def partial(self) -> bool:
        return self.last_width < self.cols

    @property
    def row_bits(self) -> int:
        return _ubits(self.rows)

    @property
    def col_bits(self) -> int:
        return _ubits(self.cols)

    def position(self, node: int) -> tuple[int, int]:
        if not isinstance(node, int) or not 0 <= node < self.nodes:
            raise ValueError(f"MeshShape: node {node!r} is not in 0..{self.nodes - 1}")
        return divmod(node, self.cols)

    def exists(self, row: int, col: int) -> bool:
        return 0 <= row < self.rows and 0 <= col < self.cols and row * self.cols + col < self.nodes

    def node(self, row: int, col: int) -> int:
        if not self.exists(row, col):
            raise ValueError(f"MeshShape: no router at ({row}, {col}) of {self}")
        return row * self.cols + col


# ------------------------------------------------------------------------------ layouts
def spike_payload(core_bits: int = 5, t_bits: int = 4, neuron_bits: int = 10) -> data.StructLayout:
    """Spike message: source core, timestep, neuron index (within the source layer)."""
    return data.StructLayout({"src": unsigned(core_bits), "t": unsigned(t_bits),
                              "neuron": unsigned(neuron_bits)})


def error_payload(t_bits: int = 4, column_bits: int = 10, e_bits: int = 32) -> data.StructLayout:
    """Error partial sum: timestep, column (input neuron of the receiving layer), value at
    full integer width (reduced at the receiver)."""
    return data.StructLayout({"t": unsigned(t_bits), "column": unsigned(column_bits),
                              "e": signed(e_bits)})


def host_payload(bits: int = 48) -> data.StructLayout:
    """Host message: one opaque word (the host protocol decides its fields)."""
    return data.StructLayout({"data": unsigned(bits)})


def _pos_layout(mesh: MeshShape) -> data.StructLayout:
    return data.StructLayout({"row": unsigned(mesh.row_bits), "col": unsigned(mesh.col_bits)})


def dest_layout(mesh: MeshShape, multicast: bool) -> data.StructLayout:
    """Destination of a flit: a mesh position ``{row, col}`` (unicast) or the positions of
    the first and last core of a core-id range, ``{lo: {row, col}, hi: {row, col}}``."""
    pos = _pos_layout(mesh)
    return data.StructLayout({"lo": pos, "hi": pos}) if multicast else pos


def inject_layout(mesh: MeshShape, payload, multicast: bool) -> data.StructLayout:
    """What a core injects: ``{dst, payload}``."""
    return data.StructLayout({"dst": dest_layout(mesh, multicast), "payload": payload})


def flit_layout(mesh: MeshShape, payload, multicast: bool) -> data.StructLayout:
    """A flit on a link: ``{dst, lift, payload}`` (``lift``: the hop out of a partial last row);
    multicast flits also carry ``one`` (``lo.row == hi.row``) and ``two`` (``hi.row ==
    lo.row + 1``), set by the injecting router, so that routers compare fields only with
    their own constants."""
    fields = {"dst": dest_layout(mesh, multicast), "lift": unsigned(1)}
    if multicast:
        fields.update(one=unsigned(1), two=unsigned(1))
    fields["payload"] = payload
    return data.StructLayout(fields)


@dataclass(frozen=True)
class PlaneSpec:
    """One plane: its message class, payload layout and whether it multicasts."""

    cls: MessageClass
    payload: object
    multicast: bool = False

    def __post_init__(self):
        if not isinstance(self.cls, MessageClass):
            raise TypeError(f"PlaneSpec: cls must be a MessageClass, got {self.cls!r}")
        try:
            width = Shape.cast(self.payload).width
        except TypeError as e:
            raise TypeError(f"PlaneSpec({self.cls.name}): payload {self.payload!r} is not a shape") from e
        if width < 1:
            raise ValueError(f"PlaneSpec({self.cls.name}): payload has no bits")

    @property
    def name(self) -> str:
        return self.cls.name.lower()


#: The lean core's planes (lanes P = 1).
DEFAULT_PLANES = (
    PlaneSpec(MessageClass.SPIKE, spike_payload(), multicast=True),
    PlaneSpec(MessageClass.ERROR, error_payload()),
    PlaneSpec(MessageClass.HOST, host_payload()),
)

_LINKS = ("n", "e", "s", "w")
# output order inside a plane router: eject, N, E, S, W
_EJ, _N, _E, _S, _W = range(5)


def _check_planes(who, planes):
    planes = tuple(planes)
    if not planes:
        raise ValueError(f"{who}: at least one plane is needed")
    for p in planes:
        if not isinstance(p, PlaneSpec):
            raise TypeError(f"{who}: planes must be PlaneSpec, got {p!r}")
    names = [p.name for p in planes]
    if len(set(names)) != len(names):
        raise ValueError(f"{who}: two planes of one class: {names}")
    return planes


def _cmp(x, op: str, k: int):
    """``x op k`` for a constant ``k``, folded to a constant when the range of ``x`` decides
    it (keeps the Verilog free of always-true/false comparisons, Verilator's UNSIGNED)."""
    top = (1 << len(x)) - 1
    lo_true = {"<": k > top, "<=": k >= top, ">": k < 0, ">=": k <= 0, "==": False}[op]
    never = {"<": k <= 0, "<=": k < 0, ">": k >= top, ">=": k > top, "==": k < 0 or k > top}[op]
    if lo_true:
        return Const(1, 1)
    if never:
        return Const(0, 1)
    return {"<": x < k, "<=": x <= k, ">": x > k, ">=": x >= k, "==": x == k}[op]


# ------------------------------------------------------------- static traffic, used ports
def xy_path(mesh: MeshShape, src: int, dst: int) -> list[tuple[int, Port]]:
    """Links ``(node, output port)`` from ``src`` to ``dst`` as the routers route them: along
    the row, then along the column; from a partial last row to a row above, one hop north
    first (the lift)."""
    (r, c), (dr, dc) = mesh.position(src), mesh.position(dst)
    hops = []
    if mesh.partial and r == mesh.rows - 1 and dr < r:
        hops.append((mesh.node(r, c), Port.N))
        r -= 1
    while c != dc:
        step = 1 if dc > c else -1
        hops.append((mesh.node(r, c), Port.E if step > 0 else Port.W))
        c += step
    while r != dr:
        step = 1 if dr > r else -1
        hops.append((mesh.node(r, c), Port.S if step > 0 else Port.N))
        r += step
    return hops


def tree_links(mesh: MeshShape, src: int, dsts) -> set[tuple[int, Port]]:
    """The multicast tree: the union of the XY paths to every destination."""
    links = set()
    for d in dsts:
        links.update(xy_path(mesh, src, d))
    return links


@dataclass(frozen=True)
class UsedPorts:
    """The ports of one plane router that a static traffic pattern uses: ``ins`` among
    ``Port.INJECT, N, E, S, W`` (where flits come from), ``outs`` among ``Port.EJECT, N, E,
    S, W`` (where they go). A router built with them (``PlaneRouter(used=...)``) has no
    input, output register or bus leg for the others."""

    ins: frozenset
    outs: frozenset


_OPPOSITE = {Port.N: Port.S, Port.S: Port.N, Port.E: Port.W, Port.W: Port.E}
_STEP = {Port.N: (-1, 0), Port.S: (1, 0), Port.E: (0, 1), Port.W: (0, -1)}


def used_ports(mesh: MeshShape, flows) -> list[UsedPorts]:
    """Per node, the ports that the flows ``[(source, [destinations]), ...]`` use (unicast:
    one destination; multicast: the range's cores), routed by :func:`tree_links`."""
    ins = [set() for _ in range(mesh.nodes)]
    outs = [set() for _ in range(mesh.nodes)]
    for src, dsts in flows:
        dsts = list(dsts)
        if not dsts:
            continue
        ins[src].add(Port.INJECT)
        for d in dsts:
            outs[d].add(Port.EJECT)
        for node, port in tree_links(mesh, src, dsts):
            outs[node].add(port)
            r, c = mesh.position(node)
            dr, dc = _STEP[port]
            ins[mesh.node(r + dr, c + dc)].add(_OPPOSITE[port])
    return [UsedPorts(frozenset(i), frozenset(o)) for i, o in zip(ins, outs)]


# -------------------------------------------------------------------------- one plane
class PlaneRouter(wiring.Component):
    """The router of one plane at one mesh position (see the module docstring).

    Ports: ``inject`` (In, :func:`inject_layout`), ``eject`` (Out, the payload),
    ``n_in``/``e_in``/``s_in``/``w_in`` (In, :func:`flit_layout`: from the neighbour to the
    north, ...), ``n_out``/``e_out``/``s_out``/``w_out`` (Out, to it); ``ctr_addr`` (In,
    ``port * 2 + kind``), ``ctr_data`` (Out). Ports toward a missing neighbour
    exist but are never used (tie their inputs to 0).

    ``used`` (:class:`UsedPorts`, from :func:`used_ports`): a router for a known traffic
    pattern (the chip's, where every flow is fixed at elaboration) builds only those inputs
    and outputs; the others stay as ports that nothing drives (``ready``/``valid`` 0). A
    flit that routes to a missing output loses that branch, so ``used`` must cover every
    flow (the chip's tests check every message).
    """

    def __init__(self, mesh: MeshShape, node: int, payload, *, multicast: bool = False,
                 counters: bool = True, counter_bits: int = 32, used: "UsedPorts | None" = None):
        if not isinstance(mesh, MeshShape):
            raise TypeError(f"PlaneRouter: mesh must be a MeshShape, got {type(mesh).__name__}")
        self.mesh = mesh
        self.node = node
        self.row, self.col = mesh.position(node)
        self.payload = payload
        self.multicast = bool(multicast)
        self.counters = bool(counters)
        self.counter_bits = _posint("PlaneRouter", "counter_bits", counter_bits)
        if used is not None and not isinstance(used, UsedPorts):
            raise TypeError(f"PlaneRouter: used must be UsedPorts, got {type(used).__name__}")
        self.used = used
        try:
            Shape.cast(payload)
        except TypeError as e:
            raise TypeError(f"PlaneRouter: payload {payload!r} is not a shape") from e
        flit = flit_layout(mesh, payload, multicast)
        members = {
            "inject": In(stream.Signature(inject_layout(mesh, payload, multicast))),
            "eject": Out(stream.Signature(payload)),
        }
        for d in _LINKS:
            members[f"{d}_in"] = In(stream.Signature(flit))
            members[f"{d}_out"] = Out(stream.Signature(flit))
        members["ctr_addr"] = In(unsigned(_ubits(PLANE_STRIDE)))
        members["ctr_data"] = Out(unsigned(self.counter_bits))
        super().__init__(members)

    # ------------------------------------------------------------------ route function
    def _route(self, kind: str, flit):
        """Outputs a head flit from input ``kind`` ('L', 'N', 'E', 'S', 'W': the neighbour it
        came from) asks for: a list of 5 one-bit values (eject, N, E, S, W). Every test is a
        header field against a constant of this router (docs/noc.md, "Routing")."""
        mesh, r, c = self.mesh, self.row, self.col
        R, C = mesh.rows, mesh.cols
        last_partial = mesh.partial and r == R - 1
        lift_row = mesh.partial and r == R - 2
        zero = Const(0, 1)
        req = [zero] * 5
        if self.multicast:
            Lr, Lc = flit.dst.lo.row, flit.dst.lo.col
            Hr, Hc = flit.dst.hi.row, flit.dst.hi.col
            one, two = flit.one, flit.two
            # local delivery: (Lr, Lc) <= (r, c) <= (Hr, Hc) in row-major order
            req[_EJ] = (((_cmp(Lr, "<", r)) | ((_cmp(Lr, "==", r)) & (_cmp(Lc, "<=", c))))
                        & ((_cmp(Hr, ">", r)) | ((_cmp(Hr, "==", r)) & (_cmp(Hc, ">=", c)))))
            # this column's target rows: top = Lr + (_cmp(Lc, ">", c)) .. bottom = Hr - (_cmp(Hc, "<", c))
            left_of_lo, right_of_hi = _cmp(Lc, ">", c), _cmp(Hc, "<", c)
            top_above = Mux(left_of_lo, _cmp(Lr, "<", r - 1), _cmp(Lr, "<", r)) if r >= 1 else zero
            bot_below = Mux(right_of_hi, _cmp(Hr, ">", r + 1), _cmp(Hr, ">", r))
            col_has = Mux(one, ~left_of_lo & ~right_of_hi, ~(two & left_of_lo & right_of_hi))

            def x_phase(lifted, east, west):
                out = [zero] * 5
                if last_partial:
                    # the direct part: targets in this (last) row only
                    gate = _cmp(Hr, "==", R - 1)
                    if east:
                        out[_E] = gate & (_cmp(Hc, ">", c))
                    if west:
                        out[_W] = gate & Mux(_cmp(Lr, "==", R - 1), _cmp(Lc, "<", c), Const(int(c > 0), 1))
                    return out
                one_eff = one
                if lifted is not None:       # rows restricted to <= R-2
                    one_eff = one | (lifted & (_cmp(Lr, "==", R - 2)))
                if east:
                    out[_E] = Mux(one, _cmp(Hc, ">", c), Const(int(c < C - 1), 1))
                if west:
                    out[_W] = Mux(one_eff, _cmp(Lc, "<", c), Const(int(c > 0), 1))
                out[_N] = col_has & top_above
                out[_S] = col_has & bot_below
                if lifted is not None:
                    out[_S] = out[_S] & ~lifted
                return out

            y_north, y_south = top_above, bot_below
        else:
            dr, dc = flit.dst.row, flit.dst.col
            req[_EJ] = (_cmp(dr, "==", r)) & (_cmp(dc, "==", c))

            def x_phase(lifted, east, west):
                out = [zero] * 5
                if east:
                    out[_E] = _cmp(dc, ">", c)
                if west:
                    out[_W] = _cmp(dc, "<", c)
                if last_partial:
                    # only a destination in this (last) row travels along it
                    out = [o & (_cmp(dr, "==", R - 1)) for o in out]
                else:
                    out[_N] = (_cmp(dc, "==", c)) & (_cmp(dr, "<", r))
                    out[_S] = (_cmp(dc, "==", c)) & (_cmp(dr, ">", r))
                return out

            y_north, y_south = _cmp(dr, "<", r), _cmp(dr, ">", r)

        if kind == "L":
            x = x_phase(None, True, True)
            for o in (_N, _E, _S, _W):
                req[o] = x[o]
            if last_partial:
                # the lift: targets in rows above go one hop north first
                lo_row = flit.dst.lo.row if self.multicast else flit.dst.row
                req[_N] = _cmp(lo_row, "<", R - 1)
        elif kind in ("W", "E"):
            lifted = flit.lift if lift_row else None
            x = x_phase(lifted, kind == "W", kind == "E")
            for o in (_N, _E, _S, _W):
                req[o] = x[o]
        elif kind == "N":      # travelling south
            req[_S] = y_south
        elif kind == "S":      # travelling north
            if lift_row:
                lf = flit.lift
                x = x_phase(lf, True, True)
                req[_E] = lf & x[_E]
                req[_W] = lf & x[_W]
                req[_N] = Mux(lf, x[_N], y_north)
            else:
                req[_N] = y_north
        return req

    def elaborate(self, platform):
        m = Module()
        ctr = counter_domain(m, self.counters)
        mesh, r, c = self.mesh, self.row, self.col
        R = mesh.rows
        flit_shape = flit_layout(mesh, self.payload, self.multicast)
        fw = Shape.cast(flit_shape).width
        pw = Shape.cast(self.payload).width

        has = {"n": r > 0, "s": mesh.exists(r + 1, c), "w": c > 0, "e": mesh.exists(r, c + 1)}
        out_exists = [True, has["n"], has["e"], has["s"], has["w"]]
        out_ports = [self.eject, self.n_out, self.e_out, self.s_out, self.w_out]
        has_in = dict(has, l=True)
        if self.used is not None:
            u = self.used
            for k, p in enumerate((Port.EJECT, Port.N, Port.E, Port.S, Port.W)):
                out_exists[k] = out_exists[k] and p in u.outs
            for d, p in (("l", Port.INJECT), ("n", Port.N), ("e", Port.E), ("s", Port.S), ("w", Port.W)):
                has_in[d] = has_in[d] and p in u.ins

        # ---------------------------------------------------------------- inputs
        inj_flit = Signal(flit_shape)
        m.d.comb += [inj_flit.dst.eq(self.inject.payload.dst), inj_flit.lift.eq(0),
                     inj_flit.payload.eq(self.inject.payload.payload)]
        if self.multicast:
            lo, hi = self.inject.payload.dst.lo, self.inject.payload.dst.hi
            m.d.comb += [inj_flit.one.eq(lo.row == hi.row), inj_flit.two.eq(hi.row == lo.row + 1)]
        inputs = [("L", self.inject, inj_flit)] if has_in["l"] else []
        for d, kind in (("n", "N"), ("e", "E"), ("s", "S"), ("w", "W")):
            if has_in[d]:
                port = getattr(self, f"{d}_in")
                inputs.append((kind, port, port.payload))
        n = len(inputs)
        if n == 0:                     # a plane no flow crosses here: nothing to build
            if self.counters:
                m.d.comb += self.ctr_data.eq(0)
            return m

        # ---------------------------------------------------------------- output registers
        o_valid = [Signal(name=f"o{k}_valid") for k in range(5)]
        o_data = [Signal(fw, name=f"o{k}_data", reset_less=True) for k in range(5)]
        o_lift = [Signal(name=f"o{k}_lift", reset_less=True) for k in range(5)]

        # ---------------------------------------------------------------- two stages
        # A (decide, cycle t): pick one input round-robin among those whose head flit can
        # move (an output it still needs is empty, or it needs none): ``x_grant``.
        # B (transfer, cycle t+1): the bus copies the picked flit into every output it still
        # needs that is empty (the multicast fork: all the copies it can make at once) and
        # pops the input when no branch is left; otherwise the input remembers the branches
        # done (``done`` mask, asynchronous fork: a branch never waits for another) and
        # competes again. The flit is still there in B: a stream source holds its payload
        # until ``ready``. An input picked in A is not eligible in the next A (it is in B).
        x_grant = Signal(n)               # the input picked in A, moved in B

        # ---------------------------------------------------------------- requests
        pends, done = [], []
        for i, (kind, port, flit) in enumerate(inputs):
            req = self._route(kind, flit)
            rq = Signal(5, name=f"req_{kind}")
            m.d.comb += rq.eq(Cat(req[k] if out_exists[k] else Const(0, 1) for k in range(5)))
            if self.multicast:
                dn = Signal(5, name=f"done_{kind}")
                pend = Signal(5, name=f"pend_{kind}")
                m.d.comb += pend.eq(rq & ~dn)
            else:
                dn, pend = None, rq
            pends.append(pend)
            done.append(dn)

        def first(vec, width):
            """One-hot of the lowest set bit."""
            return Cat(vec[i] & ~(vec[:i] != 0) if i else vec[0] for i in range(width))

        # ---------------------------------------------------------------- B
        full = Cat((o_valid[k] if out_exists[k] else Const(1, 1)) for k in range(5))
        g_pend = Signal(5)
        pend_expr = Const(0, 5)
        for i in range(n):
            pend_expr = pend_expr | (pends[i] & x_grant[i].replicate(5))
        m.d.comb += g_pend.eq(pend_expr)
        send = Signal(5)
        m.d.comb += send.eq(g_pend & ~full)
        complete = Signal()
        m.d.comb += complete.eq((g_pend & full) == 0)
        for i in range(n):
            if done[i] is not None:
                with m.If(x_grant[i]):
                    m.d.sync += done[i].eq(Mux(complete, 0, done[i] | send))

        # ---------------------------------------------------------------- A: round robin
        # an output is free for A when empty and not being written by B
        free = Signal(5)
        m.d.comb += free.eq(~full & ~send)
        elig = []
        for i, (kind, port, flit) in enumerate(inputs):
            e = Signal(name=f"elig_{kind}")
            m.d.comb += e.eq(port.valid & ~x_grant[i] & ((pends[i] == 0) | ((pends[i] & free) != 0)))
            elig.append(e)
        elig_v = Cat(elig)
        mask = Signal(n, init=(1 << n) - 1)      # inputs at or after the priority pointer
        hi_e = Signal(n)
        m.d.comb += hi_e.eq(elig_v & mask)
        grant = Signal(n)
        m.d.comb += grant.eq(first(Mux(hi_e != 0, hi_e, elig_v), n))
        m.d.sync += x_grant.eq(grant)
        with m.If(grant != 0):
            # priority goes to the inputs after the one granted
            m.d.sync += mask.eq(Cat(grant[:i] != 0 for i in range(n)))

        # ---------------------------------------------------------------- the bus (B)
        bus = Signal(fw)
        # one-hot AND-OR of registered selects: 3 LUT4 per bit for 5 inputs
        bus_expr = Const(0, fw)
        for i, (_, _, flit) in enumerate(inputs):
            bus_expr = bus_expr | (flit.as_value() & x_grant[i].replicate(fw))
        m.d.comb += bus.eq(bus_expr)
        bus_flit = flit_shape(bus)
        for i, (kind, port, flit) in enumerate(inputs):
            m.d.comb += port.ready.eq(x_grant[i] & complete)

        # lift bit of each output (docs/noc.md): N gets it on injection in a partial last
        # row, E/W keep it along the row above; everything else clears it
        lift_n = x_grant[0] if (mesh.partial and r == R - 1 and has_in["l"]) else Const(0, 1)
        lift_ew = bus_flit.lift if (mesh.partial and r == R - 2) else Const(0, 1)
        lift_of = [Const(0, 1), lift_n, lift_ew, Const(0, 1), lift_ew]

        for k in range(5):
            if not out_exists[k]:
                continue
            port = out_ports[k]
            with m.If(port.ready):
                m.d.sync += o_valid[k].eq(0)
            with m.If(send[k]):
                m.d.sync += [o_valid[k].eq(1), o_data[k].eq(bus), o_lift[k].eq(lift_of[k])]
            m.d.comb += port.valid.eq(o_valid[k])
            if k == _EJ:
                m.d.comb += port.payload.eq(flit_shape(o_data[k]).payload)
            else:
                m.d.comb += port.payload.eq(o_data[k])
                m.d.comb += port.payload.lift.eq(o_lift[k])

        # ---------------------------------------------------------------- counters
        cnt = [Signal(self.counter_bits, name=f"ctr{j}") for j in range(COUNTERS_PER_PLANE)]
        watched = {Port.INJECT: self.inject, Port.EJECT: self.eject}
        for p, d in ((Port.N, "n"), (Port.E, "e"), (Port.S, "s"), (Port.W, "w")):
            if out_exists[_LINKS.index(d) + 1]:
                watched[p] = getattr(self, f"{d}_out")
        for p, s in watched.items():
            f_idx = counter_index(0, p, CounterKind.FLITS)
            s_idx = counter_index(0, p, CounterKind.STALLS)
            with m.If(s.valid & s.ready):
                ctr += cnt[f_idx].eq(cnt[f_idx] + 1)
            with m.If(s.valid & ~s.ready):
                ctr += cnt[s_idx].eq(cnt[s_idx] + 1)
        if self.counters:
            m.d.comb += self.ctr_data.eq(Array(cnt + [Const(0, self.counter_bits)] * (
                PLANE_STRIDE - COUNTERS_PER_PLANE))[self.ctr_addr])
        return m


# --------------------------------------------------------------------- one core's router
def _plane_ports(spec: PlaneSpec, mesh: MeshShape) -> dict:
    flit = flit_layout(mesh, spec.payload, spec.multicast)
    p = spec.name
    members = {f"{p}_inject": In(stream.Signature(inject_layout(mesh, spec.payload, spec.multicast))),
               f"{p}_eject": Out(stream.Signature(spec.payload))}
    for d in _LINKS:
        members[f"{p}_{d}_in"] = In(stream.Signature(flit))
        members[f"{p}_{d}_out"] = Out(stream.Signature(flit))
    return members


class Router(wiring.Component):
    """The router of one core: one :class:`PlaneRouter` per plane (default
    :data:`DEFAULT_PLANES`: spike, error, host).

    Ports, per plane ``p`` (``spike``, ``error``, ``host``): ``p_inject``, ``p_eject``,
    ``p_n_in`` ... ``p_w_out`` as in :class:`PlaneRouter`; one counter read port
    ``ctr_addr`` (:func:`counter_index`) -> ``ctr_data``. ``used``: optional
    ``{plane name: UsedPorts}`` (:class:`PlaneRouter`).
    """

    def __init__(self, mesh: MeshShape, node: int, planes=DEFAULT_PLANES, *,
                 counters: bool = True, counter_bits: int = 32, used: dict | None = None):
        if not isinstance(mesh, MeshShape):
            raise TypeError(f"Router: mesh must be a MeshShape, got {type(mesh).__name__}")
        mesh.position(node)
        self.mesh, self.node = mesh, node
        self.planes = _check_planes("Router", planes)
        self.counters = bool(counters)
        self.counter_bits = _posint("Router", "counter_bits", counter_bits)
        self.used = dict(used or {})
        members = {}
        for spec in self.planes:
            members.update(_plane_ports(spec, mesh))
        members["ctr_addr"] = In(unsigned(_ubits(PLANE_STRIDE * len(self.planes))))
        members["ctr_data"] = Out(unsigned(self.counter_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        datas = []
        for k, spec in enumerate(self.planes):
            pr = PlaneRouter(self.mesh, self.node, spec.payload, multicast=spec.multicast,
                             counters=self.counters, counter_bits=self.counter_bits,
                             used=self.used.get(spec.name))
            m.submodules[spec.name] = pr
            p = spec.name
            wiring.connect(m, wiring.flipped(getattr(self, f"{p}_inject")), pr.inject)
            wiring.connect(m, pr.eject, wiring.flipped(getattr(self, f"{p}_eject")))
            for d in _LINKS:
                wiring.connect(m, wiring.flipped(getattr(self, f"{p}_{d}_in")), getattr(pr, f"{d}_in"))
                wiring.connect(m, getattr(pr, f"{d}_out"), wiring.flipped(getattr(self, f"{p}_{d}_out")))
            m.d.comb += pr.ctr_addr.eq(self.ctr_addr[:4])
            datas.append(pr.ctr_data)
        if self.counters:
            plane = self.ctr_addr[4:]
            m.d.comb += self.ctr_data.eq(Array(datas)[plane])
        return m


# ------------------------------------------------------------------------------ the mesh
class Mesh(wiring.Component):
    """Every router of ``mesh`` wired to its neighbours.

    Ports, per plane ``p``: ``p_inject`` (In, array of ``nodes`` streams of
    :func:`inject_layout`) and ``p_eject`` (Out, array of payload streams), element ``k``
    being core ``k``'s local port; counters: ``ctr_node``, ``ctr_addr`` -> ``ctr_data``.
    ``flows``: optional ``{plane name: [(source, [destinations]), ...]}``, the plane's whole
    traffic when it is fixed at elaboration (the chip's): each router then has only the
    ports those flows use (:func:`used_ports`). ``node_domains``: optional clock domain of
    each router, by node (the chip's per-core local resets), else ``sync``.
    """

    def __init__(self, mesh: MeshShape, planes=DEFAULT_PLANES, *, counters: bool = True,
                 counter_bits: int = 32, flows: dict | None = None,
                 node_domains: list[str] | None = None):
        if not isinstance(mesh, MeshShape):
            raise TypeError(f"Mesh: mesh must be a MeshShape, got {type(mesh).__name__}")
        if node_domains is not None and len(node_domains) != mesh.nodes:
            raise ValueError(f"Mesh: {len(node_domains)} node_domains for {mesh.nodes} nodes")
        self.mesh = mesh
        self.node_domains = list(node_domains) if node_domains is not None else None
        self.planes = _check_planes("Mesh", planes)
        self.counters = bool(counters)
        self.counter_bits = _posint("Mesh", "counter_bits", counter_bits)
        members = {}
        for spec in self.planes:
            p = spec.name
            members[f"{p}_inject"] = In(stream.Signature(
                inject_layout(mesh, spec.payload, spec.multicast))).array(mesh.nodes)
            members[f"{p}_eject"] = Out(stream.Signature(spec.payload)).array(mesh.nodes)
        members["ctr_node"] = In(unsigned(_ubits(mesh.nodes)))
        members["ctr_addr"] = In(unsigned(_ubits(PLANE_STRIDE * len(self.planes))))
        members["ctr_data"] = Out(unsigned(self.counter_bits))
        super().__init__(members)
        used = {p: used_ports(mesh, f) for p, f in (flows or {}).items()}
        #: The routers, core k's at index k (a testbench or the chip top may watch their links).
        self.routers = [Router(mesh, k, self.planes, counters=self.counters,
                               counter_bits=self.counter_bits,
                               used={p: u[k] for p, u in used.items()}) for k in range(mesh.nodes)]

    def elaborate(self, platform):
        m = Module()
        mesh = self.mesh
        routers = self.routers
        for k, rt in enumerate(routers):
            dom = self.node_domains[k] if self.node_domains else "sync"
            m.submodules[f"r{k}"] = rt if dom == "sync" else DomainRenamer(dom)(rt)
        for k, rt in enumerate(routers):
            row, col = mesh.position(k)
            for spec in self.planes:
                p = spec.name
                wiring.connect(m, wiring.flipped(getattr(self, f"{p}_inject")[k]),
                               getattr(rt, f"{p}_inject"))
                wiring.connect(m, getattr(rt, f"{p}_eject"),
                               wiring.flipped(getattr(self, f"{p}_eject")[k]))
                if mesh.exists(row, col + 1):
                    east = routers[mesh.node(row, col + 1)]
                    wiring.connect(m, getattr(rt, f"{p}_e_out"), getattr(east, f"{p}_w_in"))
                    wiring.connect(m, getattr(east, f"{p}_w_out"), getattr(rt, f"{p}_e_in"))
                if mesh.exists(row + 1, col):
                    south = routers[mesh.node(row + 1, col)]
                    wiring.connect(m, getattr(rt, f"{p}_s_out"), getattr(south, f"{p}_n_in"))
                    wiring.connect(m, getattr(south, f"{p}_n_out"), getattr(rt, f"{p}_s_in"))
            m.d.comb += rt.ctr_addr.eq(self.ctr_addr)
        if self.counters:
            m.d.comb += self.ctr_data.eq(Array(rt.ctr_data for rt in routers)[self.ctr_node])
        return m
