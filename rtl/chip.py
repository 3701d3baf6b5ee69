"""The N-core chip: cores on the network-on-chip, the timestep barrier, the error reduction,
and the host's command port (docs/chip.md).

Every core of :class:`~spikeforge.rtl.geometry.ChipGeometry` gets a router of the
:class:`~spikeforge.rtl.noc.Mesh` and four small adapters:

* :class:`SpikeSource`: the core's spike words, as column blocks of the next layer, and
  after each timestep a *marker*, multicast on the spike plane to every core of the next
  layer (one injection; the routers make the copies).
* :class:`SpikeMerge`: the timestep barrier. Spike words of any timestep set bits in a
  ``T x fan-in`` bitmap; a timestep is released to the core, as events in ascending column
  order, once every core of the layer below has sent its marker for it (the input layer's
  one source is the host). After ``T-1`` the ``end`` item closes the sample.
* :class:`ErrorSource`: the BP engine's error words ``{t, jb, e[P]}``, each to the core of
  the layer below that owns column block ``jb``, and after the backward pass an ``end``
  to every core of that layer (error plane, unicast).
* :class:`ErrorReduce` (hidden cores): sums the partial sums of every core above at full
  integer width (so arrival order changes no bit), and once all have sent ``end`` narrows
  them exactly as the model does (``sat(round(e >> error_shift), error_bits)``) into the
  core's ``ds_in``: ``T x NB`` words, which the core's ``train_ds`` waits for.
* :class:`HostAgent`: commands from the host plane to the core, responses back to the
  host bridge at core 0. In the accumulate dataflow it holds ``train``/``train_ds``/
  ``infer`` until the core's event list is closed (that dataflow loads events while idle).

Host side (core 0's router): ``cmd`` (In, :func:`chip_cmd_layout`: ``{core, op, i, j,
data}``, the core's own command), ``rsp`` (Out, :func:`chip_rsp_layout`: one response per
command, ``{core, status, data}``; a ``core`` past the last answers ``bad_index`` at once)
and ``ev_in`` (In, :func:`chip_event_layout`: the input layer's events ``{t, j, end}`` in
non-decreasing ``t``, like a core's). A driver sends one command at a time per core, and
the run commands of a sample in layer order (``train_ds`` to every core, the input events,
then waits for every response).
"""

from __future__ import annotations

