"""The chip behind its host link (rtl/top.py HostChip = HostLink + Executor + Chip) in
Verilator, driven only through protocol frames (docs/protocol.md): frames encoded with
``spikeforge.host.protocol`` go into ``rx`` as bytes, replies are decoded from ``tx``
(sim/hostchip_tb.py).

The cocotb test ``executor`` (seeded; the seed is in every assertion message):

* ``version`` and ``status`` as documented (features: gaps, masks, update only in the
  accumulate dataflow);
* random i16 weights written in bulk (a row per frame) and read back; seeds written and
  read back; core and link counters;
* every error path: ``bad_len`` (short, long, fixed-size ops with extra bytes, bitmap rasters
  of the wrong size, masks rasters a byte short or long), ``bad_index`` (core, row, column range, seed range, counter range),
  ``bad_arg`` (T, n_in, an unknown encoding, labels, a gap past the raster, bitmap and
  active-bitmap padding bits, an empty timestep mask or one past ``T``, a zero seed),
  ``unknown_op``, ``busy`` (``update`` in place) -- after all of them the weights, seeds and sample count are unchanged;
* training: the model's initial weights written over the protocol, ``samples`` samples
  (bitmap, gap and mask encodings at random) in mini-batches of ``train.batch_size``: every
  reply's spike counts equal ``FixedPointSNN.train_step``'s, ``update`` after each batch
  (accumulate) or ``busy`` (in place); an ``infer``; a retry answered from the cache without
  a second training step; the final weights read back over the protocol equal the model's.
"""

from __future__ import annotations

import json
import os
import random
import struct

import cocotb
import pytest
import torch

from spikeforge.gen.config import Config
from spikeforge.host import protocol as hp
from spikeforge.model import fixedpoint as fx
from spikeforge.model.snn import FixedPointSNN, init_weights
from spikeforge.rtl.core import COUNTERS
from spikeforge.rtl.geometry import ChipGeometry
from spikeforge.sim.cocotb_utils import load_params, reset
from spikeforge.sim.hostchip_tb import HostChipTB
from spikeforge.sim.runner import build_root, lint_verilog, run_cocotb

S = hp.Status


