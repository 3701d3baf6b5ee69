"""The BP (back-propagation) engine: membrane gradients dv and the error W^T dv of one core.

Per sample it walks ``t = T-1 .. 0`` (docs/core.md, "Engines", BP), exactly
:meth:`spikeforge.model.snn.FixedPointSNN.backward_layer`:

*dv phase* (one block of ``P`` neurons per cycle)::

    dv = sat(M*ds + (1 - S) * (d - (d >> k)), dv_bits)     d = dv of t+1 (0 at t = T-1)
    ds = sat((count - target) << loss_shift, error_bits)    output layer (target_count for
                                                            the label neuron, else 0)
    ds = stored error from above                            hidden layer

Every block's dv is written to a private dv memory (P lane banks, address ``b``) and shown on
``dvw`` (valid, t, b, dv[P]); the non-zero ones are appended to the per-lane dv lists of the
WG engine (shared memory, double buffer ``t & 1``, address ``(t & 1) * NB + position``, entry
``{b, dv}``) and to a private shadow copy that the error phase reads.

*error phase* (only for a ``t`` with a non-zero dv): per column block ``jb``, ``P``
full-width accumulators sum ``W[i, jb*P + c] * dv_i`` over the non-zero dv of ``t``, one dv
per cycle, read as row slices of the skewed weight banks (bank ``(i + j) mod P``: lane ``c``
takes bank ``(c + i) mod P``), ``P`` multipliers; then the word ``{t, jb, e[P]}`` goes out on
the ``err`` stream (``weight_bits + dv_bits + bits(N)`` wide, never rounded; lanes past
``n_in`` are 0).

Schedule: the dv phase and the error phase are two units that overlap. The dv phase of
``t-1`` runs while the error phase of ``t`` is in progress (the shadow lists are double
buffered like the WG lists); the error phase of ``t-1`` follows that of ``t`` with no gap.
A timestep whose dv are all zero costs one cycle of the error unit and emits no word.
The exact cycle count is :func:`spikeforge.model.perf.bp_cycles`.

Handshake with WG (conventions in docs/core.md): ``lists`` (payload ``{t, len[P]}``) is
valid once the lists of ``t`` are complete, in the order ``T-1 .. 0``, also for a ``t`` whose
lists are empty; ``release`` (a 1-cycle pulse from WG) frees the oldest accepted buffer.
The dv phase of ``t`` waits until buffer ``t & 1`` is released (both are free at ``start``).

Latency: block ``b`` of ``t`` is read at cycle ``D(t) + b`` (``D(T-1)`` = the cycle after
``start``; ``D(t) = D(t+1) + max(NB, 2)`` when nothing waits); three stages follow: the
leak of its dv of ``t+1`` and the masked ``ds`` at ``D(t) + b + 1``, the addition and
saturation at ``D(t) + b + 2``, the writes (``dvw``, dv memory, list and shadow writes,
list lengths) at ``D(t) + b + 3``; ``lists`` of ``t`` is valid from ``D(t) + NB + 3``.
With ``NB = 1`` block 0 follows itself with one idle cycle between its timesteps; with
``NB <= 2`` the dv of ``t+1`` a block needs is then in the write stage and is forwarded
from there (with ``NB >= 3`` the write comes no later than the read of the same block,
which is transparent). The error unit
issues the non-zero dv of ``t`` one per cycle, column block by column block, lane list by
lane list, and a word leaves (``err.valid``) 5 cycles after the issue of its last dv (E1
address, E2 read, E2w weight register, E3 multiply, accumulate). ``busy`` stays high for
one cycle after the last of:
the acceptance of the last word, the acceptance of the last ``lists``, the last dv write;
``done`` pulses in the first cycle with ``busy`` low. ``label`` is sampled at ``start``.

Private memory per lane: dv of ``t+1`` (``NB`` x ``dv_bits``) and the shadow lists
(``2*NB`` x (``bits(NB*n_in)`` + ``dv_bits``)).

Backpressure: while an error word is valid and ``err.ready`` is low the error unit stalls
(the dv unit goes on). The weight read address then repeats the last one, so the shared
weight banks need no read enable.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import arith
from .debug import counter_domain
from .geometry import CoreGeometry, check_geometry
from .interfaces import (count_bits, dv_entry_layout, dvw_layout, err_layout, error_width,
                         lists_layout, ubits as _ubits)

__all__ = ["BPEngine"]


class BPEngine(wiring.Component):
    """BP engine of one core (see the module docstring).

    Ports (``P`` = lanes; memories are synchronous: data the cycle after the address):

    * control: ``start`` (In), ``busy``, ``done`` (1-cycle pulse), ``cycles``, ``work`` (Out 32);
      ``work`` counts multiply-accumulates on real columns: ``nnz(dv) * n_in``.
    * output layer only: ``label`` (In; a value >= N means no label neuron on this core),
      ``cnt_raddr[P]`` / ``cnt_rdata[P]`` (spike counts, lane banks, address ``b``).
    * hidden layer only: ``ds_raddr[P]`` / ``ds_rdata[P]`` (error from above, address ``t*NB+b``).
    * ``s_raddr`` / ``s_rdata``, ``m_raddr`` / ``m_rdata``: spike and surrogate-mask history,
      one ``P``-bit word per address ``t*NB + b`` (bit ``q`` = lane ``q``).
    * ``w_raddr[P]`` / ``w_rdata[P]``: weight banks (skewed layout, depth ``NB*n_in``).
    * ``dvl_waddr[P]``, ``dvl_wdata[P]`` (:func:`dv_entry_layout`), ``dvl_we[P]``: the WG dv
      lists, depth ``2*NB`` per lane bank; ``lists`` (Out stream, :func:`lists_layout`),
      ``release`` (In).
    * ``err`` (Out stream, :func:`err_layout`); ``dvw`` (Out, :func:`dvw_layout`).
    """

    def __init__(self, cfg, geom: CoreGeometry, *, debug: bool = True):
        self.debug = bool(debug)   # performance counters (rtl/debug.py)
        try:
            self._validate(cfg, geom)
        except (TypeError, ValueError):
            self._MustUse__used = True          # no "created but never used" warning
            raise
        self.cfg, self.geom = cfg, geom
        a = cfg.arithmetic
        P, NB, T = geom.lanes, geom.blocks, geom.timesteps
        members = {
            "start": In(1), "busy": Out(1), "done": Out(1),
            "cycles": Out(32), "work": Out(32),
            "s_raddr": Out(unsigned(_ubits(T * NB))), "s_rdata": In(P),
            "m_raddr": Out(unsigned(_ubits(T * NB))), "m_rdata": In(P),
            "w_raddr": Out(unsigned(_ubits(geom.weight_depth))).array(P),
            "w_rdata": In(signed(a.weight_bits)).array(P),
            "dvl_waddr": Out(unsigned(_ubits(2 * NB))).array(P),
            "dvl_wdata": Out(dv_entry_layout(cfg, geom)).array(P),
            "dvl_we": Out(1).array(P),
            "lists": Out(stream.Signature(lists_layout(geom))),
            "release": In(1),
            "err": Out(stream.Signature(err_layout(cfg, geom))),
            "dvw": Out(dvw_layout(cfg, geom)),
        }
        if geom.output_layer:
            members["label"] = In(unsigned(max(1, geom.n_neurons.bit_length())))
            members["cnt_raddr"] = Out(unsigned(_ubits(NB))).array(P)
            members["cnt_rdata"] = In(unsigned(count_bits(T))).array(P)
        else:
            members["ds_raddr"] = Out(unsigned(_ubits(T * NB))).array(P)
            members["ds_rdata"] = In(signed(a.error_bits)).array(P)
        super().__init__(members)

    @staticmethod
    def _validate(cfg, geom) -> None:
        check_geometry("BPEngine", cfg, geom)
        if geom.output_layer and cfg.target_count > geom.timesteps:
            raise ValueError(f"BPEngine: train.target_count={cfg.target_count} exceeds "
                             f"timesteps={geom.timesteps}")

    def elaborate(self, platform):
        m = Module()
        ctr = counter_domain(m, self.debug)
        cfg, g = self.cfg, self.geom
        a, nc = cfg.arithmetic, cfg.neuron
        P, NB, JB, T, N, n_in = g.lanes, g.blocks, g.col_blocks, g.timesteps, g.n_neurons, g.n_in
        lp = P.bit_length() - 1                      # log2(P)
        dvb = a.dv_bits
        ew = error_width(cfg, g)
        tw, bw, jw = _ubits(T), _ubits(NB), _ubits(JB)
        lw = NB.bit_length()
        rw = _ubits(g.weight_depth)                  # row base b*n_in of the weight banks
        hw = _ubits(T * NB)

        # ------------------------------------------------------------------ control state
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        m.d.sync += self.done.eq(0)
        with m.If(busy):
            ctr += self.cycles.eq(self.cycles + 1)

        free = Signal(2)        # WG list buffer released (BP may write it)
        rel_ptr = Signal()      # buffer the next release frees (oldest accepted)
        sbusy = Signal(2)       # shadow buffer holds lists the error unit has not finished
        pend = Signal(2)        # lists of the buffer complete, not yet accepted by WG
        rdy = Signal(2)         # lists of the buffer complete, error unit not yet begun
        len_reg = [[Signal(lw, name=f"len{k}_{q}") for q in range(P)] for k in range(2)]

        # ----------------------------------------------------------------- memories (private)
        # (depth >= 2: a depth-1 memory has a 0-bit address, which lints as [-1:0])
        dvmem = [Memory(shape=signed(dvb), depth=max(NB, 2), init=[]) for _ in range(P)]
        shw = rw + dvb                               # shadow entry: {rowbase, dv}
        shadow = [Memory(shape=unsigned(shw), depth=2 * NB, init=[]) for _ in range(P)]
        dv_wp, dv_rp, sh_wp, sh_rp = [], [], [], []
        for q in range(P):
            m.submodules[f"dvmem{q}"] = dvmem[q]
            m.submodules[f"shadow{q}"] = shadow[q]
            wp = dvmem[q].write_port()
            dv_wp.append(wp)
            dv_rp.append(dvmem[q].read_port(transparent_for=(wp,)))
            sh_wp.append(shadow[q].write_port())
            sh_rp.append(shadow[q].read_port())

        # ================================================================== dv unit: issue
        dv_left = Signal()                      # timesteps left to issue
        dv_t = Signal(tw)
        dv_b = Signal(bw)
        dv_row = Signal(rw)                     # dv_b * n_in
        dv_h = Signal(hw)                       # dv_t * NB
        buf = dv_t[0]
        can_begin = dv_left & (dv_b == 0) & free.bit_select(buf, 1) & ~sbusy.bit_select(buf, 1)
        v1 = Signal(name="v1")                   # a block was issued the cycle before
        if NB == 1:
            # block 0 follows itself: one cycle between its timesteps, so that its dv of
            # t+1 is in stage 3 (forwardable) when stage 1 needs it
            can_begin = can_begin & ~v1
        issue = Signal()
        m.d.comb += issue.eq((dv_left & (dv_b != 0)) | can_begin)

        haddr = dv_h + dv_b
        m.d.comb += [self.s_raddr.eq(haddr), self.m_raddr.eq(haddr)]
        for q in range(P):
            m.d.comb += dv_rp[q].addr.eq(dv_b)
            if g.output_layer:
                m.d.comb += self.cnt_raddr[q].eq(dv_b)
            else:
                m.d.comb += self.ds_raddr[q].eq(haddr)

        # stage 1 (data of the issued block)
        t1, b1, row1, last1, tlast1 = (Signal(tw, name="t1"), Signal(bw, name="b1"),
                                       Signal(rw, name="row1"), Signal(name="last1"),
                                       Signal(name="tlast1"))
        m.d.sync += [v1.eq(issue), t1.eq(dv_t), b1.eq(dv_b), row1.eq(dv_row),
                     last1.eq(dv_b == NB - 1), tlast1.eq(dv_t == T - 1)]
        with m.If(issue):
            with m.If(dv_b == 0):
                m.d.sync += [free.bit_select(buf, 1).eq(0), sbusy.bit_select(buf, 1).eq(1)]
            with m.If(dv_b == NB - 1):
                m.d.sync += [dv_b.eq(0), dv_row.eq(0), dv_t.eq(dv_t - 1), dv_h.eq(dv_h - NB)]
                with m.If(dv_t == 0):
                    m.d.sync += dv_left.eq(0)
            with m.Else():
                m.d.sync += [dv_b.eq(dv_b + 1), dv_row.eq(dv_row + n_in)]

        # =============================================================== dv unit: compute
        # three stages, so that no path runs a LUT-RAM read, two additions and a saturation:
        # stage 1 (the read data): the leak of the dv of t+1 and the masked ds, registered;
        # stage 2: add and saturate, registered; stage 3: every write (dv memory, lists,
        # shadow, lengths, dvw).
        label_b = Signal(max(1, N.bit_length()))
        label_q = Signal(max(1, lp))
        v2, t2, b2, row2, last2 = (Signal(name="v2"), Signal(tw, name="t2"), Signal(bw, name="b2"),
                                   Signal(rw, name="row2"), Signal(name="last2"))
        v3, t3, b3, row3, last3 = (Signal(name="v3"), Signal(tw, name="t3"), Signal(bw, name="b3"),
                                   Signal(rw, name="row3"), Signal(name="last3"))
        m.d.sync += [v2.eq(v1), t2.eq(t1), b2.eq(b1), row2.eq(row1), last2.eq(last1),
                     v3.eq(v2), t3.eq(t2), b3.eq(b2), row3.eq(row2), last3.eq(last2)]
        buf3 = t3[0]
        dv3 = [Signal(signed(dvb), name=f"dv3_{q}") for q in range(P)]
        nz3 = [Signal(name=f"nz3_{q}") for q in range(P)]
        n_last = N - (NB - 1) * P                # real lanes of the last block
        for q in range(P):
            d_mem = dv_rp[q].data
            if NB <= 2:
                # a block's next timestep reaches stage 1 two cycles after it (NB = 2, or
                # NB = 1 with its one-cycle gap), when its dv of t+1 is in stage 3 and its
                # write lands at the end of this cycle: forward it. Later (or NB >= 3) the
                # read of the same block comes no earlier than its write (transparent).
                d_mem = Mux(v3 & (b3 == b1), dv3[q], d_mem)
            d = Mux(tlast1, 0, d_mem)
            if g.output_layer:
                hit = (label_b == b1) & ((label_q == q) if P > 1 else 1)
                target = Mux(hit, cfg.target_count, 0)
                ds = arith.output_error(self.cnt_rdata[q], target, a.loss_shift, a.error_bits)
            else:
                ds = self.ds_rdata[q]
            lk = arith.leak(d, nc.leak_shift)
            lk2 = Signal(lk.shape(), name=f"lk2_{q}")      # (1 - S) * leak(d)
            ds2 = Signal(signed(a.error_bits), name=f"ds2_{q}")   # M * ds
            m.d.sync += [lk2.eq(Mux(self.s_rdata[q], 0, lk)), ds2.eq(Mux(self.m_rdata[q], ds, 0))]

            # stage 2: add and saturate
            val = arith.sat(ds2 + lk2, dvb)
            if q >= n_last:                      # padding lane in the last block: dv = 0
                val = Mux(b2 == NB - 1, 0, val)
            dv = Signal(signed(dvb), name=f"dv{q}")
            m.d.comb += dv.eq(val)
            m.d.sync += [dv3[q].eq(dv), nz3[q].eq(dv != 0)]

            # stage 3: the writes
            cur = Signal(lw, name=f"lcur{q}")
            m.d.comb += cur.eq(Mux(b3 == 0, 0, Mux(buf3, len_reg[1][q], len_reg[0][q])))
            addr = Mux(buf3, NB, 0) + cur
            m.d.comb += [
                dv_wp[q].addr.eq(b3), dv_wp[q].data.eq(dv3[q]), dv_wp[q].en.eq(v3),
                self.dvl_waddr[q].eq(addr), self.dvl_we[q].eq(v3 & nz3[q]),
                self.dvl_wdata[q].b.eq(b3), self.dvl_wdata[q].dv.eq(dv3[q]),
                sh_wp[q].addr.eq(addr), sh_wp[q].data.eq(Cat(row3, dv3[q])),
                sh_wp[q].en.eq(v3 & nz3[q]),
                self.dvw.dv[q].eq(dv3[q]),
            ]
            with m.If(v3):
                with m.If(buf3):
                    m.d.sync += len_reg[1][q].eq(cur + nz3[q])
                with m.Else():
                    m.d.sync += len_reg[0][q].eq(cur + nz3[q])
        m.d.comb += [self.dvw.valid.eq(v3), self.dvw.t.eq(t3), self.dvw.b.eq(b3)]
        with m.If(v3 & last3):
            m.d.sync += [pend.bit_select(buf3, 1).eq(1), rdy.bit_select(buf3, 1).eq(1)]

        # ============================================================ lists stream to WG
        lst_left = Signal()
        lst_t = Signal(tw)
        lbuf = lst_t[0]
        m.d.comb += [self.lists.valid.eq(lst_left & pend.bit_select(lbuf, 1)),
                     self.lists.payload.t.eq(lst_t)]
        for q in range(P):
            m.d.comb += self.lists.payload.len[q].eq(Mux(lbuf, len_reg[1][q], len_reg[0][q]))
        with m.If(self.lists.valid & self.lists.ready):
            m.d.sync += [pend.bit_select(lbuf, 1).eq(0), lst_t.eq(lst_t - 1)]
            with m.If(lst_t == 0):
                m.d.sync += lst_left.eq(0)
        with m.If(self.release):
            m.d.sync += [free.bit_select(rel_ptr, 1).eq(1), rel_ptr.eq(~rel_ptr)]

        # ============================================================ error unit: issue
        out_valid = Signal()
        stall = Signal()
        m.d.comb += stall.eq(out_valid & ~self.err.ready)

        err_left = Signal()
        err_t = Signal(tw)
        e_run = Signal()
        e_jb = Signal(jw)
        e_q = Signal(max(1, lp))
        e_k = Signal(lw)
        ebuf = err_t[0]
        L = [Signal(lw, name=f"L{q}") for q in range(P)]
        for q in range(P):
            m.d.comb += L[q].eq(Mux(ebuf, len_reg[1][q], len_reg[0][q]))
        # lanes with dv to multiply; none on a core whose errors nobody needs (geom.errors
        # False: the first layer), so that every timestep takes the one-cycle skip
        ne = Cat(*[L[q] != 0 for q in range(P)]) if g.errors else Const(0, P)
        first_lane = Signal(max(1, lp))
        for q in reversed(range(P)):              # lowest non-empty lane
            with m.If(ne[q]):
                m.d.comb += first_lane.eq(q)
        begin = ~e_run & err_left & rdy.bit_select(ebuf, 1)
        cur_q = Signal(max(1, lp))
        cur_k = Signal(lw)
        cur_jb = Signal(jw)
        m.d.comb += [cur_q.eq(Mux(e_run, e_q, first_lane)), cur_k.eq(Mux(e_run, e_k, 0)),
                     cur_jb.eq(Mux(e_run, e_jb, 0))]
        e_issue = Signal()
        m.d.comb += e_issue.eq(~stall & (e_run | (begin & (ne != 0))))
        skip = begin & (ne == 0)

        # next non-empty lane after cur_q
        has_next = Signal()
        next_q = Signal(max(1, lp))
        for q in reversed(range(1, P)):           # (lane 0 is never after cur_q)
            with m.If(ne[q] & (q > cur_q)):
                m.d.comb += [has_next.eq(1), next_q.eq(q)]
        lane_end = Signal()
        m.d.comb += lane_end.eq(cur_k + 1 == Array(L)[cur_q])
        last_jb = Signal()
        m.d.comb += last_jb.eq(lane_end & ~has_next)
        first_jb = Signal()
        m.d.comb += first_jb.eq((cur_q == first_lane) & (cur_k == 0))
        last_t = last_jb & (cur_jb == JB - 1)

        for q in range(P):
            m.d.comb += [sh_rp[q].addr.eq(Mux(ebuf, NB, 0) + cur_k), sh_rp[q].en.eq(~stall)]

        def end_of_t():
            m.d.sync += [sbusy.bit_select(ebuf, 1).eq(0), err_t.eq(err_t - 1)]
            with m.If(err_t == 0):
                m.d.sync += err_left.eq(0)

        with m.If(skip):
            m.d.sync += rdy.bit_select(ebuf, 1).eq(0)
            end_of_t()
        with m.If(e_issue):
            with m.If(~e_run):
                m.d.sync += rdy.bit_select(ebuf, 1).eq(0)
            with m.If(~lane_end):
                m.d.sync += [e_k.eq(cur_k + 1), e_q.eq(cur_q), e_jb.eq(cur_jb)]
            with m.Elif(has_next):
                m.d.sync += [e_k.eq(0), e_q.eq(next_q), e_jb.eq(cur_jb)]
            with m.Else():
                m.d.sync += [e_k.eq(0), e_q.eq(first_lane), e_jb.eq(cur_jb + 1)]
            with m.If(last_t):
                m.d.sync += e_run.eq(0)
                end_of_t()
            with m.Else():
                m.d.sync += e_run.eq(1)
            last_cols = n_in - (JB - 1) * P
            ctr += self.work.eq(self.work + Mux(cur_jb == JB - 1, last_cols, P))

        # stage E1: shadow entry -> weight row-slice addresses
        ev1 = Signal()
        eq1 = Signal(max(1, lp))
        ejb1, et1 = Signal(jw), Signal(tw)
        efirst1, elast1 = Signal(), Signal()
        with m.If(~stall):
            m.d.sync += [ev1.eq(e_issue), eq1.eq(cur_q), ejb1.eq(cur_jb), et1.eq(err_t),
                         efirst1.eq(first_jb), elast1.eq(last_jb)]
        entry = Array([sh_rp[q].data for q in range(P)])[eq1] if P > 1 else sh_rp[0].data
        row_e = entry[:rw]
        dv_e = entry[rw:].as_signed()
        w_prev = [Signal(unsigned(_ubits(g.weight_depth)), name=f"w_prev{k}") for k in range(P)]
        for k in range(P):                       # bank k holds column c = (k - q) mod P
            c = Const(k, max(1, lp)) - eq1 if P > 1 else Const(0, 1)
            j = Cat(c[:lp], ejb1) if P > 1 else ejb1
            addr = Mux(j < n_in, row_e + j, row_e)
            m.d.comb += self.w_raddr[k].eq(Mux(stall, w_prev[k], addr))
            m.d.sync += w_prev[k].eq(self.w_raddr[k])

        # stage E2: rotate the banks into column order, multiply
        ev2 = Signal()
        eq2 = Signal(max(1, lp))
        ejb2, et2 = Signal(jw), Signal(tw)
        efirst2, elast2 = Signal(), Signal()
        edv2 = Signal(signed(dvb))
        with m.If(~stall):
            m.d.sync += [ev2.eq(ev1), eq2.eq(eq1), ejb2.eq(ejb1), et2.eq(et1),
                         efirst2.eq(efirst1), elast2.eq(elast1), edv2.eq(dv_e)]
        # stage E2w: the weight words are registered before the multipliers (block RAM
        # clock-to-out and the depth mux of a deep bank are half a 100 MHz cycle already)
        ev2w = Signal()
        eq2w = Signal(max(1, lp))
        ejb2w, et2w = Signal(jw), Signal(tw)
        efirst2w, elast2w = Signal(), Signal()
        edv2w = Signal(signed(dvb))
        wq = [Signal(signed(a.weight_bits), name=f"wq{k}") for k in range(P)]
        with m.If(~stall):
            m.d.sync += [ev2w.eq(ev2), eq2w.eq(eq2), ejb2w.eq(ejb2), et2w.eq(et2),
                         efirst2w.eq(efirst2), elast2w.eq(elast2), edv2w.eq(edv2)]
            m.d.sync += [wq[k].eq(self.w_rdata[k]) for k in range(P)]
        pw = a.weight_bits + dvb
        prod3 = [Signal(signed(pw), name=f"prod{c}") for c in range(P)]
        wbanks = Array(wq)
        ev3 = Signal()
        ejb3, et3 = Signal(jw), Signal(tw)
        efirst3, elast3 = Signal(), Signal()
        with m.If(~stall):
            m.d.sync += [ev3.eq(ev2w), ejb3.eq(ejb2w), et3.eq(et2w),
                         efirst3.eq(efirst2w), elast3.eq(elast2w)]
            for c in range(P):
                w = wbanks[(Const(c, max(1, lp)) + eq2w)[:lp]] if P > 1 else wq[0]
                m.d.sync += prod3[c].eq(w * edv2w)

        # stage E3: accumulate; the last dv of a column block loads the output word
        acc = [Signal(signed(ew), name=f"acc{c}") for c in range(P)]
        with m.If(self.err.valid & self.err.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += self.err.valid.eq(out_valid)
        with m.If(~stall & ev3):
            for c in range(P):
                s = Mux(efirst3, 0, acc[c]) + prod3[c]
                m.d.sync += acc[c].eq(s)
                if c >= n_in - (JB - 1) * P:     # column past n_in in the last block: 0
                    s = Mux(ejb3 == JB - 1, 0, s)
                with m.If(elast3):
                    m.d.sync += self.err.payload.e[c].eq(s)
            with m.If(elast3):
                m.d.sync += [out_valid.eq(1), self.err.payload.t.eq(et3),
                             self.err.payload.jb.eq(ejb3)]

        # ===================================================================== start / done
        finished = ~dv_left & ~v1 & ~v2 & ~v3 & ~lst_left & ~err_left & ~e_run & ~ev1 & ~ev2 & ~ev2w & ~ev3 & ~out_valid
        with m.If(busy & finished):
            m.d.sync += [busy.eq(0), self.done.eq(1)]
        with m.If(self.start & ~busy):
            ctr += [self.cycles.eq(0), self.work.eq(0)]
            m.d.sync += [
                busy.eq(1),
                free.eq(0b11), rel_ptr.eq((T - 1) & 1), sbusy.eq(0), pend.eq(0), rdy.eq(0),
                dv_left.eq(1), dv_t.eq(T - 1), dv_b.eq(0), dv_row.eq(0), dv_h.eq((T - 1) * NB),
                lst_left.eq(1), lst_t.eq(T - 1),
                err_left.eq(1), err_t.eq(T - 1), e_run.eq(0), out_valid.eq(0),
            ]
            if g.output_layer:
                m.d.sync += [label_b.eq(self.label >> lp)]
                if P > 1:
                    m.d.sync += label_q.eq(self.label[:lp])
        return m
