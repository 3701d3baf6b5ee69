"""Verification library of the chip behind its host link (rtl/top.py ``HostChip``): a host
that speaks the protocol of docs/protocol.md to the simulated chip, byte for byte.

* :class:`HostChipTB`: frames encoded with ``spikeforge.host.protocol`` pushed into ``rx``
  (one byte per cycle), replies collected from ``tx`` in the background (the collector
  wakes on ``tx.valid`` only, so a long ``train`` costs no Python per idle cycle), split and
  decoded with the same codec; one method per op (``write_weights``, ``train``, ...), and
  whole-chip helpers on top (:meth:`HostChipTB.write_all_weights`, :meth:`read_all_weights`).
* :func:`layer_rows`: the (core, local row, layer row) of every neuron (from ``ChipGeometry``).
"""

from __future__ import annotations

import struct

import cocotb
import torch
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, RisingEdge
from cocotb.utils import get_sim_time

from ..host import protocol as hp
from ..rtl.geometry import ChipGeometry
from .cocotb_utils import CLOCK_PERIOD_NS

__all__ = ["HostChipTB", "ProtocolError", "layer_rows"]


class ProtocolError(AssertionError):
    """A reply with an unexpected status (``status`` holds it)."""

    def __init__(self, msg, status):
        super().__init__(msg)
        self.status = status


def layer_rows(geo: ChipGeometry, layer: int):
    """``(core, local row, layer row)`` of every neuron of weight layer ``layer``."""
    return [(pl.core, i, pl.offset + i) for pl in geo.layer_cores(layer)
            for i in range(pl.geom.n_neurons)]


