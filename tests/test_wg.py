"""WG engine (rtl/wg.py) against the bit-exact model, transaction by transaction, in Verilator.

The test wrapper :class:`WGBench` holds the shared memories a core would hold (``W`` in P
skewed banks, the event memories ``ev_start``/``ev_addr``, the double-buffered dv lists)
with host write ports, and packs the engine's ``G`` and ``W`` write ports into three
vectors each for the scoreboard. The cocotb side plays the host and BP:

* per seed: random weights (many at the ends of the range), random densities of input
  spikes, surrogate masks, spikes and errors from 0 % to 100 %; the dv come from the
  model (``FixedPointSNN.backward_layer`` on that synthetic trace), so they are exactly
  what BP would list; B in {1, 3} samples per mini-batch, two mini-batches per seed;
* a BP model fills the dv-list buffers lane by lane, presents ``lists`` with random gaps
  (0 .. 20 cycles) and never overwrites a buffer before WG released it;
* every ``G`` write is compared, the cycle it happens, against the running partial sum
  the test computes from the event lists and the trace (``G[i, j]`` after the k-th
  addition); at the end of the mini-batch the running sums must equal the model's
  ``grad``; every ``W`` write-back and every ``G = 0`` of the update against
  ``FixedPointSNN.update`` (nearest or stochastic); the xorshift32 states against the
  model's ``rng_state``; ``cycles`` and ``work`` against ``model/perf.py`` exactly, and
  ``cycles + stalls`` against the busy cycles seen;
* "dup" seeds list some input events twice in a row (a column repeated within a
  timestep), so that back-to-back read-modify-writes hit one address and the forwarding
  path is exercised; their expected gradient is the sum over the lists as given.

Corner cases counted over a run (and required where a parameter set is built for them):
saturation of ``W`` at both ends, exact rounding halves (nearest), empty timesteps.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import random

import cocotb
import pytest
import torch
from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from cocotb.triggers import ReadOnly, RisingEdge

from spikeforge.gen.config import Config
from spikeforge.model import fixedpoint as fx
from spikeforge.model import perf
from spikeforge.model.snn import FixedPointSNN, LayerTrace
from spikeforge.rtl.geometry import CoreGeometry
from spikeforge.rtl.interfaces import dv_entry_layout, dv_list_depth, lists_layout, ubits, weight_index
from spikeforge.rtl.wg import WGEngine, event_shapes
from spikeforge.sim.cocotb_utils import load_params, pack, reset, to_signed
from spikeforge.sim.runner import run_cocotb


# ---------------------------------------------------------------------------- test wrapper
class WGBench(wiring.Component):
    """WGEngine plus the shared memories of a core, with host ports and packed monitors."""

    def __init__(self, cfg, geom: CoreGeometry):
        self.cfg, self.geom = cfg, geom
        P, NB = geom.lanes, geom.blocks
        a = cfg.arithmetic
        aw = ubits(geom.weight_depth)
        ev = event_shapes(geom)
        ew = dv_entry_layout(cfg, geom).size
        super().__init__({
            "start": In(1), "start_update": In(1),
            "busy": Out(1), "done": Out(1),
            "cycles": Out(32), "work": Out(32), "stalls": Out(32),
            "lists": In(stream.Signature(lists_layout(geom))),
            "release": Out(1),
            "w_we": In(P), "w_waddr": In(aw), "w_wdata": In(P * a.weight_bits),
            "ev_start_we": In(1), "ev_start_waddr": In(ev["start_addr"]),
            "ev_start_wdata": In(ev["start_data"]),
            "ev_addr_we": In(1), "ev_addr_waddr": In(ev["ev_addr_addr"]),
            "ev_addr_wdata": In(ev["ev_addr_data"]),
            "dvl_we": In(P), "dvl_waddr": In(ubits(dv_list_depth(geom))), "dvl_wdata": In(P * ew),
            "rng_we": In(P), "rng_waddr": In(ubits(NB)), "rng_wdata": In(P * 32),
            "rng_raddr": In(ubits(NB)), "rng_rdata": Out(P * 32),
            "mon_g_we": Out(P), "mon_g_waddr": Out(P * aw), "mon_g_wdata": Out(P * a.grad_bits),
            "mon_w_we": Out(P), "mon_w_waddr": Out(P * aw), "mon_w_wdata": Out(P * a.weight_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.cfg, self.geom
        P, a = g.lanes, cfg.arithmetic
        wb, gb = a.weight_bits, a.grad_bits
        aw = ubits(g.weight_depth)
        ew = dv_entry_layout(cfg, g).size
        m.submodules.eng = eng = WGEngine(cfg, g)
        m.d.comb += [
            eng.start.eq(self.start), eng.start_update.eq(self.start_update),
            self.busy.eq(eng.busy), self.done.eq(eng.done), self.cycles.eq(eng.cycles),
            self.work.eq(eng.work), self.stalls.eq(eng.stalls), self.release.eq(eng.release),
            eng.lists.valid.eq(self.lists.valid), eng.lists.payload.eq(self.lists.payload),
            self.lists.ready.eq(eng.lists.ready),
            eng.rng_waddr.eq(self.rng_waddr), eng.rng_raddr.eq(self.rng_raddr),
        ]
        # event memories
        ev = event_shapes(g)
        m.submodules.ev_start = es = Memory(shape=ev["start_data"], depth=g.timesteps + 1, init=[])
        m.submodules.ev_addr = ea = Memory(shape=ev["ev_addr_data"], depth=g.max_events, init=[])
        for mem, pre in ((es, "ev_start"), (ea, "ev_addr")):
            rp, wp = mem.read_port(), mem.write_port()
            m.d.comb += [
                rp.addr.eq(getattr(eng, f"{pre}_raddr")), getattr(eng, f"{pre}_rdata").eq(rp.data),
                wp.addr.eq(getattr(self, f"{pre}_waddr")), wp.data.eq(getattr(self, f"{pre}_wdata")),
                wp.en.eq(getattr(self, f"{pre}_we")),
            ]
        for k in range(P):
            # W bank k: the engine writes during the update, the host while idle
            wmem = Memory(shape=signed(wb), depth=g.weight_depth, init=[])
            m.submodules[f"w{k}"] = wmem
            rp, wp = wmem.read_port(), wmem.write_port()
            m.d.comb += [
                rp.addr.eq(eng.w_raddr[k]), eng.w_rdata[k].eq(rp.data),
                wp.addr.eq(Mux(eng.w_we[k], eng.w_waddr[k], self.w_waddr)),
                wp.data.eq(Mux(eng.w_we[k], eng.w_wdata[k], self.w_wdata[k * wb:(k + 1) * wb])),
                wp.en.eq(eng.w_we[k] | self.w_we[k]),
            ]
            # dv-list bank k (written by BP, here the cocotb BP model)
            dmem = Memory(shape=unsigned(ew), depth=dv_list_depth(g), init=[])
            m.submodules[f"dvl{k}"] = dmem
            rp, wp = dmem.read_port(), dmem.write_port()
            m.d.comb += [
                rp.addr.eq(eng.dvl_raddr[k]), eng.dvl_rdata[k].as_value().eq(rp.data),
                wp.addr.eq(self.dvl_waddr), wp.data.eq(self.dvl_wdata[k * ew:(k + 1) * ew]),
                wp.en.eq(self.dvl_we[k]),
            ]
            m.d.comb += [
                eng.rng_we[k].eq(self.rng_we[k]), eng.rng_wdata[k].eq(self.rng_wdata[k * 32:(k + 1) * 32]),
                self.rng_rdata[k * 32:(k + 1) * 32].eq(eng.rng_rdata[k]),
                self.mon_g_we[k].eq(eng.g_we[k]),
                self.mon_g_waddr[k * aw:(k + 1) * aw].eq(eng.g_waddr[k]),
                self.mon_g_wdata[k * gb:(k + 1) * gb].eq(eng.g_wdata[k]),
                self.mon_w_we[k].eq(eng.w_we[k]),
                self.mon_w_waddr[k * aw:(k + 1) * aw].eq(eng.w_waddr[k]),
                self.mon_w_wdata[k * wb:(k + 1) * wb].eq(eng.w_wdata[k]),
            ]
        return m


# ------------------------------------------------------------------------------ model side
def make_batch(model: FixedPointSNN, geom: CoreGeometry, B: int, rng: random.Random, dup: bool):
    """A synthetic layer trace of ``B`` samples, its dv from the model, and the event lists.

    Returns ``(trace, events)`` with ``events[s][t]`` the column list of sample ``s``,
    timestep ``t`` (increasing ``j``; in ``dup`` mode some columns listed twice in a row).
    """
    cfg = model.cfg
    a, n = cfg.arithmetic, cfg.neuron
    T, n_in, N = geom.timesteps, geom.n_in, geom.n_neurons
    gen = torch.Generator().manual_seed(rng.getrandbits(32))
    px = rng.choice([0.0, 0.05, 0.25, 0.6, 1.0, rng.random()] if not dup else [0.2, 0.4, 0.6])
    pm = rng.choice([0.0, 0.1, 0.4, 1.0, rng.random()])
    ps = rng.choice([0.0, 0.3, 0.9, 1.0, rng.random()])
    x = (torch.rand(B, T, n_in, generator=gen) < px).to(torch.int64)
    s = (torch.rand(B, T, N, generator=gen) < ps).to(torch.int64)
    mask = (torch.rand(B, T, N, generator=gen) < pm).to(torch.int64)
    emin, emax = -(1 << (a.error_bits - 1)), (1 << (a.error_bits - 1)) - 1
    if dup:
        # |dv| <= T * max|ds| < 2**(dv_bits-3): the doubled sums still fit grad_bits
        lim = max(1, (1 << (a.dv_bits - 3)) // T - 1)
        lo, hi = -lim, lim
    else:
        lo, hi = rng.choice([(emin, emax), (-(1 << (a.error_bits // 2)), 1 << (a.error_bits // 2)),
                             (-3, 3)])
    ds = torch.randint(lo, hi + 1, (B, T, N), generator=gen, dtype=torch.int64)
    zeros = torch.zeros(B, T, N, dtype=torch.int64)
    tr = LayerTrace(x=x, current=zeros, v=zeros, s=s, mask=mask)
    model.backward_layer(0, tr, ds)
    events = []
    for b in range(B):
        # duplicates only within the event memory's capacity T * n_in
        budget = geom.max_events - int(x[b].sum())
        per_t = []
        for t in range(T):
            cols = []
            for j in torch.nonzero(x[b, t]).flatten().tolist():
                cols.append(j)
                if dup and budget > 0 and rng.random() < 0.5:
                    cols.append(j)
                    budget -= 1
            per_t.append(cols)
        events.append(per_t)
    return tr, events


def lane_lists(geom: CoreGeometry, dv_t: list[int]):
    """The P per-lane lists ``[(b, dv), ...]`` of one timestep's dv (lane q: i = b*P + q)."""
    P = geom.lanes
    lists = [[] for _ in range(P)]
    for i, v in enumerate(dv_t):
        if v != 0:
            lists[i % P].append((i // P, v))
    return lists


def random_weights(cfg, geom: CoreGeometry, rng: random.Random) -> torch.Tensor:
    """Uniform weights, with about a third of them within 3 of either end of the range."""
    wb = cfg.arithmetic.weight_bits
    lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
    w = []
    for _ in range(geom.n_neurons * geom.n_in):
        r = rng.random()
        if r < 0.17:
            w.append(hi - rng.randint(0, 3))
        elif r < 0.34:
            w.append(lo + rng.randint(0, 3))
        else:
            w.append(rng.randint(lo, hi))
    return torch.tensor(w, dtype=torch.int64).reshape(geom.n_neurons, geom.n_in)


# ------------------------------------------------------------------------------- scoreboard
class Scoreboard:
    """Checks every G and W write the cycle it happens; counts handshakes and busy cycles."""

    def __init__(self, cfg, geom: CoreGeometry):
        self.cfg, self.geom = cfg, geom
        a = cfg.arithmetic
        self.aw = ubits(geom.weight_depth)
        self.wb, self.gb = a.weight_bits, a.grad_bits
        self.cycle = 0
        self.busy_cycles = 0
        self.accepted = 0
        self.releases = 0
        self.dones = 0
        self.in_use = collections.deque()     # dv-list buffers BP filled and WG has not released
        self.mode = None                      # None (idle), "acc" or "upd"
        self.g_exp: dict[tuple[int, int], collections.deque] = {}
        self.w_exp: dict[tuple[int, int], int] = {}
        self.w_seen: set = set()
        self.g_zero_seen: set = set()
        self.g_checked = 0
        self.w_checked = 0
        self.ctx = ""

    def fail(self, msg: str):
        raise AssertionError(f"{msg} [{self.ctx}, cycle={self.cycle}]")

    def _decode(self, k: int, addr: int) -> tuple[int, int]:
        """Bank k, address b*n_in + j -> (neuron i, column j) of the skewed layout."""
        return weight_index(k, addr, self.geom.lanes, self.geom.n_in)

    def g_writes(self, we: int, addrs: int, datas: int):
        g = self.geom
        for k in range(g.lanes):
            if not (we >> k) & 1:
                continue
            addr = (addrs >> (k * self.aw)) & ((1 << self.aw) - 1)
            val = to_signed(datas >> (k * self.gb), self.gb)
            if addr >= g.weight_depth:
                self.fail(f"G write to bank {k} address {addr} beyond the depth {g.weight_depth}")
            i, j = self._decode(k, addr)
            if i >= g.n_neurons:
                self.fail(f"G write to padding row i={i} (bank {k}, address {addr})")
            if self.mode == "acc":
                q = self.g_exp.get((i, j))
                if not q:
                    self.fail(f"unexpected G write: G[{i}, {j}] = {val} (no addition pending for it)")
                exp, s, t = q.popleft()
                if val != exp:
                    self.fail(f"G[{i}, {j}] running sum mismatch at sample {s}, t={t}: "
                              f"RTL wrote {val}, model partial sum {exp}")
                self.g_checked += 1
            elif self.mode == "upd":
                if val != 0:
                    self.fail(f"update wrote G[{i}, {j}] = {val}, expected 0")
                if (i, j) in self.g_zero_seen:
                    self.fail(f"update cleared G[{i}, {j}] twice")
                self.g_zero_seen.add((i, j))
            else:
                self.fail(f"G write while no operation runs: G[{i}, {j}] = {val}")

    def w_writes(self, we: int, addrs: int, datas: int):
        g = self.geom
        if self.mode != "upd":
            self.fail(f"W write-back outside the update (mode {self.mode}), banks {we:b}")
        for k in range(g.lanes):
            if not (we >> k) & 1:
                continue
            addr = (addrs >> (k * self.aw)) & ((1 << self.aw) - 1)
            val = to_signed(datas >> (k * self.wb), self.wb)
            i, j = self._decode(k, addr)
            if (i, j) not in self.w_exp:
                self.fail(f"W write-back to W[{i}, {j}] (bank {k}, address {addr}): not a weight")
            if (i, j) in self.w_seen:
                self.fail(f"W[{i}, {j}] written back twice")
            self.w_seen.add((i, j))
            if val != self.w_exp[(i, j)]:
                self.fail(f"W[{i}, {j}] write-back mismatch: RTL {val}, model {self.w_exp[(i, j)]}")
            self.w_checked += 1

    def on_release(self):
        self.releases += 1
        if self.releases > self.accepted:
            self.fail(f"release #{self.releases} but only {self.accepted} lists were accepted")
        if not self.in_use:
            self.fail("release with no dv-list buffer in use")
        self.in_use.popleft()


async def monitor(dut, sb: Scoreboard):
    """Samples every cycle (settled values, ReadOnly) and feeds the scoreboard."""
    clk = dut.clk
    g_we, g_a, g_d = dut.mon_g_we, dut.mon_g_waddr, dut.mon_g_wdata
    w_we, w_a, w_d = dut.mon_w_we, dut.mon_w_waddr, dut.mon_w_wdata
    busy, rel, done = dut.busy, dut.release, dut.done
    valid, ready = dut.lists__valid, dut.lists__ready
    while True:
        await RisingEdge(clk)
        await ReadOnly()
        sb.cycle += 1
        if not int(busy.value):
            continue
        sb.busy_cycles += 1
        v = int(g_we.value)
        if v:
            sb.g_writes(v, int(g_a.value), int(g_d.value))
        v = int(w_we.value)
        if v:
            sb.w_writes(v, int(w_a.value), int(w_d.value))
        if int(valid.value) and int(ready.value):
            sb.accepted += 1
        if int(rel.value):
            sb.on_release()
        if int(done.value):
            sb.dones += 1


async def wait_cycles(dut, n: int):
    for _ in range(n):
        await RisingEdge(dut.clk)


def gap(rng: random.Random) -> int:
    r = rng.random()
    return 0 if r < 0.4 else rng.randint(1, 3) if r < 0.8 else rng.randint(4, 20)


async def bp_side(dut, sb: Scoreboard, geom: CoreGeometry, ew_fields, lists_t, rng: random.Random):
    """BP of one sample, t = T-1..0: a writer fills buffer ``t & 1`` as soon as WG released
    it (so it runs up to two timesteps ahead of WG, as BP's dv unit does), a presenter offers
    ``lists`` of each written ``t`` in order."""
    P, NB, T = geom.lanes, geom.blocks, geom.timesteps
    tb, lw = ubits(T), ubits(NB + 1)
    bw, dvw = ew_fields
    written = []

    async def writer():
        for t in reversed(range(T)):
            lists = lists_t[t]
            buf = t & 1
            while buf in sb.in_use:
                await RisingEdge(dut.clk)
            sb.in_use.append(buf)
            await wait_cycles(dut, gap(rng))
            lens = [len(l) for l in lists]
            for c in range(max(lens)):
                we, word = 0, 0
                for q in range(P):
                    if c < lens[q]:
                        b, dv = lists[q][c]
                        we |= 1 << q
                        word |= pack([(b, bw), (dv, dvw)]) << (q * (bw + dvw))
                dut.dvl_waddr.value = buf * NB + c
                dut.dvl_wdata.value = word
                dut.dvl_we.value = we
                await RisingEdge(dut.clk)
            dut.dvl_we.value = 0
            written.append((t, lens))

    wtask = cocotb.start_soon(writer())
    for k in range(T):
        while len(written) <= k:
            await RisingEdge(dut.clk)
        t, lens = written[k]
        await wait_cycles(dut, gap(rng))
        dut.lists__payload.value = pack([(t, tb)] + [(n, lw) for n in lens])
        dut.lists__valid.value = 1
        acc0 = sb.accepted
        while sb.accepted == acc0:
            await RisingEdge(dut.clk)
        dut.lists__valid.value = 0
    await wtask


async def host_load_weights(dut, geom: CoreGeometry, wb: int, w: torch.Tensor):
    P, n_in, N = geom.lanes, geom.n_in, geom.n_neurons
    wl = w.tolist()
    for b in range(geom.blocks):
        for j in range(n_in):
            word = 0
            for k in range(P):
                i, _ = weight_index(k, b * n_in + j, P, n_in)
                word |= ((wl[i][j] if i < N else 0) & ((1 << wb) - 1)) << (k * wb)
            dut.w_waddr.value = b * n_in + j
            dut.w_wdata.value = word
            dut.w_we.value = (1 << P) - 1
            await RisingEdge(dut.clk)
    dut.w_we.value = 0


async def host_load_rng(dut, geom: CoreGeometry, states: list[int]):
    P, N = geom.lanes, geom.n_neurons
    for b in range(geom.blocks):
        word = 0
        for q in range(P):
            i = b * P + q
            word |= (states[i] if i < N else 0x5EED + q) << (32 * q)
        dut.rng_waddr.value = b
        dut.rng_wdata.value = word
        dut.rng_we.value = (1 << P) - 1
        await RisingEdge(dut.clk)
    dut.rng_we.value = 0


async def host_read_rng(dut, geom: CoreGeometry) -> list[int]:
    P, N = geom.lanes, geom.n_neurons
    out = []
    for b in range(geom.blocks):
        dut.rng_raddr.value = b
        await RisingEdge(dut.clk)
        await ReadOnly()
        word = int(dut.rng_rdata.value)
        out += [(word >> (32 * q)) & 0xFFFF_FFFF for q in range(P)]
        await RisingEdge(dut.clk)
    return out[:N]


async def host_load_events(dut, geom: CoreGeometry, per_t: list[list[int]]):
    offs = 0
    for t in range(geom.timesteps + 1):
        dut.ev_start_waddr.value = t
        dut.ev_start_wdata.value = offs
        dut.ev_start_we.value = 1
        if t < geom.timesteps:
            for j in per_t[t]:
                dut.ev_addr_waddr.value = offs
                dut.ev_addr_wdata.value = j
                dut.ev_addr_we.value = 1
                offs += 1
                await RisingEdge(dut.clk)
                dut.ev_start_we.value = 0
            if not per_t[t]:
                await RisingEdge(dut.clk)
        else:
            await RisingEdge(dut.clk)
        dut.ev_start_we.value = 0
        dut.ev_addr_we.value = 0


async def pulse(dut, sig):
    sig.value = 1
    await RisingEdge(dut.clk)
    sig.value = 0


async def run_op(dut, sb: Scoreboard, strobe, side=None):
    """Pulse ``strobe``, (run ``side`` concurrently), wait for ``done``; returns busy cycles."""
    busy0, done0 = sb.busy_cycles, sb.dones
    task = cocotb.start_soon(side) if side is not None else None
    await pulse(dut, strobe)
    limit = sb.cycle + 200_000
    while sb.dones == done0:
        await RisingEdge(dut.clk)
        if sb.cycle > limit:
            sb.fail("engine never pulsed done")
    if task is not None:
        await task
    await RisingEdge(dut.clk)
    if int(dut.busy.value):
        sb.fail("busy still high after done")
    return sb.busy_cycles - busy0


# ------------------------------------------------------------------------------ cocotb test
@cocotb.test()
async def wg_random(dut):
    p = load_params()
    cfg, geom = p.config, p.geometry
    a = cfg.arithmetic
    P, T, n_in, N, NB = geom.lanes, geom.timesteps, geom.n_in, geom.n_neurons, geom.blocks
    entry = dv_entry_layout(cfg, geom)
    ew_fields = (entry.size - a.dv_bits, a.dv_bits)
    stochastic = a.rounding == "stochastic"
    sb = Scoreboard(cfg, geom)
    for name in ("start", "start_update", "lists__valid", "w_we", "ev_start_we", "ev_addr_we",
                 "dvl_we", "rng_we"):
        getattr(dut, name).value = 0
    await reset(dut)
    cocotb.start_soon(monitor(dut, sb))
    stats = collections.Counter()
    wmax, wmin = (1 << (a.weight_bits - 1)) - 1, -(1 << (a.weight_bits - 1))

    for seed in p.seeds:
        rng = random.Random(seed)
        dup = seed % 4 == 3
        w0 = random_weights(cfg, geom, rng)
        model = FixedPointSNN(cfg, weights=[w0])
        sb.ctx = f"seed={seed}"
        await host_load_weights(dut, geom, a.weight_bits, w0)
        if stochastic:
            await host_load_rng(dut, geom, model.rng_state[0].tolist())
        for batch in range(2):
            B = rng.choice([1, 3])
            tr, events = make_batch(model, geom, B, rng, dup)
            dv = tr.dv.tolist()
            acc: dict[tuple[int, int], int] = collections.defaultdict(int)
            for s in range(B):
                sb.ctx = f"seed={seed} batch={batch} sample={s}/{B} dup={dup}"
                lists_t = [lane_lists(geom, dv[s][t]) for t in range(T)]
                # expected running sums of G, in the engine's order (t = T-1..0, events, lists)
                sb.g_exp = {}
                for t in reversed(range(T)):
                    for j in events[s][t]:
                        for q in range(P):
                            for b, v in lists_t[t][q]:
                                i = b * P + q
                                acc[(i, j)] += v
                                sb.g_exp.setdefault((i, j), collections.deque()).append((acc[(i, j)], s, t))
                n_ev = [len(events[s][t]) for t in range(T)]
                lens = [[len(l) for l in lists_t[t]] for t in range(T)]
                stats["empty_t"] += sum(1 for t in range(T) if n_ev[t] == 0 or max(lens[t]) == 0)
                await host_load_events(dut, geom, events[s])
                sb.mode = "acc"
                busy = await run_op(dut, sb, dut.start,
                                    bp_side(dut, sb, geom, ew_fields, lists_t, rng))
                sb.mode = None
                left = sum(len(q) for q in sb.g_exp.values())
                assert left == 0, f"{sb.ctx}: {left} expected G additions never happened"
                cyc, work, stalls = int(dut.cycles.value), int(dut.work.value), int(dut.stalls.value)
                exp_c, exp_w = perf.wg_cycles(n_ev, lens), perf.wg_work(n_ev, lens)
                assert cyc == exp_c, f"{sb.ctx}: accumulate cycles {cyc} != perf.wg_cycles {exp_c}"
                assert work == exp_w, f"{sb.ctx}: accumulate work {work} != perf.wg_work {exp_w}"
                assert cyc + stalls == busy, f"{sb.ctx}: cycles {cyc} + stalls {stalls} != busy {busy}"
                assert sb.releases == sb.accepted and not sb.in_use, \
                    f"{sb.ctx}: {sb.accepted} lists accepted but {sb.releases} released"
            # the gradient of the mini-batch
            sb.ctx = f"seed={seed} batch={batch} B={B} dup={dup} update"
            grad = torch.zeros(N, n_in, dtype=torch.int64)
            for (i, j), v in acc.items():
                grad[i, j] = v
            if dup:
                lim = 1 << (a.grad_bits - 1)
                assert int(grad.abs().max()) < lim, f"{sb.ctx}: test bug, dup gradient overflows"
                tr.grad = grad
            else:
                assert torch.equal(grad, tr.grad), \
                    f"{sb.ctx}: running G sums differ from the model's grad at " \
                    f"{torch.nonzero(grad != tr.grad)[:4].tolist()}"
            # the update: expected by the model (and corner statistics on the side)
            w_old = model.weights[0].clone()
            saved = model.rng_state[0].clone()
            deltas = model.update_deltas(0, tr.grad)
            model.rng_state[0] = saved
            model.update([tr])
            w_new = model.weights[0]
            raw = w_old - deltas
            stats["sat_hi"] += int((raw > wmax).sum())
            stats["sat_lo"] += int((raw < wmin).sum())
            if a.lr_shift > 0 and not stochastic:
                half = 1 << (a.lr_shift - 1)
                stats["half"] += int(((tr.grad & ((1 << a.lr_shift) - 1)) == half).sum())
            sb.w_exp = {(i, j): v for i, row in enumerate(w_new.tolist()) for j, v in enumerate(row)}
            sb.w_seen, sb.g_zero_seen = set(), set()
            sb.mode = "upd"
            busy = await run_op(dut, sb, dut.start_update)
            sb.mode = None
            assert len(sb.w_seen) == N * n_in, \
                f"{sb.ctx}: {N * n_in - len(sb.w_seen)} weights never written back"
            assert len(sb.g_zero_seen) == N * n_in, \
                f"{sb.ctx}: {N * n_in - len(sb.g_zero_seen)} gradients never cleared"
            cyc, work = int(dut.cycles.value), int(dut.work.value)
            exp_c = perf.update_cycles(n_in, N, P)
            assert cyc == exp_c, f"{sb.ctx}: update cycles {cyc} != perf.update_cycles {exp_c}"
            assert cyc == busy, f"{sb.ctx}: update cycles {cyc} != busy cycles {busy}"
            assert work == N * n_in, f"{sb.ctx}: update work {work} != {N * n_in}"
            if stochastic:
                got = await host_read_rng(dut, geom)
                exp = model.rng_state[0].tolist()
                for i in range(N):
                    assert got[i] == exp[i], \
                        f"{sb.ctx}: rng state of neuron {i}: RTL {got[i]:#x}, model {exp[i]:#x}"
    dut._log.info(f"WG P={P} T={T} n_in={n_in} N={N} {a.rounding}: seeds {p.seeds}: "
                  f"{sb.g_checked} G writes and {sb.w_checked} W write-backs match; corners {dict(stats)}")
    for corner in p.require:
        assert stats[corner] > 0, f"seeds {p.seeds}: corner case {corner!r} never occurred"


# ------------------------------------------------------------------------------- pytest side
def wg_config(P: int, T: int, n_in: int, N: int, rounding: str, narrow: bool, lr_shift: int) -> Config:
    arith = {"rounding": rounding, "lr_shift": lr_shift}
    if narrow:
        arith.update(weight_bits=8, weight_frac=4, dv_bits=10, error_bits=12)
        arith["grad_bits"] = 10 + (T * 3).bit_length()     # the narrowest the config allows
    return Config().replace(network={"layers": [n_in, N], "timesteps": T}, hardware={"lanes": P},
                            arithmetic=arith, train={"batch_size": 3})


_BENCH_KEY = hashlib.sha256(inspect.getsource(WGBench).encode()).hexdigest()[:16]


def _run(P, T, n_in, N, rounding, narrow, lr_shift, seeds, require=()):
    cfg = wg_config(P, T, n_in, N, rounding, narrow, lr_shift)
    geom = CoreGeometry(n_in=n_in, n_neurons=N, timesteps=T, lanes=P)
    run_cocotb(name="wg_bench", component=lambda: WGBench(cfg, geom), test_module=__name__,
               cfg=cfg, geometry=geom, build_key={"bench": _BENCH_KEY},
               params={"seeds": list(seeds), "require": list(require)})


# (P, T, n_in, N, rounding, narrow widths, lr_shift, corner cases the seeds must hit)
CASES = [
    pytest.param(1, 4, 7, 3, "nearest", True, 2, ("sat_hi", "sat_lo", "half"), id="P1-T4-nearest-narrow"),
    pytest.param(2, 8, 9, 5, "stochastic", True, 1, ("sat_hi", "sat_lo"), id="P2-T8-stochastic-narrow"),
    pytest.param(4, 1, 6, 10, "nearest", True, 0, ("sat_hi", "sat_lo"), id="P4-T1-nearest-lr0"),
    pytest.param(8, 4, 5, 13, "stochastic", False, 6, (), id="P8-T4-stochastic-default"),
]


@pytest.mark.parametrize("P,T,n_in,N,rounding,narrow,lr_shift,require", CASES)
def test_wg(P, T, n_in, N, rounding, narrow, lr_shift, require):
    _run(P, T, n_in, N, rounding, narrow, lr_shift, seeds=range(1, 17), require=require)


@pytest.mark.slow
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("T", [1, 4, 8])
@pytest.mark.parametrize("P", [1, 2, 4, 8])
def test_wg_sweep(P, T, rounding):
    """Every lane count, timestep count and rounding; narrow widths, N and n_in off the lanes."""
    _run(P, T, n_in=2 * P + 3, N=3 * P - 1 if P > 1 else 4, rounding=rounding, narrow=True,
         lr_shift=2, seeds=range(100, 124), require=("sat_hi", "sat_lo"))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("P,T,n_in,N", [(1, 1, 7, 3), (4, 8, 64, 10), (8, 4, 20, 9)])
def test_wg_lint(P, T, n_in, N, rounding):
    """The engine alone passes ``verilator --lint-only -Wall`` with only the project waivers."""
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.sim.runner import build_root, lint_verilog

    cfg = Config().replace(network={"layers": [n_in, N], "timesteps": T}, hardware={"lanes": P},
                           arithmetic={"rounding": rounding})
    geom = CoreGeometry(n_in=n_in, n_neurons=N, timesteps=T, lanes=P)
    vfile = build_root() / "lint" / f"wg-{n_in}x{N}-T{T}-P{P}-{rounding}.v"
    lint_verilog(write_verilog(WGEngine(cfg, geom), vfile, name="wg"), "wg")


def test_wg_rejects_bad_parameters():
    cfg = Config().replace(hardware={"lanes": 4})
    with pytest.raises(ValueError, match="lanes"):
        WGEngine(cfg, CoreGeometry(n_in=8, n_neurons=4, timesteps=4, lanes=2))
    with pytest.raises(TypeError, match="CoreGeometry"):
        WGEngine(cfg, (8, 4, 4, 4))


def test_perf_wg_formulas():
    """The formulas on hand-counted cases (the RTL tests check them against the counters)."""
    assert perf.wg_lane_lengths([0, 5, 0, -1, 2], 2) == [1, 2]
    # T=2: t0 has 3 events and lists (1, 2) -> 3*2; t1 has no events
    assert perf.wg_cycles([3, 0], [[1, 2], [4, 0]]) == 1 + (1 + 6) + 1 + 3
    assert perf.wg_work([3, 0], [[1, 2], [4, 0]]) == 9
    assert perf.update_cycles(n_in=5, n_neurons=13, lanes=8) == 2 * 5 + 5
