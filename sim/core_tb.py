"""Verification library of the Core (rtl/core.py): driver, scoreboards, the training run.

Used by the cocotb tests of tests/test_core.py, by ``spikeforge sim core`` (sim/cli.py) and by
bench/bench_core.py (both through :func:`run_core_sim`):

* :class:`CoreTB`: drives the ``cmd``/``ev_in``/``ds_in`` streams and reads ``rsp``;
* :class:`SampleScoreboard`: every forward, backward and gradient transaction of one
  training sample checked against ``FixedPointSNN`` the cycle it appears;
* :func:`w_monitor`: every weight write-back of an update; :func:`check_weights`: read-back;
* :func:`train_core`: the body of the ``core_train`` cocotb test (parameters from
  :func:`spikeforge.sim.cocotb_utils.load_params`);
* :func:`run_core_sim`: build the Core of a config and run ``core_train`` on it.

The cocotb test itself stays in tests/test_core.py (:data:`TEST_MODULE`): cocotb runs the
tests of a module, and that module is the core's regression test.
"""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import FallingEdge, RisingEdge

from ..model import perf
from ..model.snn import FixedPointSNN
from ..rtl.core import COUNTERS, Core
from ..rtl.geometry import CoreGeometry
from ..rtl.interfaces import OPS, STATUS, error_width, ubits, weight_index
from .cocotb_utils import load_params, pack, ports, reset, to_signed, unpack
from .runner import run_cocotb

__all__ = ["CoreTB", "SampleScoreboard", "check_weights", "w_monitor", "decode_ij", "train_core",
           "run_core_sim", "TEST_MODULE"]

#: The module holding the ``core_train`` cocotb test (a thin wrapper of :func:`train_core`).
TEST_MODULE = "spikeforge.tests.test_core"


# ------------------------------------------------------------------------------ driver
class CoreTB:
    def __init__(self, dut, cfg, geom):
        self.dut, self.cfg, self.geom = dut, cfg, geom
        g, a = geom, cfg.arithmetic
        self.P, self.NB, self.T = g.lanes, g.blocks, g.timesteps
        self.tw, self.bw, self.jw = ubits(g.timesteps), ubits(g.blocks), ubits(g.col_blocks)
        self.ew = error_width(cfg, g)
        self.cycle = 0

    async def _send(self, valid, payload_sig, ready_sig, value):
        """Present one stream item right after a rising edge; return once it was taken."""
        payload_sig.value = value
        valid.value = 1
        while True:
            await FallingEdge(self.dut.clk)
            r = int(ready_sig.value)
            await RisingEdge(self.dut.clk)
            if r:
                break
        valid.value = 0

    async def command(self, op, i=0, j=0, data=0, monitor=None):
        """Send a command, run ``monitor(cycle)`` every cycle until the response; -> (status, data)."""
        d = self.dut
        await self._send(d.cmd__valid, d.cmd__payload, d.cmd__ready,
                         pack([(OPS.get(op, op), 4), (i, 16), (j, 16), (data & 0xFFFF_FFFF, 32)]))
        n = 0
        while True:
            await FallingEdge(d.clk)
            n += 1
            if monitor is not None:
                monitor(n)
            if int(d.rsp__valid.value):
                status, value = unpack(int(d.rsp__payload.value), [2, 32])
                await RisingEdge(d.clk)
                return status, value
            assert n < 1_000_000, f"no response to {op}"

    async def ok(self, op, i=0, j=0, data=0, monitor=None):
        status, value = await self.command(op, i, j, data, monitor)
        assert status == STATUS["ok"], f"{op}(i={i}, j={j}, data={data}) answered status {status}"
        return value

    async def load_events(self, x):
        """Events of one sample (T, n_in) on ev_in, timestep order, then the end marker."""
        d = self.dut
        per_t = []
        for t in range(self.T):
            js = torch.nonzero(x[t]).flatten().tolist()
            per_t.append(len(js))
            for j in js:
                await self._send(d.ev_in__valid, d.ev_in__payload, d.ev_in__ready,
                                 pack([(t, self.tw), (j, ubits(self.geom.n_in)), (0, 1)]))
        await self._send(d.ev_in__valid, d.ev_in__payload, d.ev_in__ready,
                         pack([(0, self.tw), (0, ubits(self.geom.n_in)), (1, 1)]))
        return per_t

    async def offer_events(self, x, buffered):
        """Events of one sample for the next forward pass -> (events per t, feeder task).

        The accumulate dataflow takes the whole sample while idle (loaded here); in place the
        core takes one timestep at a time during the forward pass, so a background task keeps
        them offered back to back (await the task after the command)."""
        if not buffered:
            return await self.load_events(x), None
        per_t = [int(x[t].sum()) for t in range(self.T)]
        return per_t, cocotb.start_soon(self.load_events(x))

    async def load_ds(self, ds):
        """Error from above (T, N) of a hidden-layer core through ds_in, one block per item."""
        d, P, eb = self.dut, self.P, self.cfg.arithmetic.error_bits
        for t in range(self.T):
            for b in range(self.NB):
                vals = [int(ds[t, b * P + q]) if b * P + q < self.geom.n_neurons else 0 for q in range(P)]
                await self._send(d.ds_in__valid, d.ds_in__payload, d.ds_in__ready,
                                 pack([(t, self.tw), (b, self.bw)] + [(v, eb) for v in vals]))

    async def counters(self):
        return {name: await self.ok("read_counter", i=k) for k, name in enumerate(COUNTERS)}