class HostChipTB:
    """A protocol host for a simulated ``HostChip`` (see the module doc). ``seed`` goes into
    every failure message."""

    def __init__(self, dut, cfg, geo: ChipGeometry, seed: int = 0, timeout: int = 2_000_000):
        self.dut, self.cfg, self.geo, self.seed = dut, cfg, geo, seed
        self.timeout = timeout                 # cycles to wait for a reply
        self.seq = 0
        self.frames: list[hp.Frame] = []       # decoded replies, oldest first
        self.bad_frames: list[tuple[str, bytes]] = []
        self._got = Event()
        self._split = hp.FrameSplitter()
        self.requests = 0                      # good requests sent (the link's ``frames``)
        self.last_cycles = 0                   # cycles of the last request, first byte to reply
        #: the input events the executor handed the chip during the last request
        #: (``mon_host_ev``): ``(t, j)`` per event, ``"end"`` for the end item
        self.events: list = []
        self._watching = False

    @property
    def cycle(self) -> int:
        return int(get_sim_time("ns") // CLOCK_PERIOD_NS)

    def start(self):
        d = self.dut
        d.rx__valid.value = 0
        d.tx__ready.value = 1
        d.uart_frame_errors.value = 0
        d.uart_overruns.value = 0
        cocotb.start_soon(self._collect())
        self._has_ev_mon = hasattr(self.dut, "mon_host_ev")

    async def _watch_events(self):
        from ..rtl.chip import chip_event_layout
        from .cocotb_utils import decode
        from amaranth.lib import data

        lay = data.StructLayout({"valid": 1, "w": chip_event_layout(self.cfg)})
        while self._watching:
            await FallingEdge(self.dut.clk)
            v = int(self.dut.mon_host_ev.value)
            if v & 1:
                w = decode(lay, v)["w"]
                self.events.append("end" if w["end"] else (w["t"], w["j"]))

    async def _collect(self):
        d = self.dut
        while True:
            await FallingEdge(d.clk)
            if not int(d.tx__valid.value):
                await RisingEdge(d.tx__valid)
                continue
            for body in self._split.feed([int(d.tx__payload.value)]):
                try:
                    self.frames.append(hp.decode_body(body))
                except hp.FrameError as e:
                    self.bad_frames.append((str(e), body))
                self._got.set()

    async def send_bytes(self, data: bytes):
        d = self.dut
        for b in data:
            d.rx__payload.value = b
            d.rx__valid.value = 1
            await RisingEdge(d.clk)
        d.rx__valid.value = 0

    # ------------------------------------------------------------------ one request
    async def request(self, op: int, payload: bytes = b"", *, expect=hp.Status.OK,
                      what: str = "") -> bytes:
        """Send one request, wait for its reply; check its seq and status (``expect``:
        a status, or None for any) and return its payload."""
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        name = what or (hp.Op(op).name if op in {int(o) for o in hp.Op} else f"op {op:#x}")
        c0 = self.cycle
        self.frames.clear()
        self._got.clear()
        self.last_frame = (seq, op, payload)
        self.events = []
        if self._has_ev_mon:
            self._watching = True
            watcher = cocotb.start_soon(self._watch_events())
        await self.send_bytes(hp.encode_frame(seq, op, payload))
        self.requests += 1
        while not self.frames and not self.bad_frames:
            await First(self._got.wait(), ClockCycles(self.dut.clk, self.timeout))
            if not self._got.is_set():
                raise AssertionError(f"{name}: no reply after {self.timeout} cycles "
                                     f"[seed={self.seed}, cycle={self.cycle}]")
            self._got.clear()
        if self._has_ev_mon:
            self._watching = False
            await watcher
        self.last_cycles = self.cycle - c0
        assert not self.bad_frames, f"{name}: undecodable reply {self.bad_frames[0]} [seed={self.seed}]"
        f = self.frames.pop(0)
        assert f.seq == seq, f"{name}: reply seq {f.seq}, request seq {seq} [seed={self.seed}]"
        if expect is not None and f.code != int(expect):
            raise ProtocolError(f"{name}: status {hp.Status(f.code).name if f.code < 8 else f.code}, "
                                f"expected {hp.Status(expect).name} (payload {payload[:16].hex()}...) "
                                f"[seed={self.seed}, cycle={self.cycle}]", f.code)
        if f.code != hp.Status.OK:
            assert f.payload == b"", f"{name}: error reply with a payload [seed={self.seed}]"
        return f.payload

    async def retry(self) -> hp.Frame:
        """The last request again, byte for byte, after a leading delimiter (a host's
        retry); returns the reply frame (the device's cached one)."""
        seq, op, payload = self.last_frame
        self.frames.clear()
        self._got.clear()
        await self.send_bytes(hp.encode_frame(seq, op, payload, lead=True))
        while not self.frames:
            await First(self._got.wait(), ClockCycles(self.dut.clk, self.timeout))
            assert self._got.is_set(), f"retry: no reply [seed={self.seed}, cycle={self.cycle}]"
            self._got.clear()
        return self.frames.pop(0)

    # ------------------------------------------------------------------ the ops
    async def version(self) -> hp.Version:
        return hp.unpack_version(await self.request(hp.Op.VERSION))

    async def status(self) -> tuple[int, int, int]:
        """(state, flags, samples)."""
        return struct.unpack("<BBI", await self.request(hp.Op.STATUS))

    async def read_counters(self, core: int, first: int, count: int, **kw) -> list[int]:
        return hp.unpack_counters(await self.request(hp.Op.READ_COUNTERS,
                                                     hp.pack_read_counters(core, first, count), **kw))

    async def write_weights(self, core, row, col, words, **kw):
        await self.request(hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(core, row, col, words), **kw)

    async def read_weights(self, core, row, col, count, **kw) -> list[int]:
        return hp.unpack_weights(await self.request(hp.Op.READ_WEIGHTS,
                                                    hp.pack_read_weights(core, row, col, count), **kw))

    async def set_seeds(self, core, first, seeds, **kw):
        await self.request(hp.Op.SET_SEEDS, hp.pack_seeds(core, first, seeds), **kw)

    async def read_seeds(self, core, first, count, **kw) -> list[int]:
        data = await self.request(hp.Op.READ_SEEDS, hp.pack_read_seeds(core, first, count), **kw)
        return list(struct.unpack(f"<{len(data) // 4}I", data))

    async def train(self, raster, label: int, enc=None, **kw) -> list[int]:
        """One sample (``raster``: T rows of n_in 0/1; ``enc`` None: the shortest encoding);
        the output layer's spike counts."""
        return list(await self.request(hp.Op.TRAIN, hp.pack_sample(raster, label, enc), **kw))

    async def infer(self, raster, enc=None, **kw) -> list[int]:
        return list(await self.request(hp.Op.INFER, hp.pack_sample(raster, hp.NO_LABEL, enc), **kw))

    async def update(self, **kw):
        await self.request(hp.Op.UPDATE, **kw)

    # ------------------------------------------------------------------ whole chip
    async def write_all_weights(self, weights):
        """Every layer's ``(n_out, n_in)`` integer weights, one frame per neuron row."""
        for l, w in enumerate(weights):
            for core, i, row in layer_rows(self.geo, l):
                await self.write_weights(core, i, 0, [int(v) for v in w[row]])

    async def read_all_weights(self) -> list[torch.Tensor]:
        sizes = self.cfg.network.layers
        out = []
        for l in range(len(sizes) - 1):
            w = torch.zeros(sizes[l + 1], sizes[l], dtype=torch.int64)
            for core, i, row in layer_rows(self.geo, l):
                w[row] = torch.tensor(await self.read_weights(core, i, 0, sizes[l]))
            out.append(w)
        return out