# ------------------------------------------------------------------ cocotb side
async def check_ops(tb: HostChipTB, cfg, geo, rng, seed):
    """version, status, bulk weights, seeds, counters."""
    from spikeforge.rtl.executor import LINK_COUNTERS

    ip = cfg.hardware.wg_dataflow == "inplace"
    v = await tb.version()
    assert (v.protocol, v.max_payload, v.n_cores, v.timesteps, v.layers) == \
        (1, 2048, len(geo.cores), cfg.network.timesteps, tuple(cfg.network.layers)), f"{v} [seed={seed}]"
    sr = cfg.arithmetic.rounding == "stochastic"
    want = hp.Feature.ENC_GAPS | hp.Feature.ENC_MASKS | (0 if ip else hp.Feature.UPDATE) | (hp.Feature.STOCHASTIC if sr else 0)
    assert v.features == want, f"features {v.features!r}, expected {want!r} [seed={seed}]"
    assert await tb.status() == (0, 0, 0), f"status after reset [seed={seed}]"
    # random weights, a row per frame, read back whole and in random pieces
    sizes = cfg.network.layers
    rand = [torch.randint(-32768, 32768, (sizes[l + 1], sizes[l]),
                          generator=torch.Generator().manual_seed(seed + l)) for l in range(len(sizes) - 1)]
    await tb.write_all_weights(rand)
    got = await tb.read_all_weights()
    for l, (g, w) in enumerate(zip(got, rand)):
        assert torch.equal(g, w), f"layer {l}: weights read back differ from those written [seed={seed}]"
    assert (await tb.status())[1] & 1, f"status: weights-loaded flag not set [seed={seed}]"
    for pl in geo.cores:
        i, c0 = rng.randrange(pl.geom.n_neurons), rng.randrange(pl.geom.n_in)
        n = rng.randrange(0, pl.geom.n_in - c0 + 1)
        words = [rng.randrange(-32768, 32768) for _ in range(n)]
        await tb.write_weights(pl.core, i, c0, words)
        back = await tb.read_weights(pl.core, i, c0, n)
        assert back == words, f"core {pl.core} W[{i}, {c0}:+{n}] {back} != {words} [seed={seed}]"
        seeds = [rng.randrange(1, 1 << 32) for _ in range(pl.geom.n_neurons)]
        await tb.set_seeds(pl.core, 0, seeds)
        if not sr:
            seeds = [0] * len(seeds)        # no rng state without stochastic rounding: reads 0
        assert await tb.read_seeds(pl.core, 0, len(seeds)) == seeds, f"core {pl.core} seeds [seed={seed}]"
        f = rng.randrange(pl.geom.n_neurons)
        part = await tb.read_seeds(pl.core, f, pl.geom.n_neurons - f)
        assert part == seeds[f:], f"core {pl.core} seeds from {f} [seed={seed}]"
        ctr = await tb.read_counters(pl.core, 0, len(COUNTERS))
        assert len(ctr) == len(COUNTERS), f"core {pl.core}: {len(ctr)} counters [seed={seed}]"
    link = await tb.read_counters(hp.LINK_CORE, 0, len(LINK_COUNTERS))
    want = dict.fromkeys(LINK_COUNTERS, 0)
    want["frames"] = tb.requests
    assert dict(zip(LINK_COUNTERS, link)) == want, f"link counters {link} [seed={seed}]"
    assert await tb.read_counters(hp.LINK_CORE, 0, 1) == [tb.requests], f"frames [seed={seed}]"


def _gap_past_end(T, n_in) -> bytes:
    """A gap-coded raster whose only spike is at position T * n_in (one past the end)."""
    total = T * n_in
    nib = [15] * (total // 15) + [total % 15]
    if len(nib) % 2:
        nib.append(15)
    return bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))