def decode_ij(geom, bank, addr):
    """(i, j) of the skewed weight/gradient word at (bank, addr)."""
    return weight_index(bank, addr, geom.lanes, geom.n_in)


# --------------------------------------------------------------------------- scoreboard
class SampleScoreboard:
    """Expected transactions of one training sample; ``check(cycle)`` runs every cycle."""

    def __init__(self, tb: CoreTB, tr, k: int, G, where: str, phase_of_cycle=None):
        self.tb, self.where = tb, where
        dut, g, cfg = tb.dut, tb.geom, tb.cfg
        P, NB, T, N, n_in = g.lanes, g.blocks, g.timesteps, g.n_neurons, g.n_in
        self.G = G
        s, mk, v = tr.s[k], tr.mask[k], tr.v[k]
        h = torch.where(s.bool(), torch.zeros_like(v), v)
        cnt = torch.cumsum(s, dim=0)
        dv, e, x = tr.dv[k], tr.e[k], tr.x[k]
        # forward: per (t, b) in order
        self.blocks, self.words = [], []
        for t in range(T):
            for b in range(NB):
                lanes = [b * P + q for q in range(P)]
                sw = sum(int(s[t, i]) << q for q, i in enumerate(lanes) if i < N)
                mw = sum(int(mk[t, i]) << q for q, i in enumerate(lanes) if i < N)
                self.blocks.append((t, b, sw, mw, [int(cnt[t, i]) if i < N else None for i in lanes],
                                    [int(h[t, i]) if i < N else None for i in lanes]))
                if sw:
                    self.words.append((t, b, sw))
        # backward: dv per (t, b) (BP's order t = T-1..0, b = 0..NB-1), error words
        self.dv = {(t, b): [int(dv[t, b * P + q]) if b * P + q < N else 0 for q in range(P)]
                   for t in range(T) for b in range(NB)}
        self.dv_seen = set()
        self.dv_order = [(t, b) for t in reversed(range(T)) for b in range(NB)]
        self.di = 0
        self.errs = []
        for t in reversed(range(T)):
            if int((dv[t] != 0).sum()):
                for jb in range(g.col_blocks):
                    self.errs.append((t, jb, [int(e[t, jb * P + c]) if jb * P + c < n_in else 0
                                              for c in range(P)]))
        # gradient increments per (i, j), in WG's order t = T-1..0
        self.pending = {}
        for t in reversed(range(T)):
            for i in torch.nonzero(dv[t]).flatten().tolist():
                for j in torch.nonzero(x[t]).flatten().tolist():
                    self.pending.setdefault((i, j), []).append(int(dv[t, i]))
        self.bi = self.wi = self.ei = 0
        self.mb = cfg.arithmetic.membrane_bits
        self.dvb = cfg.arithmetic.dv_bits
        self.gb = cfg.arithmetic.grad_bits
        self.cnt_p = ports(dut, "mon_cnt_wdata", P)
        self.h_p = ports(dut, "mon_h_wdata", P)
        self.ga, self.gd = ports(dut, "mon_g_waddr", P), ports(dut, "mon_g_wdata", P)

    def check(self, cycle):
        tb, dut, g = self.tb, self.tb.dut, self.tb.geom
        P, NB = g.lanes, g.blocks
        w = f"{self.where} cycle={cycle}"
        if int(dut.mon_s_we.value):
            assert self.bi < len(self.blocks), f"{w}: extra S write"
            t, b, sw, mw, cnts, hs = self.blocks[self.bi]
            addr = int(dut.mon_s_waddr.value)
            assert addr == t * NB + b, f"{w}: S write at {addr}, expected t={t} b={b}"
            gs, gm = int(dut.mon_s_wdata.value), int(dut.mon_m_wdata.value)
            assert gs == sw, f"{w} t={t} b={b}: spike word {gs:0{P}b} != model {sw:0{P}b}"
            assert gm == mw, f"{w} t={t} b={b}: mask word {gm:0{P}b} != model {mw:0{P}b}"
            cwe = int(dut.mon_cnt_we.value)
            for q in range(P):
                if cnts[q] is None:
                    continue
                i = b * P + q
                assert (cwe >> q) & 1, f"{w} t={t} neuron={i}: no count write"
                gc = int(self.cnt_p[q].value)
                assert gc == cnts[q], f"{w} t={t} neuron={i}: count {gc} != model {cnts[q]}"
                gh = to_signed(int(self.h_p[q].value), self.mb)
                assert gh == hs[q], f"{w} t={t} neuron={i}: h {gh} != model {hs[q]}"
            self.bi += 1
        if int(dut.spikes_out__valid.value) and int(dut.spikes_out__ready.value):
            t, b, sp = unpack(int(dut.spikes_out__payload.value), [tb.tw, tb.bw, P])
            assert self.wi < len(self.words), f"{w}: extra spike word t={t} b={b}"
            assert (t, b, sp) == self.words[self.wi], (
                f"{w}: spike word ({t}, {b}, {sp:0{P}b}) != model {self.words[self.wi]}")
            self.wi += 1
        dvw = int(dut.mon_dvw.value)
        if dvw & 1:
            f = unpack(dvw >> 1, [tb.tw, tb.bw] + [self.dvb] * P, [False, False] + [True] * P)
            t, b, got = f[0], f[1], f[2:]
            assert self.di < len(self.dv_order), f"{w}: extra dv block t={t} b={b}"
            et, eb = self.dv_order[self.di]
            assert (t, b) == (et, eb), (f"{w}: dv block t={t} b={b} out of order: expected "
                                        f"t={et} b={eb} (t = T-1..0, b = 0..NB-1 per sample)")
            self.di += 1
            exp = self.dv[(t, b)]
            assert got == exp, (f"{w} t={t} b={b}: dv {got} != model {exp} "
                                f"(neurons {b * P}..{b * P + P - 1})")
            self.dv_seen.add((t, b))
        if int(dut.err_out__valid.value):
            f = unpack(int(dut.err_out__payload.value), [tb.tw, tb.jw] + [tb.ew] * P,
                       [False, False] + [True] * P)
            t, jb, got = f[0], f[1], f[2:]
            assert self.ei < len(self.errs), f"{w}: extra error word t={t} jb={jb}"
            et, ejb, exp = self.errs[self.ei]
            assert (t, jb, got) == (et, ejb, exp), (
                f"{w}: error word (t={t}, jb={jb}, e={got}) != model (t={et}, jb={ejb}, e={exp})")
            self.ei += 1
        gwe = int(dut.mon_g_we.value)
        if gwe:
            for k in range(P):
                if not (gwe >> k) & 1:
                    continue
                i, j = decode_ij(g, k, int(self.ga[k].value))
                val = to_signed(int(self.gd[k].value), self.gb)
                pend = self.pending.get((i, j))
                assert pend, f"{w}: unexpected G write to neuron {i} input {j} (value {val})"
                exp = self.G[i][j] + pend.pop(0)
                assert val == exp, f"{w}: G[{i}][{j}] written {val} != running model sum {exp}"
                self.G[i][j] = exp

    def finish(self):
        w = self.where
        assert self.bi == len(self.blocks), f"{w}: {self.bi} block writes, expected {len(self.blocks)}"
        assert self.wi == len(self.words), f"{w}: {self.wi} spike words, expected {len(self.words)}"
        assert self.ei == len(self.errs), f"{w}: {self.ei} error words, expected {len(self.errs)}"
        assert self.di == len(self.dv_order), f"{w}: dv of {self.di} of {len(self.dv_order)} blocks seen"
        left = {k: v for k, v in self.pending.items() if v}
        assert not left, f"{w}: gradient increments never written: {list(left.items())[:5]}"


