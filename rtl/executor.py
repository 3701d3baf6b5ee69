"""The chip's host interface: the ops of the host-link protocol (docs/protocol.md, section 4)
executed on the N-core chip (rtl/chip.py).

:class:`Executor` sits between :class:`~spikeforge.rtl.hostlink.HostLink` (``cmd`` /
``cmd_data`` in, ``rsp`` / ``rsp_data`` out: one request at a time, stop-and-wait) and the
chip's host port (``chip_cmd`` / ``chip_rsp``: the cores' own commands; ``ev``: the input
layer's events). Per request it

1. takes the header and the op's fixed arguments (the first 0..7 payload bytes);
2. checks everything it can before touching the chip -- payload size (``bad_len``), every
   index of a bulk op (``bad_index``), ``T`` / ``n_in`` / encoding / label / zero seeds and
   the whole raster (``bad_arg``), ``update`` in the in-place dataflow (``busy``), unknown
   ops (``unknown_op``) -- so a refused request changes nothing;
3. turns it into core commands, one at a time (``write_w``/``read_w`` per word, ...), or for
   ``train``/``infer``/``update`` the chip's sample sequence (``set_label`` on the output
   cores, the run command to every core in layer order while the events stream into
   ``ev``, one response per core; then ``read_count`` of every output neuron);
4. answers with one header on ``rsp`` and its payload bytes on ``rsp_data``.

Rasters (``train``/``infer``) are decoded from the payload bytes into :class:`RasterBuffer`,
a ``T x ceil(n_in / 8)``-byte bitmap (the ``bitmap`` encoding's own layout), and only once
the whole raster has been checked are the sample's commands issued and the bitmap scanned
into events (``t`` order, lowest column first, then ``end``; the scan clears it). A raster
fault shows only at its end (a gap-coded spike past ``T x n_in``, bits past ``n_in`` in a
bitmap row), so streaming the events to the chip as they are decoded could not keep
"``bad_arg``: nothing changed". All three encodings are decoded (``bitmap``, ``gaps``,
``masks``); a ``masks`` raster whose size disagrees with its active inputs is ``bad_len``.

``set_seeds`` is staged the same way (the seeds into a ``max_neurons x 32`` memory, then
``write_rng`` per seed), because a zero seed anywhere refuses the whole request.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..host import protocol as hp
from .chip import chip_cmd_layout, chip_event_layout, chip_rsp_layout
from .core import COUNTERS
from .geometry import ChipGeometry
from .hostlink import STATS, FrameHeader, PayloadByte, ReplyHeader, Status, stats_layout
from .interfaces import Op, ubits
from .wg import inplace

__all__ = ["Executor", "RasterBuffer", "LINK_COUNTERS", "HW_VERSION", "version_bytes",
           "executor_features"]

#: ``read_counters`` core 0xFF: the link's counters, then the UART's (docs/protocol.md).
LINK_COUNTERS = STATS + ("uart_frame_errors", "uart_overruns")
HW_VERSION = 1

#: Fixed argument bytes of each op (before any bulk data / raster).
_ARGS = {hp.Op.VERSION: 0, hp.Op.STATUS: 0, hp.Op.READ_COUNTERS: 3, hp.Op.WRITE_WEIGHTS: 7,
         hp.Op.READ_WEIGHTS: 7, hp.Op.SET_SEEDS: 5, hp.Op.READ_SEEDS: 5, hp.Op.TRAIN: 6,
         hp.Op.INFER: 6, hp.Op.UPDATE: 0}
#: Ops whose payload is exactly their arguments.
_FIXED = (hp.Op.VERSION, hp.Op.STATUS, hp.Op.READ_COUNTERS, hp.Op.READ_WEIGHTS,
          hp.Op.READ_SEEDS, hp.Op.UPDATE)


def executor_features(cfg) -> hp.Feature:
    f = hp.Feature.ENC_GAPS | hp.Feature.ENC_MASKS
    if not inplace(cfg):
        f |= hp.Feature.UPDATE
    if cfg.arithmetic.rounding == "stochastic":
        f |= hp.Feature.STOCHASTIC
    return f


def version_bytes(cfg, geometry: ChipGeometry, max_payload: int) -> bytes:
    """The ``version`` reply payload of this chip (``protocol.pack_version``)."""
    return hp.pack_version(hp.Version(hp.PROTOCOL_VERSION, HW_VERSION, max_payload,
                                      executor_features(cfg), len(geometry.cores),
                                      cfg.network.timesteps, tuple(cfg.network.layers)))


class RasterBuffer(wiring.Component):
    """A sample's raster: decoded from payload bytes into a ``T x RB`` byte bitmap
    (``RB = ceil(n_in / 8)``), then scanned into chip events.

    * ``start`` (pulse): a new raster, encoding ``enc`` (0 bitmap, 1 gaps, 2 masks);
    * ``byte`` (In stream): its bytes; ``flush`` (pulse, once ``busy`` is low after the last
      byte): the gap decoder writes its open byte; ``bad`` (Out): the raster is malformed
      (a bitmap bit past ``n_in``; a gap-coded spike past ``T x n_in``; an active bit past
      ``n_in``, an empty timestep mask or one with bits past ``T``); ``bad_size`` (Out): a
      ``masks`` raster with more or fewer bytes than its active inputs need;
    * ``masks``: the active bitmap goes into a small ``RB``-byte memory; then each
      timestep mask (of the next active input ``j``) sets bit ``j`` in the rows of its set
      bits, read-modify-write (two cycles per spike);
    * ``scan`` (pulse): events ``{t, j}`` in ``t`` order then ``end`` on ``ev``, clearing the
      bitmap; with ``discard`` the bitmap is only cleared (a refused raster); ``scanning``.
    """

    def __init__(self, cfg):
        self.T, self.n_in = cfg.network.timesteps, cfg.network.layers[0]
        self.RB = -(-self.n_in // 8)
        self.ev_layout = chip_event_layout(cfg)
        super().__init__({
            "enc": In(2), "start": In(1), "flush": In(1), "scan": In(1), "discard": In(1),
            "byte": In(stream.Signature(8)),
            "busy": Out(1), "bad": Out(1), "bad_size": Out(1), "scanning": Out(1),
            "ev": Out(stream.Signature(self.ev_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bits = mem = Memory(shape=8, depth=self.T * self.RB, init=[])
        self.rp, self.wp = mem.read_port(), mem.write_port()
        self.dec_we, self.dec_addr, self.dec_data = Signal(), Signal.like(self.wp.addr), Signal(8)
        self.dec_raddr = Signal.like(self.rp.addr)
        self.gaps_busy, self.masks_busy = Signal(), Signal()
        m.d.comb += self.busy.eq(Mux(self.enc == 1, self.gaps_busy, Mux(self.enc == 2, self.masks_busy, 0)))
        self._decoder(m)
        self._masks(m)
        self._scanner(m)
        return m

    def _decoder(self, m):
        T, n_in, RB = self.T, self.n_in, self.RB
        a = Signal(range(T * RB + 1))          # bitmap: next byte
        b = Signal(range(RB))                  # bitmap: byte within its row
        t = Signal(range(T + 1))               # gaps: position (t, j), row base t * RB
        j = Signal(range(n_in + 1))
        base = Signal(range(T * RB + RB + 1))
        s = Signal(5)                          # positions still to skip in this nibble
        spike = Signal()                       # the nibble marks a spike after its skip
        hi = Signal(4)
        have_hi, work = Signal(), Signal()
        cur_addr, cur = Signal.like(self.wp.addr), Signal(8)
        m.d.comb += self.gaps_busy.eq(work)

        def load(nib):
            return [s.eq(nib), spike.eq(nib != 15), work.eq(1)]

        with m.If(self.start):
            m.d.sync += [a.eq(0), b.eq(0), t.eq(0), j.eq(0), base.eq(0), work.eq(0),
                         have_hi.eq(0), cur.eq(0), cur_addr.eq(0), self.bad.eq(0)]
        with m.Elif(self.enc == 0):
            m.d.comb += self.byte.ready.eq(1)
            with m.If(self.byte.valid):
                m.d.comb += [self.dec_we.eq(1), self.dec_addr.eq(a), self.dec_data.eq(self.byte.payload)]
                m.d.sync += [a.eq(a + 1), b.eq(Mux(b == RB - 1, 0, b + 1))]
                if n_in % 8:
                    with m.If((b == RB - 1) & (self.byte.payload >> (n_in % 8) != 0)):
                        m.d.sync += self.bad.eq(1)
        with m.Elif(self.enc != 1):
            pass                                                # masks: _masks
        with m.Elif(~work):
            m.d.comb += self.byte.ready.eq(1)
            with m.If(self.byte.valid):
                m.d.sync += [*load(self.byte.payload[:4]), hi.eq(self.byte.payload[4:]), have_hi.eq(1)]
            with m.Elif(self.flush & (cur != 0)):
                m.d.comb += [self.dec_we.eq(1), self.dec_addr.eq(cur_addr), self.dec_data.eq(cur)]
                m.d.sync += cur.eq(0)
        with m.Else():
            done = Signal()
            with m.If(t == T):                                  # past the end
                m.d.sync += self.bad.eq(self.bad | spike)
                m.d.comb += done.eq(1)
            with m.Elif(j + s >= n_in):                         # skip to the next row
                m.d.sync += [s.eq(s - (n_in - j)), j.eq(0), t.eq(t + 1), base.eq(base + RB)]
            with m.Else():
                m.d.comb += done.eq(1)
                jj = j + s
                with m.If(spike):
                    addr = base + (jj >> 3)
                    bit = Const(1, 8) << jj[:3]
                    with m.If(addr != cur_addr):
                        with m.If(cur != 0):
                            m.d.comb += [self.dec_we.eq(1), self.dec_addr.eq(cur_addr), self.dec_data.eq(cur)]
                        m.d.sync += [cur_addr.eq(addr), cur.eq(bit)]
                    with m.Else():
                        m.d.sync += cur.eq(cur | bit)
                    with m.If(jj + 1 == n_in):
                        m.d.sync += [j.eq(0), t.eq(t + 1), base.eq(base + RB)]
                    with m.Else():
                        m.d.sync += j.eq(jj + 1)
                with m.Else():
                    m.d.sync += j.eq(jj)
            with m.If(done):
                with m.If(have_hi):
                    m.d.sync += [*load(hi), have_hi.eq(0)]
                with m.Else():
                    m.d.sync += [work.eq(0), s.eq(0)]

    def _masks(self, m):
        """The ``masks`` decoder: states ACT (active bitmap), NEXT (the next active input),
        LOADACT, BYTE (a mask byte), BIT (its set bits), RMW, DONE (every input seen)."""
        T, n_in, RB = self.T, self.n_in, self.RB
        MB = -(-T // 8)
        m.submodules.act = act = Memory(shape=8, depth=RB, init=[])
        arp, awp = act.read_port(), act.write_port()
        ACT, NEXT, LOADACT, BYTE, BIT, RMW, DONE = range(7)
        st = Signal(3)
        g = Signal(range(RB + 1))              # ACT: bytes in; NEXT: next active group
        cur = Signal(8)                        # active bits of group g - 1 not yet done
        j = Signal(range(8 * RB))
        mb = Signal(range(MB + 1))             # mask byte of input j
        word = Signal(8)
        seen = Signal()                        # input j's mask has a set bit
        low_c, low_w = Signal(3), Signal(3)
        for k in reversed(range(8)):
            with m.If(cur[k]):
                m.d.comb += low_c.eq(k)
            with m.If(word[k]):
                m.d.comb += low_w.eq(k)
        from .geometry import mul_const
        addr = Signal.like(self.wp.addr)
        m.d.comb += [addr.eq(mul_const(Cat(low_w, mb), RB) + (j >> 3)),
                     self.masks_busy.eq((st != ACT) & (st != BYTE) & (st != DONE)),
                     arp.addr.eq(g), awp.addr.eq(g), awp.data.eq(self.byte.payload),
                     self.dec_raddr.eq(addr)]
        with m.If(self.start):
            m.d.sync += [st.eq(ACT), g.eq(0), cur.eq(0), self.bad_size.eq(0)]
        with m.Elif(self.enc == 2):
            with m.If(self.flush & (st != DONE)):
                m.d.sync += self.bad_size.eq(1)        # bytes missing
            with m.Switch(st):
                with m.Case(ACT):
                    m.d.comb += [self.byte.ready.eq(1), awp.en.eq(self.byte.valid)]
                    with m.If(self.byte.valid):
                        m.d.sync += g.eq(g + 1)
                        with m.If(g == RB - 1):
                            m.d.sync += [st.eq(NEXT), g.eq(0)]
                            if n_in % 8:
                                with m.If(self.byte.payload >> (n_in % 8) != 0):
                                    m.d.sync += self.bad.eq(1)
                with m.Case(NEXT):
                    with m.If(cur != 0):
                        m.d.sync += [j.eq(Cat(low_c, g - 1)), cur.eq(cur & (cur - 1)), mb.eq(0),
                                     seen.eq(0), st.eq(BYTE)]
                    with m.Elif(g == RB):
                        m.d.sync += st.eq(DONE)
                    with m.Else():
                        m.d.sync += st.eq(LOADACT)     # act[g] is on the read port next cycle
                with m.Case(LOADACT):
                    m.d.sync += [cur.eq(arp.data), g.eq(g + 1), st.eq(NEXT)]
                with m.Case(BYTE):
                    m.d.comb += self.byte.ready.eq(1)
                    with m.If(self.byte.valid):
                        m.d.sync += [word.eq(self.byte.payload), st.eq(BIT)]
                        if T % 8:
                            with m.If((mb == MB - 1) & (self.byte.payload >> (T % 8) != 0)):
                                m.d.sync += self.bad.eq(1)
                with m.Case(BIT):
                    with m.If(word == 0):
                        m.d.sync += mb.eq(mb + 1)
                        with m.If(mb == MB - 1):
                            m.d.sync += st.eq(NEXT)
                            with m.If(~seen):
                                m.d.sync += self.bad.eq(1)     # an active input never spikes
                        with m.Else():
                            m.d.sync += st.eq(BYTE)
                    with m.Elif(Cat(low_w, mb) >= T):
                        m.d.sync += [word.eq(word & (word - 1)), seen.eq(1)]   # flagged in BYTE
                    with m.Else():
                        m.d.sync += st.eq(RMW)           # the row's byte is on the read port next
                with m.Case(RMW):
                    m.d.comb += [self.dec_we.eq(1), self.dec_addr.eq(addr),
                                 self.dec_data.eq(self.rp.data | (Const(1, 8) << j[:3]))]
                    m.d.sync += [word.eq(word & (word - 1)), seen.eq(1), st.eq(BIT)]
                with m.Case(DONE):
                    m.d.comb += self.byte.ready.eq(1)
                    with m.If(self.byte.valid):
                        m.d.sync += self.bad_size.eq(1)    # bytes past the last mask

    def _scanner(self, m):
        T, RB = self.T, self.RB
        a = Signal(range(T * RB))
        t = Signal(range(T))
        b = Signal(range(RB))
        word = Signal(8)
        low = Signal(3)
        for k in reversed(range(8)):
            with m.If(word[k]):
                m.d.comb += low.eq(k)
        ev = self.ev.payload
        rp, wp = self.rp, self.wp
        m.d.comb += [wp.addr.eq(self.dec_addr), wp.data.eq(self.dec_data), wp.en.eq(self.dec_we),
                     rp.addr.eq(self.dec_raddr)]
        with m.FSM(name="scan"):
            with m.State("IDLE"):
                with m.If(self.scan):
                    m.d.sync += [a.eq(0), t.eq(0), b.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.scanning.eq(1), rp.addr.eq(a)]
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.scanning.eq(1), rp.addr.eq(a), wp.addr.eq(a), wp.data.eq(0), wp.en.eq(1)]
                m.d.sync += word.eq(rp.data)
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += self.scanning.eq(1)
                with m.If(word == 0):
                    with m.If(a == T * RB - 1):
                        m.next = "END"
                    with m.Else():
                        m.d.sync += [a.eq(a + 1), b.eq(Mux(b == RB - 1, 0, b + 1))]
                        with m.If(b == RB - 1):
                            m.d.sync += t.eq(t + 1)
                        m.next = "READ"
                with m.Else():
                    m.d.comb += [self.ev.valid.eq(~self.discard), ev.t.eq(t), ev.j.eq(Cat(low, b)),
                                 ev.end.eq(0)]
                    with m.If(self.ev.ready | self.discard):
                        m.d.sync += word.eq(word & (word - 1))
            with m.State("END"):
                m.d.comb += [self.scanning.eq(1), self.ev.valid.eq(~self.discard), ev.end.eq(1)]
                with m.If(self.ev.ready | self.discard):
                    m.next = "IDLE"


class Executor(wiring.Component):
    """The protocol's ops on the chip (see the module doc).

    Ports: ``cmd`` (In, :class:`FrameHeader`), ``cmd_data`` (In, :class:`PayloadByte`),
    ``rsp`` (Out, :class:`ReplyHeader`), ``rsp_data`` (Out, bytes) to/from ``HostLink``;
    ``stats`` (In, ``HostLink.stats``), ``uart_frame_errors`` / ``uart_overruns`` (In; 0
    without a UART) for ``read_counters`` core 0xFF; ``chip_cmd`` (Out), ``chip_rsp`` (In),
    ``ev`` (Out) to the chip's ``cmd`` / ``rsp`` / ``ev_in``.

    ``busy`` (Out): a request is being handled (the executor is not waiting for a header);
    ``training`` (Out): ``busy`` with a ``train`` or ``update`` request -- status outputs for a
    board's LEDs, which change nothing.

    ``counters``: the cores have their debug counters (``Chip(debug=True)``); without them
    ``read_counters`` of a core is ``unknown_op``. ``weights_loaded``: the chip was built
    with weights (``status`` flag bit 0; also set by the first good ``write_weights``).
    """

    def __init__(self, cfg, geometry: ChipGeometry | None = None, *, max_payload: int = 2048,
                 counter_bits: int = 16, counters: bool = True, weights_loaded: bool = False):
        geometry = ChipGeometry.from_config(cfg) if geometry is None else geometry
        self.cfg, self.geometry = cfg, geometry
        self.n = len(geometry.cores)
        if self.n > 255:
            raise ValueError(f"Executor: {self.n} cores; the protocol's core index is a u8 (0xFF: link)")
        if cfg.network.timesteps > 255:
            raise ValueError(f"Executor: T = {cfg.network.timesteps}; the protocol's T is a u8")
        self.max_payload, self.counters, self.weights_loaded = max_payload, counters, weights_loaded
        self.counter_bits = counter_bits
        self.version = version_bytes(cfg, geometry, max_payload)
        self.out_cores = geometry.layer_cores(len(cfg.network.layers) - 2)
        self.n_out = cfg.network.layers[-1]
        super().__init__({
            "cmd": In(stream.Signature(FrameHeader)),
            "cmd_data": In(stream.Signature(PayloadByte)),
            "rsp": Out(stream.Signature(ReplyHeader)),
            "rsp_data": Out(stream.Signature(8)),
            "stats": In(stats_layout(counter_bits)),
            "uart_frame_errors": In(counter_bits),
            "uart_overruns": In(counter_bits),
            "chip_cmd": Out(stream.Signature(chip_cmd_layout(self.n))),
            "chip_rsp": In(stream.Signature(chip_rsp_layout(self.n))),
            "ev": Out(stream.Signature(chip_event_layout(cfg))),
            "busy": Out(1),
            "training": Out(1),
        })

    # ------------------------------------------------------------------ registers
    def _regs(self, m):
        r = self
        r.seq, r.op, r.len = Signal(8), Signal(8), Signal(16)
        r.args, r.argn = Signal(56), Signal(3)
        r.nargs = Signal(3)
        r.status, r.rlen = Signal(Status), Signal(16)        # the reply header
        # the command loop: core, i, j, k of n, the core op, what varies, bytes per answer
        r.core, r.i, r.j = Signal(8), Signal(16), Signal(16)
        r.k, r.kn = Signal(17), Signal(17)
        r.cop = Signal(Op)
        r.inc_i, r.inc_j, r.inc_core, r.wrap = Signal(), Signal(), Signal(), Signal()
        r.nbytes = Signal(3)
        r.word = Signal(32)
        r.bsel = Signal(2)
        r.zero = Signal()
        r.left = Signal(16)                               # raster bytes still to read
        r.issued, r.answered = Signal(range(self.n + 1)), Signal(range(self.n + 1))
        r.samples = Signal(32)
        r.loaded = Signal(init=int(self.weights_loaded))
        # the reply byte emitter: ob_n bytes of ob, low byte first
        r.ob, r.ob_n = Signal(48), Signal(3)

    def _emitter(self, m):
        m.d.comb += [self.rsp_data.valid.eq(self.ob_n != 0), self.rsp_data.payload.eq(self.ob[:8])]
        with m.If(self.rsp_data.valid & self.rsp_data.ready):
            m.d.sync += [self.ob.eq(self.ob >> 8), self.ob_n.eq(self.ob_n - 1)]

    def _emit(self, m, value, n):
        m.d.sync += [self.ob.eq(value), self.ob_n.eq(n)]

    # ------------------------------------------------------------------ per-core constants
    def _lookup(self, m, idx, name):
        """(core < n, n_neurons, n_in, first neuron) of core ``idx``."""
        geo = self.geometry
        ok, nn, ni, off = (Signal(name=f"{name}_ok"), Signal(16, name=f"{name}_neurons"),
                           Signal(16, name=f"{name}_n_in"), Signal(16, name=f"{name}_offset"))
        sel = idx[:ubits(self.n)] if self.n > 1 else Const(0, 1)
        m.d.comb += [ok.eq(idx < self.n),
                     nn.eq(Array(Const(c.geom.n_neurons, 16) for c in geo.cores)[sel]),
                     ni.eq(Array(Const(c.geom.n_in, 16) for c in geo.cores)[sel]),
                     off.eq(Array(Const(c.offset, 16) for c in geo.cores)[sel])]
        return ok, nn, ni, off

    def _lookups(self, m):
        # the request's core (checks) and the loop's core (set_label, read_count)
        self.core_ok, self.n_neur, self.n_in, _ = self._lookup(m, self.args[:8], "req")
        _, self.loop_neur, _, off = self._lookup(m, self.core, "loop")
        # set_label: the label relative to the core's first neuron, or n_neurons (not here)
        label = self.args[:16]
        self.lab_rel = Signal(32)
        rel = Signal(17)
        m.d.comb += rel.eq(label - off)
        m.d.comb += self.lab_rel.eq(Mux((label >= off) & (rel < self.loop_neur), rel, self.loop_neur))

    # ------------------------------------------------------------------ elaborate
    def elaborate(self, platform):
        m = Module()
        self._regs(m)
        m.submodules.raster = self.rb = RasterBuffer(self.cfg)
        wiring.connect(m, self.rb.ev, wiring.flipped(self.ev))
        depth = max(c.geom.n_neurons for c in self.geometry.cores)
        m.submodules.seeds = seeds = Memory(shape=32, depth=depth, init=[])
        self.seed_w, self.seed_r = seeds.write_port(), seeds.read_port()
        self._lookups(m)
        self._emitter(m)
        with m.FSM(name="exec") as fsm:
            self._receive(m)
            self._check(m)
            self._loop(m)
            self._sample(m)
            self._local(m)
            self._replies(m)
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")),
                     self.training.eq(self.busy & ((self.op == int(hp.Op.TRAIN)) |
                                                   (self.op == int(hp.Op.UPDATE))))]
        return m

    def _receive(self, m):
        """IDLE: the header; DISPATCH: op and payload size; ARGS: the fixed arguments."""
        ops = Array(Const(_ARGS.get(v, 0), 3) for v in range(256))
        known = Array(Const(int(v in [int(o) for o in _ARGS]), 1) for v in range(256))
        fixed = Array(Const(int(v in [int(o) for o in _FIXED]), 1) for v in range(256))
        with m.State("IDLE"):
            m.d.comb += self.cmd.ready.eq(1)
            with m.If(self.cmd.valid):
                h = self.cmd.payload
                m.d.sync += [self.seq.eq(h.seq), self.op.eq(h.op), self.len.eq(h.len),
                             self.argn.eq(0), self.args.eq(0), self.nargs.eq(ops[h.op])]
                m.next = "DISPATCH"
        with m.State("DISPATCH"):
            with m.If(~known[self.op]):
                self._fail(m, Status.UNKNOWN_OP)
            with m.Elif((self.len < self.nargs) | (fixed[self.op] & (self.len != self.nargs))):
                self._fail(m, Status.BAD_LEN)
            with m.Elif(self.nargs == 0):
                m.next = "CHECK"
            with m.Else():
                m.next = "ARGS"
        with m.State("ARGS"):
            m.d.comb += self.cmd_data.ready.eq(1)
            with m.If(self.cmd_data.valid):
                with m.Switch(self.argn):
                    for k in range(7):
                        with m.Case(k):
                            m.d.sync += self.args[8 * k:8 * k + 8].eq(self.cmd_data.payload.data)
                m.d.sync += self.argn.eq(self.argn + 1)
                with m.If(self.argn + 1 == self.nargs):
                    m.next = "CHECK"

    def _fail(self, m, status):
        m.d.sync += [self.status.eq(status), self.rlen.eq(0)]
        m.next = "REPLY_END"

    def _start_loop(self, m, cop, n, *, core=None, i=None, j=None, inc_i=0, inc_j=0,
                    inc_core=0, wrap=0, nbytes=0):
        a = self.args
        m.d.sync += [self.cop.eq(cop), self.k.eq(0), self.kn.eq(n),
                     self.core.eq(a[:8] if core is None else core),
                     self.i.eq(0 if i is None else i), self.j.eq(0 if j is None else j),
                     self.inc_i.eq(inc_i), self.inc_j.eq(inc_j), self.inc_core.eq(inc_core),
                     self.wrap.eq(wrap), self.nbytes.eq(nbytes), self.bsel.eq(0), self.word.eq(0)]

    def _check(self, m):
        """CHECK: every argument of the request, then the op's first state."""
        a, Ops = self.args, hp.Op
        ok = Status.OK
        with m.State("CHECK"):
            with m.Switch(self.op):
                with m.Case(Ops.VERSION):
                    m.d.sync += [self.status.eq(ok), self.rlen.eq(len(self.version)), self.k.eq(0)]
                    m.next = "REPLY_VERSION"
                with m.Case(Ops.STATUS):
                    self._start_loop(m, Op.STATUS, 1, core=0, nbytes=6)
                    m.d.sync += [self.status.eq(ok), self.rlen.eq(6)]
                    m.next = "REPLY_LOOP"
                with m.Case(Ops.READ_COUNTERS):
                    self._check_counters(m)
                with m.Case(Ops.WRITE_WEIGHTS, Ops.READ_WEIGHTS):
                    self._check_weights(m)
                with m.Case(Ops.SET_SEEDS, Ops.READ_SEEDS):
                    self._check_seeds(m)
                with m.Case(Ops.TRAIN, Ops.INFER):
                    self._check_sample(m)
                with m.Case(Ops.UPDATE):
                    if inplace(self.cfg):
                        self._fail(m, Status.BUSY)
                    else:
                        m.d.sync += [self.issued.eq(0), self.answered.eq(0), self.cop.eq(Op.UPDATE)]
                        m.next = "RUN"

    def _check_counters(self, m):
        core, first, count = self.args[:8], self.args[8:16], self.args[16:24]
        end = first + count
        with m.If(core == hp.LINK_CORE):
            with m.If(end > len(LINK_COUNTERS)):
                self._fail(m, Status.BAD_INDEX)
            with m.Else():
                m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(count << 2),
                             self.i.eq(first), self.k.eq(0), self.kn.eq(count)]
                m.next = "REPLY_LINK"
        with m.Elif(~Const(int(self.counters), 1)):
            self._fail(m, Status.UNKNOWN_OP)
        with m.Elif(~self.core_ok | (end > len(COUNTERS))):
            self._fail(m, Status.BAD_INDEX)
        with m.Else():
            self._start_loop(m, Op.READ_COUNTER, count, i=first, inc_i=1, nbytes=4)
            m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(count << 2)]
            m.next = "REPLY_LOOP"

    def _check_weights(self, m):
        a = self.args
        row, col, count = a[8:24], a[24:40], a[40:56]
        write = self.op == int(hp.Op.WRITE_WEIGHTS)
        with m.If(write & (self.len != 7 + (count << 1))):
            self._fail(m, Status.BAD_LEN)
        with m.Elif(~self.core_ok | (row >= self.n_neur) | (col + count > self.n_in)):
            self._fail(m, Status.BAD_INDEX)
        with m.Elif(write):
            self._start_loop(m, Op.WRITE_W, count, i=row, j=col, inc_j=1)
            m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(0)]
            m.next = "LOOP"
        with m.Else():
            self._start_loop(m, Op.READ_W, count, i=row, j=col, inc_j=1, nbytes=2)
            m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(count << 1)]
            m.next = "REPLY_LOOP"

    def _check_seeds(self, m):
        a = self.args
        first, count = a[8:24], a[24:40]
        write = self.op == int(hp.Op.SET_SEEDS)
        with m.If(write & (self.len != 5 + (count << 2))):
            self._fail(m, Status.BAD_LEN)
        with m.Elif(~self.core_ok | (first + count > self.n_neur)):
            self._fail(m, Status.BAD_INDEX)
        with m.Elif(write):
            self._start_loop(m, Op.WRITE_RNG, count, i=first, inc_i=1)
            m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(0), self.zero.eq(0)]
            m.next = "SEED_FILL"
        with m.Else():
            self._start_loop(m, Op.READ_RNG, count, i=first, inc_i=1, nbytes=4)
            m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(count << 2)]
            m.next = "REPLY_LOOP"

    def _check_sample(self, m):
        cfg = self.cfg
        T, n_in = cfg.network.timesteps, cfg.network.layers[0]
        a = self.args
        label, enc, t, nin = a[:16], a[16:24], a[24:32], a[32:48]
        raster = T * (-(-n_in // 8))
        train = self.op == int(hp.Op.TRAIN)
        with m.If((t != T) | (nin != n_in) | (enc > int(hp.Enc.MASKS))):
            self._fail(m, Status.BAD_ARG)
        with m.Elif((enc == int(hp.Enc.BITMAP)) & (self.len != 6 + raster)):
            self._fail(m, Status.BAD_LEN)
        with m.Elif(train & (label >= self.n_out)):
            self._fail(m, Status.BAD_ARG)
        with m.Else():
            m.d.comb += [self.rb.start.eq(1)]
            m.d.sync += [self.left.eq(self.len - 6), self.rb.enc.eq(enc[:2])]
            m.next = "RASTER"

    # ------------------------------------------------------------------ command loop
    def _loop(self, m):
        """LOOP: ``kn`` core commands, one at a time: (payload words ->) cmd -> rsp (-> bytes)."""
        c = self.chip_cmd.payload
        write_w = self.cop == Op.WRITE_W
        with m.State("LOOP"):
            with m.If(self.k == self.kn):
                m.next = "LOOP_END"
            with m.Elif(write_w):
                m.next = "FETCH"
            with m.Elif(self.cop == Op.WRITE_RNG):
                m.d.comb += self.seed_r.addr.eq(self.k)
                m.next = "SEED_RD"
            with m.Elif(self.ob_n == 0):
                m.next = "ISSUE"
        with m.State("FETCH"):
            # a weight: two payload bytes, little-endian, sign-extended
            m.d.comb += self.cmd_data.ready.eq(1)
            with m.If(self.cmd_data.valid):
                byte = self.cmd_data.payload.data
                m.d.sync += [self.word[:8].eq(byte), self.bsel.eq(1)]
                with m.If(self.bsel == 1):
                    m.d.sync += [self.word.eq(Cat(self.word[:8], byte).as_signed()), self.bsel.eq(0)]
                    m.next = "ISSUE"
        with m.State("SEED_RD"):
            m.d.comb += self.seed_r.addr.eq(self.k)
            m.d.sync += self.word.eq(self.seed_r.data)
            m.next = "ISSUE"
        with m.State("ISSUE"):
            m.d.comb += [self.chip_cmd.valid.eq(1), c.core.eq(self.core), c.op.eq(self.cop),
                         c.i.eq(self.i), c.j.eq(self.j),
                         c.data.eq(Mux(self.cop == Op.SET_LABEL, self.lab_rel, self.word))]
            with m.If(self.chip_cmd.ready):
                m.next = "WAIT"
        with m.State("WAIT"):
            m.d.comb += self.chip_rsp.ready.eq(1)
            with m.If(self.chip_rsp.valid):
                d = self.chip_rsp.payload.data
                with m.If(self.nbytes != 0):
                    status = Cat(d[:2], Const(0, 6), self.loaded, Const(0, 7), self.samples)
                    self._emit(m, Mux(self.cop == Op.STATUS, status, d), self.nbytes)
                self._advance(m)
                m.next = "LOOP"
        with m.State("LOOP_END"):
            with m.Switch(self.cop):
                with m.Case(Op.SET_LABEL):
                    self._start_run(m)
                with m.Case(Op.WRITE_W, Op.WRITE_RNG):
                    m.d.sync += self.loaded.eq(self.loaded | (self.cop == Op.WRITE_W))
                    m.next = "REPLY_END"
                with m.Default():
                    m.next = "DRAIN"

    def _advance(self, m):
        m.d.sync += self.k.eq(self.k + 1)
        with m.If(self.inc_i):
            with m.If(self.wrap & (self.i + 1 == self.loop_neur)):
                m.d.sync += [self.i.eq(0), self.core.eq(self.core + 1)]
            with m.Else():
                m.d.sync += self.i.eq(self.i + 1)
        with m.If(self.inc_j):
            m.d.sync += self.j.eq(self.j + 1)
        with m.If(self.inc_core):
            m.d.sync += self.core.eq(self.core + 1)

    # ------------------------------------------------------------------ samples
    def _sample(self, m):
        """RASTER: decode and check; then set_label (LOOP), RUN, the counts (LOOP)."""
        rb = self.rb
        first_out = self.out_cores[0].core
        with m.State("SEED_FILL"):
            # the seeds into the staging memory; any zero refuses the request
            m.d.comb += self.cmd_data.ready.eq(1)
            with m.If(self.k == self.kn):
                with m.If(self.zero):
                    self._fail(m, Status.BAD_ARG)
                with m.Else():
                    m.d.sync += self.k.eq(0)
                    m.next = "LOOP"
            with m.Elif(self.cmd_data.valid):
                byte = self.cmd_data.payload.data
                full = Cat(self.word[:24], byte)
                with m.Switch(self.bsel):
                    for q in range(3):
                        with m.Case(q):
                            m.d.sync += self.word[8 * q:8 * q + 8].eq(byte)
                m.d.sync += self.bsel.eq(self.bsel + 1)
                with m.If(self.bsel == 3):
                    m.d.comb += [self.seed_w.addr.eq(self.k), self.seed_w.data.eq(full),
                                 self.seed_w.en.eq(1)]
                    m.d.sync += [self.k.eq(self.k + 1), self.zero.eq(self.zero | (full == 0))]
        with m.State("RASTER"):
            m.d.comb += [rb.byte.valid.eq(self.cmd_data.valid & (self.left != 0)),
                         rb.byte.payload.eq(self.cmd_data.payload.data),
                         self.cmd_data.ready.eq(rb.byte.ready & (self.left != 0))]
            with m.If(self.cmd_data.valid & self.cmd_data.ready):
                m.d.sync += self.left.eq(self.left - 1)
            with m.If((self.left == 0) & ~rb.busy):
                m.d.comb += rb.flush.eq(1)
                m.next = "RASTER_END"
        with m.State("RASTER_END"):
            with m.If(rb.bad | rb.bad_size):
                m.d.comb += [rb.scan.eq(1)]
                m.d.sync += [rb.discard.eq(1), self.status.eq(Mux(rb.bad_size, Status.BAD_LEN, Status.BAD_ARG))]
                m.next = "DISCARD"
            with m.Elif(self.op == int(hp.Op.TRAIN)):
                self._start_loop(m, Op.SET_LABEL, len(self.out_cores), core=first_out, inc_core=1)
                m.next = "LOOP"
            with m.Else():
                self._start_run(m)
        with m.State("DISCARD"):
            with m.If(~rb.scanning):
                m.d.sync += [rb.discard.eq(0), self.rlen.eq(0)]
                m.next = "REPLY_END"
        with m.State("RUN"):
            self._run(m)

    def _start_run(self, m):
        m.d.comb += self.rb.scan.eq(self.op != int(hp.Op.UPDATE))
        m.d.sync += [self.issued.eq(0), self.answered.eq(0),
                     self.cop.eq(Mux(self.op == int(hp.Op.TRAIN), Op.TRAIN_DS, Op.INFER))]
        m.next = "RUN"

    def _run(self, m):
        """The run command to every core in layer order, the events (RasterBuffer), one
        response per core; then the reply header and the output counts."""
        c = self.chip_cmd.payload
        m.d.comb += [self.chip_cmd.valid.eq(self.issued != self.n), c.core.eq(self.issued),
                     c.op.eq(self.cop), c.i.eq(0), c.j.eq(0), c.data.eq(0),
                     self.chip_rsp.ready.eq(1)]
        with m.If(self.chip_cmd.valid & self.chip_cmd.ready):
            m.d.sync += self.issued.eq(self.issued + 1)
        with m.If(self.chip_rsp.valid):
            m.d.sync += self.answered.eq(self.answered + 1)
        with m.If((self.answered == self.n) & ~self.rb.scanning):
            with m.If(self.op == int(hp.Op.UPDATE)):
                m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(0)]
                m.next = "REPLY_END"
            with m.Else():
                with m.If(self.op == int(hp.Op.TRAIN)):
                    m.d.sync += self.samples.eq(self.samples + 1)
                self._start_loop(m, Op.READ_COUNT, self.n_out, core=self.out_cores[0].core,
                                 inc_i=1, wrap=1, nbytes=1)
                m.d.sync += [self.status.eq(Status.OK), self.rlen.eq(self.n_out)]
                m.next = "REPLY_LOOP"

    # ------------------------------------------------------------------ local replies
    def _local(self, m):
        """Replies made here: ``version`` (a ROM) and the link's counters."""
        rom = Array(Const(b, 8) for b in self.version)
        cb = self.counter_bits
        link = Array([getattr(self.stats, n) for n in STATS] + [self.uart_frame_errors, self.uart_overruns])
        with m.State("VERSION"):
            with m.If(self.k == len(self.version)):
                m.next = "DRAIN"
            with m.Elif(self.ob_n == 0):
                self._emit(m, rom[self.k], 1)
                m.d.sync += self.k.eq(self.k + 1)
        with m.State("LINK"):
            with m.If(self.k == self.kn):
                m.next = "DRAIN"
            with m.Elif(self.ob_n == 0):
                self._emit(m, link[self.i[:4]][:cb], 4)
                m.d.sync += [self.k.eq(self.k + 1), self.i.eq(self.i + 1)]

    def _replies(self, m):
        """The reply header, then: IDLE, LOOP (answers of core commands), VERSION, LINK;
        DRAIN waits for the last payload byte."""
        h = self.rsp.payload
        for state, nxt in (("REPLY_END", "IDLE"), ("REPLY_LOOP", "LOOP"),
                           ("REPLY_VERSION", "VERSION"), ("REPLY_LINK", "LINK")):
            with m.State(state):
                m.d.comb += [self.rsp.valid.eq(1), h.seq.eq(self.seq), h.status.eq(self.status),
                             h.len.eq(self.rlen)]
                with m.If(self.rsp.ready):
                    m.next = nxt
        with m.State("DRAIN"):
            with m.If(self.ob_n == 0):
                m.next = "IDLE"
