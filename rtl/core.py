"""The Core: shared memories, the FP, BP and WG engines, and the controller of one core.

See docs/core.md. The core owns every memory the engines share -- weights ``W`` (``P``
skewed banks), the input event list and its offsets, spike and surrogate-mask histories,
spike counts, the BP -> WG dv lists and (hidden layers) the error from above -- and muxes
their ports by phase: *forward* (FP), *backward* (BP and WG concurrently, on the
double-buffered dv lists), *update* (WG), or *idle* (the host). Each memory has one read
and one write port (one block RAM each on an FPGA).

Host side (all ``amaranth.lib.stream``):

* ``ev_in`` (In, :func:`event_layout`): input events ``{t, j, end, close}`` of one sample in
  non-decreasing ``t``; an item with ``end = 1`` carries no event and closes the sample, one
  with ``close = 1`` none and closes timestep ``t`` (in place; the list ignores it).
  Accumulate dataflow: accepted only while idle, into a list of ``T*n_in`` entries (the
  loader fills the ``ev_start`` table as it goes, one extra cycle per timestep boundary).
  In place: accepted during the forward pass of ``train``/``infer``, one timestep at a
  time into a buffer of ``n_in`` entries that FP walks once per block (an event of a later
  timestep, or ``end``, closes the timestep); offer them after sending the command. The
  input spikes of a ``train`` go to WG's x bits as they are accepted. Either way an event
  whose ``t`` went backwards or past ``T-1`` is dropped.
* ``cmd`` (In, :func:`cmd_layout`) / ``rsp`` (Out, :func:`rsp_layout`): one response per
  command, ``status`` 0 = ok, 1 = unknown op, 2 = index out of range (nothing changed).
  Ops (:class:`rtl.interfaces.Op`): ``write_w`` (W[i, j] = data), ``read_w``, ``write_rng`` /
  ``read_rng`` (xorshift32 state of neuron i), ``set_label`` (data; >= N: no label on this
  core), ``train`` (forward + backward of the loaded sample, gradients summed into ``G``),
  ``infer`` (forward only), ``update`` (W -= round(G >> lr_shift), G = 0), ``read_counter``
  (i = index in :data:`COUNTERS`), ``read_count`` (spike count of neuron i of the last
  forward pass), ``status`` (data = phase). ``train``/``infer``/``update`` answer when done.
* ``spikes_out`` (Out): the FP engine's non-zero spike words ``{t, b, spikes}``.
* ``err_out`` (Out): the BP engine's error partial sums ``{t, jb, e[P]}``.
* ``ds_in`` (In, hidden layers only): error from above ``{t, b, ds[P]}``, written while idle,
  or -- ``train_ds``, the chip's train -- after the forward pass: the core then waits for
  exactly ``T*NB`` words (every ``{t, b}`` once) and starts the backward pass after the last.
  On the output layer ``train_ds`` is ``train``.
* ``step`` / ``step_t`` (Out): FP finished timestep ``step_t`` (a one-cycle pulse, with the
  timestep's last spike word presented on ``spikes_out`` in the same cycle).

Monitors (Out, for scoreboards): ``mon_s_*``/``mon_m_*`` (S/M history writes),
``mon_cnt_*``, ``mon_h_*`` (FP), ``mon_dvw`` (BP's dv of every block), ``mon_g_*`` (WG's
gradient writes), ``mon_w_*`` (weight write-backs of the update).

Phase cycle counters (``read_counter``; ``model/perf.py`` predicts each from the data):
forward = ``fp_cycles + 2`` (one cycle to start FP, one to see its registered ``done``),
update = ``update_cycles + 1`` (WG shows ``done`` in its last busy cycle), backward = from the
start of BP and WG until both are done (``core_backward_schedule``: BP waits for WG's
``release`` when WG is the slower one, WG waits for BP's lists otherwise).

Weight-gradient dataflow ``hardware.wg_dataflow`` (docs/core.md): ``accumulate`` as above;
``inplace`` (batch size 1) has no gradient memory, no dv lists and no event list: ``train``
runs forward (the input spikes written as bits as they arrive), backward (BP alone, its
lists accepted and released at once; WG keeps BP's dv from ``dvw``) and then the in-place update
(WG forms each column slice of ``G`` from those histories and writes ``W`` back), and
answers after the update; all three phase counters are set. The ``update`` command does
not exist in this dataflow: it is answered ``bad_op`` and changes nothing. Backward =
``perf.core_inplace_backward_cycles``, update = ``update_cycles + 1`` as in accumulate.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bp import BPEngine
from .fp import FPEngine
from .debug import counter_domain
from .geometry import CoreGeometry, check_geometry
from .interfaces import (IDX_BITS, Op, Phase, Status, active_column_layout,
                         cmd_layout, count_bits, ds_layout, dv_entry_layout, dv_list_depth,
                         dvw_layout, err_layout, event_layout, rsp_layout, spike_word_layout, ubits,
                         weight_location)
from .wg import WGEngine, inplace

__all__ = ["Core", "COUNTERS"]

#: Counters readable with ``read_counter`` (index = position), latched at the end of a phase.
COUNTERS = ("fwd_phase", "fp_cycles", "fp_work", "fp_stalls",
            "bwd_phase", "bp_cycles", "bp_work", "wg_cycles", "wg_work", "wg_stalls",
            "upd_phase", "upd_cycles", "upd_work", "samples")

#: In place: the one-timestep event buffer of a core with at most this many inputs is read
#: as LUT-RAM with a registered address (larger ones are block RAM).
_EV_LUTRAM_DEPTH = 256


class Core(wiring.Component):
    """One training core (see the module docstring)."""

    def __init__(self, cfg, geom: CoreGeometry, *, debug: bool = True, weights=None):
        check_geometry("Core", cfg, geom)
        for name, v in (("n_in", geom.n_in), ("n_neurons", geom.n_neurons)):
            if v >= 1 << IDX_BITS:
                raise ValueError(f"Core: {name}={v} does not fit the {IDX_BITS}-bit command indices")
        self.cfg, self.geom = cfg, geom
        a = cfg.arithmetic
        #: initial weight bank contents (``weights``: this core's ``(N, n_in)`` integer slice,
        #: built into the weight memories) or None (they start unknown: load them)
        self.w_init = None
        if weights is not None:
            self.w_init = self._bank_init(weights, a.weight_bits)
        P, NB, T = geom.lanes, geom.blocks, geom.timesteps
        depth = geom.weight_depth
        members = {
            "cmd": In(stream.Signature(cmd_layout())),
            "rsp": Out(stream.Signature(rsp_layout())),
            "ev_in": In(stream.Signature(event_layout(geom))),
            "spikes_out": Out(stream.Signature(spike_word_layout(geom))),
            "err_out": Out(stream.Signature(err_layout(cfg, geom))),
            "busy": Out(1),
            "phase": Out(2),
            "step": Out(1),
            "step_t": Out(unsigned(ubits(T))),
        }
        mon = {
            "mon_s_waddr": Out(unsigned(ubits(T * NB))), "mon_s_wdata": Out(P), "mon_s_we": Out(1),
            "mon_m_wdata": Out(P),
            "mon_cnt_wdata": Out(count_bits(T)).array(P), "mon_cnt_we": Out(P),
            "mon_h_wdata": Out(signed(a.membrane_bits)).array(P),
            "mon_dvw": Out(dvw_layout(cfg, geom)),
            "mon_g_waddr": Out(unsigned(ubits(depth))).array(P),
            "mon_g_wdata": Out(signed(a.grad_bits)).array(P),
            "mon_g_we": Out(P),
            "mon_w_waddr": Out(unsigned(ubits(depth))).array(P),
            "mon_w_wdata": Out(signed(a.weight_bits)).array(P),
            "mon_w_we": Out(P),
        }
        #: debug build: performance counters (``read_counter``) and the monitor ports; off
        #: (board builds) the counters are not built, ``read_counter`` answers ``bad_op``
        #: and the monitors are internal signals that synthesis removes.
        self.debug = bool(debug)
        if self.debug:
            members.update(mon)
        if not geom.output_layer:
            members["ds_in"] = In(stream.Signature(ds_layout(cfg, geom)))
        super().__init__(members)
        if not self.debug:
            sink = wiring.Signature(mon).create()
            for name in mon:
                setattr(self, name, getattr(sink, name))

    def _bank_init(self, weights, bits):
        g = self.geom
        rows = [[int(v) for v in r] for r in (weights.tolist() if hasattr(weights, "tolist") else weights)]
        if len(rows) != g.n_neurons or any(len(r) != g.n_in for r in rows):
            raise ValueError(f"Core: initial weights must be {g.n_neurons} x {g.n_in}")
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        banks = [[0] * g.weight_depth for _ in range(g.lanes)]
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                if not lo <= v <= hi:
                    raise ValueError(f"Core: initial weight W[{i}, {j}] = {v} is outside "
                                     f"{bits}-bit range {lo}..{hi}")
                bank, addr = weight_location(i, j, g.lanes, g.n_in)
                banks[bank][addr] = v
        return banks

    def _event_list(self, m, fp, wg, ev, idle_ok, ld_fill, fwd):
        """Accumulate dataflow: the whole sample's events, loaded while idle, in a list of
        ``T*n_in`` entries with the offsets ``ev_start[t]``, walked by FP and WG."""
        g, T, n_in = self.geom, self.geom.timesteps, self.geom.n_in
        ev_mem = Memory(shape=unsigned(ubits(n_in)), depth=g.max_events, init=[])
        st_mem = Memory(shape=unsigned(ubits(g.max_events + 1)), depth=T + 1, init=[0] * (T + 1))
        m.submodules.ev_addr = ev_mem
        m.submodules.ev_start = st_mem
        ev_rp, ev_wp = ev_mem.read_port(), ev_mem.write_port()
        st_rp, st_wp = st_mem.read_port(), st_mem.write_port()
        m.d.comb += [
            ev_rp.addr.eq(Mux(fwd, fp.ev_addr_raddr, wg.ev_addr_raddr)),
            fp.ev_addr_rdata.eq(ev_rp.data), wg.ev_addr_rdata.eq(ev_rp.data),
            st_rp.addr.eq(Mux(fwd, fp.ev_start_raddr, wg.ev_start_raddr)),
            fp.ev_start_rdata.eq(st_rp.data), wg.ev_start_rdata.eq(st_rp.data),
        ]
        # loader: ev_start[0] = 0 always; on each timestep boundary write ev_start[t+1]
        ld_t = Signal(range(T + 1))
        ld_n = Signal(range(g.max_events + 1))
        m.d.comb += [st_wp.addr.eq(ld_t + 1), st_wp.data.eq(ld_n), ev_wp.addr.eq(ld_n),
                     ev_wp.data.eq(ev.j)]
        with m.If(ld_fill):
            m.d.comb += st_wp.en.eq(1)
            m.d.sync += ld_t.eq(ld_t + 1)
            with m.If(ld_t == T - 1):
                m.d.sync += [ld_fill.eq(0), ld_t.eq(0), ld_n.eq(0)]
        with m.Elif(self.ev_in.valid & idle_ok):
            with m.If(ev.end):
                m.d.comb += self.ev_in.ready.eq(1)
                m.d.sync += ld_fill.eq(1)
            with m.Elif(ev.close):    # the list finds timestep boundaries from t alone
                m.d.comb += self.ev_in.ready.eq(1)
            with m.Elif(ev.t == ld_t):
                m.d.comb += self.ev_in.ready.eq(1)
                with m.If(ld_n < g.max_events):      # more events than T*n_in: dropped
                    m.d.comb += ev_wp.en.eq(1)
                    m.d.sync += ld_n.eq(ld_n + 1)
            with m.Elif((ev.t > ld_t) & ((ld_t < T - 1) if T > 1 else Const(0))):
                m.d.comb += st_wp.en.eq(1)
                m.d.sync += ld_t.eq(ld_t + 1)
            with m.Else():   # t went backwards or past T-1: dropped (the host broke the order)
                m.d.comb += self.ev_in.ready.eq(1)


    def _event_buffer(self, m, fp, wg, ev, training, fwd):
        """In place: one timestep's events at a time (``n_in`` entries), filled while FP waits
        for them (``fp.buf_wait``) and walked by FP once per block; an event of a later
        timestep or ``end`` closes the timestep (after ``end`` the remaining timesteps close
        with no events). The input spikes of a `train` go to WG's x bits as they arrive.
        Outside the forward pass the same memory holds WG's active-column list
        (``{j, x bits}`` entries: written in the backward phase, read by the update)."""
        g, T, n_in = self.geom, self.geom.timesteps, self.geom.n_in
        ev_mem = Memory(shape=active_column_layout(g), depth=n_in, init=[])
        m.submodules.ev_addr = ev_mem
        ev_wp = ev_mem.write_port()
        raddr = Mux(fwd, fp.ev_addr_raddr, wg.act_raddr)
        if n_in <= _EV_LUTRAM_DEPTH:
            # a small buffer lives in LUT-RAM, whose read is asynchronous: register the read
            # address instead of the data, so that FP's next cursor (the address) and the
            # LUT-RAM read with its depth mux fall into two cycles. The same as the
            # synchronous read: the loader never writes while FP uses what it reads, and WG
            # writes its list (backward phase) before it reads it (update).
            ev_rp = ev_mem.read_port(domain="comb")
            ev_ra = Signal.like(fp.ev_addr_raddr)
            m.d.sync += ev_ra.eq(raddr)
            m.d.comb += ev_rp.addr.eq(ev_ra)
        else:                                        # block RAM: its address is registered
            ev_rp = ev_mem.read_port()
            m.d.comb += ev_rp.addr.eq(raddr)
        m.d.comb += [fp.ev_addr_rdata.eq(ev_rp.data.j), wg.act_rdata.eq(ev_rp.data),
                     fp.ev_start_rdata.eq(0), wg.ev_addr_rdata.eq(0), wg.ev_start_rdata.eq(0)]
        ld_t = Signal(range(T))
        ld_n = Signal(range(n_in + 1))
        closed, ended = Signal(), Signal()
        # WG's capture of the input spikes is registered: the loader's handshake (FP's wait,
        # the event's timestep) no longer runs into WG's x-bits read address (WG reads the
        # x bits only in the update pass, long after the last capture)
        cap_valid, cap_t, cap_j = Signal(), Signal.like(wg.cap_t), Signal.like(wg.cap_j)
        m.d.sync += [cap_valid.eq(0), cap_t.eq(ev.t), cap_j.eq(ev.j)]
        m.d.comb += [fp.buf_n.eq(ld_n), fp.buf_closed.eq(closed),
                     ev_wp.addr.eq(Mux(fwd, ld_n, wg.act_waddr)),
                     ev_wp.data.eq(Mux(fwd, ev.j, wg.act_wdata)),
                     ev_wp.en.eq(~fwd & wg.act_we),
                     wg.cap_valid.eq(cap_valid), wg.cap_t.eq(cap_t), wg.cap_j.eq(cap_j)]
        with m.If(fp.buf_take):
            m.d.sync += [closed.eq(0), ld_n.eq(0), ld_t.eq(ld_t + 1)]
            with m.If(ld_t == T - 1):                # the sample is over
                m.d.sync += [ld_t.eq(0), ended.eq(0)]
        with m.Elif(fp.buf_wait & ~closed):
            with m.If(ended):
                m.d.sync += closed.eq(1)
            with m.Elif(self.ev_in.valid):
                with m.If(ev.end):
                    m.d.comb += self.ev_in.ready.eq(1)
                    m.d.sync += [closed.eq(1), ended.eq(1)]
                with m.Elif(ev.close & (ev.t == ld_t)):
                    m.d.comb += self.ev_in.ready.eq(1)
                    m.d.sync += closed.eq(1)
                with m.Elif(ev.t == ld_t):
                    m.d.comb += self.ev_in.ready.eq(1)
                    with m.If(ld_n < n_in):          # more than n_in: a repeated column, dropped
                        m.d.comb += ev_wp.en.eq(1)
                        m.d.sync += cap_valid.eq(training)
                        m.d.sync += ld_n.eq(ld_n + 1)
                with m.Elif((ev.t > ld_t) & ((ld_t < T - 1) if T > 1 else Const(0))):
                    m.d.sync += closed.eq(1)         # taken by the next timestep
                with m.Else():   # t went backwards or past T-1: dropped (the host broke the order)
                    m.d.comb += self.ev_in.ready.eq(1)

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.cfg, self.geom
        a = cfg.arithmetic
        P, NB, T, N, n_in = g.lanes, g.blocks, g.timesteps, g.n_neurons, g.n_in
        depth = g.weight_depth
        lp = P.bit_length() - 1
        cb = count_bits(T)

        m.submodules.fp = fp = FPEngine(cfg, g, debug=self.debug)
        m.submodules.bp = bp = BPEngine(cfg, g, debug=self.debug)
        m.submodules.wg = wg = WGEngine(cfg, g, debug=self.debug)
        ctr = counter_domain(m, self.debug)

        IDLE, FWD, BWD, UPD = Phase.IDLE, Phase.FWD, Phase.BWD, Phase.UPD
        phase = Signal(2)
        m.d.comb += self.phase.eq(phase)

        # --------------------------------------------------------------- host requests
        h_w_raddr = Signal(ubits(depth))
        h_w_waddr = Signal(ubits(depth))
        h_w_wdata = Signal(signed(a.weight_bits))
        h_w_we = Signal(P)
        h_cnt_raddr = Signal(ubits(NB))

        # ------------------------------------------------------------------- weights
        w_rdata = []
        for k in range(P):
            mem = Memory(shape=signed(a.weight_bits), depth=depth,
                         init=self.w_init[k] if self.w_init is not None else [])
            m.submodules[f"w{k}"] = mem
            rp, wp = mem.read_port(), mem.write_port()
            m.d.comb += [
                rp.addr.eq(Mux(phase == FWD, fp.w_raddr[k],
                           Mux(phase == BWD, bp.w_raddr[k],
                           Mux(phase == UPD, wg.w_raddr[k], h_w_raddr)))),
                fp.w_rdata[k].eq(rp.data), bp.w_rdata[k].eq(rp.data), wg.w_rdata[k].eq(rp.data),
                wp.addr.eq(Mux(phase == UPD, wg.w_waddr[k], h_w_waddr)),
                wp.data.eq(Mux(phase == UPD, wg.w_wdata[k], h_w_wdata)),
                wp.en.eq(Mux(phase == UPD, wg.w_we[k], h_w_we[k])),
                self.mon_w_waddr[k].eq(wg.w_waddr[k]), self.mon_w_wdata[k].eq(wg.w_wdata[k]),
                self.mon_w_we[k].eq((phase == UPD) & wg.w_we[k]),
            ]
            # the host's read of a weight word is registered before the response mux (block
            # RAM clock-to-out and the depth mux of a deep bank are most of a cycle)
            hw = Signal(signed(a.weight_bits), name=f"h_w_rdata{k}")
            m.d.sync += hw.eq(rp.data)
            w_rdata.append(hw)

        # ------------------------------------------------------------- input events
        ev = self.ev_in.payload
        idle_ok = Signal()
        ld_fill = Signal()           # filling ev_start up to T after `end` (list only)
        training = Signal()          # the forward pass of a `train` (not an `infer`)
        if fp.buffered:
            self._event_buffer(m, fp, wg, ev, training, phase == FWD)
        else:
            self._event_list(m, fp, wg, ev, idle_ok, ld_fill, phase == FWD)

        # ------------------------------------------------------------- S, M histories
        for name in ("s", "m"):
            mem = Memory(shape=P, depth=max(T * NB, 2), init=[])
            m.submodules[f"{name}_hist"] = mem
            rp, wp = mem.read_port(), mem.write_port()
            m.d.comb += [
                wp.addr.eq(getattr(fp, f"{name}_waddr")), wp.data.eq(getattr(fp, f"{name}_wdata")),
                wp.en.eq(getattr(fp, f"{name}_we")),
                rp.addr.eq(getattr(bp, f"{name}_raddr")), getattr(bp, f"{name}_rdata").eq(rp.data),
            ]
        m.d.comb += [self.mon_s_waddr.eq(fp.s_waddr), self.mon_s_wdata.eq(fp.s_wdata),
                     self.mon_s_we.eq(fp.s_we), self.mon_m_wdata.eq(fp.m_wdata)]

        # ------------------------------------------------------------------- counts
        cnt_rdata = []
        for q in range(P):
            mem = Memory(shape=cb, depth=max(NB, 2), init=[])   # depth 1: no address bits
            m.submodules[f"cnt{q}"] = mem
            rp, wp = mem.read_port(), mem.write_port()
            raddr = fp.cnt_raddr[q] if not g.output_layer else Mux(phase == BWD, bp.cnt_raddr[q], fp.cnt_raddr[q])
            m.d.comb += [
                rp.addr.eq(Mux(phase == IDLE, h_cnt_raddr, raddr)),
                fp.cnt_rdata[q].eq(rp.data),
                wp.addr.eq(fp.cnt_waddr[q]), wp.data.eq(fp.cnt_wdata[q]), wp.en.eq(fp.cnt_we[q]),
                self.mon_cnt_wdata[q].eq(fp.cnt_wdata[q]), self.mon_h_wdata[q].eq(fp.h_wdata[q]),
            ]
            if g.output_layer:
                m.d.comb += bp.cnt_rdata[q].eq(rp.data)
            cnt_rdata.append(rp.data)
        m.d.comb += self.mon_cnt_we.eq(Cat(*fp.cnt_we))

        # ---------------------------------------------------------- ds from above
        ds_wait = Signal()           # train_ds on a hidden core: taking ds after forward
        ds_n = Signal(range(T * NB + 1))
        if not g.output_layer:
            dsp = self.ds_in.payload
            m.d.comb += self.ds_in.ready.eq(idle_ok | ds_wait)
            for q in range(P):
                mem = Memory(shape=signed(a.error_bits), depth=max(T * NB, 2), init=[])
                m.submodules[f"ds{q}"] = mem
                rp, wp = mem.read_port(), mem.write_port()
                m.d.comb += [
                    rp.addr.eq(bp.ds_raddr[q]), bp.ds_rdata[q].eq(rp.data),
                    wp.addr.eq(dsp.t * NB + dsp.b), wp.data.eq(dsp.ds[q]),
                    wp.en.eq(self.ds_in.valid & self.ds_in.ready),
                ]
            with m.If(ds_wait & self.ds_in.valid):
                m.d.sync += ds_n.eq(ds_n + 1)

        # ---------------------------------------------------------------- dv lists
        # (accumulate only: the in-place WG keeps its own dv history, fed by BP's dvw)
        ip = inplace(cfg)
        if not ip:
            for q in range(P):
                mem = Memory(shape=dv_entry_layout(cfg, g), depth=dv_list_depth(g), init=[])
                m.submodules[f"dvl{q}"] = mem
                rp, wp = mem.read_port(), mem.write_port()
                m.d.comb += [
                    wp.addr.eq(bp.dvl_waddr[q]), wp.data.eq(bp.dvl_wdata[q]), wp.en.eq(bp.dvl_we[q]),
                    rp.addr.eq(wg.dvl_raddr[q]), wg.dvl_rdata[q].eq(rp.data),
                ]
        wiring.connect(m, bp.lists, wg.lists)
        m.d.comb += [bp.release.eq(wg.release), wg.dvw.eq(bp.dvw)]

        # ------------------------------------------------------- streams, monitors
        wiring.connect(m, fp.spikes, wiring.flipped(self.spikes_out))
        m.d.comb += [self.step.eq(fp.step), self.step_t.eq(fp.step_t)]
        wiring.connect(m, bp.err, wiring.flipped(self.err_out))
        m.d.comb += self.mon_dvw.eq(bp.dvw)
        for k in range(P):
            m.d.comb += [self.mon_g_waddr[k].eq(wg.g_waddr[k]), self.mon_g_wdata[k].eq(wg.g_wdata[k])]
        m.d.comb += self.mon_g_we.eq(Cat(*wg.g_we))

        # ------------------------------------------------------------- controller
        label = Signal(unsigned(max(1, N.bit_length())), init=(1 << max(1, N.bit_length())) - 1)
        if g.output_layer:
            m.d.comb += bp.label.eq(label)
        counters = {name: Signal(32, name=f"ctr_{name}") for name in COUNTERS}
        phase_ctr = Signal(32)
        bp_seen, wg_seen = Signal(), Signal()

        cmd = self.cmd.payload
        op = Signal(4)
        ci = Signal(IDX_BITS)
        cj = Signal(IDX_BITS)
        cdata = Signal(32)
        rsp_status = Signal(2)
        rsp_data = Signal(32)
        m.d.comb += [self.rsp.payload.status.eq(rsp_status), self.rsp.payload.data.eq(rsp_data)]

        # decoded host addresses of the latched command
        bank = Signal(max(1, lp))
        waddr = Signal(ubits(depth) + 1)
        loc_bank, loc_addr = weight_location(ci, cj, P, n_in)
        m.d.comb += [bank.eq(loc_bank), waddr.eq(loc_addr)]
        lane = Signal(max(1, lp))
        m.d.comb += lane.eq(ci[:lp] if lp else 0)
        row_ok = ci < N
        col_ok = cj < n_in

        m.d.comb += [
            h_w_raddr.eq(waddr), h_w_waddr.eq(waddr), h_w_wdata.eq(cdata),
            h_cnt_raddr.eq(ci >> lp),
            wg.rng_raddr.eq(ci >> lp), wg.rng_waddr.eq(ci >> lp),
        ]
        for q in range(P):
            m.d.comb += wg.rng_wdata[q].eq(cdata)

        busy = Signal()
        m.d.comb += [self.busy.eq(busy), idle_ok.eq(~busy & (phase == IDLE))]

        def respond(status, value=0):
            return [rsp_status.eq(status), rsp_data.eq(value)]

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~ld_fill)
                with m.If(self.cmd.valid & ~ld_fill):
                    m.d.sync += [op.eq(cmd.op), ci.eq(cmd.i), cj.eq(cmd.j), cdata.eq(cmd.data)]
                    m.next = "EXEC"
            with m.State("EXEC"):
                m.d.comb += busy.eq(1)
                with m.Switch(op):
                    with m.Case(Op.NOP):
                        m.d.sync += respond(Status.OK)
                        m.next = "RSP"
                    with m.Case(Op.WRITE_W):
                        with m.If(row_ok & col_ok):
                            m.d.comb += h_w_we.eq(1 << bank)
                            m.d.sync += respond(Status.OK)
                        with m.Else():
                            m.d.sync += respond(Status.BAD_INDEX)
                        m.next = "RSP"
                    with m.Case(Op.READ_W, Op.WRITE_RNG, Op.READ_RNG, Op.READ_COUNT):
                        with m.If(Mux(op == Op.READ_W, row_ok & col_ok, row_ok)):
                            with m.If(op == Op.WRITE_RNG):
                                m.d.comb += [wg.rng_we[q].eq(lane == q) for q in range(P)]
                            m.next = "READ"
                        with m.Else():
                            m.d.sync += respond(Status.BAD_INDEX)
                            m.next = "RSP"
                    with m.Case(Op.SET_LABEL):
                        m.d.sync += [label.eq(Mux(cdata >= N, (1 << len(label)) - 1, cdata)),
                                     *respond(Status.OK)]
                        m.next = "RSP"
                    with m.Case(Op.TRAIN, Op.TRAIN_DS, Op.INFER):
                        m.d.sync += [phase.eq(FWD), training.eq(op != Op.INFER)]
                        ctr += phase_ctr.eq(0)
                        m.next = "FWD_START"
                    with m.Case(Op.UPDATE):
                        if ip:
                            # in place: train already updated W; there is no G to apply
                            m.d.sync += respond(Status.BAD_OP)
                            m.next = "RSP"
                        else:
                            m.d.sync += phase.eq(UPD)
                            ctr += phase_ctr.eq(0)
                            m.next = "UPD_START"
                    with m.Case(Op.READ_COUNTER):
                        arr = Array([counters[n] for n in COUNTERS])
                        with m.If(~Const(self.debug)):
                            m.d.sync += respond(Status.BAD_OP)
                        with m.Elif(ci < len(COUNTERS)):
                            m.d.sync += respond(Status.OK, arr[ci[:ubits(len(COUNTERS))]])
                        with m.Else():
                            m.d.sync += respond(Status.BAD_INDEX)
                        m.next = "RSP"
                    with m.Case(Op.STATUS):
                        m.d.sync += respond(Status.OK, Cat(phase, ld_fill))
                        m.next = "RSP"
                    with m.Default():
                        m.d.sync += respond(Status.BAD_OP)
                        m.next = "RSP"
            with m.State("READ"):
                # the synchronous read issued in EXEC is on the read ports now (the
                # addresses stay, so it stays there); the weight word is registered
                m.d.comb += busy.eq(1)
                m.next = "READ_REG"
            with m.State("READ_REG"):
                m.d.comb += busy.eq(1)
                wsel = Array(w_rdata)[bank] if P > 1 else w_rdata[0]
                rsel = Array(wg.rng_rdata)[lane] if P > 1 else wg.rng_rdata[0]
                csel = Array(cnt_rdata)[lane] if P > 1 else cnt_rdata[0]
                with m.Switch(op):
                    with m.Case(Op.READ_W):
                        m.d.sync += respond(Status.OK, wsel.as_signed())
                    with m.Case(Op.READ_RNG):
                        m.d.sync += respond(Status.OK, rsel)
                    with m.Case(Op.READ_COUNT):
                        m.d.sync += respond(Status.OK, csel)
                    with m.Default():
                        m.d.sync += respond(Status.OK)
                m.next = "RSP"
            with m.State("RSP"):
                m.d.comb += [busy.eq(1), self.rsp.valid.eq(1)]
                with m.If(self.rsp.ready):
                    m.next = "IDLE"
            # ---------------------------------------------------------- forward
            with m.State("FWD_START"):
                m.d.comb += [busy.eq(1), fp.start.eq(1)]
                ctr += phase_ctr.eq(phase_ctr + 1)
                m.next = "FWD_WAIT"
            with m.State("FWD_WAIT"):
                m.d.comb += busy.eq(1)
                ctr += phase_ctr.eq(phase_ctr + 1)
                with m.If(fp.done):
                    ctr += [counters["fwd_phase"].eq(phase_ctr + 1),
                                 counters["fp_cycles"].eq(fp.cycles), counters["fp_work"].eq(fp.work),
                                 counters["fp_stalls"].eq(fp.stalls)]
                    with m.If((op == Op.TRAIN_DS) & Const(not g.output_layer)):
                        m.d.sync += [phase.eq(BWD), bp_seen.eq(0), wg_seen.eq(0), ds_n.eq(0)]
                        m.next = "DS_WAIT"
                    with m.Elif(op != Op.INFER):
                        m.d.sync += [phase.eq(BWD), bp_seen.eq(0), wg_seen.eq(0)]
                        ctr += phase_ctr.eq(0)
                        m.next = "BWD_START"
                    with m.Else():
                        m.d.sync += [phase.eq(IDLE), *respond(Status.OK)]
                        m.next = "RSP"
            # --------------------------------------------------------- backward
            with m.State("DS_WAIT"):
                # train_ds: the error from above arrives (the chip reduces it first)
                m.d.comb += [busy.eq(1), ds_wait.eq(ds_n < T * NB)]
                with m.If(ds_n == T * NB):
                    ctr += phase_ctr.eq(0)
                    m.next = "BWD_START"
            with m.State("BWD_START"):
                m.d.comb += [busy.eq(1), bp.start.eq(1), wg.start.eq(1)]
                ctr += phase_ctr.eq(phase_ctr + 1)
                m.next = "BWD_WAIT"
            with m.State("BWD_WAIT"):
                m.d.comb += busy.eq(1)
                ctr += phase_ctr.eq(phase_ctr + 1)
                bp_fin = bp_seen | bp.done
                wg_fin = wg_seen | wg.done
                m.d.sync += [bp_seen.eq(bp_fin), wg_seen.eq(wg_fin)]
                with m.If(bp.done):
                    ctr += [counters["bp_cycles"].eq(bp.cycles), counters["bp_work"].eq(bp.work)]
                with m.If(wg.done):
                    ctr += [counters["wg_cycles"].eq(wg.cycles), counters["wg_work"].eq(wg.work),
                            counters["wg_stalls"].eq(wg.stalls)]
                with m.If(bp_fin & wg_fin):
                    ctr += [counters["bwd_phase"].eq(phase_ctr + 1),
                            counters["samples"].eq(counters["samples"] + 1)]
                    if ip:
                        # in place: BP has read every W it needs; update W now
                        m.d.sync += phase.eq(UPD)
                        ctr += phase_ctr.eq(0)
                    else:
                        m.d.sync += [phase.eq(IDLE), *respond(Status.OK)]
                    m.next = "BWD_LATCH"
            with m.State("BWD_LATCH"):
                # WG's counters are final one cycle after its done (done is combinational)
                m.d.comb += busy.eq(1)
                ctr += [counters["wg_cycles"].eq(wg.cycles), counters["wg_work"].eq(wg.work),
                             counters["wg_stalls"].eq(wg.stalls),
                             counters["bp_cycles"].eq(bp.cycles), counters["bp_work"].eq(bp.work)]
                m.next = "UPD_START" if ip else "RSP"
            # ----------------------------------------------------------- update
            with m.State("UPD_START"):
                m.d.comb += [busy.eq(1), wg.start_update.eq(1)]
                ctr += phase_ctr.eq(phase_ctr + 1)
                m.next = "UPD_WAIT"
            with m.State("UPD_WAIT"):
                m.d.comb += busy.eq(1)
                ctr += phase_ctr.eq(phase_ctr + 1)
                with m.If(wg.done):
                    m.d.sync += [phase.eq(IDLE), *respond(Status.OK)]
                    ctr += [counters["upd_phase"].eq(phase_ctr + 1), counters["samples"].eq(0)]
                    m.next = "UPD_LATCH"
            with m.State("UPD_LATCH"):
                m.d.comb += busy.eq(1)
                ctr += [counters["upd_cycles"].eq(wg.cycles), counters["upd_work"].eq(wg.work)]
                m.next = "RSP"
        return m