async def check_weights(tb, W, where):
    """Read every weight back through ``read_w`` and compare with the model's."""
    wb = tb.cfg.arithmetic.weight_bits
    mask = (1 << wb) - 1
    for i in range(tb.geom.n_neurons):
        for j in range(tb.geom.n_in):
            got = to_signed(await tb.ok("read_w", i, j) & mask, wb)
            assert got == int(W[i, j]), f"{where}: read_w({i}, {j}) = {got} != model {int(W[i, j])}"




def w_monitor(tb: CoreTB, W, seen: set, where: str, sb: SampleScoreboard | None = None):
    """A per-cycle monitor: every W write-back equals the model's updated weight ``W``, each
    weight once (``seen`` collects them); with ``sb`` (in place) also only after BP has shown
    every dv and error word (it has read the old W)."""
    dut, geom = tb.dut, tb.geom
    P, N, wb = geom.lanes, geom.n_neurons, tb.cfg.arithmetic.weight_bits
    wa, wd = ports(dut, "mon_w_waddr", P), ports(dut, "mon_w_wdata", P)

    def mon(cycle):
        we = int(dut.mon_w_we.value)
        if not we:
            return
        if sb is not None:
            assert sb.ei == len(sb.errs) and len(sb.dv_seen) == len(sb.dv), (
                f"{where} cycle={cycle}: W written before BP finished (error words "
                f"{sb.ei}/{len(sb.errs)}, dv blocks {len(sb.dv_seen)}/{len(sb.dv)})")
        for kk in range(P):
            if (we >> kk) & 1:
                i, j = decode_ij(geom, kk, int(wa[kk].value))
                val = to_signed(int(wd[kk].value), wb)
                assert i < N, f"{where} cycle={cycle}: padding row {i} written"
                assert (i, j) not in seen, f"{where}: W[{i}][{j}] written twice"
                assert val == int(W[i, j]), (f"{where} cycle={cycle}: W[{i}][{j}] "
                                             f"written {val} != model {int(W[i, j])}")
                seen.add((i, j))
    return mon


