"""The WG engine: weight-gradient accumulation (concurrent with BP) and the weight update.

See docs/core.md ("Engines", WG and Update). Two operations, each started by its own
strobe, each ending with a one-cycle ``done``:

**Accumulate one sample** (``start``). For each timestep that BP announces on the
``lists`` stream (payload ``{t, len[P]}``, in BP's order ``t = T-1 .. 0``), for each input
event ``j`` of ``t`` (read from the shared event memories: ``ev_start[t] .. ev_start[t+1]-1``
index ``ev_addr``), step through the ``P`` per-lane dv lists in parallel: cycle ``c`` reads
entry ``c`` of every lane list (address ``(t & 1) * NB + c`` in every dv-list bank; lane
``q`` takes part while ``c < len[q]``) and adds ``dv`` of neuron ``i = b*P + q`` to
``G[i, j]``, which lives in gradient bank ``(q + j) mod P`` at address ``b*n_in + j`` --
the same skewed layout as ``W``, so no two lanes meet in one bank. ``G`` is private,
``grad_bits`` wide, and the config guarantees the exact sum over a mini-batch fits
(``grad_bits >= dv_bits + bitlen(T*batch_size)``), so the add wraps and never saturates.
The read-modify-write is pipelined at one access per bank and cycle; the write of the
previous cycle is forwarded, so back-to-back hits to one address are correct. After the
last dv-list read of a timestep, ``release`` pulses for one cycle: BP may overwrite that
buffer from then on. The sample ends after the timestep with ``t == 0``. Gradients
persist across samples (a mini-batch is B samples run one after another).

**Update** (``start_update``, after the last sample of the mini-batch). For each block
``b``, for each column ``j = 0 .. n_in-1`` (one column slice per cycle, address
``b*n_in + j`` in every bank): ``W = sat(W - round(G >> lr_shift))`` on the shared ``W``
banks and ``G = 0``; padding lanes (``i >= N``) are never written. Rounding is
``arithmetic.rounding``: ``nearest`` (half up) or ``stochastic`` with one xorshift32 state
per neuron (private memory banked by lane, address ``b``; the host loads it through the
``rng_w*`` port with ``fixedpoint.neuron_seeds`` values and can read it back through
``rng_r*`` while the engine is idle), stepped before use once per weight whose ``G`` is
not zero (a zero ``G`` rounds to 0 with any ``r``), in column order, exactly as
``FixedPointSNN.update_deltas``. The stepping happens in U2, where ``G`` is known: a
block's states are read in U1 of its first column, the state and its successor are kept in
registers during the block, and the state is written back in U2 of its last column.

Timing (cycles counted by ``cycles``; ``model/perf.py`` has the same formulas):

* accumulate: ``4 + sum_t (1 + events(t) * L(t))`` with ``L(t)`` the longest lane list
  of ``t`` -- one cycle to fetch ``ev_start[T]`` (the offsets of the next timestep are
  read ahead, because BP announces ``t`` in the order ``T-1 .. 0``), per timestep one
  cycle to accept ``lists`` then ``L(t)`` cycles per event, and 3 cycles at the end to
  drain the read-modify-write pipeline (``done`` pulses with the last ``G`` write). Cycles
  spent waiting for BP (in the accept state with ``lists.valid`` low) are not in
  ``cycles`` but in ``stalls``. ``release`` of ``t`` pulses ``1 + events(t) * L(t)``
  cycles after ``t`` was accepted; WG can accept the next ``lists`` in that same cycle.
* update: ``NB * n_in + 5`` (one cycle to fetch the first rng states, one per column
  slice, one for the last write-back; ``done`` pulses with the last write).

``work``: accumulate -- ``G`` additions, ``sum_t events(t) * nnz_t(dv)``; update -- weights
written, ``N * n_in``.

Scoreboard visibility: every ``G`` write is mirrored on ``g_we``/``g_waddr``/``g_wdata``
(per bank); ``W`` write-backs are the shared ``w_we``/``w_waddr``/``w_wdata`` ports.

**In-place dataflow** (``hardware.wg_dataflow: inplace``, batch size 1; docs/core.md
"Weight-gradient dataflows"). No gradient memory is instantiated and the dv lists are not
read. The sample's input spikes arrive during the forward pass on ``cap_valid``/``cap_t``/
``cap_j`` (from the core's loader, one per cycle): bit ``t`` of word ``j`` of the private
input-spike memory (``n_in`` words of ``T`` bits) is set by a whole-word read-modify-write.
``start`` (the backward phase, concurrent with BP) *scans* the input-spike words: every
column that spiked goes on the active-column list (``act_w*``, entries ``{j, x bits}``, in
the core's event buffer, free outside the forward pass) and every word is cleared for the
next sample -- ``n_in + 1`` cycles (``perf.inplace_scan_cycles``), ``work`` 0 -- while
every block's dv shown on the ``dvw`` input (BP's observation port) is written into the
private dv history (lane bank ``q``, word ``b``, field ``t``) and marks the block active
when one of its dv is not zero. ``lists`` is always ready and ``release`` follows each
acceptance by one cycle, so BP runs as if alone.

``start_update`` (after BP is done: it overwrites ``W``) runs the *sparse* update: only
the active blocks (lowest first), and for each only the listed columns (``act_r*``: F1
reads entry ``k``, U0 registers ``{j, x}`` and issues the slice at ``b*n_in + j``); every
other weight has ``G = 0`` and cannot change. The pipeline from U0 on is the one above --
rounding, rng stepping (only for ``G != 0``) and write-back -- except that ``G`` of the
slice comes from the histories: ``G_q = sum_{t: x[t][j]} dv[t][b*P + q]`` (exact, at most
``dv_bits + bits(T)`` wide, which the config keeps within ``grad_bits``). Cycles
``blocks_active * columns_active + 6``, or 1 when either is 0
(``perf.inplace_update_cycles``). ``g_we`` stays 0.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import arith
from .debug import counter_domain
from .geometry import CoreGeometry, check_geometry, mul_const
from .interfaces import (active_column_layout, dv_entry_layout, dv_list_depth, dvw_layout,
                         lists_layout, ubits)

__all__ = ["WGEngine", "event_shapes", "inplace"]


def inplace(cfg) -> bool:
    """True for the in-place weight-gradient dataflow (``hardware.wg_dataflow``)."""
    return getattr(cfg.hardware, "wg_dataflow", "accumulate") == "inplace"


def event_shapes(geom: CoreGeometry) -> dict:
    """Widths of the shared event memories: ``ev_start`` (T+1 offsets), ``ev_addr`` (columns)."""
    return {
        "start_addr": unsigned(ubits(geom.timesteps + 1)),
        "start_data": unsigned(ubits(geom.max_events + 1)),
        "ev_addr_addr": unsigned(ubits(geom.max_events)),
        "ev_addr_data": unsigned(ubits(geom.n_in)),
    }


class WGEngine(wiring.Component):
    """Weight-gradient accumulation and weight update of one core (see the module docstring).

    Ports:

    * control: ``start`` (accumulate one sample), ``start_update`` (In, 1-cycle strobes,
      ignored while busy); ``busy``, ``done`` (1-cycle pulse); ``cycles``, ``work``,
      ``stalls`` (Out(32), of the last operation, cleared by its start strobe).
    * BP handshake: ``lists`` (In stream of :func:`lists_layout`), ``release`` (Out, pulse).
    * shared event memories: ``ev_start_raddr``/``ev_start_rdata``,
      ``ev_addr_raddr``/``ev_addr_rdata`` (one bank each, synchronous read).
    * shared dv lists (P banks, :func:`dv_entry_layout`, depth :func:`dv_list_depth`):
      ``dvl_raddr``/``dvl_rdata`` (arrays of P).
    * shared weights (P banks, signed weight_bits, depth NB*n_in): ``w_raddr``/``w_rdata``,
      ``w_waddr``/``w_wdata``/``w_we`` (arrays of P).
    * gradient write monitor: ``g_waddr``/``g_wdata``/``g_we`` (Out, arrays of P).
    * rng states (host side): ``rng_waddr``, ``rng_wdata[P]``, ``rng_we[P]`` (In);
      ``rng_raddr`` (In), ``rng_rdata[P]`` (Out, the cycle after the address; only while
      idle). Present in both rounding modes; with ``nearest`` there is no memory behind
      them (writes are ignored, reads give 0).
    * ``dvw`` (In, ``bp.dvw_layout``): BP's dv of every block; the in-place dataflow keeps
      them (ignored by the accumulate dataflow).
    * ``cap_valid``, ``cap_t``, ``cap_j`` (In; in place only): an input spike ``x[t][j]`` of
      the sample being trained, from the core's loader during the forward pass; bit ``t``
      of x-bit word ``j`` is set (read-modify-write over two cycles, forwarded).
    """

    def __init__(self, cfg, geom: CoreGeometry, *, debug: bool = True):
        self.debug = bool(debug)   # performance counters (rtl/debug.py)
        # a component rejected here is never elaborated: no UnusedElaboratable warning for it
        self._MustUse__silence = True
        check_geometry("WGEngine", cfg, geom, timesteps=False)
        a = cfg.arithmetic
        if a.grad_bits < a.dv_bits + 1:
            raise ValueError(f"WGEngine: arithmetic.grad_bits={a.grad_bits} must exceed "
                             f"arithmetic.dv_bits={a.dv_bits}")
        self._MustUse__silence = False
        self.cfg = cfg
        self.geom = geom
        P, NB, depth = geom.lanes, geom.blocks, geom.weight_depth
        ev = event_shapes(geom)
        wb, gb = a.weight_bits, a.grad_bits
        super().__init__({
            "start": In(1),
            "start_update": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
            "work": Out(32),
            "stalls": Out(32),
            "lists": In(stream.Signature(lists_layout(geom))),
            "release": Out(1),
            "ev_start_raddr": Out(ev["start_addr"]),
            "ev_start_rdata": In(ev["start_data"]),
            "ev_addr_raddr": Out(ev["ev_addr_addr"]),
            "ev_addr_rdata": In(ev["ev_addr_data"]),
            "dvl_raddr": Out(unsigned(ubits(dv_list_depth(geom)))).array(P),
            "dvl_rdata": In(dv_entry_layout(cfg, geom)).array(P),
            "w_raddr": Out(unsigned(ubits(depth))).array(P),
            "w_rdata": In(signed(wb)).array(P),
            "w_waddr": Out(unsigned(ubits(depth))).array(P),
            "w_wdata": Out(signed(wb)).array(P),
            "w_we": Out(1).array(P),
            "g_waddr": Out(unsigned(ubits(depth))).array(P),
            "g_wdata": Out(signed(gb)).array(P),
            "g_we": Out(1).array(P),
            "rng_waddr": In(unsigned(ubits(NB))),
            "rng_wdata": In(32).array(P),
            "rng_we": In(1).array(P),
            "rng_raddr": In(unsigned(ubits(NB))),
            "rng_rdata": Out(32).array(P),
            "dvw": In(dvw_layout(cfg, geom)),
            "cap_valid": In(1),
            "cap_t": In(unsigned(ubits(geom.timesteps))),
            "cap_j": In(unsigned(ubits(geom.n_in))),
            "act_waddr": Out(unsigned(ubits(geom.n_in))),
            "act_wdata": Out(active_column_layout(geom)),
            "act_we": Out(1),
            "act_raddr": Out(unsigned(ubits(geom.n_in))),
            "act_rdata": In(active_column_layout(geom)),
        })

    # ------------------------------------------------------------------------------------
    def _rotate(self, values, jlow):
        """Lane order -> bank order: bank ``k`` gets lane ``(k - j) mod P``."""
        P = self.geom.lanes
        if P == 1:
            return list(values)
        lb = (P - 1).bit_length()
        arr = Array(values)
        return [arr[(Const(k, lb + 1) - jlow)[:lb]] for k in range(P)]

    def elaborate(self, platform):
        m = Module()
        ctr = counter_domain(m, self.debug)
        cfg, g = self.cfg, self.geom
        a = cfg.arithmetic
        P, NB, n_in, N, T = g.lanes, g.blocks, g.n_in, g.n_neurons, g.timesteps
        depth = g.weight_depth
        gb, wb, dvb = a.grad_bits, a.weight_bits, a.dv_bits
        lb = (P - 1).bit_length()  # bits of j mod P
        stochastic = a.rounding == "stochastic"
        ip = inplace(cfg)

        # ---------------------------------------------------------------- private memories
        # (depth >= 2: a depth-1 memory has a 0-bit address, which lints as [-1:0])
        if not ip:
            # accumulate: the gradient memory, P skewed banks like W
            g_rd, g_wr = [], []
            for k in range(P):
                mem = Memory(shape=signed(gb), depth=depth, init=[])
                m.submodules[f"g{k}"] = mem
                g_rd.append(mem.read_port())          # synchronous, not transparent
                g_wr.append(mem.write_port())
        else:
            # in place: input spikes as T bits per column (bit t = x[t][j]) and dv of every
            # (t, neuron): lane bank q, address b, dv of t in bits t*dv_bits.. (dv history)
            xmem = Memory(shape=unsigned(T), depth=max(n_in, 2), init=[])
            m.submodules.xbits = xmem
            # whole-word writes (read-modify-write at capture): one DP16KD, not one per bit
            x_rd, x_wr = xmem.read_port(), xmem.write_port()
            dvh_rd, dvh_wr = [], []
            for q in range(P):
                mem = Memory(shape=unsigned(T * dvb), depth=max(NB, 2), init=[])
                m.submodules[f"dvh{q}"] = mem
                dvh_rd.append(mem.read_port())
                dvh_wr.append(mem.write_port(granularity=dvb))
        if stochastic:
            rng_rd, rng_wr = [], []
            for q in range(P):
                mem = Memory(shape=32, depth=max(NB, 2), init=[])   # depth 1: no address bits
                m.submodules[f"rng{q}"] = mem
                rng_rd.append(mem.read_port())
                rng_wr.append(mem.write_port())

        # ------------------------------------------------------------------- control state
        busy = Signal()
        cycles = Signal(32)
        work = Signal(32)
        stalls = Signal(32)
        m.d.comb += [self.busy.eq(busy), self.cycles.eq(cycles), self.work.eq(work),
                     self.stalls.eq(stalls)]
        count = Signal()   # this cycle counts in `cycles`
        m.d.comb += busy.eq(0)
        with m.If(count):
            ctr += cycles.eq(cycles + 1)

        # accumulate state
        t_cur = Signal(unsigned(ubits(g.timesteps)))
        lens = Signal(data.ArrayLayout(unsigned(ubits(NB + 1)), P))
        L = Signal(unsigned(ubits(NB + 1)))
        e = Signal(unsigned(ubits(g.max_events + 1)))
        e_end = Signal(unsigned(ubits(g.max_events + 1)))
        c = Signal(unsigned(ubits(NB)))
        release = Signal()
        m.d.sync += release.eq(0)
        m.d.comb += self.release.eq(release)
        drain = Signal(2)

        # issue -> S1 (dv list + event data arrive)
        issue = Signal()
        issue_lanes = Signal(P)
        s1_valid = Signal()
        s1_lanes = Signal(P)
        m.d.sync += [s1_valid.eq(issue), s1_lanes.eq(Mux(issue, issue_lanes, 0))]

        # update state
        ub = Signal(unsigned(ubits(NB)))
        uj = Signal(unsigned(ubits(n_in)))
        ua = Signal(unsigned(ubits(depth)))
        u_issue = Signal()
        u1_valid = Signal()
        u1_addr = Signal(unsigned(ubits(depth)))
        u1_jlow = Signal(max(lb, 1))
        u1_last_block = Signal()
        m.d.sync += u1_valid.eq(u_issue)

        # in place: the active-column scan (backward phase) and the sparse update's fetch
        sj = Signal(unsigned(ubits(n_in)))
        xs_valid, xs_j = Signal(), Signal(unsigned(ubits(n_in)))
        m.d.sync += xs_valid.eq(0)
        n_act = Signal(range(n_in + 1))          # active columns listed
        bact = Signal(NB)                        # blocks with a non-zero dv at some t
        rem = Signal(NB)                         # active blocks not yet updated
        fk = Signal(unsigned(ubits(n_in)))
        fb = Signal(unsigned(ubits(NB)))
        fbase = Signal(unsigned(ubits(depth)))
        udrain = Signal(3)
        f1_valid, f1_first, f1_last = Signal(), Signal(), Signal()
        f1_b, f1_base = Signal.like(fb), Signal.like(fbase)
        m.d.sync += f1_valid.eq(0)

        def lowest(mask):
            """Index of the lowest set bit of ``mask`` (0 when none)."""
            idx = Const(0, ubits(NB))
            for k in reversed(range(NB)):
                idx = Mux(mask[k], k, idx)
            return idx

        # default addresses (keep ports quiet when unused)
        m.d.comb += self.ev_start_raddr.eq(0)

        lists_len_max = Signal(unsigned(ubits(NB + 1)))
        mx = self.lists.payload.len[0]
        for q in range(1, P):
            mx = Mux(self.lists.payload.len[q] > mx, self.lists.payload.len[q], mx)
        m.d.comb += lists_len_max.eq(mx)

        # Event offsets of the next timestep, fetched ahead: BP announces t = T-1 .. 0 in
        # order, so when t is accepted, hi = ev_start[t+1] and lo = ev_start[t] are known
        # (lo straight from the read port in the cycle after its read: pf_pending).
        lo = Signal(unsigned(ubits(g.max_events + 1)))
        hi = Signal(unsigned(ubits(g.max_events + 1)))
        pf_pending = Signal()
        lo_now = Signal(unsigned(ubits(g.max_events + 1)))
        m.d.comb += lo_now.eq(Mux(pf_pending, self.ev_start_rdata, lo))
        with m.If(pf_pending):
            m.d.sync += [lo.eq(self.ev_start_rdata), pf_pending.eq(0)]


        def drain_then_done(counter, last):
            """A drain state: busy while the pipeline empties, ``done`` in cycle ``last + 1``."""
            m.d.comb += [busy.eq(1), count.eq(1)]
            m.d.sync += counter.eq(counter + 1)
            with m.If(counter == last):
                m.d.comb += self.done.eq(1)
                m.d.sync += counter.eq(0)
                m.next = "IDLE"

        with m.FSM(name="wg_fsm"):
            with m.State("IDLE"):
                with m.If(self.start):
                    ctr += [cycles.eq(0), work.eq(0), stalls.eq(0)]
                    if ip:
                        # the input spikes were captured during the forward pass; the dv
                        # history fills from BP's dvw; meanwhile list the active columns
                        m.d.sync += [sj.eq(0), n_act.eq(0), bact.eq(0)]
                        m.next = "X_SCAN"
                    else:
                        m.d.comb += self.ev_start_raddr.eq(g.timesteps)
                        m.next = "PREFETCH"
                with m.Elif(self.start_update):
                    ctr += [cycles.eq(0), work.eq(0), stalls.eq(0)]
                    if ip:
                        # the active blocks, lowest first, over the active-column list
                        m.d.sync += [fk.eq(0), fb.eq(lowest(bact)), rem.eq(bact & (bact - 1)),
                                     fbase.eq(mul_const(lowest(bact), n_in)), udrain.eq(0)]
                        with m.If((bact == 0) | (n_act == 0)):
                            m.next = "US_DONE"
                        with m.Else():
                            m.next = "US_RUN"
                    else:
                        m.d.sync += [ub.eq(0), uj.eq(0), ua.eq(0)]
                        m.next = "U_INIT"

            if ip:
                # ---------------------------------------- in place: capture the input spikes
                with m.State("X_SCAN"):
                    # read x bits of column sj; the next cycle lists it if it spiked, clears it
                    m.d.comb += [busy.eq(1), count.eq(1), x_rd.addr.eq(sj)]
                    m.d.sync += [xs_valid.eq(1), xs_j.eq(sj), sj.eq(sj + 1)]
                    with m.If(sj == n_in - 1):
                        m.next = "X_LAST"
                with m.State("X_LAST"):
                    m.d.comb += [busy.eq(1), count.eq(1), self.done.eq(1)]
                    m.next = "IDLE"
                # ------------------------------------------ in place: the sparse update
                with m.State("US_RUN"):
                    # fetch entry fk of the active-column list for block fb
                    m.d.comb += [busy.eq(1), count.eq(1), self.act_raddr.eq(fk)]
                    m.d.sync += [f1_valid.eq(1), f1_b.eq(fb), f1_base.eq(fbase),
                                 f1_first.eq(fk == 0), f1_last.eq(fk == n_act - 1)]
                    with m.If(fk == n_act - 1):
                        m.d.sync += [fk.eq(0), fb.eq(lowest(rem)), rem.eq(rem & (rem - 1)),
                                     fbase.eq(mul_const(lowest(rem), n_in))]
                        with m.If(rem == 0):
                            m.next = "US_DRAIN"
                    with m.Else():
                        m.d.sync += fk.eq(fk + 1)
                with m.State("US_DRAIN"):
                    # F1, U0, U1, U1R, U2, U3 of the last slice; done with its W write
                    drain_then_done(udrain, 5)
                with m.State("US_DONE"):
                    # no active block or no active column: nothing can change
                    m.d.comb += [busy.eq(1), count.eq(1), self.done.eq(1)]
                    m.next = "IDLE"
            else:
                # ---------------------------------------------------------------- accumulate
                with m.State("PREFETCH"):
                    # ev_start[T] arrives; fetch ev_start[T-1]
                    m.d.comb += [busy.eq(1), count.eq(1), self.ev_start_raddr.eq(g.timesteps - 1)]
                    m.d.sync += [hi.eq(self.ev_start_rdata), pf_pending.eq(1)]
                    m.next = "WAIT"
                with m.State("WAIT"):
                    m.d.comb += [busy.eq(1), self.lists.ready.eq(1),
                                 self.ev_start_raddr.eq(self.lists.payload.t - 1)]
                    with m.If(self.lists.valid):
                        m.d.comb += count.eq(1)
                        m.d.sync += [t_cur.eq(self.lists.payload.t), lens.eq(self.lists.payload.len),
                                     L.eq(lists_len_max), e.eq(lo_now), e_end.eq(hi), c.eq(0),
                                     hi.eq(lo_now), pf_pending.eq(1)]   # next: ev_start[t-1]
                        with m.If((lo_now != hi) & (lists_len_max != 0)):
                            m.next = "RUN"
                        with m.Else():
                            m.d.sync += release.eq(1)
                            with m.If(self.lists.payload.t == 0):
                                m.d.sync += drain.eq(0)
                                m.next = "DRAIN"
                    with m.Else():
                        ctr += stalls.eq(stalls + 1)
                with m.State("RUN"):
                    m.d.comb += [busy.eq(1), count.eq(1), issue.eq(1)]
                    with m.If(c == L - 1):
                        m.d.sync += [c.eq(0), e.eq(e + 1)]
                        with m.If(e + 1 == e_end):
                            m.d.sync += release.eq(1)
                            with m.If(t_cur == 0):
                                m.d.sync += drain.eq(0)
                                m.next = "DRAIN"
                            with m.Else():
                                m.next = "WAIT"
                    with m.Else():
                        m.d.sync += c.eq(c + 1)
                with m.State("DRAIN"):
                    # 3 cycles: the last issue's G write happens in the third.
                    drain_then_done(drain, 2)

            if not ip:
                # ---------------------------------------------------- update (dense walk)
                with m.State("U_INIT"):
                    # fetch the rng states of block 0 (address 0, see below)
                    m.d.comb += [busy.eq(1), count.eq(1)]
                    m.next = "U_RUN"
                with m.State("U_RUN"):
                    m.d.comb += [busy.eq(1), count.eq(1), u_issue.eq(1)]
                    m.d.sync += ua.eq(ua + 1)
                    with m.If(uj == n_in - 1):
                        m.d.sync += [uj.eq(0), ub.eq(ub + 1)]
                        with m.If(ub == NB - 1):
                            m.d.sync += drain.eq(0)
                            m.next = "U_DRAIN"
                    with m.Else():
                        m.d.sync += uj.eq(uj + 1)
                with m.State("U_DRAIN"):
                    # U1, U1R, U2, U3 of the last column slice; done with its W write
                    drain_then_done(drain, 3)

        m.d.comb += self.ev_addr_raddr.eq(e)
        if ip:
            # -------------------------------------------- in place: histories and handshake
            # BP's lists are not needed: accept each at once and release its buffer the
            # next cycle (BP then runs as with an always-ready WG, release_delay 1).
            m.d.comb += self.lists.ready.eq(1)
            m.d.sync += release.eq(self.lists.valid)
            # capture, read-modify-write of whole words: X1 (cap_valid) reads column j, X2
            # writes it back with bit t set; the write of the cycle before is forwarded (the
            # host may repeat a column).
            xw2_valid, xw2_t = Signal(), Signal(unsigned(ubits(T)))
            xw2_j = Signal(unsigned(ubits(n_in)))
            xl_we, xl_j, xl_data = Signal(), Signal(unsigned(ubits(n_in))), Signal(T)
            m.d.sync += [xw2_valid.eq(self.cap_valid), xw2_t.eq(self.cap_t), xw2_j.eq(self.cap_j)]
            old = Mux(xl_we & (xl_j == xw2_j), xl_data, x_rd.data)
            new = Signal(T)
            m.d.comb += new.eq(old | (Const(1, T) << xw2_t))
            m.d.sync += [xl_we.eq(xw2_valid), xl_j.eq(xw2_j), xl_data.eq(new)]
            with m.If(self.cap_valid):
                m.d.comb += x_rd.addr.eq(self.cap_j)
            with m.If(xw2_valid):
                m.d.comb += [x_wr.addr.eq(xw2_j), x_wr.data.eq(new), x_wr.en.eq(1)]
            # active-column scan: column xs_j's bits are on x_rd.data; a column that spiked
            # goes on the list with its bits, and every column is cleared for the next sample
            m.d.comb += [self.act_waddr.eq(n_act), self.act_wdata.j.eq(xs_j),
                         self.act_wdata.x.eq(x_rd.data)]
            with m.If(xs_valid):
                m.d.comb += [x_wr.addr.eq(xs_j), x_wr.data.eq(0), x_wr.en.eq(1)]
                with m.If(x_rd.data != 0):
                    m.d.comb += self.act_we.eq(1)
                    m.d.sync += n_act.eq(n_act + 1)
            # a block is active when some lane has a non-zero dv at some t
            dv_nz = Cat(*[self.dvw.dv[q] != 0 for q in range(P)]).any()
            with m.If(self.dvw.valid & dv_nz):
                m.d.sync += bact.bit_select(self.dvw.b, 1).eq(1)
            for q in range(P):
                m.d.comb += [dvh_wr[q].addr.eq(self.dvw.b),
                             dvh_wr[q].data.eq(Cat(*([self.dvw.dv[q]] * T))),
                             dvh_wr[q].en.eq(Mux(self.dvw.valid, 1 << self.dvw.t, 0))]
            for k in range(P):
                m.d.comb += [self.dvl_raddr[k].eq(0), self.g_waddr[k].eq(0),
                             self.g_wdata[k].eq(0), self.g_we[k].eq(0)]
        else:
            # --------------------------------------------------- accumulate: issue stage
            buf = t_cur[0]
            for q in range(P):
                m.d.comb += [
                    self.dvl_raddr[q].eq(buf * NB + c),
                    issue_lanes[q].eq(c < lens[q]),
                ]
            with m.If(issue):
                ctr += work.eq(work + sum(issue_lanes[q] for q in range(P)))

            # --------------------------------------------- S1: addresses, lane -> bank
            j = self.ev_addr_rdata
            jlow = Signal(max(lb, 1))              # j mod P
            m.d.comb += jlow.eq(j)
            lane_addr = [self.dvl_rdata[q].b * n_in + j for q in range(P)]
            lane_dv = [self.dvl_rdata[q].dv for q in range(P)]
            bank_lane_en = self._rotate([s1_lanes[q] for q in range(P)], jlow)
            bank_addr = self._rotate(lane_addr, jlow)
            bank_dv = self._rotate(lane_dv, jlow)
            s2_en = [Signal(name=f"s2_en{k}") for k in range(P)]
            s2_addr = [Signal(unsigned(ubits(depth)), name=f"s2_addr{k}") for k in range(P)]
            s2_dv = [Signal(signed(a.dv_bits), name=f"s2_dv{k}") for k in range(P)]
            for k in range(P):
                m.d.sync += [s2_en[k].eq(s1_valid & bank_lane_en[k]), s2_addr[k].eq(bank_addr[k]),
                             s2_dv[k].eq(bank_dv[k])]

        # U0: the column slice issued this cycle -- the dense walk's counters, or in place
        # the fetched active-column entry (F1: list read, U0: its j, x registered)
        if ip:
            g0_valid, g0_first, g0_last = Signal(), Signal(), Signal()
            g0_b, g0_base = Signal.like(fb), Signal.like(fbase)
            g0_j, g0_x = Signal(unsigned(ubits(n_in))), Signal(T)
            m.d.sync += [g0_valid.eq(f1_valid), g0_first.eq(f1_first), g0_last.eq(f1_last),
                         g0_b.eq(f1_b), g0_base.eq(f1_base),
                         g0_j.eq(self.act_rdata.j), g0_x.eq(self.act_rdata.x)]
            e_ua = Signal(unsigned(ubits(depth)))
            m.d.comb += [u_issue.eq(g0_valid), e_ua.eq(g0_base + g0_j)]
            e_uj, e_ub, e_first, e_lastcol = g0_j, g0_b, g0_first, g0_last
            u1_x = Signal(T)
            m.d.sync += u1_x.eq(g0_x)
        else:
            e_ua, e_uj, e_ub = ua, uj, ub
            e_first, e_lastcol = (uj == 0), (uj == n_in - 1)

        # update pipeline values per bank (U1 stage)
        valid_last = (1 << (N - (NB - 1) * P)) - 1                     # lanes of the last block
        u_lane_ok = Signal(P)
        # U1R: every block RAM word the update uses (W, G or the x bits and dv history, the
        # rng values) is registered once before any arithmetic (block RAM clock-to-out is
        # half a 100 MHz cycle)
        u1r_valid, u1r_last_block = Signal(), Signal()
        u1r_addr = Signal(unsigned(ubits(depth)))
        u1r_jlow = Signal(max(lb, 1))
        u1r_w = [Signal(signed(wb), name=f"u1r_w{k}") for k in range(P)]
        m.d.sync += [u1r_valid.eq(u1_valid), u1r_last_block.eq(u1_last_block),
                     u1r_addr.eq(u1_addr), u1r_jlow.eq(u1_jlow)]
        m.d.sync += [u1r_w[k].eq(self.w_rdata[k]) for k in range(P)]
        m.d.comb += u_lane_ok.eq(Mux(u1r_last_block, valid_last, (1 << P) - 1))
        # U2 and U3 registers: the update is pipelined (U1 reads arrive, U1R registers them
        # and forms G, U2 rotates lanes into banks and rounds, U3 subtracts, saturates and
        # writes W) to keep each stage to one
        # carry chain at 100 MHz.
        u2_valid, u3_valid = Signal(), Signal()
        u2_addr = Signal(unsigned(ubits(depth)))
        u3_addr = Signal(unsigned(ubits(depth)))
        u2_jlow = Signal(max(lb, 1))
        u2_lane_ok = Signal(P)
        u2_w = [Signal(signed(wb), name=f"u2_w{k}") for k in range(P)]
        m.d.sync += [u2_valid.eq(u1r_valid), u3_valid.eq(u2_valid), u2_addr.eq(u1r_addr),
                     u3_addr.eq(u2_addr), u2_jlow.eq(u1r_jlow), u2_lane_ok.eq(u_lane_ok)]
        m.d.sync += [u2_w[k].eq(u1r_w[k]) for k in range(P)]
        u_bank_ok = self._rotate([u2_lane_ok[q] for q in range(P)], u2_jlow)
        u1_lane_ok = Signal(P)
        m.d.comb += u1_lane_ok.eq(Mux(u1_last_block, valid_last, (1 << P) - 1))
        u1_bank_ok = self._rotate([u1_lane_ok[q] for q in range(P)], u1_jlow) if not ip else None
        # column position of the slice in its block (rng streams: first loads, last stores)
        u1_b = Signal(unsigned(ubits(NB)))
        u1_first, u1r_first, u2_first = Signal(), Signal(), Signal()
        u1r_b, u2_b = Signal.like(u1_b), Signal.like(u1_b)
        u1_lastcol, u1r_lastcol, u2_lastcol = Signal(), Signal(), Signal()
        m.d.sync += [u1_b.eq(e_ub), u1r_b.eq(u1_b), u2_b.eq(u1r_b),
                     u1_first.eq(e_first), u1r_first.eq(u1_first), u2_first.eq(u1r_first),
                     u1_lastcol.eq(e_lastcol), u1r_lastcol.eq(u1_lastcol),
                     u2_lastcol.eq(u1r_lastcol)]
        r_lane = [Signal(32, name=f"r_lane{q}") for q in range(P)]   # U2, lane order
        u_bank_r = self._rotate(r_lane, u2_jlow)

        if ip:
            # G of the column slice in U1R, exactly: G_q = sum over t with x[t][j] = 1 of
            # dv[t][b*P + q] (x bits of column j and dv history of block b read in U0);
            # never wider than grad_bits (the config guarantees it), so no saturation.
            xw = Signal(T)
            dvh_r = [Signal(T * dvb, name=f"dvh_r{q}") for q in range(P)]
            m.d.sync += [xw.eq(u1_x), *[dvh_r[q].eq(dvh_rd[q].data) for q in range(P)]]
            u_g = []
            for q in range(P):
                terms = [Mux(xw[t], dvh_r[q][t * dvb:(t + 1) * dvb].as_signed(), 0)
                         for t in range(T)]
                while len(terms) > 1:                 # balanced adder tree
                    terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                             for i in range(0, len(terms), 2)]
                gq = Signal(signed(arith.acc_width(dvb, T)), name=f"g_ip{q}")
                m.d.sync += gq.eq(terms[0])          # U2 register, lane order
                u_g.append(gq)
            u_bank_g = self._rotate(u_g, u2_jlow)
            for q in range(P):
                m.d.comb += dvh_rd[q].addr.eq(e_ub)
        else:
            s3_en = [Signal(name=f"s3_en{k}") for k in range(P)]
            s3_addr = [Signal(unsigned(ubits(depth)), name=f"s3_addr{k}") for k in range(P)]
            s3_dv = [Signal(signed(a.dv_bits), name=f"s3_dv{k}") for k in range(P)]
            last_we = [Signal(name=f"fw_we{k}") for k in range(P)]
            last_addr = [Signal(unsigned(ubits(depth)), name=f"fw_addr{k}") for k in range(P)]
            last_data = [Signal(signed(gb), name=f"fw_data{k}") for k in range(P)]
            u_bank_g = [Signal(signed(gb), name=f"u2_g{k}") for k in range(P)]
            g_r = [Signal(signed(gb), name=f"g_r{k}") for k in range(P)]
            m.d.sync += [g_r[k].eq(g_rd[k].data) for k in range(P)]          # U1R register
            m.d.sync += [u_bank_g[k].eq(g_r[k]) for k in range(P)]            # U2 register

        if ip:
            g_lane = u_g
        elif P == 1:
            g_lane = u_bank_g
        else:
            garr = Array(u_bank_g)              # lane q is in bank (q + j) mod P
            g_lane = [garr[(Const(q, lb + 1) + u2_jlow)[:lb]] for q in range(P)]

        for k in range(P):
            if not ip:
                # --------------------------------- S2: G read;  S3: add and write
                m.d.sync += [s3_en[k].eq(s2_en[k]), s3_addr[k].eq(s2_addr[k]), s3_dv[k].eq(s2_dv[k])]
                old = Mux(last_we[k] & (last_addr[k] == s3_addr[k]), last_data[k], g_rd[k].data)
                new = Signal(signed(gb), name=f"g_new{k}")
                m.d.comb += new.eq(old + s3_dv[k])          # wraps at grad_bits: never overflows
                m.d.sync += [last_we[k].eq(s3_en[k]), last_addr[k].eq(s3_addr[k]),
                             last_data[k].eq(new)]

            # update datapath, shared by both dataflows: W read in U0 at ua in every bank
            # (on w_rdata in U1, registered in U1R and U2), G from the gradient memory (accumulate)
            # or formed from the histories (in place); U2: delta = round(G >> lr_shift),
            # U3: W = sat(W - delta)
            gval = u_bank_g[k]
            if stochastic:
                delta = arith.round_update(gval, a.lr_shift, u_bank_r[k])
            else:
                delta = arith.round_update(gval, a.lr_shift)
            u3_delta = Signal(signed(len(Value.cast(delta))), name=f"u3_delta{k}")
            u3_w = Signal(signed(wb), name=f"u3_w{k}")
            u3_ok = Signal(name=f"u3_ok{k}")
            m.d.sync += [u3_delta.eq(delta), u3_w.eq(u2_w[k]), u3_ok.eq(u2_valid & u_bank_ok[k])]
            w_new = Signal(signed(wb), name=f"w_new{k}")
            m.d.comb += w_new.eq(arith.sat(u3_w - u3_delta, wb))

            m.d.comb += [
                self.w_raddr[k].eq(e_ua),
                self.w_waddr[k].eq(u3_addr),
                self.w_wdata[k].eq(w_new),
                self.w_we[k].eq(u3_valid & u3_ok),
            ]
            if not ip:
                u_we = u1_valid & u1_bank_ok[k]          # G cleared in U1
                m.d.comb += [
                    g_rd[k].addr.eq(Mux(u_issue, ua, s2_addr[k])),
                    g_wr[k].addr.eq(Mux(u1_valid, u1_addr, s3_addr[k])),
                    g_wr[k].data.eq(Mux(u1_valid, 0, new)),
                    g_wr[k].en.eq(Mux(u1_valid, u_we, s3_en[k])),
                    self.g_waddr[k].eq(g_wr[k].addr),
                    self.g_wdata[k].eq(g_wr[k].data),
                    self.g_we[k].eq(g_wr[k].en),
                ]
        with m.If(u2_valid):
            ctr += work.eq(work + sum(u2_lane_ok[q] for q in range(P)))

        # ------------------------------------------------------------- update: U0 stage
        m.d.sync += [u1_addr.eq(e_ua), u1_last_block.eq(e_ub == NB - 1)]
        m.d.sync += u1_jlow.eq(e_uj)           # truncated: j mod P
        # rng (stochastic rounding): lane q's stream steps only for a weight whose G is not
        # zero (model/fixedpoint.py), so it steps in U2, where G is known. Block b's states
        # are read in U1 of its first column and registered in U1R with their next state
        # (st_s, st_n); during the block s = the state, n = xorshift(s) are kept in
        # registers, so the rounding takes r = n straight from a register (or st_n); the
        # state after the block's last column is written back in U2.
        if stochastic:
            host_idle = ~busy & ~self.start_update
            for q in range(P):
                st_s, st_n = Signal(32, name=f"st_s{q}"), Signal(32, name=f"st_n{q}")
                s_q, n_q = Signal(32, name=f"rs{q}"), Signal(32, name=f"rn{q}")
                m.d.sync += [st_s.eq(rng_rd[q].data), st_n.eq(arith.xorshift32(rng_rd[q].data))]
                s_eff, n_eff = Mux(u2_first, st_s, s_q), Mux(u2_first, st_n, n_q)
                step = Signal(name=f"rstep{q}")
                m.d.comb += [step.eq(u2_lane_ok[q] & (g_lane[q] != 0)), r_lane[q].eq(n_eff)]
                s_new = Signal(32, name=f"rs_new{q}")
                m.d.comb += s_new.eq(Mux(step, n_eff, s_eff))
                with m.If(u2_valid):
                    m.d.sync += [s_q.eq(s_new), n_q.eq(Mux(step, arith.xorshift32(n_eff), n_eff))]
                m.d.comb += [
                    rng_rd[q].addr.eq(Mux(u1_valid & u1_first, u1_b,
                                          Mux(host_idle, self.rng_raddr, 0))),
                    rng_wr[q].addr.eq(Mux(busy, u2_b, self.rng_waddr)),
                    rng_wr[q].data.eq(Mux(busy, s_new, self.rng_wdata[q])),
                    rng_wr[q].en.eq(Mux(busy, u2_valid & u2_lastcol, self.rng_we[q])),
                    self.rng_rdata[q].eq(rng_rd[q].data),
                ]
        else:
            for q in range(P):
                m.d.comb += self.rng_rdata[q].eq(0)
        return m
