"""The FP engine: event-driven forward pass of one sample (docs/core.md, "Engines", FP).

Per timestep ``t = 0..T-1``, per neuron block ``b = 0..NB-1``: for each input event ``j``
of ``t`` (``ev_addr[ev_start[t] .. ev_start[t+1]-1]``), one cycle reads the column slice
``W[b*P .. b*P+P-1, j]`` (address ``b*n_in + j`` in every bank, lane ``q`` in bank
``(q + j) mod P``) and adds it to ``P`` current accumulators (registers, full width
``acc_width(weight_bits, n_in)``). A block of a timestep without events takes one cycle
(the neurons still leak). The block's current then goes through the :class:`LIF` unit
one cycle later -- overlapping the accumulation of the next block -- which writes ``h``
(private, banked by lane, address ``b``), ``S[t][b]`` and ``M[t][b]`` (shared, one
``P``-bit word each at ``t*NB + b``), adds the spikes to the counts (shared, banked by lane,
address ``b``; written, not added, at ``t = 0``) and emits ``{t, b, spikes}`` on the
``spikes`` stream when some lane fired.

Pipeline (one block-event per cycle, no bubbles between blocks or timesteps):

* A (cursor ``t, b, e``): ``ev_addr[e]`` is on ``ev_addr_rdata`` (its address was the
  next-cursor value of the cycle before).
* B: the column ``j`` is registered; issue the weight read ``b*n_in + j``.
* C: the ``P`` weight words arrive and are registered.
* R: rotate them into lane order, accumulate; on the block's last event hand the current
  to D and issue the reads of ``h[b]`` and ``count[b]``.
* D: LIF leak and add (``v = sat(h - (h >> k) + I)``), registered inside the LIF unit.
* E: spike, mask, hard reset; write ``h``, ``S``, ``M``, counts; the spike word goes to
  the output register. With ``NB = 1`` D and E are one stage (block 0 follows itself back
  to back, so its ``h`` must be ready the next cycle); with ``NB >= 2`` a block's next
  timestep reaches D at least two cycles later, when its last write is forwardable. The
  write of the cycle before is forwarded, so the shared count memory needs no
  transparent read port.

Buffered input (the in-place dataflow, ``buffered``): there is no event list. At each
timestep FP waits (``buf_wait``) while the core's loader writes the events of ``t`` into a
buffer of ``n_in`` entries (``ev_addr``, one per cycle); an event of a later timestep (or
``end``) closes it (``buf_closed``, ``buf_n`` events), FP takes it (``buf_take``) and walks
``buffer[0 .. buf_n-1]`` once per block as above, then waits for ``t+1``. The buffer holds
one timestep, so it fills one block RAM where the list of ``T*n_in`` entries took five on
the 784-input core; the price is the fill, ``events(t) + 2`` cycles per timestep, not
overlapped with the walk.

Cycles (``cycles``, busy cycles excluding stalls; ``model/perf.py:fp_cycles``):
``2 + NB * sum_t max(events(t), 1) + 4`` (``NB = 1``) or ``+ 5`` (``NB >= 2``) -- two to
read ``ev_start[0], ev_start[1]``, one per block-event, four or five to drain B, C, R, D, E;
buffered: ``sum_t (events(t) + 2)`` instead of the two.
``done`` pulses the cycle after the last write (``busy`` is low again); the last spike
word, if any, is then still presented. ``step`` pulses the cycle after the last block of
each timestep ``step_t`` is written, when that block's spike word (if any) is presented:
the chip sends its timestep marker after it (rtl/chip.py). ``work`` = ``sum_t events(t) * N``.
``stalls``: cycles frozen because the output register held a word (``spikes.valid``) that
``spikes.ready`` did not take -- the whole engine freezes (memory read addresses are held
so read data stays valid).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import arith
from .debug import counter_domain
from .geometry import CoreGeometry, check_geometry
from .interfaces import count_bits, spike_word_layout, ubits
from .lif import LIF

__all__ = ["FPEngine"]


class FPEngine(wiring.Component):
    """Forward pass of one core over one sample (see the module docstring).

    Ports:

    * control: ``start`` (In, 1-cycle strobe, ignored while busy); ``busy``, ``done``
      (1-cycle pulse); ``cycles``, ``work``, ``stalls`` (Out(32), of the last run).
    * shared event memories (one bank each, synchronous read): ``ev_start_raddr`` /
      ``ev_start_rdata`` (T+1 offsets), ``ev_addr_raddr`` / ``ev_addr_rdata`` (columns).
    * shared weights (P banks, skewed): ``w_raddr`` / ``w_rdata`` (arrays of P).
    * shared histories (one bank of P-bit words, address ``t*NB + b``): ``s_waddr``,
      ``s_wdata``, ``s_we`` (spikes) and ``m_waddr``, ``m_wdata``, ``m_we`` (masks).
    * shared spike counts (P banks by lane, address ``b``, :func:`count_bits` wide):
      ``cnt_raddr`` / ``cnt_rdata``, ``cnt_waddr`` / ``cnt_wdata`` / ``cnt_we`` (arrays of P).
    * ``spikes``: Out stream of :func:`spike_word_layout`, the non-zero spike words.
    * ``h_waddr`` / ``h_wdata`` / ``h_we`` (Out, arrays of P): mirror of the private
      membrane writes (for scoreboards; ``h`` of padding lanes is 0).
    """

    def __init__(self, cfg, geom: CoreGeometry, *, debug: bool = True):
        self.debug = bool(debug)   # performance counters (rtl/debug.py)
        check_geometry("FPEngine", cfg, geom, timesteps=False)
        self.cfg = cfg
        self.geom = geom
        a = cfg.arithmetic
        P, NB, T = geom.lanes, geom.blocks, geom.timesteps
        depth = geom.weight_depth
        self.current_bits = arith.acc_width(a.weight_bits, geom.n_in)
        #: in place (``hardware.wg_dataflow``): events come through a one-timestep buffer
        #: that the core's loader fills while FP waits (module docstring, "Buffered input").
        self.buffered = cfg.hardware.wg_dataflow == "inplace"
        self.ev_depth = geom.n_in if self.buffered else geom.max_events
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "step": Out(1),
            "step_t": Out(unsigned(ubits(T))),
            "cycles": Out(32),
            "work": Out(32),
            "stalls": Out(32),
            "ev_start_raddr": Out(unsigned(ubits(T + 1))),
            "ev_start_rdata": In(unsigned(ubits(geom.max_events + 1))),
            "ev_addr_raddr": Out(unsigned(ubits(self.ev_depth))),
            "ev_addr_rdata": In(unsigned(ubits(geom.n_in))),
            "buf_n": In(unsigned(ubits(geom.n_in + 1))),
            "buf_closed": In(1),
            "buf_wait": Out(1),
            "buf_take": Out(1),
            "w_raddr": Out(unsigned(ubits(depth))).array(P),
            "w_rdata": In(signed(a.weight_bits)).array(P),
            "s_waddr": Out(unsigned(ubits(T * NB))),
            "s_wdata": Out(P),
            "s_we": Out(1),
            "m_waddr": Out(unsigned(ubits(T * NB))),
            "m_wdata": Out(P),
            "m_we": Out(1),
            "cnt_raddr": Out(unsigned(ubits(NB))).array(P),
            "cnt_rdata": In(unsigned(count_bits(T))).array(P),
            "cnt_waddr": Out(unsigned(ubits(NB))).array(P),
            "cnt_wdata": Out(unsigned(count_bits(T))).array(P),
            "cnt_we": Out(1).array(P),
            "h_waddr": Out(unsigned(ubits(NB))).array(P),
            "h_wdata": Out(signed(a.membrane_bits)).array(P),
            "h_we": Out(1).array(P),
            "spikes": Out(stream.Signature(spike_word_layout(geom))),
        })

    def elaborate(self, platform):
        m = Module()
        ctr = counter_domain(m, self.debug)
        cfg, g = self.cfg, self.geom
        a = cfg.arithmetic
        P, NB, T, N, n_in = g.lanes, g.blocks, g.timesteps, g.n_neurons, g.n_in
        mb, cb = a.membrane_bits, count_bits(T)
        lb = max(1, (P - 1).bit_length())
        last_lanes = N - (NB - 1) * P           # valid lanes of the last block
        last_mask = (1 << last_lanes) - 1
        all_mask = (1 << P) - 1

        # ------------------------------------------------------------ private h memory
        h_rd, h_wr = [], []
        for q in range(P):
            mem = Memory(shape=signed(mb), depth=max(NB, 2), init=[])   # depth 1: no address bits
            m.submodules[f"h{q}"] = mem
            h_rd.append(mem.read_port())
            h_wr.append(mem.write_port())

        # NB >= 2: the LIF update takes two stages (D: leak and add, E: spike, reset and the
        # writes); a block's next timestep then comes >= 2 cycles later, after its write is
        # forwardable. NB = 1 keeps the one-stage LIF (block 0 follows itself back to back).
        two = NB >= 2
        m.submodules.lif = lif = LIF(cfg, P, self.current_bits, pipelined=two)

        stall = Signal()

        # ----------------------------------------------------------------- control FSM
        # states: 0 idle, 1 S0 (ev_start[0] on rdata), 2 S1 (ev_start[1]), 3 RUN,
        # 5 WAIT (buffered: the loader fills the buffer with the events of t)
        buffered, depth_ev = self.buffered, self.ev_depth
        state = Signal(3)
        t = Signal(range(T + 1))
        b = Signal(range(NB + 1))
        e = Signal(range(depth_ev + 1))
        lo = Signal(range(depth_ev + 1))
        hi = Signal(range(depth_ev + 1))
        base = Signal(range(g.weight_depth + n_in))     # b * n_in
        blk = Signal(range(T * NB + 1))                 # t * NB + b
        t_n, b_n, e_n = Signal.like(t), Signal.like(b), Signal.like(e)
        lo_n, hi_n, base_n, blk_n = Signal.like(lo), Signal.like(hi), Signal.like(base), Signal.like(blk)
        state_n = Signal.like(state)

        # stage C registers
        c_valid, c_ev = Signal(name="c_valid"), Signal(name="c_ev")
        c_first, c_last = Signal(name="c_first"), Signal(name="c_last")
        c_jlow = Signal(lb)
        c_b = Signal.like(b)
        c_t = Signal.like(t)
        c_blk = Signal.like(blk)
        c_waddr = Signal(ubits(g.weight_depth))
        acc = [Signal(signed(self.current_bits), name=f"acc{q}") for q in range(P)]
        # stage D registers
        d_valid = Signal()
        d_cur = [Signal(signed(self.current_bits), name=f"d_cur{q}") for q in range(P)]
        d_b = Signal.like(b)
        d_t = Signal.like(t)
        d_blk = Signal.like(blk)
        # forwarding of the previous D write
        f_h = [Signal(signed(mb), name=f"f_h{q}") for q in range(P)]
        f_cnt = [Signal(cb, name=f"f_cnt{q}") for q in range(P)]

        j = self.ev_addr_rdata
        # the cursor's tests come from registers kept with it, so that the next cursor (and
        # the event read address it forms) does not wait for a comparison of e, lo and hi:
        # empty = (lo == hi), rem = hi - 1 - e (the events of the block after this one), and
        # which of e, lo, hi equals depth_ev (the read address is clamped to 0 there)
        empty = Signal(name="ev_empty", init=1)   # lo == hi == 0 after reset
        rem = Signal(range(depth_ev + 1), name="ev_rem")
        e_end, lo_end, hi_end = Signal(name="e_end"), Signal(name="lo_end"), Signal(name="hi_end")
        a_end = Signal(name="a_end")             # e_n == depth_ev
        last_ev = empty | (rem == 0)
        running = state == 3

        m.d.comb += [
            t_n.eq(t), b_n.eq(b), e_n.eq(e), lo_n.eq(lo), hi_n.eq(hi), base_n.eq(base),
            blk_n.eq(blk), state_n.eq(state), a_end.eq(e_end),
        ]
        with m.If(~stall):
            with m.Switch(state):
                with m.Case(0):
                    with m.If(self.start):
                        if buffered:
                            m.d.comb += [state_n.eq(5), t_n.eq(0), blk_n.eq(0)]
                        else:
                            m.d.comb += state_n.eq(1)
                with m.Case(5):
                    # the loader closed timestep t: its events are buffer[0 .. buf_n-1]
                    with m.If(self.buf_closed):
                        m.d.comb += [self.buf_take.eq(1), lo_n.eq(0), hi_n.eq(self.buf_n),
                                     e_n.eq(0), b_n.eq(0), base_n.eq(0), state_n.eq(3),
                                     a_end.eq(0)]
                with m.Case(1):
                    m.d.comb += [lo_n.eq(self.ev_start_rdata), state_n.eq(2)]
                with m.Case(2):
                    m.d.comb += [hi_n.eq(self.ev_start_rdata), e_n.eq(lo), t_n.eq(0), b_n.eq(0),
                                 base_n.eq(0), blk_n.eq(0), state_n.eq(3), a_end.eq(lo_end)]
                with m.Case(3):
                    with m.If(last_ev):
                        m.d.comb += blk_n.eq(blk + 1)
                        with m.If(b == NB - 1):
                            with m.If(t == T - 1):
                                m.d.comb += state_n.eq(0)
                            with m.Else():
                                if buffered:
                                    # the buffer is free again: wait for the events of t+1
                                    m.d.comb += [t_n.eq(t + 1), state_n.eq(5)]
                                else:
                                    # next timestep: lo = hi, hi = ev_start[t+2] (on rdata)
                                    m.d.comb += [t_n.eq(t + 1), b_n.eq(0), base_n.eq(0),
                                                 lo_n.eq(hi), hi_n.eq(self.ev_start_rdata),
                                                 e_n.eq(hi), a_end.eq(hi_end)]
                        with m.Else():
                            m.d.comb += [b_n.eq(b + 1), base_n.eq(base + n_in), e_n.eq(lo),
                                         a_end.eq(lo_end)]
                    with m.Else():
                        # e + 1 <= hi - 1 < depth_ev here
                        m.d.comb += [e_n.eq(e + 1), a_end.eq(0)]
        m.d.sync += [t.eq(t_n), b.eq(b_n), e.eq(e_n), lo.eq(lo_n), hi.eq(hi_n), base.eq(base_n),
                     blk.eq(blk_n), state.eq(state_n),
                     empty.eq(lo_n == hi_n), rem.eq(hi_n - 1 - e_n),
                     e_end.eq(e_n == depth_ev), lo_end.eq(lo_n == depth_ev),
                     hi_end.eq(hi_n == depth_ev)]

        # memory read addresses from the next cursor (held while stalled, as the cursor is)
        sa = Signal(range(T + 3))
        m.d.comb += [
            sa.eq(Mux(state_n == 1, 0, Mux(state_n == 2, 1, t_n + 2))),
            self.ev_start_raddr.eq(Mux(sa > T, T, sa)),
            self.ev_addr_raddr.eq(Mux(a_end, 0, e_n)),      # e_n >= depth_ev (e_n <= depth_ev)
            self.buf_wait.eq((state == 5) & ~stall),
        ]
        # ---------------------------------------------------------------- stage A -> B
        # B: the event's column (read in A) is registered before it forms the weight
        # address: block RAM clock-to-out and the depth mux of the event list take half a
        # 100 MHz cycle on their own.
        b_valid, b_ev = Signal(name="b_valid"), Signal(name="b_ev")
        b_first, b_last = Signal(name="b_first"), Signal(name="b_last")
        b_j = Signal(ubits(n_in))
        b_b, b_t, b_blk, b_base = Signal.like(b), Signal.like(t), Signal.like(blk), Signal.like(base)
        lanes_b = Mux(b == NB - 1, last_lanes, P)
        with m.If(~stall):
            m.d.sync += [
                b_valid.eq(running),
                b_ev.eq(running & ~empty),
                b_first.eq(e == lo),
                b_last.eq(last_ev),
                b_j.eq(j),
                b_b.eq(b), b_t.eq(t), b_blk.eq(blk), b_base.eq(base),
            ]
            with m.If(running & ~empty):
                ctr += self.work.eq(self.work + lanes_b)

        wa = Signal(ubits(g.weight_depth))
        m.d.comb += wa.eq(Mux(stall, c_waddr, b_base + b_j))
        for k in range(P):
            m.d.comb += self.w_raddr[k].eq(wa)

        # ---------------------------------------------------------------- stage B -> C
        with m.If(~stall):
            m.d.sync += [
                c_valid.eq(b_valid),
                c_ev.eq(b_ev),
                c_first.eq(b_first),
                c_last.eq(b_last),
                c_jlow.eq(b_j if P > 1 else 0),
                c_b.eq(b_b), c_t.eq(b_t), c_blk.eq(b_blk),
                c_waddr.eq(b_base + b_j),
            ]

        # ----------------------------------------------------------------------- stage C
        # C: the weight words arrive and are registered (block RAM clock-to-out and the
        # depth mux of a deep bank are most of a 100 MHz cycle); R: rotate and accumulate.
        r_valid, r_ev = Signal(name="r_valid"), Signal(name="r_ev")
        r_first, r_last = Signal(name="r_first"), Signal(name="r_last")
        r_jlow = Signal(lb)
        r_b, r_t, r_blk = Signal.like(b), Signal.like(t), Signal.like(blk)
        r_w = [Signal(signed(a.weight_bits), name=f"r_w{k}") for k in range(P)]
        with m.If(~stall):
            m.d.sync += [r_valid.eq(c_valid), r_ev.eq(c_ev), r_first.eq(c_first), r_last.eq(c_last),
                         r_jlow.eq(c_jlow), r_b.eq(c_b), r_t.eq(c_t), r_blk.eq(c_blk)]
            m.d.sync += [r_w[k].eq(self.w_rdata[k]) for k in range(P)]

        # ----------------------------------------------------------------------- stage R
        w_arr = Array(r_w)
        acc_new = []
        for q in range(P):
            wl = Signal(signed(a.weight_bits), name=f"wl{q}")
            if P > 1:
                m.d.comb += wl.eq(w_arr[(Const(q, lb + 1) + r_jlow)[:lb]])
            else:
                m.d.comb += wl.eq(r_w[0])
            an = Signal(signed(self.current_bits), name=f"acc_new{q}")
            m.d.comb += an.eq(Mux(r_first, 0, acc[q]) + Mux(r_ev, wl, 0))
            acc_new.append(an)
        with m.If(~stall):
            with m.If(r_valid):
                m.d.sync += [acc[q].eq(acc_new[q]) for q in range(P)]
            m.d.sync += d_valid.eq(r_valid & r_last)
            with m.If(r_valid & r_last):
                m.d.sync += [d_cur[q].eq(acc_new[q]) for q in range(P)]
                m.d.sync += [d_b.eq(r_b), d_t.eq(r_t), d_blk.eq(r_blk)]
        rb = Signal.like(b)
        m.d.comb += rb.eq(Mux(stall, d_b, r_b))
        for q in range(P):
            m.d.comb += [h_rd[q].addr.eq(rb), self.cnt_raddr[q].eq(rb)]

        # ----------------------------------------------------------------------- stage D
        # the selects of h and the count come from registers formed the cycle before, not
        # from a comparison in front of the leak and add: fwd = (the block of the write
        # forwarded from the cycle before is d_b), first = (d_t == 0)
        fwd = Signal(name="d_fwd")
        first = Signal(name="d_first", init=1)     # d_t == 0 after reset
        lane_en = Signal(P)
        m.d.comb += lane_en.eq(Mux(d_b == NB - 1, last_mask, all_mask))
        c_in = []
        for q in range(P):
            h_in = Mux(first, 0, Mux(fwd, f_h[q], h_rd[q].data))
            ci = Signal(cb, name=f"c_in{q}")
            m.d.comb += [lif.h[q].eq(h_in), lif.current[q].eq(d_cur[q]),
                         ci.eq(Mux(first, 0, Mux(fwd, f_cnt[q], self.cnt_rdata[q])))]
            c_in.append(ci)
        m.d.comb += lif.lane_en.eq(lane_en)

        # stage E (two-stage LIF) or D itself: spike, reset, count and the writes
        if two:
            e_valid = Signal()
            e_b, e_t, e_blk = Signal.like(d_b), Signal.like(d_t), Signal.like(d_blk)
            e_lane_en = Signal(P)
            e_cin = [Signal(cb, name=f"e_cin{q}") for q in range(P)]
            m.d.comb += lif.advance.eq(~stall)
            with m.If(~stall):
                m.d.sync += [e_valid.eq(d_valid), e_b.eq(d_b), e_t.eq(d_t), e_blk.eq(d_blk),
                             e_lane_en.eq(lane_en)]
                m.d.sync += [e_cin[q].eq(c_in[q]) for q in range(P)]
        else:
            e_valid, e_b, e_t, e_blk, e_lane_en, e_cin = d_valid, d_b, d_t, d_blk, lane_en, c_in
        # (f_h, f_cnt take the write of e_b below; d_b, d_t take r_b, r_t above)
        with m.If(~stall):
            nd_b = Mux(r_valid & r_last, r_b, d_b)
            nd_t = Mux(r_valid & r_last, r_t, d_t)
            m.d.sync += [fwd.eq(e_valid & (e_b == nd_b)), first.eq(nd_t == 0)]
        cnt_new = []
        for q in range(P):
            cn = Signal(cb, name=f"cnt_new{q}")
            m.d.comb += cn.eq(e_cin[q] + lif.spikes[q])
            cnt_new.append(cn)

        wr = e_valid & ~stall
        for q in range(P):
            m.d.comb += [
                h_wr[q].addr.eq(e_b), h_wr[q].data.eq(lif.h_next[q]), h_wr[q].en.eq(wr),
                self.h_waddr[q].eq(e_b), self.h_wdata[q].eq(lif.h_next[q]),
                self.h_we[q].eq(wr & e_lane_en[q]),
                self.cnt_waddr[q].eq(e_b), self.cnt_wdata[q].eq(cnt_new[q]),
                self.cnt_we[q].eq(wr & e_lane_en[q]),
            ]
        m.d.comb += [
            self.s_waddr.eq(e_blk), self.s_wdata.eq(lif.spikes), self.s_we.eq(wr),
            self.m_waddr.eq(e_blk), self.m_wdata.eq(lif.mask), self.m_we.eq(wr),
        ]
        with m.If(~stall):
            m.d.sync += [f_h[q].eq(lif.h_next[q]) for q in range(P)]
            m.d.sync += [f_cnt[q].eq(cnt_new[q]) for q in range(P)]

        # spike words leave through an output register, so that back-pressure (``stall``)
        # depends on registers and ``ready`` only, not on the LIF arithmetic: a block's
        # word is presented the cycle after its write; the engine freezes while a presented
        # word is not taken.
        o_valid = Signal()
        o_word = Signal(spike_word_layout(g))
        with m.If(~stall):
            m.d.sync += [o_valid.eq(wr & (lif.spikes != 0)), o_word.t.eq(e_t), o_word.b.eq(e_b),
                         o_word.spikes.eq(lif.spikes)]
        m.d.comb += [
            self.spikes.valid.eq(o_valid),
            self.spikes.payload.eq(o_word),
            stall.eq(o_valid & ~self.spikes.ready),
        ]

        # ------------------------------------------------------------ status, counters
        busy = Signal()
        m.d.comb += [busy.eq((state != 0) | b_valid | c_valid | r_valid | d_valid | e_valid), self.busy.eq(busy)]
        m.d.sync += self.done.eq(wr & (e_blk == T * NB - 1))
        # step: timestep step_t is finished -- its last block is written and its last spike
        # word, if any, is presented this same cycle (the chip's timestep barrier)
        m.d.sync += [self.step.eq(wr & (e_b == NB - 1)), self.step_t.eq(e_t)]
        with m.If((state == 0) & self.start & ~busy):
            ctr += [self.cycles.eq(0), self.work.eq(0), self.stalls.eq(0)]
        with m.Elif(busy):
            with m.If(stall):
                ctr += self.stalls.eq(self.stalls + 1)
            with m.Else():
                ctr += self.cycles.eq(self.cycles + 1)
        return m
