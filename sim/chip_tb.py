"""Verification library of the N-core chip (rtl/chip.py): driver, per-core scoreboards, the
training run.

* :class:`ChipTB`: the host side -- commands to cores over the NoC's host plane (one at a
  time per core, responses collected in the background), input events on ``ev_in``;
* :class:`ChipScoreboard`: every message crossing a core boundary, checked against
  ``FixedPointSNN`` the cycle it is taken -- the events into each core (after the timestep
  barrier), its spike words, its error partial sums, the reduced error into each hidden
  core and every weight write-back;
* :func:`train_chip`: body of the ``chip_train`` cocotb test (tests/test_chip.py);
* :func:`run_chip_sim`: build a chip for a config and run ``chip_train`` (``spikeforge sim chip``).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque

import cocotb
import torch
from cocotb.triggers import FallingEdge, RisingEdge

from ..model import fixedpoint as fx
from ..model.snn import FixedPointSNN, init_weights
from ..rtl.chip import MON_KINDS, Chip, chip_cmd_layout, chip_event_layout, chip_rsp_layout
from ..rtl.geometry import ChipGeometry
from ..rtl.interfaces import OPS, STATUS, ds_layout, err_layout, event_layout, spike_word_layout, weight_index
from .cocotb_utils import decode, load_params, pack, reset
from .runner import run_cocotb

__all__ = ["ChipTB", "ChipScoreboard", "train_chip", "run_chip_sim", "TEST_MODULE"]

TEST_MODULE = "spikeforge.tests.test_chip"


def _pack_layout(layout, values: dict) -> int:
    from amaranth.hdl import Shape

    out = 0
    for name, f in layout:
        w = Shape.cast(f.shape).width
        out |= (int(values.get(name, 0)) & ((1 << w) - 1)) << f.offset
    return out


class ChipTB:
    """Host-side driver of a simulated chip."""

    def __init__(self, dut, cfg, geo: ChipGeometry):
        self.dut, self.cfg, self.geo = dut, cfg, geo
        n = len(geo.cores)
        self.cmd_l, self.rsp_l, self.ev_l = chip_cmd_layout(n), chip_rsp_layout(n), chip_event_layout(cfg)
        self.responses: dict[int, deque] = defaultdict(deque)
        self.answered: dict[int, int] = {}     # core -> cycle of its last response
        self.run_ends: dict[int, int] = {}     # core -> its response to the last run, cycles after it began
        self.cycle = 0
        self.monitor = None               # called with the cycle number at every falling edge
        self.timeout = 2_000_000          # cycles to wait for a response

    def start(self):
        cocotb.start_soon(self._collect())

    async def _collect(self):
        d = self.dut
        while True:
            await FallingEdge(d.clk)
            self.cycle += 1
            if self.monitor is not None:
                self.monitor(self.cycle)
            if int(d.rsp__valid.value) and int(d.rsp__ready.value):
                r = decode(self.rsp_l, d.rsp__payload.value)
                self.responses[r["core"]].append((r["status"], r["data"]))
                self.answered[r["core"]] = self.cycle

    async def _send(self, valid, payload_sig, ready_sig, value):
        payload_sig.value = value
        valid.value = 1
        while True:
            await FallingEdge(self.dut.clk)
            r = int(ready_sig.value)
            await RisingEdge(self.dut.clk)
            if r:
                break
        valid.value = 0

    async def send(self, core, op, i=0, j=0, data=0):
        d = self.dut
        await self._send(d.cmd__valid, d.cmd__payload, d.cmd__ready,
                         _pack_layout(self.cmd_l, {"core": core, "op": OPS.get(op, op), "i": i,
                                                   "j": j, "data": data & 0xFFFF_FFFF}))

    async def wait(self, core, limit=None):
        limit = limit or self.timeout
        n = 0
        while not self.responses[core]:
            await RisingEdge(self.dut.clk)
            n += 1
            if n >= limit:
                raise AssertionError(f"no response from core {core} after {n} cycles (cycle "
                                     f"{self.cycle}); {self.hang_report()}")
        return self.responses[core].popleft()

    def hang_report(self) -> str:
        """What each core is doing (its phase), for a hang message."""
        out = []
        for pl in self.geo.cores:
            try:
                ph = int(getattr(self.dut, f"core{pl.core}").phase.value)
            except (AttributeError, ValueError):
                ph = "?"
            out.append(f"core {pl.core}: phase {ph}")
        return ", ".join(out)

    async def ok(self, core, op, i=0, j=0, data=0):
        await self.send(core, op, i, j, data)
        status, value = await self.wait(core)
        assert status == STATUS["ok"], f"core {core}: {op}(i={i}, j={j}, data={data}) answered {status}"
        return value

    async def core_counters(self, core):
        """The core's phase and engine counters (rtl/core.py COUNTERS) by name."""
        from ..rtl.core import COUNTERS
        return {name: await self.ok(core, "read_counter", i=i) for i, name in enumerate(COUNTERS)}

    async def noc_counters(self):
        """{plane: {node: {port: (flits, stalls)}}} of every router (read combinationally)."""
        from ..rtl.noc import Port, counter_index
        out = {}
        for pi, plane in enumerate(("spike", "error", "host")):
            out[plane] = {}
            for k in range(len(self.geo.cores)):
                self.dut.ctr_node.value = k
                row = {}
                for port in Port:
                    vals = []
                    for kind in (0, 1):
                        self.dut.ctr_addr.value = counter_index(pi, port, kind)
                        await FallingEdge(self.dut.clk)
                        vals.append(int(self.dut.ctr_data.value))
                    row[port.name.lower()] = vals
                out[plane][k] = row
        return out

    async def events(self, x):
        """The input layer's events of one sample ``(T, n_in)``, timestep order, then ``end``."""
        d = self.dut
        for t in range(x.shape[0]):
            for j in torch.nonzero(x[t]).flatten().tolist():
                await self._send(d.ev_in__valid, d.ev_in__payload, d.ev_in__ready,
                                 _pack_layout(self.ev_l, {"t": t, "j": j}))
        await self._send(d.ev_in__valid, d.ev_in__payload, d.ev_in__ready,
                         _pack_layout(self.ev_l, {"end": 1}))

    async def run(self, x, op="train_ds"):
        """One sample through every core: the run command to each core in layer order, the
        input events, then every core's response."""
        c0 = self.cycle
        feeder = cocotb.start_soon(self.events(x))
        for pl in self.geo.cores:
            await self.send(pl.core, op)
        for pl in self.geo.cores:
            status, _ = await self.wait(pl.core)
            assert status == STATUS["ok"], f"core {pl.core}: {op} answered {status}"
            self.run_ends[pl.core] = self.answered[pl.core] - c0
        await feeder