# ------------------------------------------------------------------------------ the run
async def train_core(dut):
    """Train the Core under ``dut`` for the parameters of :func:`load_params`, checking every
    transaction, the counters against ``model/perf.py`` and every weight (the ``core_train``
    cocotb test). Parameters: ``seeds``, ``batches`` or ``samples``, ``input`` (digits |
    random), ``density``, ``gain``, ``spikes_ready_p``, ``readback_every_sample``,
    ``report_file``."""
    p = load_params()
    cfg, geom = p.config, p.geometry
    P, N, n_in, T, B = geom.lanes, geom.n_neurons, geom.n_in, geom.timesteps, cfg.train.batch_size
    for sig in (dut.cmd__valid, dut.ev_in__valid):
        sig.value = 0
    if not geom.output_layer:
        dut.ds_in__valid.value = 0
    dut.rsp__ready.value = 1
    dut.spikes_out__ready.value = 1
    dut.err_out__ready.value = 1
    await reset(dut)
    tb = CoreTB(dut, cfg, geom)
    # optional random back-pressure on spikes_out (ready changes right after rising edges,
    # so what a falling edge samples is what the next rising edge commits)
    ready_p = float(p.raw.get("spikes_ready_p", 1.0))
    if ready_p < 1.0:
        import cocotb as _cocotb

        async def _backpressure(rng=random.Random(p.seeds[0])):
            while True:
                await RisingEdge(dut.clk)
                dut.spikes_out__ready.value = 1 if rng.random() < ready_p else 0

        _cocotb.start_soon(_backpressure())

    import json
    import time

    from cocotb.utils import get_sim_time

    from spikeforge.model.data import load_digits, rate_encode
    raw = p.raw
    source = raw.get("input", "digits")
    density = float(raw.get("density", 0.2))
    ds = load_digits() if source == "digits" else None
    if ds is not None and ds.n_inputs != n_in:
        raise ValueError(f"input 'digits' has {ds.n_inputs} inputs, the core has n_in={n_in}: "
                         f"use input 'random'")
    batches = raw.get("batches") or -(-int(raw.get("samples", B)) // B)
    seed = p.seeds[0]
    wall0, sim0 = time.monotonic(), get_sim_time("ns")
    gen = torch.Generator().manual_seed(seed)
    model = FixedPointSNN(cfg, seed=seed)
    W = model.weights[0]
    # weights and rng states through the command port
    for i in range(N):
        for j in range(n_in):
            await tb.ok("write_w", i, j, int(W[i, j]))
    for i in range(N):
        await tb.ok("write_rng", i, data=int(model.rng_state[0][i]))
    # the command port refuses what it must refuse, and changes nothing
    assert (await tb.command("write_w", N, 0, 5))[0] == STATUS["bad_index"]
    assert (await tb.command("read_w", 0, n_in))[0] == STATUS["bad_index"]
    assert (await tb.command("nop"))[0] == STATUS["ok"]
    assert (await tb.command("status"))[0] == STATUS["ok"]
    assert (await tb.command(15))[0] == STATUS["bad_op"]
    ip = cfg.hardware.wg_dataflow == "inplace"
    if ip:
        # in place: no G to apply, `update` is refused and changes nothing (W[0][0] below)
        assert (await tb.command("update"))[0] == STATUS["bad_op"], "update not refused in place"
    assert int(await tb.ok("read_w", 0, 0)) & ((1 << cfg.arithmetic.weight_bits) - 1) == \
        int(W[0, 0]) & ((1 << cfg.arithmetic.weight_bits) - 1)


    G = [[0] * n_in for _ in range(N)]
    report, samples_out, updates_out = [], [], []
    total_fp_stalls = 0
    order = torch.randperm(ds.x_train.shape[0], generator=gen) if ds is not None else None
    sample_no = 0
    for batch in range(batches):
        if ds is not None:
            idx = order[batch * B:(batch + 1) * B]
            x = rate_encode(ds.x_train[idx], T, gen, gain=raw.get("gain", 1.0))
            labels = ds.y_train[idx]
        else:
            x = (torch.rand(B, T, n_in, generator=gen) < density).to(torch.int64)
            labels = torch.randint(0, N, (B,), generator=gen)
        traces = model.forward(x)
        if geom.output_layer:
            model.backward(traces, labels)
        else:
            # a hidden layer: the error from above is data (sparse, saturating values included)
            eb = cfg.arithmetic.error_bits
            ds_up = torch.randint(-(1 << (eb - 1)), 1 << (eb - 1), (B, T, N), generator=gen)
            ds_up = torch.where(torch.rand(B, T, N, generator=gen) < 0.5, ds_up // 64, ds_up)
            ds_up = torch.where(torch.rand(B, T, N, generator=gen) < 0.3, torch.zeros_like(ds_up), ds_up)
            model.backward_layer(0, traces[0], ds_up)
        tr = traces[0]
        for k in range(B):
            where = f"seed={seed} batch={batch} sample={k} label={int(labels[k])}"
            events, feeder = await tb.offer_events(x[k], ip)
            if geom.output_layer:
                await tb.ok("set_label", data=int(labels[k]))
            else:
                await tb.load_ds(ds_up[k])
            sb = SampleScoreboard(tb, tr, k, G, where)
            if ip:
                # no gradient memory: no G write may happen; W is updated within `train`
                sb.pending = {}
                model.update(traces)
                W = model.weights[0]
                seen = set()
                wmon = w_monitor(tb, W, seen, where, sb)

                def both(cycle, sb=sb, wmon=wmon):
                    sb.check(cycle)
                    wmon(cycle)

                await tb.ok("train", monitor=both)
                assert feeder.done(), f"{where}: train answered before every event was taken"
                # the sparse update writes exactly the weights of active blocks x active columns
                act_ab, act_ac = perf.inplace_active(x[k], tr.dv[k], P)
                live = (tr.dv[k] != 0).any(dim=0).tolist()
                blk_on = [any(live[b * P:(b + 1) * P]) for b in range(geom.blocks)]
                col_on = (x[k] != 0).any(dim=0).tolist()
                want = {(i, j) for i in range(N) for j in range(n_in) if blk_on[i // P] and col_on[j]}
                assert seen == want, (f"{where}: sparse update wrote {len(seen)} weights, "
                                      f"expected {len(want)} (active blocks x active columns)")
            else:
                await tb.ok("train", monitor=sb.check)
            sb.finish()
            c = await tb.counters()
            nnz = perf.bp_nnz(tr.dv[k].tolist())
            lens = [perf.wg_lane_lengths(tr.dv[k, t].tolist(), P) for t in range(T)]
            exp_fp = perf.fp_cycles(events, N, P, buffered=ip)
            assert c["fp_cycles"] == exp_fp, f"{where}: fp cycles {c['fp_cycles']} != perf {exp_fp}"
            # back-pressure on spikes_out freezes FP: those cycles are in fp_stalls, not fp_cycles
            exp_fwd = perf.core_forward_cycles(events, N, P, buffered=ip) + c["fp_stalls"]
            assert c["fwd_phase"] == exp_fwd, f"{where}: forward phase {c['fwd_phase']} != perf {exp_fwd}"
            if ready_p >= 1.0:
                assert c["fp_stalls"] == 0, f"{where}: FP stalled without back-pressure"
            total_fp_stalls += c["fp_stalls"]
            assert c["fp_work"] == perf.fp_work(events, N), f"{where}: fp work {c['fp_work']}"
            if ip:
                exp_wg = perf.inplace_scan_cycles(n_in)
                exp_wg_work = 0
            else:
                exp_wg = perf.wg_cycles(events, lens)
                exp_wg_work = perf.wg_work(events, lens)
            assert c["wg_cycles"] == exp_wg, f"{where}: wg cycles {c['wg_cycles']} != perf {exp_wg}"
            assert c["wg_work"] == exp_wg_work, f"{where}: wg work {c['wg_work']} != {exp_wg_work}"
            assert c["bp_work"] == perf.bp_work(n_in, nnz), f"{where}: bp work {c['bp_work']}"
            bp_alone = perf.bp_cycles(geom.blocks, geom.col_blocks, nnz)
            assert c["bp_cycles"] >= bp_alone, f"{where}: bp cycles {c['bp_cycles']} < perf {bp_alone}"
            exp_bwd = perf.core_backward_cycles(c["bp_cycles"], c["wg_cycles"], c["wg_stalls"])
            assert c["bwd_phase"] == exp_bwd, f"{where}: backward phase {c['bwd_phase']} != {exp_bwd}"
            if ip:
                sched = perf.core_inplace_backward_cycles(geom.blocks, geom.col_blocks, nnz, n_in)
            else:
                sched = perf.core_backward_schedule(geom.blocks, geom.col_blocks, nnz, events, lens)
            got = {k: c[k] for k in ("bp_cycles", "wg_cycles", "wg_stalls")}
            got["phase"] = c["bwd_phase"]
            assert got == sched, f"{where}: backward phase {got} != perf schedule {sched}"
            if ip:
                assert c["upd_cycles"] == perf.inplace_update_cycles(act_ab, act_ac), \
                    f"{where}: in-place update cycles {c['upd_cycles']}"
                assert c["upd_phase"] == perf.core_inplace_update_cycles(act_ab, act_ac), \
                    f"{where}: in-place update phase {c['upd_phase']}"
                assert c["upd_work"] == len(want), f"{where}: in-place update work {c['upd_work']}"
                exp_total = perf.core_inplace_sample_cycles(n_in, N, P, nnz, events, act_ab, act_ac)
                got_total = {"forward": c["fwd_phase"], "backward": c["bwd_phase"],
                             "update": c["upd_phase"]}
                got_total["total"] = sum(got_total.values())
                assert got_total == exp_total, f"{where}: sample {got_total} != perf {exp_total}"
                assert c["samples"] == 0
            else:
                assert c["samples"] == k + 1
            report.append((sample_no, sum(events), sum(nnz), c["fwd_phase"], c["bwd_phase"],
                           c["bp_cycles"], bp_alone, c["wg_cycles"], c["wg_stalls"]))
            samples_out.append({"sample": sample_no, "batch": batch, "events": events, "nnz_dv": nnz,
                                "lane_lengths": lens, **c, "bp_alone": bp_alone})
            sample_no += 1
        if ip:
            # W was updated within `train`; the weights must be the model's after every sample
            if raw.get("readback_every_sample", True):
                await check_weights(tb, W, f"seed={seed} batch={batch}")
            updates_out.append({"batch": batch, "upd_cycles": c["upd_cycles"], "upd_phase": c["upd_phase"],
                                "upd_work": c["upd_work"]})
            continue
        # update: every write-back equals the model's new weight
        model.update(traces)
        W = model.weights[0]
        seen = set()
        await tb.ok("update", monitor=w_monitor(tb, W, seen, f"seed={seed} batch={batch}"))
        assert len(seen) == N * n_in, f"seed={seed} batch={batch}: {len(seen)} of {N * n_in} weights written"
        G = [[0] * n_in for _ in range(N)]
        c = await tb.counters()
        assert c["upd_cycles"] == perf.update_cycles(n_in, N, P), f"update cycles {c['upd_cycles']}"
        assert c["upd_phase"] == perf.core_update_cycles(n_in, N, P), f"update phase {c['upd_phase']}"
        assert c["samples"] == 0
        updates_out.append({"batch": batch, "upd_cycles": c["upd_cycles"], "upd_phase": c["upd_phase"],
                            "upd_work": c["upd_work"]})
    wall_train, sim_train = time.monotonic() - wall0, get_sim_time("ns") - sim0
    if ready_p < 1.0:
        assert total_fp_stalls > 0, "back-pressure on spikes_out never stalled FP"
        dut._log.info(f"spikes_out back-pressure: FP frozen for {total_fp_stalls} cycles in total")
    # read back every weight
    await check_weights(tb, W, f"seed={seed}")
    # inference: spike counts readable
    if ds is not None:
        x = rate_encode(ds.x_test[:1], T, gen, gain=raw.get("gain", 1.0))
    else:
        x = (torch.rand(1, T, n_in, generator=gen) < density).to(torch.int64)
    _, feeder = await tb.offer_events(x[0], ip)
    await tb.ok("infer")
    assert feeder is None or feeder.done(), "infer answered before every event was taken"
    cnt = model.forward(x)[0].count[0]
    for i in range(N):
        got = await tb.ok("read_count", i)
        assert got == int(cnt[i]), f"seed={seed}: inference count of neuron {i}: {got} != model {int(cnt[i])}"
    dut._log.info(f"core {geom} B={B} rounding={cfg.arithmetic.rounding}: {sample_no} samples, "
                  f"{batches} updates bit-identical to the model (seed {seed}, input {source})")
    if raw.get("report_file"):
        with open(raw["report_file"], "w") as f:
            json.dump({"ok": True, "seed": seed, "input": source, "density": density if ds is None else None,
                       "batch_size": B, "geometry": raw["geometry"], "samples": samples_out,
                       "updates": updates_out, "wall_s": wall_train,
                       "sim_cycles": int(sim_train // 10), "config": raw["config"]}, f, indent=1)
    dut._log.info("sample events nnz(dv) fwd_phase bwd_phase bp_cycles bp_alone wg_cycles wg_stalls")
    for r in report:
        dut._log.info("  ".join(str(v) for v in r))




def run_core_sim(cfg, *, seed=0, samples=4, source="digits", density=0.2, waves=None,
                 report_file=None, run_name=None):
    """Train the output layer of ``cfg`` on one simulated Core; used by ``spikeforge sim core``
    and bench/bench_core.py. Raises AssertionError on the first mismatch."""
    geom = CoreGeometry.from_config(cfg)
    single = cfg.replace(network={"layers": [geom.n_in, geom.n_neurons]})
    run_cocotb(name="core", component=lambda: Core(single, geom), test_module=TEST_MODULE,
               testcase="core_train", cfg=single, geometry=geom, waves=waves, run_name=run_name,
               params={"seeds": [seed], "samples": samples, "input": source, "density": density,
                       "report_file": str(report_file) if report_file else None})