async def check_errors(tb: HostChipTB, cfg, geo, rng, seed):
    """Every refusal as docs/protocol.md says; nothing changes."""
    ip = cfg.hardware.wg_dataflow == "inplace"
    T, n_in, n_out = cfg.network.timesteps, cfg.network.layers[0], cfg.network.layers[-1]
    n = len(geo.cores)
    before = await tb.read_all_weights()
    seeds_before = {pl.core: await tb.read_seeds(pl.core, 0, pl.geom.n_neurons) for pl in geo.cores}
    status_before = await tb.status()
    pl = geo.cores[rng.randrange(n)]
    k, N, ni = pl.core, pl.geom.n_neurons, pl.geom.n_in

    def words(c):
        return [rng.randrange(-32768, 32768) for _ in range(c)]

    raster = [[int(rng.random() < 0.3) for _ in range(n_in)] for _ in range(T)]
    bitmap = hp.pack_sample(raster, 0, hp.Enc.BITMAP)
    head = struct.pack("<HBBH", 0, 0, T, n_in)
    padded = bytearray(bitmap)
    if n_in % 8:
        padded[6 + (n_in + 7) // 8 - 1] |= 0x80           # a bit past n_in in row 0
    raster[rng.randrange(T)][rng.randrange(n_in)] = 1      # at least one active input
    masks = hp.pack_sample(raster, 0, hp.Enc.MASKS)
    MB = (T + 7) // 8
    act1 = bytes([1]) + bytes((n_in + 7) // 8 - 1)          # input 0 active
    zero_seeds = [rng.randrange(1, 1 << 32) for _ in range(N)]
    zero_seeds[rng.randrange(N)] = 0
    cases = [
        # bad_len: the payload's size is wrong for the op
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(k, 0, 0, words(3))[:-1], S.BAD_LEN),
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(k, 0, 0, words(2)) + b"\x01\x02", S.BAD_LEN),
        (hp.Op.WRITE_WEIGHTS, b"\x00" * 6, S.BAD_LEN),
        (hp.Op.READ_WEIGHTS, hp.pack_read_weights(k, 0, 0, 1) + b"\x00", S.BAD_LEN),
        (hp.Op.READ_WEIGHTS, hp.pack_read_weights(k, 0, 0, 1)[:-1], S.BAD_LEN),
        (hp.Op.SET_SEEDS, hp.pack_seeds(k, 0, [1, 2])[:-2], S.BAD_LEN),
        (hp.Op.READ_SEEDS, hp.pack_read_seeds(k, 0, 1) + b"\x00", S.BAD_LEN),
        (hp.Op.READ_COUNTERS, b"\x00\x00", S.BAD_LEN),
        (hp.Op.VERSION, b"\x00", S.BAD_LEN),
        (hp.Op.STATUS, b"\x01\x02", S.BAD_LEN),
        (hp.Op.UPDATE, b"\x00", S.BAD_LEN),
        (hp.Op.TRAIN, b"\x00" * 5, S.BAD_LEN),
        (hp.Op.TRAIN, bitmap[:-1], S.BAD_LEN),
        (hp.Op.INFER, bitmap + b"\x00", S.BAD_LEN),
        # bad_index: nothing written, even where part of the range is good
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(n, 0, 0, words(1)), S.BAD_INDEX),
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(0xFE, 0, 0, words(1)), S.BAD_INDEX),
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(k, N, 0, words(2)), S.BAD_INDEX),
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(k, N - 1, ni - 2, words(3)), S.BAD_INDEX),
        (hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(k, 0, 1, words(ni)), S.BAD_INDEX),
        (hp.Op.READ_WEIGHTS, hp.pack_read_weights(k, 0, ni, 1), S.BAD_INDEX),
        (hp.Op.READ_WEIGHTS, hp.pack_read_weights(n, 0, 0, 1), S.BAD_INDEX),
        (hp.Op.SET_SEEDS, hp.pack_seeds(k, N - 1, [5, 6]), S.BAD_INDEX),
        (hp.Op.SET_SEEDS, hp.pack_seeds(n, 0, [5]), S.BAD_INDEX),
        (hp.Op.READ_SEEDS, hp.pack_read_seeds(k, N, 1), S.BAD_INDEX),
        (hp.Op.READ_COUNTERS, hp.pack_read_counters(n, 0, 1), S.BAD_INDEX),
        (hp.Op.READ_COUNTERS, hp.pack_read_counters(k, len(COUNTERS) - 1, 2), S.BAD_INDEX),
        (hp.Op.READ_COUNTERS, hp.pack_read_counters(hp.LINK_CORE, 8, 2), S.BAD_INDEX),
        # bad_arg: T, n_in, encodings, labels, malformed rasters, a zero seed
        (hp.Op.TRAIN, struct.pack("<HBBH", 0, 0, T + 1, n_in) + bytes((T + 1) * ((n_in + 7) // 8)), S.BAD_ARG),
        (hp.Op.TRAIN, struct.pack("<HBBH", 0, 1, T, n_in + 1), S.BAD_ARG),
        (hp.Op.INFER, struct.pack("<HBBH", hp.NO_LABEL, 1, T - 1, n_in), S.BAD_ARG),
        (hp.Op.TRAIN, masks[:-1], S.BAD_LEN),                        # a mask byte short
        (hp.Op.INFER, masks + b"\x01", S.BAD_LEN),                   # a byte past the last mask
        (hp.Op.TRAIN, head[:2] + b"\x02" + head[3:], S.BAD_LEN),      # no active bitmap
        (hp.Op.TRAIN, head[:2] + b"\x02" + head[3:] + act1 + bytes(MB), S.BAD_ARG),    # empty mask
        (hp.Op.TRAIN, struct.pack("<HBBH", 0, 3, T, n_in), S.BAD_ARG),
        (hp.Op.TRAIN, hp.pack_sample(raster, n_out, hp.Enc.GAPS), S.BAD_ARG),
        (hp.Op.TRAIN, hp.pack_sample(raster, hp.NO_LABEL, hp.Enc.BITMAP), S.BAD_ARG),
        (hp.Op.TRAIN, head[:2] + b"\x01" + head[3:] + _gap_past_end(T, n_in), S.BAD_ARG),
        (hp.Op.INFER, hp.pack_sample(raster, hp.NO_LABEL, hp.Enc.GAPS)[:6] + hp.encode_spikes(raster, hp.Enc.GAPS)
         + _gap_past_end(T, n_in), S.BAD_ARG),
        (hp.Op.SET_SEEDS, hp.pack_seeds(k, 0, zero_seeds), S.BAD_ARG),
        # unknown ops
        (0x03, b"", S.UNKNOWN_OP), (0x14, bytes(7), S.UNKNOWN_OP), (0x23, b"\x01", S.UNKNOWN_OP),
        (0xFF, bytes(rng.randrange(256) for _ in range(20)), S.UNKNOWN_OP),
        # update: the in-place dataflow has none
        (hp.Op.UPDATE, b"", S.BUSY if ip else S.OK),
    ]
    if T % 8:           # a timestep mask bit at t = T
        cases.append((hp.Op.TRAIN, head[:2] + b"\x02" + head[3:] + act1 + (1 << T).to_bytes(MB, "little"),
                      S.BAD_ARG))
    if n_in % 8:
        cases.append((hp.Op.TRAIN, bytes(padded), S.BAD_ARG))
        pad_act = bytearray(act1)
        pad_act[-1] |= 0x80                                     # an active bit past n_in
        cases.append((hp.Op.TRAIN, head[:2] + b"\x02" + head[3:] + bytes(pad_act) + b"\x01" * 2 * MB,
                      S.BAD_ARG))
    rng.shuffle(cases)
    for op, payload, want in cases:
        what = (f"{hp.Op(op).name if op in {int(o) for o in hp.Op} else hex(op)}"
                f"({payload[:12].hex()}) -> {want.name}")
        await tb.request(op, payload, expect=want, what=what)
        assert want == S.OK or not tb.events, f"{what}: events reached the chip: {tb.events} [seed={seed}]"
    after = await tb.read_all_weights()
    for l, (a, b) in enumerate(zip(after, before)):
        assert torch.equal(a, b), (f"layer {l}: weights changed by refused requests at "
                                   f"{torch.nonzero(a != b).tolist()[:4]} [seed={seed}]")
    for pl in geo.cores:
        got = await tb.read_seeds(pl.core, 0, pl.geom.n_neurons)
        assert got == seeds_before[pl.core], f"core {pl.core}: seeds changed by refused requests [seed={seed}]"
    assert await tb.status() == status_before, f"status changed by refused requests [seed={seed}]"


def check_events(tb, x, what, seed):
    """The events the executor handed the chip are the raster's, in t order, then end."""
    want = [(t, j) for t in range(x.shape[0]) for j in torch.nonzero(x[t]).flatten().tolist()]
    want.append("end")
    assert tb.events == want, f"{what}: events into the chip {tb.events}, raster {want} [seed={seed}]"


async def check_training(tb: HostChipTB, cfg, geo, rng, seed, samples, density):
    """Train over the protocol, bit-exact against the model; returns cycles per sample."""
    ip = cfg.hardware.wg_dataflow == "inplace"
    T, n_in, n_out = cfg.network.timesteps, cfg.network.layers[0], cfg.network.layers[-1]
    # the model's initial weights, doubled: these tiny layers then spike in most samples
    w0 = [fx.sat(2 * w, cfg.arithmetic.weight_bits) for w in init_weights(cfg, torch.Generator().manual_seed(seed))]
    model = FixedPointSNN(cfg, weights=[w.clone() for w in w0])
    await tb.write_all_weights(w0)
    if cfg.arithmetic.rounding == "stochastic":
        # the model's per-neuron xorshift states, over the protocol
        for pl in geo.cores:
            sd = fx.neuron_seeds(cfg.arithmetic.lfsr_seed, pl.layer, cfg.network.layers[pl.layer + 1])
            await tb.set_seeds(pl.core, 0, [int(v) for v in sd[pl.offset:pl.offset + pl.geom.n_neurons]])
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(samples, T, n_in, generator=g) < density).to(torch.int64)
    labels = torch.randint(0, n_out, (samples,), generator=g)
    B = cfg.train.batch_size
    cycles, encs, nonzero = [], [], 0
    _, _, s0 = await tb.status()
    for b0 in range(0, samples, B):
        xb, yb = x[b0:b0 + B], labels[b0:b0 + B]
        traces = model.train_step(xb, yb)
        for s in range(len(xb)):
            enc = list(hp.Enc)[(b0 + s + seed) % 3]        # every encoding in every run
            encs.append(enc.name)
            got = await tb.train(xb[s].tolist(), int(yb[s]), enc)
            cycles.append(tb.last_cycles)
            check_events(tb, xb[s], f"sample {b0 + s} ({enc.name})", seed)
            want = [int(c) for c in traces[-1].count[s]]
            nonzero += sum(want) > 0
            assert got == want, (f"sample {b0 + s} ({enc.name}, label {int(yb[s])}): spike counts "
                                 f"{got}, model {want} [seed={seed}]")
        await tb.update(expect=S.BUSY if ip else S.OK)
    assert nonzero, f"no output spike in any sample: the count check is vacuous [seed={seed}]"
    # one more sample, then its retry: answered from the reply cache, not trained again
    traces = model.train_step(x[-1:], labels[-1:])
    want = [int(c) for c in traces[-1].count[0]]
    got = await tb.train(x[-1].tolist(), int(labels[-1]))
    assert got == want, f"extra sample: counts {got}, model {want} [seed={seed}]"
    frame = await tb.retry()
    assert (frame.code, list(frame.payload)) == (S.OK, want), f"retry answered {frame} [seed={seed}]"
    st = await tb.status()
    assert st[2] == s0 + samples + 1, f"status: {st[2]} samples, {samples + 1} trained [seed={seed}]"
    await tb.update(expect=S.BUSY if ip else S.OK)
    # inference does not change the weights
    xi = (torch.rand(1, T, n_in, generator=g) < density).to(torch.int64)
    got = await tb.infer(xi[0].tolist())
    check_events(tb, xi[0], "infer", seed)
    want = [int(c) for c in model.forward(xi)[-1].count[0]]
    assert got == want, f"infer: counts {got}, model {want} [seed={seed}]"
    final = await tb.read_all_weights()
    for l, (a, b) in enumerate(zip(final, model.weights)):
        diff = torch.nonzero(a != b).tolist()
        assert not diff, (f"layer {l}: {len(diff)} weights differ from the model after training, "
                          f"e.g. W{diff[0]} = {int(a[tuple(diff[0])])}, model {int(b[tuple(diff[0])])} "
                          f"[seed={seed}]")
    changed = sum(int((a != b).sum()) for a, b in zip(final, w0))
    tb.dut._log.info(f"{nonzero} of {samples} samples with output spikes; {changed} weights changed")
    return cycles, encs


@cocotb.test()
async def executor(dut):
    p = load_params()
    cfg, seed = p.config, int(p.raw["seed"])
    geo = ChipGeometry.from_config(cfg)
    dut._log.info(f"seed {seed}")
    await reset(dut)
    tb = HostChipTB(dut, cfg, geo, seed)
    tb.start()
    rng = random.Random(seed)
    await check_ops(tb, cfg, geo, rng, seed)
    await check_errors(tb, cfg, geo, rng, seed)
    cycles, encs = await check_training(tb, cfg, geo, rng, seed, int(p.raw["samples"]),
                                        float(p.raw["density"]))
    dut._log.info(f"cycles per training sample through the protocol: {cycles} ({encs})")
    if p.raw.get("report_file"):
        with open(p.raw["report_file"], "w") as f:
            json.dump({"cycles_per_sample": cycles, "encodings": encs, "sim_cycles": tb.cycle}, f)


# ------------------------------------------------------------------ pytest side
def _cfg(dataflow):
    """The 2-core 12-6-4 chip; the in-place one with stochastic rounding (seeds matter)."""
    return Config().replace(
        network={"layers": [12, 6, 4], "timesteps": 4},
        hardware={"cores": 2, "lanes": 1, "max_neurons": 8, "max_inputs": 12, "wg_dataflow": dataflow},
        train={"batch_size": 2 if dataflow == "accumulate" else 1},
        arithmetic={"rounding": "nearest" if dataflow == "accumulate" else "stochastic"})


def _seed():
    return int(os.environ.get("SPIKEFORGE_SEED", random.randrange(1 << 30)))


CHIPS = {
    "accumulate": _cfg("accumulate"),
    "inplace": _cfg("inplace"),
    # 5 cores, two of them output cores (labels and counts span cores), P = 2, T = 10
    # (two-byte timestep masks)
    "5c-acc-P2-T10": _cfg("accumulate").replace(network={"layers": [12, 12, 8], "timesteps": 10},
                                            hardware={"cores": 5, "lanes": 2, "max_neurons": 4}),
}


@pytest.mark.parametrize("chip", list(CHIPS))
def test_executor(chip, tmp_path):
    from spikeforge.rtl.top import HostChip

    cfg = CHIPS[chip]
    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat)")
    report = tmp_path / "report.json"
    run_cocotb(name="hostchip", component=lambda: HostChip(cfg), test_module=__name__,
               testcase="executor", cfg=cfg,
               params={"seed": seed, "samples": 8, "density": 0.4, "report_file": str(report)})
    print(json.loads(report.read_text()))


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "board"])
def test_hostchip_lint(debug):
    """HostChip lints clean (12-12-4 on 3 cores: the 2-core chip's ErrorSource has a
    zero-width ``nxt`` with one core below, a warning of rtl/chip.py, not of this part)."""
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.rtl.top import HostChip

    cfg = _cfg("accumulate").replace(network={"layers": [12, 12, 4]}, hardware={"cores": 3})
    vfile = build_root() / "lint" / f"hostchip-12-12-4-{'debug' if debug else 'board'}.v"
    write_verilog(HostChip(cfg, debug=debug), vfile, name="hostchip")
    lint_verilog(vfile, "hostchip")


@pytest.mark.parametrize("dataflow", ["accumulate", "inplace"])
def test_executor_lint(dataflow):
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.rtl.executor import Executor

    vfile = build_root() / "lint" / f"executor-12-6-4-{dataflow}.v"
    write_verilog(Executor(_cfg(dataflow)), vfile, name="executor")
    lint_verilog(vfile, "executor")


def test_version_payload():
    """The ``version`` ROM is the reference codec's encoding of the chip's parameters."""
    from spikeforge.rtl.executor import version_bytes

    for df in ("accumulate", "inplace"):
        cfg = _cfg(df)
        v = hp.unpack_version(version_bytes(cfg, ChipGeometry.from_config(cfg), 2048))
        assert v.layers == (12, 6, 4) and v.n_cores == 2 and v.timesteps == 4
        assert bool(v.features & hp.Feature.UPDATE) == (df == "accumulate")
        assert v.features & hp.Feature.ENC_MASKS and v.features & hp.Feature.ENC_GAPS