class ChipScoreboard:
    """Expected messages of every core for one sample (or one update), checked as taken."""

    def __init__(self, tb: ChipTB, seed: int):
        self.tb, self.cfg, self.geo, self.seed = tb, tb.cfg, tb.geo, seed
        cfg = self.cfg
        self.layouts = {}
        for pl in self.geo.cores:
            g = pl.geom
            lay = {"spk": spike_word_layout(g), "err": err_layout(cfg, g), "ev": event_layout(g),
                   "ds": ds_layout(cfg, g)}
            self.layouts[pl.core] = lay
        self.exp = {}
        self.where = ""
        self.writes = {}

    # ------------------------------------------------------------------ expectations
    def expect_sample(self, traces, b: int, weights, where: str):
        """Every message of sample ``b`` of the model's batch ``traces`` (weights of its batch)."""
        cfg, P = self.cfg, self.cfg.hardware.lanes
        self.where = where
        self.exp = {}
        for pl in self.geo.cores:
            k, l, o, g = pl.core, pl.layer, pl.offset, pl.geom
            tr = traces[l]
            T, N = g.timesteps, g.n_neurons
            ev = []
            for t in range(T):
                ev += [(t, j, 0) for j in torch.nonzero(tr.x[b, t]).flatten().tolist()]
                ev.append((t, 0, 0, 1) if t < T - 1 else (0, 0, 1))
            s = tr.s[b, :, o:o + N]
            spk = []
            for t in range(T):
                for blk in range(g.blocks):
                    bits = sum(int(s[t, blk * P + q]) << q for q in range(P) if blk * P + q < N)
                    if bits:
                        spk.append((t, blk, bits))
            exp = {"ev": deque(ev), "spk": deque(spk), "err": deque(), "ds": deque()}
            dv = tr.dv[b, :, o:o + N]
            # (none from the first layer's cores: nobody needs the error to the input)
            w = weights[l][o:o + N]
            for t in (reversed(range(T)) if g.errors else ()):
                if torch.any(dv[t] != 0):
                    e = (dv[t].to(torch.int64)[None, :] @ w.to(torch.int64))[0]
                    for jb in range(g.col_blocks):
                        vals = [int(e[jb * P + c]) if jb * P + c < g.n_in else 0 for c in range(P)]
                        exp["err"].append((t, jb, vals))
            if not g.output_layer:
                ds = tr.ds[b, :, o:o + N]
                for t in range(T):
                    for blk in range(g.blocks):
                        exp["ds"].append((t, blk, [int(ds[t, blk * P + q]) if blk * P + q < N else None
                                                   for q in range(P)]))
            self.exp[k] = exp

    def expect_update(self, old, new, where: str):
        """The weight write-backs of an update: every changed weight written once, every
        write the model's new value."""
        self.where = where
        self.new = new
        self.changed = {}
        for pl in self.geo.cores:
            d = (old[pl.layer] != new[pl.layer])[pl.offset:pl.offset + pl.geom.n_neurons]
            self.changed[pl.core] = {tuple(ix) for ix in torch.nonzero(d).tolist()}
        self.writes = {pl.core: set() for pl in self.geo.cores}

    # ------------------------------------------------------------------------ checks
    def fail(self, msg, **ctx):
        details = ", ".join(f"{k}={v}" for k, v in ctx.items())
        raise AssertionError(f"{self.where}: {msg} [seed={self.seed}, cycle={self.tb.cycle}, {details}]")

    def check(self, cycle):
        d = self.tb.dut
        flags = int(d.mon_valid.value)
        if not flags:
            return
        for pl in self.geo.cores:
            k = pl.core
            f = (flags >> (5 * k)) & 0x1F
            if not f:
                continue
            for idx, kind in enumerate(MON_KINDS):
                if f >> idx & 1:
                    getattr(self, f"_{kind}")(pl, getattr(d, f"mon{k}_{kind}").value)

    def _pop(self, pl, kind, got):
        q = self.exp.get(pl.core, {}).get(kind)
        if not q:
            self.fail(f"core {pl.core} (layer {pl.layer}): unexpected {kind} message {got}", core=pl.core)
        return q.popleft()

    def _w_of(self, pl, kind, value):
        from amaranth.lib import data
        lay = data.StructLayout({"valid": 1, "w": self.layouts[pl.core][kind]})
        return decode(lay, value)["w"]

    def _ev(self, pl, value):
        w = self._w_of(pl, "ev", value)
        got = ((0, 0, 1) if w["end"] else (w["t"], 0, 0, 1) if w["close"]
               else (w["t"], w["j"], 0))
        want = self._pop(pl, "ev", got)
        if got != want:
            self.fail(f"core {pl.core}: event {got} into the core, model {want}", core=pl.core,
                      timestep=got[0], neuron=got[1])

    def _spk(self, pl, value):
        w = self._w_of(pl, "spk", value)
        got = (w["t"], w["b"], w["spikes"])
        want = self._pop(pl, "spk", got)
        if got != want:
            self.fail(f"core {pl.core}: spike word {got}, model {want}", core=pl.core, timestep=got[0],
                      neuron=pl.offset + got[1] * pl.geom.lanes)

    def _err(self, pl, value):
        w = self._w_of(pl, "err", value)
        got = (w["t"], w["jb"], list(w["e"]))
        want = self._pop(pl, "err", got)
        if got != want:
            self.fail(f"core {pl.core}: error word {got}, model {want}", core=pl.core, timestep=got[0],
                      neuron=got[1] * pl.geom.lanes)

    def _ds(self, pl, value):
        w = self._w_of(pl, "ds", value)
        got = (w["t"], w["b"], list(w["ds"]))
        want = self._pop(pl, "ds", got)
        ok = got[:2] == want[:2] and all(v is None or v == g for g, v in zip(got[2], want[2]))
        if not ok:
            self.fail(f"core {pl.core}: reduced error {got}, model {want}", core=pl.core,
                      timestep=got[0], neuron=pl.offset + got[1] * pl.geom.lanes)

    def _w(self, pl, value):
        from amaranth.lib import data
        g, P = pl.geom, pl.geom.lanes
        lay = data.StructLayout({"we": P, "addr": data.ArrayLayout(self._addr_shape(g), P),
                                 "data": data.ArrayLayout(self._wshape(), P)})
        w = decode(lay, value)
        for q in range(P):
            if w["we"] >> q & 1:
                i, j = weight_index(q, w["addr"][q], P, g.n_in)
                want = int(self.new[pl.layer][pl.offset + i, j])
                if w["data"][q] != want:
                    self.fail(f"core {pl.core}: weight write W[{i}, {j}] = {w['data'][q]}, model {want}",
                              core=pl.core, neuron=pl.offset + i, column=j)
                self.writes[pl.core].add((i, j))

    def _addr_shape(self, g):
        from amaranth.hdl import unsigned
        from ..rtl.interfaces import ubits
        return unsigned(ubits(g.weight_depth))

    def _wshape(self):
        from amaranth.hdl import signed
        return signed(self.cfg.arithmetic.weight_bits)

    def finish_sample(self):
        for k, exp in self.exp.items():
            for kind, q in exp.items():
                if q:
                    self.fail(f"core {k}: {len(q)} {kind} message(s) never came, first {q[0]}", core=k)

    def finish_update(self):
        for k, ch in self.changed.items():
            missing = ch - self.writes[k]
            if missing:
                self.fail(f"core {k}: {len(missing)} changed weight(s) never written, e.g. "
                          f"W{sorted(missing)[0]}", core=k)