from amaranth.hdl import (Array, ClockSignal, Const, DomainRenamer, Instance, Module, Mux,
                          ResetSignal, Shape, Signal, Value, signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import arith
from .core import Core
from .geometry import ChipGeometry, mul_const
from .interfaces import (IDX_BITS, Op, Phase, Status, ds_layout, err_layout, event_layout,
                         spike_word_layout, ubits)
from .noc import Mesh, MeshShape, MessageClass, PlaneSpec, inject_layout
from .resets import local_reset_domain
from .wg import inplace

__all__ = ["Chip", "core_module_name", "core_instance", "core_domain", "RESET_STAGES", "chip_planes", "chip_flows", "chip_cmd_layout", "chip_rsp_layout", "chip_event_layout",
           "chip_error_width", "BITMAP_WORD", "MON_KINDS"]

#: The chip's monitor kinds per core, in ``mon_valid`` bit order.
MON_KINDS = ("spk", "err", "ev", "ds", "w")

#: Bits per word of a :class:`SpikeMerge` bitmap (the scan skips a zero word in one read).
BITMAP_WORD = 16

#: Registers between the chip's ``sync`` reset and each core's local reset (see
#: :func:`local_resets`): a core, its adapters and its router leave reset this many cycles
#: after the chip's ``sync`` domain.
RESET_STAGES = 2


def core_domain(k: int) -> str:
    """The clock domain of core ``k``, its adapters and its router: ``sync``'s clock, its
    own reset (:func:`local_resets`)."""
    return f"core{k}_sync"


def local_resets(m, n: int) -> None:
    """One reset per core (its core, adapters and router), :data:`RESET_STAGES` registers
    after ``sync``'s (``rtl/resets.py``): a core's flip-flops then take their reset from a
    register the placer puts beside them, not from one net to every flip-flop of the chip
    (on the 20-core chip that net, 40,000 loads, was the limiting path at 45 MHz: 22 ns)."""
    for k in range(n):
        local_reset_domain(m, core_domain(k), RESET_STAGES)


# ----------------------------------------------------------------------------- layouts
def _col_blocks(cfg) -> int:
    P = cfg.hardware.lanes
    return max(-(-n // P) for n in cfg.network.layers)


def chip_error_width(cfg) -> int:
    """Signed width of a reduced error sum: ``weight_bits + dv_bits + bits(n)``, ``n`` the
    widest layer whose errors are summed into a hidden neuron (``layers[2:]``): the sum of
    ``n`` products of a weight and a dv, exact whatever the order of the partial sums."""
    a = cfg.arithmetic
    above = cfg.network.layers[2:] or cfg.network.layers[1:]
    return a.weight_bits + a.dv_bits + max(above).bit_length()


def spike_plane_payload(cfg) -> data.StructLayout:
    """Spike plane: ``{t, blk, spikes[P], mark}``; ``blk`` is the column block in the
    receiving layer's inputs, ``mark`` a timestep marker (``t`` finished; no spikes)."""
    T, P = cfg.network.timesteps, cfg.hardware.lanes
    return data.StructLayout({"t": unsigned(ubits(T)), "blk": unsigned(ubits(_col_blocks(cfg))),
                              "spikes": unsigned(P), "mark": unsigned(1)})


def error_plane_payload(cfg) -> data.StructLayout:
    """Error plane: ``{t, jb, e[P], end}``: a partial sum of column block ``jb`` at full
    width, or (``end``) the sender's backward pass is over."""
    T, P = cfg.network.timesteps, cfg.hardware.lanes
    return data.StructLayout({"t": unsigned(ubits(T)), "jb": unsigned(ubits(_col_blocks(cfg))),
                              "e": data.ArrayLayout(signed(chip_error_width(cfg)), P),
                              "end": unsigned(1)})


def host_plane_payload(n_cores: int) -> data.StructLayout:
    """Host plane: a command ``{rsp=0, core, op, i, j, data}`` to a core, or its response
    ``{rsp=1, core, status, data}`` to the host bridge."""
    return data.StructLayout({"rsp": unsigned(1), "core": unsigned(ubits(n_cores)), "op": Op,
                              "status": Status, "i": unsigned(IDX_BITS), "j": unsigned(IDX_BITS),
                              "data": unsigned(32)})


def chip_planes(cfg, geometry: ChipGeometry) -> tuple[PlaneSpec, ...]:
    """The chip's three NoC planes (spike: multicast; error, host: unicast)."""
    return (PlaneSpec(MessageClass.SPIKE, spike_plane_payload(cfg), multicast=True),
            PlaneSpec(MessageClass.ERROR, error_plane_payload(cfg)),
            PlaneSpec(MessageClass.HOST, host_plane_payload(len(geometry.cores))))


def chip_flows(geometry: ChipGeometry) -> dict:
    """Every flow of the chip per plane, ``{plane: [(source, [destinations]), ...]}``: spikes
    from each core (and the host's events from core 0) to the next layer's cores, error sums
    from each core to the layer below, host commands from core 0 to every core and their
    responses back. The routers are built with only the ports these use (``Mesh(flows=)``)."""
    n, L = len(geometry.cores), max(pl.layer for pl in geometry.cores) + 1
    ids = [[pl.core for pl in geometry.layer_cores(l)] for l in range(L)]
    spike = [(0, ids[0])] + [(k, ids[l + 1]) for l in range(L - 1) for k in ids[l]]
    error = [(k, [d]) for l in range(1, L) for k in ids[l] for d in ids[l - 1]]
    host = [(0, [k]) for k in range(n)] + [(k, [0]) for k in range(n)]
    return {"spike": spike, "error": error, "host": host}


def chip_cmd_layout(n_cores: int) -> data.StructLayout:
    """The chip's ``cmd`` stream: ``{core, op, i, j, data}``."""
    return data.StructLayout({"core": unsigned(max(ubits(n_cores), 1) + 1), "op": Op,
                              "i": unsigned(IDX_BITS), "j": unsigned(IDX_BITS), "data": unsigned(32)})


def chip_rsp_layout(n_cores: int) -> data.StructLayout:
    """The chip's ``rsp`` stream: ``{core, status, data}``."""
    return data.StructLayout({"core": unsigned(max(ubits(n_cores), 1) + 1), "status": Status,
                              "data": unsigned(32)})


def chip_event_layout(cfg) -> data.StructLayout:
    """The chip's ``ev_in`` stream (input layer): ``{t, j, end}``."""
    return data.StructLayout({"t": unsigned(ubits(cfg.network.timesteps)),
                              "j": unsigned(ubits(cfg.network.layers[0])), "end": unsigned(1)})


def _pos(mesh: MeshShape, node: int) -> int:
    """A mesh position as the integer of the ``{row, col}`` destination layout."""
    r, c = mesh.position(node)
    return r | (c << mesh.row_bits)


def _range(mesh: MeshShape, first: int, last: int) -> int:
    """A multicast destination ``{lo, hi}`` as an integer."""
    w = mesh.row_bits + mesh.col_bits
    return _pos(mesh, first) | (_pos(mesh, last) << w)


class _OutReg:
    """A two-entry output stage (a skid buffer) in front of a stream: when ``free``, set the
    fields of ``data`` (comb) and call :meth:`load`; the word goes out in the next cycle.

    ``free`` is a register (the second entry is empty), so the NoC's ``ready`` never reaches
    the producer combinationally. With one register it did: a router's route decode of the
    held flit -> its inject ``ready`` -> the adapter -> the core's stall -> a weight block
    RAM's address was the 20-core chip's critical path (20.4 ns). Throughput is unchanged
    (one word a cycle when the NoC takes one)."""

    def __init__(self, m, out, layout):
        # the word to load (comb); set every field in the branch that loads: a constant
        # assigned outside any branch became an ``always @*`` of its own with no inputs,
        # which Verilator never ran (the destination stayed 0)
        self.data = Signal(layout)
        self.free = Signal()
        self._we = Signal()
        a_valid, b_valid = Signal(), Signal()
        a = Signal(layout, reset_less=True)      # drives ``out``
        b = Signal(layout, reset_less=True)      # holds a word loaded while ``out`` stalled
        m.d.comb += [out.valid.eq(a_valid), out.payload.eq(a), self.free.eq(~b_valid)]
        with m.If(~a_valid | out.ready):
            with m.If(b_valid):
                m.d.sync += [a.eq(b), a_valid.eq(1), b_valid.eq(0)]
            with m.Else():
                m.d.sync += [a.eq(self.data), a_valid.eq(self._we)]
        with m.Elif(self._we):
            m.d.sync += [b.eq(self.data), b_valid.eq(1)]

    def load(self, m, **fields):
        m.d.comb += self._we.eq(1)
        for k, v in fields.items():
            m.d.comb += getattr(self.data, k).eq(v)


# --------------------------------------------------------------------------- adapters
class SpikeSource(wiring.Component):
    """A core's spike words and timestep markers onto the spike plane (see the module doc).

    A marker for ``t`` goes after every spike word of ``t``: it is due once the core's
    ``step`` for ``t`` has been seen, and waits while a word of ``t`` is still presented.
    """

    def __init__(self, cfg, geometry: ChipGeometry, core: int):
        self.cfg, self.geometry, self.k = cfg, geometry, core
        pl = geometry.cores[core]
        self.mesh = MeshShape.from_chip(geometry)
        nxt = geometry.layer_cores(pl.layer + 1)
        self.dst = _range(self.mesh, nxt[0].core, nxt[-1].core)
        self.blk0 = pl.offset // cfg.hardware.lanes
        self.layout = inject_layout(self.mesh, spike_plane_payload(cfg), True)
        super().__init__({
            "spikes": In(stream.Signature(spike_word_layout(pl.geom))),
            "step": In(1),
            "step_t": In(unsigned(ubits(cfg.network.timesteps))),
            "inject": Out(stream.Signature(self.layout)),
        })

    def elaborate(self, platform):
        m = Module()
        T = self.cfg.network.timesteps
        o = _OutReg(m, self.inject, self.layout)
        done = Signal(range(T + 1))     # timesteps whose step was seen
        sent = Signal(range(T + 1))     # markers sent
        due = Signal()
        m.d.comb += due.eq((sent != done) & (sent < T))
        w = self.spikes.payload
        take_mark = due & ~(self.spikes.valid & (w.t == sent))
        m.d.comb += self.spikes.ready.eq(o.free & ~take_mark)
        with m.If(o.free):
            with m.If(take_mark):
                o.load(m, dst=self.dst)
                m.d.comb += [o.data.payload.t.eq(sent), o.data.payload.blk.eq(0),
                             o.data.payload.spikes.eq(0), o.data.payload.mark.eq(1)]
            with m.Elif(self.spikes.valid):
                o.load(m, dst=self.dst)
                m.d.comb += [o.data.payload.t.eq(w.t), o.data.payload.blk.eq(w.b + self.blk0),
                             o.data.payload.spikes.eq(w.spikes), o.data.payload.mark.eq(0)]
        nd = Mux(self.step, done + 1, done)
        ns = Mux(o.free & take_mark, sent + 1, sent)
        # both counters wrap together once every marker of the sample is out
        with m.If((nd == T) & (ns == T)):
            m.d.sync += [done.eq(0), sent.eq(0)]
        with m.Else():
            m.d.sync += [done.eq(nd), sent.eq(ns)]
        return m


class InputSource(wiring.Component):
    """The host's input events onto the spike plane, to every core of the first layer:
    one word per event and a marker for each timestep it closes (an event of a later
    timestep, or ``end``, closes the earlier ones). Events whose ``t`` went backwards or
    past ``T-1``, and columns past the fan-in, are dropped, as a core drops them."""

    def __init__(self, cfg, geometry: ChipGeometry):
        self.cfg = cfg
        self.mesh = MeshShape.from_chip(geometry)
        first = geometry.layer_cores(0)
        self.dst = _range(self.mesh, first[0].core, first[-1].core)
        self.layout = inject_layout(self.mesh, spike_plane_payload(cfg), True)
        super().__init__({
            "ev": In(stream.Signature(chip_event_layout(cfg))),
            "inject": Out(stream.Signature(self.layout)),
        })

    def elaborate(self, platform):
        m = Module()
        T, P, n_in = self.cfg.network.timesteps, self.cfg.hardware.lanes, self.cfg.network.layers[0]
        lp = P.bit_length() - 1
        o = _OutReg(m, self.inject, self.layout)
        cur = Signal(range(T + 1))       # the timestep being filled; markers sent below it
        ev = self.ev.payload

        def mark():
            o.load(m, dst=self.dst)
            m.d.comb += [o.data.payload.t.eq(cur), o.data.payload.blk.eq(0),
                         o.data.payload.spikes.eq(0), o.data.payload.mark.eq(1)]
            m.d.sync += cur.eq(cur + 1)

        with m.If(o.free & self.ev.valid):
            with m.If(ev.end):
                with m.If(cur < T):
                    mark()
                with m.Else():
                    m.d.comb += self.ev.ready.eq(1)
                    m.d.sync += cur.eq(0)
            with m.Elif((ev.t == cur) & (ev.j < n_in)):
                m.d.comb += self.ev.ready.eq(1)
                o.load(m, dst=self.dst)
                m.d.comb += [o.data.payload.t.eq(ev.t), o.data.payload.blk.eq(ev.j >> lp),
                             o.data.payload.spikes.eq(Const(1, P) << (ev.j[:lp] if lp else 0)),
                             o.data.payload.mark.eq(0)]
            with m.Elif((ev.t > cur) & (ev.t < T) & (cur < T)):
                mark()
            with m.Else():
                m.d.comb += self.ev.ready.eq(1)    # out of order or out of range: dropped
        return m


class SpikeMerge(wiring.Component):
    """The timestep barrier in front of a core's ``ev_in`` (see the module doc).

    ``sources``: how many senders each timestep waits for (the cores of the layer below,
    or 1, the host). The bitmap has ``T * ceil(fan-in / 16)`` words of 16 bits. Two units
    share it: the *writer* takes every flit -- a spike word sets its ``P`` bits
    (read-modify-write, two cycles), a marker counts -- and the *scanner* reads a released
    timestep word by word (three cycles a word) and turns each set bit into one event,
    lowest column first, then a ``close`` item (``end`` after ``T-1``). The writer never waits for the core: it yields the memory ports
    only in the scanner's two cycles per word. So the spike plane always drains, whatever
    the core is doing, and a core that is frozen because its own spike words cannot leave
    can never hold up the flits another core waits for (no message-dependent deadlock).
    ``closed`` pulses when ``end`` is taken.
    """

    def __init__(self, cfg, geom, sources: int, blk0: int = 0):
        self.cfg, self.geom, self.sources = cfg, geom, sources
        super().__init__({
            "flits": In(stream.Signature(spike_plane_payload(cfg))),
            "ev": Out(stream.Signature(event_layout(geom))),
            "closed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        T, n_in, P = self.geom.timesteps, self.geom.n_in, self.geom.lanes
        WB = max(BITMAP_WORD, P)
        lw = WB.bit_length() - 1
        NW = -(-n_in // WB)
        mem = Memory(shape=WB, depth=max(T * NW, 2), init=[])
        m.submodules.bitmap = mem
        rp, wp = mem.read_port(), mem.write_port()
        cnt = Array(Signal(range(self.sources + 1), name=f"marks{t}") for t in range(T))
        f = self.flits.payload
        col = Signal(ubits(_col_blocks(self.cfg) * P + 1))
        m.d.comb += col.eq(f.blk * P if P > 1 else f.blk)
        f_addr = Signal.like(rp.addr)
        m.d.comb += f_addr.eq(mul_const(f.t, NW) + (col >> lw))

        # ---- scanner: releases timestep rt once every source's marker for it is in
        rt = Signal(range(T + 1))          # next timestep to release
        w = Signal(range(NW + 1))          # word being scanned
        word = Signal(WB)
        s_read = Signal()                  # the scanner drives the read port this cycle
        ev = self.ev.payload
        low = Signal(range(WB))            # lowest set bit of the scanned word
        for b in reversed(range(WB)):
            with m.If(word[b]):
                m.d.comb += low.eq(b)
        with m.FSM(name="scan"):
            with m.State("IDLE"):
                with m.If((rt < T) & (cnt[rt] == self.sources)):
                    m.d.sync += w.eq(0)
                    m.next = "READ"
                with m.Elif(rt == T):
                    m.d.comb += [self.ev.valid.eq(1), ev.end.eq(1)]
                    with m.If(self.ev.ready):
                        m.d.comb += self.closed.eq(1)
                        m.d.sync += rt.eq(0)
            with m.State("READ"):
                m.d.comb += [s_read.eq(1), rp.addr.eq(mul_const(rt, NW) + w)]
                m.next = "LOAD"
            with m.State("LOAD"):
                # take the word and clear it (no flit of rt can come any more); the writer
                # issued no read in READ, so it is not writing now
                m.d.comb += [wp.addr.eq(mul_const(rt, NW) + w), wp.data.eq(0), wp.en.eq(1)]
                m.d.sync += word.eq(rp.data)
                m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(word == 0):
                    with m.If(w == NW - 1):
                        # the timestep is complete: close it now (the last one is closed
                        # by ``end``), so that the core need not wait for t+1's first event
                        with m.If(rt == T - 1):
                            m.d.sync += [cnt[rt].eq(0), rt.eq(rt + 1)]
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "CLOSE"
                    with m.Else():
                        m.d.sync += w.eq(w + 1)
                        m.next = "READ"
                with m.Else():
                    m.d.comb += [self.ev.valid.eq(1), ev.t.eq(rt), ev.j.eq((w << lw) | low),
                                 ev.end.eq(0)]
                    with m.If(self.ev.ready):
                        m.d.sync += word.eq(word & (word - 1))

            with m.State("CLOSE"):
                m.d.comb += [self.ev.valid.eq(1), ev.t.eq(rt), ev.close.eq(1)]
                with m.If(self.ev.ready):
                    m.d.sync += [cnt[rt].eq(0), rt.eq(rt + 1)]
                    m.next = "IDLE"

        # ---- writer: every flit, never waiting for the core
        with m.FSM(name="write"):
            with m.State("IDLE"):
                with m.If(self.flits.valid):
                    with m.If(f.mark):
                        m.d.comb += self.flits.ready.eq(1)
                        m.d.sync += cnt[f.t].eq(cnt[f.t] + 1)
                    with m.Elif(~s_read):
                        m.d.comb += rp.addr.eq(f_addr)
                        m.next = "SET"
            with m.State("SET"):
                # the word is on the read port: or the word's bits in and take the flit
                m.d.comb += [wp.addr.eq(f_addr), wp.data.eq(rp.data | (f.spikes << (col[:lw]))),
                             wp.en.eq(1), self.flits.ready.eq(1)]
                m.next = "IDLE"
        return m


class ErrorSource(wiring.Component):
    """A core's error words onto the error plane, each to the core of the layer below that
    owns its column block, then (``bwd_end``: the core left the backward phase, so every
    word was taken) one ``end`` to every core of that layer."""

    def __init__(self, cfg, geometry: ChipGeometry, core: int):
        self.cfg, self.geometry, self.k = cfg, geometry, core
        pl = geometry.cores[core]
        self.geom = pl.geom
        self.mesh = MeshShape.from_chip(geometry)
        self.below = geometry.layer_cores(pl.layer - 1)
        self.layout = inject_layout(self.mesh, error_plane_payload(cfg), False)
        super().__init__({
            "err": In(stream.Signature(err_layout(cfg, pl.geom))),
            "bwd_end": In(1),
            "inject": Out(stream.Signature(self.layout)),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.cfg.hardware.lanes
        o = _OutReg(m, self.inject, self.layout)
        e = self.err.payload
        # owner of column block jb: the last core below whose first block is <= jb
        dst = Signal(Shape.cast(self.layout["dst"].shape).width)
        m.d.comb += dst.eq(_pos(self.mesh, self.below[0].core))
        for c in self.below[1:]:
            with m.If(e.jb >= c.offset // P):
                m.d.comb += dst.eq(_pos(self.mesh, c.core))
        n = len(self.below)
        ends = Signal(range(n + 1))          # end flits still to send
        nxt = Signal(range(n))               # the next core below to get one
        end_dst = Array(Const(_pos(self.mesh, c.core), len(dst)) for c in self.below)
        m.d.comb += self.err.ready.eq(o.free)
        with m.If(o.free):
            with m.If(self.err.valid):
                o.load(m, dst=dst)
                m.d.comb += [o.data.payload.t.eq(e.t), o.data.payload.jb.eq(e.jb),
                             o.data.payload.end.eq(0)]
                m.d.comb += [o.data.payload.e[q].eq(e.e[q]) for q in range(P)]
            with m.Elif(ends != 0):
                o.load(m, dst=end_dst[nxt])
                m.d.comb += o.data.payload.end.eq(1)
                m.d.sync += [ends.eq(ends - 1),
                             nxt.eq(Mux(nxt == n - 1, 0, nxt + 1))]
        with m.If(self.bwd_end):
            m.d.sync += ends.eq(n)
        return m


class ErrorReduce(wiring.Component):
    """The error sums of a hidden core (see the module doc): ``T * NB`` accumulators of
    ``P`` lanes at :func:`chip_error_width` in block RAM; a partial sum is added in
    three cycles (read, register, add and write: the eject port delivers one flit every
    three cycles at most); once ``sources`` ends arrived every ``{t, b}`` is narrowed as
    ``model.fixedpoint`` narrows ``e`` (half-up shift by ``error_shift``, saturation to
    ``error_bits``), sent on ``ds`` and cleared."""

    def __init__(self, cfg, geom, sources: int, blk0: int):
        self.cfg, self.geom, self.sources, self.blk0 = cfg, geom, sources, blk0
        super().__init__({
            "flits": In(stream.Signature(error_plane_payload(cfg))),
            "ds": Out(stream.Signature(ds_layout(cfg, geom))),
        })

    def elaborate(self, platform):
        from ..model.fixedpoint import error_shift

        m = Module()
        cfg, g = self.cfg, self.geom
        T, NB, P = g.timesteps, g.blocks, g.lanes
        EW = chip_error_width(cfg)
        acc_l = data.ArrayLayout(signed(EW), P)
        # block RAM, not LUT-RAM: T * NB words of up to 36 bits are one PDPW16KD
        mem = Memory(shape=acc_l, depth=max(T * NB, 2), init=[], attrs={"ram_style": "block"})
        m.submodules.acc = mem
        rp, wp = mem.read_port(), mem.write_port()
        f = self.flits.payload
        ends = Signal(range(self.sources + 1))
        addr_in = Signal(ubits(T * NB) + 1)
        m.d.comb += addr_in.eq(mul_const(f.t, NB) + (f.jb - self.blk0))
        a = Signal(range(T * NB + 1))
        ot, ob = Signal(range(T)), Signal(range(NB))
        sh, eb = error_shift(cfg), cfg.arithmetic.error_bits
        # the block RAM's word is registered (``q``) before the adder and before the
        # narrowing: its clock-to-out (5.6 ns) and a 36-bit carry chain do not fit 10 ns
        q = Signal(acc_l)
        with m.FSM(name="reduce"):
            with m.State("IDLE"):
                with m.If(ends == self.sources):
                    m.d.sync += [a.eq(0), ot.eq(0), ob.eq(0), ends.eq(0)]
                    m.next = "READ"
                with m.Elif(self.flits.valid):
                    with m.If(f.end):
                        m.d.comb += self.flits.ready.eq(1)
                        m.d.sync += ends.eq(ends + 1)
                    with m.Else():
                        m.d.comb += rp.addr.eq(addr_in)
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.sync += q.eq(rp.data)
                m.next = "ADD"
            with m.State("ADD"):
                m.d.comb += [wp.addr.eq(addr_in), wp.en.eq(1), self.flits.ready.eq(1)]
                m.d.comb += [wp.data[k].eq(q[k] + f.e[k]) for k in range(P)]
                m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += rp.addr.eq(a)
                m.next = "HOLD"
            with m.State("HOLD"):
                m.d.sync += q.eq(rp.data)
                m.next = "OUT"
            with m.State("OUT"):
                # q holds acc[a]: narrow it, send, clear
                m.d.comb += [self.ds.valid.eq(1), self.ds.payload.t.eq(ot), self.ds.payload.b.eq(ob)]
                m.d.comb += [self.ds.payload.ds[k].eq(
                    arith.sat(arith.shift_right_round(q[k], sh), eb)) for k in range(P)]
                with m.If(self.ds.ready):
                    m.d.comb += [wp.addr.eq(a), wp.data.eq(0), wp.en.eq(1)]
                    m.d.sync += [a.eq(a + 1), ob.eq(Mux(ob == NB - 1, 0, ob + 1))]
                    with m.If(ob == NB - 1):
                        m.d.sync += ot.eq(ot + 1)
                    with m.If(a == T * NB - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
        return m


class HostAgent(wiring.Component):
    """A core's end of the host plane: commands in, responses out to the host bridge.
    ``hold`` (accumulate dataflow): ``train``/``train_ds``/``infer`` wait until the core's
    event list has been closed (``closed``) since the last of them."""

    def __init__(self, geometry: ChipGeometry, core: int, hold: bool):
        self.k, self.hold = core, hold
        self.mesh = MeshShape.from_chip(geometry)
        n = len(geometry.cores)
        self.layout = inject_layout(self.mesh, host_plane_payload(n), False)
        from .interfaces import cmd_layout, rsp_layout
        super().__init__({
            "flits": In(stream.Signature(host_plane_payload(n))),
            "inject": Out(stream.Signature(self.layout)),
            "cmd": Out(stream.Signature(cmd_layout())),
            "rsp": In(stream.Signature(rsp_layout())),
            "closed": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.flits.payload
        run = (f.op == Op.TRAIN) | (f.op == Op.TRAIN_DS) | (f.op == Op.INFER)
        ready_ev = Signal()                   # the event list was closed since the last run
        go = Signal()
        m.d.comb += go.eq(~run | ready_ev if self.hold else 1)
        m.d.comb += [self.cmd.valid.eq(self.flits.valid & go),
                     self.flits.ready.eq(self.cmd.ready & go),
                     self.cmd.payload.op.eq(f.op), self.cmd.payload.i.eq(f.i),
                     self.cmd.payload.j.eq(f.j), self.cmd.payload.data.eq(f.data)]
        with m.If(self.closed):
            m.d.sync += ready_ev.eq(1)
        with m.Elif(self.cmd.valid & self.cmd.ready & run):
            m.d.sync += ready_ev.eq(0)
        r = self.inject.payload
        m.d.comb += [self.inject.valid.eq(self.rsp.valid), self.rsp.ready.eq(self.inject.ready),
                     r.dst.eq(_pos(self.mesh, 0)), r.payload.rsp.eq(1), r.payload.core.eq(self.k),
                     r.payload.status.eq(self.rsp.payload.status),
                     r.payload.data.eq(self.rsp.payload.data)]
        return m


def _arbitrate(m, out, ins, name):
    """Several streams into one: a free output takes the first valid input and stays with
    it until it is taken (the routers read a held payload again after picking it)."""
    n = len(ins)
    locked = Signal(name=f"{name}_locked")
    sel = Signal(range(n), name=f"{name}_sel")
    pick = Signal(range(n), name=f"{name}_pick")
    for k in reversed(range(n)):
        with m.If(ins[k].valid):
            m.d.comb += pick.eq(k)
    cur = Mux(locked, sel, pick)
    for k, s in enumerate(ins):
        with m.If(cur == k):
            m.d.comb += [out.valid.eq(s.valid), out.payload.eq(s.payload), s.ready.eq(out.ready)]
    with m.If(out.valid & ~out.ready):
        m.d.sync += [locked.eq(1), sel.eq(cur)]
    with m.Elif(out.valid & out.ready):
        m.d.sync += locked.eq(0)


def core_module_name(pl) -> str:
    """Verilog module of a core placement ``pl``: cores of one layer with the same fan-in and
    neuron count are the same hardware (without initial weights)."""
    return f"spikeforge_core_l{pl.layer}_{pl.geom.n_in}x{pl.geom.n_neurons}"


def core_instance(core: Core, name: str, domain: str = "sync") -> Instance:
    """An instance of Verilog module ``name`` (``core`` emitted on its own) in ``domain``,
    bound to ``core``'s port signals, which the chip wires as usual. The port names are
    those ``gen/verilog.py`` gives a component's signature members."""
    ports = {"i_clk": ClockSignal(domain), "i_rst": ResetSignal(domain)}
    for path, member, value in core.signature.flatten(core):
        value = Value.cast(value)
        if len(value):                     # a zero-width member is no Verilog port
            ports[("i_" if member.flow == In else "o_") + "__".join(map(str, path))] = value
    return Instance(name, **ports)


class Chip(wiring.Component):
    """The N-core training chip (see the module doc).

    ``weights``: optional initial integer weights, one ``(n_out, n_in)`` tensor per layer,
    built into the cores' weight memories (a bitstream that starts trained). ``debug``: the
    cores' counters and, at the top, one observation port per core and kind (``mon<k>_spk``
    spike words, ``mon<k>_err`` error words, ``mon<k>_ds`` reduced errors, ``mon<k>_ev``
    events into the core, ``mon<k>_w`` weight write-backs) for the testbench; the NoC's
    counters are read with ``ctr_node``/``ctr_addr`` -> ``ctr_data`` either way.

    ``shared_cores``: each distinct core is elaborated once, as its own Verilog module
    (:attr:`verilog_modules`, which ``gen/verilog.py`` appends to the chip's text), and
    instantiated at every position of its kind -- what makes ``generate`` and the pipe
    simulator's build fast. Needs ``weights=None`` and ``debug=False`` (initial weights and
    debug monitors make every core distinct hardware or reach inside it).
    """

    def __init__(self, cfg, geometry: ChipGeometry | None = None, *, debug: bool = True,
                 weights=None, shared_cores: bool = False):
        geometry = ChipGeometry.from_config(cfg) if geometry is None else geometry
        if not isinstance(geometry, ChipGeometry):
            raise TypeError(f"Chip: geometry must be a ChipGeometry, got {type(geometry).__name__}")
        if weights is not None and len(weights) != len(cfg.network.layers) - 1:
            raise ValueError(f"Chip: {len(weights)} weight matrices for "
                             f"{len(cfg.network.layers) - 1} layers")
        if shared_cores and (weights is not None or debug):
            raise ValueError("Chip: shared_cores needs weights=None and debug=False")
        self.cfg, self.geometry, self.debug = cfg, geometry, bool(debug)
        self.weights, self.shared_cores = weights, bool(shared_cores)
        self.mesh = MeshShape.from_chip(geometry)
        self.planes = chip_planes(cfg, geometry)
        n = len(geometry.cores)
        self.noc = Mesh(self.mesh, self.planes, counters=True, flows=chip_flows(geometry),
                        node_domains=[core_domain(k) for k in range(n)])
        members = {
            "cmd": In(stream.Signature(chip_cmd_layout(n))),
            "rsp": Out(stream.Signature(chip_rsp_layout(n))),
            "ev_in": In(stream.Signature(chip_event_layout(cfg))),
            "ctr_node": In(self.noc.ctr_node.shape()),
            "ctr_addr": In(self.noc.ctr_addr.shape()),
            "ctr_data": Out(self.noc.ctr_data.shape()),
        }
        self.cores = []
        #: Verilog modules the chip instantiates, by name (``shared_cores``): one core per kind
        self.verilog_modules: dict[str, Core] = {}
        for pl in geometry.cores:
            w = None
            if weights is not None:
                w = weights[pl.layer][pl.offset:pl.offset + pl.geom.n_neurons]
            if self.shared_cores and core_module_name(pl) in self.verilog_modules:
                core = Core(cfg, pl.geom, debug=False)   # its ports only: never elaborated
                core._MustUse__silence = True            # (Amaranth's "created but never used")
                self.cores.append(core)
            else:
                self.cores.append(Core(cfg, pl.geom, debug=self.debug, weights=w))
            if self.shared_cores:
                self.verilog_modules.setdefault(core_module_name(pl), self.cores[-1])
        if self.debug:
            a, P = cfg.arithmetic, cfg.hardware.lanes
            #: every monitor's valid bit (``5 * k + MON_KINDS.index(kind)``): a testbench reads
            #: this one port per cycle and the monitors only when their bit is set
            members["mon_valid"] = Out(5 * n)
            for pl, core in zip(geometry.cores, self.cores):
                k, g = pl.core, pl.geom
                members[f"mon{k}_spk"] = Out(data.StructLayout({"valid": 1, "w": spike_word_layout(g)}))
                members[f"mon{k}_err"] = Out(data.StructLayout({"valid": 1, "w": err_layout(cfg, g)}))
                members[f"mon{k}_ev"] = Out(data.StructLayout({"valid": 1, "w": event_layout(g)}))
                if not g.output_layer:
                    members[f"mon{k}_ds"] = Out(data.StructLayout({"valid": 1, "w": ds_layout(cfg, g)}))
                members[f"mon{k}_w"] = Out(data.StructLayout({
                    "we": P, "addr": data.ArrayLayout(core.mon_w_waddr[0].shape(), P),
                    "data": data.ArrayLayout(signed(a.weight_bits), P)}))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, geo, mesh = self.cfg, self.geometry, self.mesh
        n = len(geo.cores)
        last_layer = len(cfg.network.layers) - 2
        hold = not inplace(cfg)
        local_resets(m, n)
        m.submodules.noc = noc = self.noc
        m.d.comb += [noc.ctr_node.eq(self.ctr_node), noc.ctr_addr.eq(self.ctr_addr),
                     self.ctr_data.eq(noc.ctr_data)]
        spike_in = [[] for _ in range(n)]     # streams to arbitrate onto each spike inject
        host_in = [[] for _ in range(n)]
        agents = []
        for pl, core in zip(geo.cores, self.cores):
            k, l = pl.core, pl.layer
            dom = core_domain(k)
            local = DomainRenamer(dom)
            m.submodules[f"core{k}"] = (core_instance(core, core_module_name(pl), dom)
                                        if self.shared_cores else local(core))
            # forward: spikes to the next layer, the barrier in front of ev_in
            if l < last_layer:
                src = SpikeSource(cfg, geo, k)
                m.submodules[f"spk_src{k}"] = local(src)
                wiring.connect(m, core.spikes_out, src.spikes)
                m.d.comb += [src.step.eq(core.step), src.step_t.eq(core.step_t)]
                spike_in[k].append(src.inject)
            else:
                m.d.comb += core.spikes_out.ready.eq(1)
            merge = SpikeMerge(cfg, pl.geom, 1 if l == 0 else len(geo.layer_cores(l - 1)))
            m.submodules[f"spk_merge{k}"] = local(merge)
            wiring.connect(m, noc.spike_eject[k], merge.flits)
            wiring.connect(m, merge.ev, core.ev_in)
            # backward: errors to the layer below, the reduction in front of ds_in
            if l > 0:
                es = ErrorSource(cfg, geo, k)
                m.submodules[f"err_src{k}"] = local(es)
                wiring.connect(m, core.err_out, es.err)
                was_bwd = Signal(name=f"was_bwd{k}")
                m.d[dom] += was_bwd.eq(core.phase == Phase.BWD)
                m.d.comb += es.bwd_end.eq(was_bwd & (core.phase != Phase.BWD))
                wiring.connect(m, es.inject, noc.error_inject[k])
            else:
                m.d.comb += [core.err_out.ready.eq(1), noc.error_inject[k].valid.eq(0)]
            if l < last_layer:
                red = ErrorReduce(cfg, pl.geom, len(geo.layer_cores(l + 1)), pl.offset // cfg.hardware.lanes)
                m.submodules[f"err_red{k}"] = local(red)
                wiring.connect(m, noc.error_eject[k], red.flits)
                wiring.connect(m, red.ds, core.ds_in)
            else:
                m.d.comb += noc.error_eject[k].ready.eq(1)
            # host: the command agent
            ag = HostAgent(geo, k, hold)
            m.submodules[f"agent{k}"] = local(ag)
            agents.append(ag)
            wiring.connect(m, ag.cmd, core.cmd)
            wiring.connect(m, core.rsp, ag.rsp)
            m.d.comb += ag.closed.eq(merge.closed)
            host_in[k].append(ag.inject)
            if self.debug:
                self._monitors(m, k, pl.geom, core, merge)

        # the host bridge at core 0: commands out, responses in, input events
        m.submodules.inputs = inp = InputSource(cfg, geo)
        wiring.connect(m, wiring.flipped(self.ev_in), inp.ev)
        spike_in[0].append(inp.inject)
        cmd_out = stream.Signature(inject_layout(mesh, host_plane_payload(n), False)).create(
            path=("bridge_cmd",))
        host_in[0].append(cmd_out)
        pos = Array(Const(_pos(mesh, k), len(cmd_out.payload.dst.as_value())) for k in range(n))
        c = self.cmd.payload
        bad = Signal()                         # a core past the last: answered here
        m.d.comb += bad.eq(self.cmd.valid & (c.core >= n))
        m.d.comb += [cmd_out.valid.eq(self.cmd.valid & ~bad),
                     cmd_out.payload.dst.eq(pos[c.core[:ubits(n)]] if n > 1 else pos[0]),
                     cmd_out.payload.payload.rsp.eq(0), cmd_out.payload.payload.core.eq(c.core),
                     cmd_out.payload.payload.op.eq(c.op), cmd_out.payload.payload.i.eq(c.i),
                     cmd_out.payload.payload.j.eq(c.j), cmd_out.payload.payload.data.eq(c.data)]
        ej = noc.host_eject[0]
        to_host = ej.valid & ej.payload.rsp
        with m.If(bad):
            m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.core.eq(c.core),
                         self.rsp.payload.status.eq(Status.BAD_INDEX), self.rsp.payload.data.eq(0),
                         self.cmd.ready.eq(self.rsp.ready)]
        with m.Else():
            m.d.comb += [self.cmd.ready.eq(cmd_out.ready),
                         self.rsp.valid.eq(to_host), self.rsp.payload.core.eq(ej.payload.core),
                         self.rsp.payload.status.eq(ej.payload.status),
                         self.rsp.payload.data.eq(ej.payload.data)]
        # core 0's agent takes the commands of core 0 from the same eject port
        a0 = agents[0]
        m.d.comb += [a0.flits.valid.eq(ej.valid & ~ej.payload.rsp), a0.flits.payload.eq(ej.payload),
                     ej.ready.eq(Mux(ej.payload.rsp, self.rsp.ready & ~bad, a0.flits.ready))]
        for k in range(1, n):
            wiring.connect(m, noc.host_eject[k], agents[k].flits)
        for k in range(n):
            for plane, ins in (("spike", spike_in[k]), ("host", host_in[k])):
                port = getattr(noc, f"{plane}_inject")[k]
                if not ins:
                    m.d.comb += port.valid.eq(0)
                elif len(ins) == 1:
                    wiring.connect(m, ins[0], port)
                else:
                    _arbitrate(m, port, ins, f"{plane}{k}")
        return m

    def _monitors(self, m, k, g, core, merge):
        P = g.lanes

        def obs(name, s):
            mon = getattr(self, f"mon{k}_{name}")
            m.d.comb += [mon.valid.eq(s.valid & s.ready), mon.w.eq(s.payload),
                         self.mon_valid[5 * k + MON_KINDS.index(name)].eq(s.valid & s.ready)]
        obs("spk", core.spikes_out)
        obs("err", core.err_out)
        obs("ev", core.ev_in)
        if not g.output_layer:
            obs("ds", core.ds_in)
        mw = getattr(self, f"mon{k}_w")
        m.d.comb += [mw.we.eq(core.mon_w_we), self.mon_valid[5 * k + 4].eq(core.mon_w_we != 0)]
        for q in range(P):
            m.d.comb += [mw.addr[q].eq(core.mon_w_waddr[q]), mw.data[q].eq(core.mon_w_wdata[q])]