def _samples(cfg, source: str, samples: int, seed: int, density: float = 0.2):
    """(x (S, T, n_in) 0/1, labels (S,)) of a run: digits or MNIST training images
    rate-coded, or random spikes of ``density`` with random labels; seeded."""
    T, n_in, n_out = cfg.network.timesteps, cfg.network.layers[0], cfg.network.layers[-1]
    g = torch.Generator().manual_seed(seed)
    if source in ("digits", "mnist"):
        from ..model.data import load_digits, load_mnist, rate_encode
        want = (64, 10) if source == "digits" else (784, 10)
        if (n_in, n_out) != want:
            raise ValueError(f"input {source} needs a {want[0]}-...-{want[1]} network, got {n_in}-...-{n_out}")
        ds = load_digits() if source == "digits" else load_mnist()
        idx = torch.randperm(ds.x_train.shape[0], generator=g)[:samples]
        x = rate_encode(ds.x_train[idx], T, g)
        return x.to(torch.int64), ds.y_train[idx].to(torch.int64)
    x = (torch.rand(samples, T, n_in, generator=g) < density).to(torch.int64)
    return x, torch.randint(0, n_out, (samples,), generator=g)


def perf_model_cycles(cfg, *, seed: int, samples: int, source: str = "random",
                      density: float = 0.2) -> list[int]:
    """``model.perf.chip_sample_cycles`` of each sample that :func:`run_chip_sim` trains with
    the same arguments (same inputs, same initial weights, same updates)."""
    from ..model import perf
    geo = ChipGeometry.from_config(cfg)
    x, labels = _samples(cfg, source, samples, seed, density)
    model = FixedPointSNN(cfg, weights=init_weights(cfg, torch.Generator().manual_seed(seed)))
    B, out = cfg.train.batch_size, []
    for b0 in range(0, samples, B):
        traces = model.train_step(x[b0:b0 + B], labels[b0:b0 + B])
        out += [perf.chip_sample_cycles(cfg, geo, traces, s)["total"] for s in range(min(B, samples - b0))]
    return out


def _inputs(cfg, p, rng_seed):
    return _samples(cfg, p.raw.get("input", "random"), int(p.raw.get("samples", 4)), rng_seed,
                    float(p.raw.get("density", 0.2)))


async def train_chip(dut):
    """Train the chip under ``dut`` on ``samples`` samples (the ``chip_train`` cocotb test),
    checking every boundary-crossing message and every weight write-back against the model,
    and a read-back of weights through the host plane at the end."""
    p = load_params()
    cfg = p.config
    geo = ChipGeometry.from_config(cfg)
    seed = int(p.raw.get("seed", 0))
    dut.cmd__valid.value = 0
    dut.ev_in__valid.value = 0
    dut.rsp__ready.value = 1
    await reset(dut)
    wall0 = time.monotonic()
    tb = ChipTB(dut, cfg, geo)
    tb.timeout = int(p.raw.get("timeout_cycles", tb.timeout))
    tb.start()
    sb = ChipScoreboard(tb, seed)
    tb.monitor = sb.check
    w0 = init_weights(cfg, torch.Generator().manual_seed(seed))
    model = FixedPointSNN(cfg, weights=w0)
    if cfg.arithmetic.rounding == "stochastic":
        for pl in geo.cores:
            seeds = fx.neuron_seeds(cfg.arithmetic.lfsr_seed, pl.layer, cfg.network.layers[pl.layer + 1])
            for i in range(pl.geom.n_neurons):
                await tb.ok(pl.core, "write_rng", i=i, data=int(seeds[pl.offset + i]))
    x, labels = _inputs(cfg, p, seed)
    B = cfg.train.batch_size
    S = x.shape[0]
    out_cores = geo.layer_cores(len(cfg.network.layers) - 2)
    ip = cfg.hardware.wg_dataflow == "inplace"
    cycles, per_core, ends = [], [], []
    want_counters = bool(p.raw.get("counters", False))
    for b0 in range(0, S, B):
        xb, yb = x[b0:b0 + B], labels[b0:b0 + B]
        old = [w.clone() for w in model.weights]
        traces = model.train_step(xb, yb)
        sb.expect_update(old, model.weights, f"update after sample {b0 + len(xb) - 1}")
        for s in range(len(xb)):
            n = b0 + s
            for pl in out_cores:
                lab = int(yb[s]) - pl.offset
                await tb.ok(pl.core, "set_label", data=lab if 0 <= lab < pl.geom.n_neurons else pl.geom.n_neurons)
            sb.expect_sample(traces, s, old, f"sample {n}")
            c0 = tb.cycle
            await tb.run(xb[s])
            cycles.append(tb.cycle - c0)
            sb.finish_sample()
            dut._log.info(f"sample {n}: {cycles[-1]} cycles")
            ends.append(dict(tb.run_ends))
            if want_counters:
                per_core.append({pl.core: await tb.core_counters(pl.core) for pl in geo.cores})
        if not ip:
            for pl in geo.cores:
                await tb.send(pl.core, "update")
            for pl in geo.cores:
                status, _ = await tb.wait(pl.core)
                assert status == STATUS["ok"], f"core {pl.core}: update answered {status}"
        sb.finish_update()
    # a read-back through the host plane: random weights of every core
    rng = random.Random(seed)
    for pl in geo.cores:
        for _ in range(int(p.raw.get("readback", 8))):
            i, j = rng.randrange(pl.geom.n_neurons), rng.randrange(pl.geom.n_in)
            got = await tb.ok(pl.core, "read_w", i=i, j=j)
            got = got - (1 << 32) if got >> 31 else got
            want = int(model.weights[pl.layer][pl.offset + i, j])
            assert got == want, f"read_w core {pl.core} W[{i}, {j}] = {got}, model {want} (seed {seed})"
    # a core past the last is answered at once
    await tb.send(len(geo.cores), "nop")
    status, _ = await tb.wait(len(geo.cores))
    assert status == STATUS["bad_index"], status
    report = p.raw.get("report_file")
    if report:
        import json
        with open(report, "w") as f:
            json.dump({"cycles_per_sample": cycles, "samples": S, "cores": len(geo.cores),
                       "sim_cycles": tb.cycle, "wall_s": time.monotonic() - wall0,
                       "core_counters": per_core, "core_ends": ends,
                       "noc": await tb.noc_counters()}, f)


def run_chip_sim(cfg, *, seed=0, samples=4, source="random", density=0.2, waves=None,
                 report_file=None, run_name=None, counters=False):
    """Build the chip of ``cfg`` (initial weights from ``seed``, as the model draws them)
    and train it in Verilator; raises AssertionError on the first mismatch."""
    w0 = init_weights(cfg, torch.Generator().manual_seed(seed))
    geo = ChipGeometry.from_config(cfg)
    return run_cocotb(name="chip", component=lambda: Chip(cfg, geo, weights=w0),
                      test_module=TEST_MODULE, testcase="chip_train", cfg=cfg,
                      build_key={"seed": seed}, waves=waves, run_name=run_name,
                      params={"seed": seed, "samples": samples, "input": source, "density": density,
                              "counters": counters,
                              "report_file": str(report_file) if report_file else None})
