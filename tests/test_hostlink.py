"""The framing layer (rtl/hostlink.py HostLink) in Verilator against the Python codec.

The testbench plays host and chip: it sends byte streams into ``rx`` (random gaps),
executes every request that comes out on ``cmd``/``cmd_data`` with a fixed function of its
payload, answers on ``rsp``/``rsp_data`` and collects ``tx`` (random back-pressure on every
stream). A reference of the device's documented behaviour (docs/protocol.md), built on
``spikeforge.host.protocol`` (itself tested against the ``cobs``/``crc`` packages in
tests/test_protocol.py), says for every byte it sends what must come out: which requests
are delivered (seq, op, payload, ``last`` on the final byte), which replies appear on
``tx`` (byte for byte ``protocol.encode_reply``), which are replays, and the counters.

* ``round_trip``: random valid frames (payloads 0 .. max with zero runs and 254+ byte
  non-zero runs, to hit every COBS block case), retries replayed, replies over
  ``max_reply`` replaced by ``too_long``, an executor that replies without reading its
  payload (the buffer is released);
* ``timeout``: a partial frame kept for ``timeout - 1`` idle cycles completes, one idle for
  ``timeout`` cycles is abandoned and the next frame decodes without a leading delimiter;
* ``busy``: a new frame and a retry that arrive while a reply is pending are dropped; the
  retry after the reply is replayed; ``held``: a frame that starts while the payload
  buffer is still being read is dropped even if it ends after the buffer was released;
* ``serial``: the same from the pins (SerialHostLink, 25 MHz, 3 Mbaud): frames bit-banged
  into ``rx`` (some bytes with a low stop bit, which the UART drops), replies read from
  ``tx`` by cocotbext-uart; valid frames, retries and malformed units;
* ``fuzz``: >= 10,000 malformed units (bad CRC, truncations with and without delimiter,
  oversize, wrong length, garbage, random bytes, dropped / inserted bytes, bit flips,
  abandoned partial frames) between valid frames, all checked as above, no hang (each
  wait has a cycle limit), the counters equal to the reference's at the end.
"""

from __future__ import annotations

import os
import random
import struct

import cocotb
import pytest
from cobs import cobs
from cocotb.triggers import FallingEdge, Timer

from spikeforge.host import protocol as P
from spikeforge.rtl.hostlink import STATS, HostLink
from spikeforge.sim.cocotb_utils import check, load_params, reset
from spikeforge.sim.runner import run_cocotb

OP_NO_READ = 0xEE      # the executor answers unknown_op without reading the payload
OP_TOO_LONG = 0xFD     # the executor answers with max_reply + 5 bytes


def execute(seq, op, payload, max_reply):
    """The testbench chip: (status, reply payload) for a request; also what it sends."""
    if op == OP_NO_READ:
        return P.Status.UNKNOWN_OP, b""
    if op == OP_TOO_LONG:
        return P.Status.OK, bytes(range(256)) * ((max_reply + 5) // 256 + 1)
    body = bytes(((x * 3 + op) & 0xFF) for x in payload) + bytes([op, seq])
    return P.Status.OK, body[:max_reply]


def expected_reply(seq, op, payload, max_reply):
    status, body = execute(seq, op, payload, max_reply)
    if len(body) > max_reply:
        return P.encode_reply(seq, P.Status.TOO_LONG)
    return P.encode_reply(seq, status, body)


class Reference:
    """The device's framing behaviour (docs/protocol.md) on the bytes the testbench sent."""

    def __init__(self, max_payload, max_reply, timeout):
        self.mp, self.mr, self.timeout = max_payload, max_reply, timeout
        self.buf = bytearray()
        self.last_byte_cycle = None
        self.last_key = None
        self.last_reply = None
        self.stats = dict.fromkeys(STATS, 0)
        self.deliveries, self.replies = [], []      # expected, in order

    def byte(self, b, cycle):
        if self.buf and cycle - self.last_byte_cycle - 1 >= self.timeout:
            self.stats["timeouts"] += 1
            self.buf.clear()
        self.last_byte_cycle = cycle
        if b:
            self.buf.append(b)
            return
        if self.buf:
            self._frame(bytes(self.buf))
        self.buf.clear()

    def idle_check(self, cycle):
        if self.buf and cycle - self.last_byte_cycle - 1 >= self.timeout:
            self.stats["timeouts"] += 1
            self.buf.clear()

    def _frame(self, stuffed):
        try:
            f = P.decode_body(stuffed, self.mp)
            kind = "ok"
        except P.FrameError as e:
            kind = e.kind
            if kind in ("cobs", "runt"):
                self.stats["malformed"] += 1
                return
            if kind == "crc":
                self.stats["crc_errors"] += 1
                return
        body = cobs.decode(stuffed)
        key = (body[0], body[-2:])
        if key == self.last_key:
            self.stats["replays"] += 1
            self.replies.append(self.last_reply)
            return
        self.last_key = key
        if kind == "too_long":
            reply = P.encode_reply(body[0], P.Status.TOO_LONG)
            self.stats["err_replies"] += 1
        elif kind == "bad_len":
            reply = P.encode_reply(body[0], P.Status.BAD_LEN)
            self.stats["err_replies"] += 1
        else:
            self.stats["frames"] += 1
            self.deliveries.append((f.seq, f.code, b"" if f.code == OP_NO_READ else f.payload))
            reply = expected_reply(f.seq, f.code, f.payload, self.mr)
        self.last_reply = reply
        self.replies.append(reply)


class Bench:
    """One loop per falling edge drives and samples every stream (see the module docstring)."""

    def __init__(self, dut, p, rng):
        self.dut, self.p, self.rng = dut, p, rng
        self.mp, self.mr = p.max_payload, p.max_reply
        self.ref = Reference(p.max_payload, p.max_reply, p.timeout)
        self.cycle = 0
        self.tx_q = []                  # (byte, min cycle) to send
        self.got_deliveries, self.got_replies = [], []
        self.tx_frame = bytearray()
        self.exec_state = "idle"
        self.hdr = None
        self.payload = bytearray()
        self.reply_hdr = None
        self.reply_bytes = []
        self.hold_reply = 0             # cycles to wait before answering (busy test)
        self.stall_read = 0             # cycles to wait before reading the payload (held test)
        self.ready_p = 0.7
        self.gap_p = 0.2
        self.seed = p.seed
        self.serial = False
        self.sink = None

    # ----------------------------------------------------------------- the cycle loop
    async def step(self):
        d, rng = self.dut, self.rng
        await FallingEdge(d.clk)
        self.cycle += 1
        # host -> rx (serial: the bit driver sends tx_q)
        if self.serial:
            pass
        elif self.tx_q and self.tx_q[0][1] <= self.cycle and rng.random() >= self.gap_p:
            b = self.tx_q.pop(0)[0]
            d.rx__valid.value = 1
            d.rx__payload.value = b
            self.ref.byte(b, self.cycle)
        else:
            d.rx__valid.value = 0
        # cmd / cmd_data -> the executor
        r = int(rng.random() < self.ready_p)
        d.cmd__ready.value = r
        if r and int(d.cmd__valid.value):
            v = int(d.cmd__payload.value)
            check(self.exec_state == "idle", "cmd while the executor is busy", seed=self.seed,
                  cycle=self.cycle)
            self.hdr = (v & 0xFF, (v >> 8) & 0xFF, v >> 16)
            self.payload = bytearray()
            self.exec_state = "read" if self.hdr[2] and self.hdr[1] != OP_NO_READ else "reply"
            if self.exec_state == "reply":
                self._make_reply()
        stall = self.exec_state == "read" and self.stall_read > 0
        if stall:
            self.stall_read -= 1
        r = int(rng.random() < self.ready_p and self.exec_state == "read" and not stall)
        d.cmd_data__ready.value = r
        if r and int(d.cmd_data__valid.value):
            v = int(d.cmd_data__payload.value)
            check(self.exec_state == "read", "cmd_data byte outside a request", seed=self.seed,
                  cycle=self.cycle)
            self.payload.append(v & 0xFF)
            last = len(self.payload) == self.hdr[2]
            check(bool(v >> 8) == last, "cmd_data.last", seed=self.seed, cycle=self.cycle,
                  n=len(self.payload), len=self.hdr[2])
            if last:
                self.exec_state = "reply"
                self._make_reply()
        # executor -> rsp / rsp_data
        if self.exec_state == "reply" and self.hold_reply > 0:
            self.hold_reply -= 1
            d.rsp__valid.value = 0
        elif self.exec_state == "reply" and self.reply_hdr is not None:
            d.rsp__valid.value = 1
            d.rsp__payload.value = self.reply_hdr
            if int(d.rsp__ready.value):
                self.reply_hdr = None
                if not self.reply_bytes:
                    self.exec_state = "idle"
        else:
            d.rsp__valid.value = 0
        if self.exec_state == "reply" and self.reply_hdr is None and self.reply_bytes \
                and rng.random() < self.ready_p:
            d.rsp_data__valid.value = 1
            d.rsp_data__payload.value = self.reply_bytes[0]
            if int(d.rsp_data__ready.value):
                self.reply_bytes.pop(0)
                if not self.reply_bytes:
                    self.exec_state = "idle"
        else:
            d.rsp_data__valid.value = 0
        # tx -> host (serial: the UART sink)
        if self.serial:
            for b in self.sink.read_nowait():
                self._tx_byte(b)
            return
        r = int(rng.random() < self.ready_p)
        d.tx__ready.value = r
        if r and int(d.tx__valid.value):
            self._tx_byte(int(d.tx__payload.value))

    def _tx_byte(self, b):
        self.tx_frame.append(b)
        if b == 0:
            self.got_replies.append(bytes(self.tx_frame))
            self.tx_frame.clear()

    def _make_reply(self):
        seq, op, _ = self.hdr
        self.got_deliveries.append((seq, op, bytes(self.payload)))
        status, body = execute(seq, op, bytes(self.payload), self.mr)
        self.reply_hdr = seq | (int(status) << 8) | (len(body) << 16)
        self.reply_bytes = list(body)

    # ----------------------------------------------------------------- helpers
    def send(self, data, after=0):
        start = self.cycle + after
        self.tx_q.extend((b, start) for b in data)

    async def drain(self, limit=50_000, what=""):
        """Run until everything sent is consumed and every expected reply arrived."""
        for _ in range(limit):
            if not self.tx_q and len(self.got_replies) >= len(self.ref.replies) \
                    and self.exec_state == "idle" and not self.tx_frame:
                break
            await self.step()
        else:
            raise AssertionError(f"no progress after {limit} cycles ({what}): seed {self.seed}, "
                                 f"cycle {self.cycle}, {len(self.tx_q)} bytes unsent, "
                                 f"{len(self.got_replies)}/{len(self.ref.replies)} replies")
        for _ in range(2):                  # a reply we did not expect would show up now
            await self.step()
        self.compare(what)

    async def idle(self, cycles):
        for _ in range(cycles):
            await self.step()
        self.ref.idle_check(self.cycle)

    def compare(self, what=""):
        ref = self.ref
        check(self.got_deliveries == ref.deliveries, "delivered requests", seed=self.seed,
              what=what, cycle=self.cycle,
              got=self.got_deliveries[-3:], want=ref.deliveries[-3:])
        check(self.got_replies == ref.replies, "replies on tx", seed=self.seed, what=what,
              cycle=self.cycle, got=[r.hex() for r in self.got_replies[-3:]],
              want=[r.hex() for r in ref.replies[-3:]])
        for r in self.got_replies[-3:]:
            P.decode_body(r[:-1], self.mr)        # every frame on tx is a good frame

    def check_stats(self, what=""):
        v = int(self.dut.stats.value)
        bits = self.p.counter_bits
        got = {n: (v >> (bits * i)) & ((1 << bits) - 1) for i, n in enumerate(STATS)}
        check(got == self.ref.stats, "link counters", seed=self.seed, what=what, got=got,
              want=self.ref.stats)


async def _start(dut):
    p = load_params()
    dut._log.info(f"seed {p.seed}")
    for s in ("rx__valid", "cmd__ready", "cmd_data__ready", "rsp__valid", "rsp_data__valid",
              "tx__ready"):
        getattr(dut, s).value = 0
    await reset(dut)
    return p, Bench(dut, p, random.Random(p.seed))


def _payload(rng, n):
    kind = rng.random()
    if kind < 0.2:
        return bytes(rng.choice([0, 0, 0, rng.randrange(256)]) for _ in range(n))
    if kind < 0.4:
        return bytes(rng.randrange(1, 256) for _ in range(n))          # long non-zero runs
    return bytes(rng.randrange(256) for _ in range(n))


@cocotb.test()
async def round_trip(dut):
    p, tb = await _start(dut)
    rng = tb.rng
    seq = 0
    sizes = [0, 1, 2, 247, 248, 249, 250, 251, 252, 253, 254, 255, 507, 508, p.max_payload]
    for i in range(p.n_frames):
        n = sizes[i] if i < len(sizes) else rng.choice([rng.randrange(16), rng.randrange(p.max_payload + 1)])
        seq = (seq + 1) & 0xFF
        op = rng.choice([rng.randrange(256), OP_NO_READ, OP_TOO_LONG]) if i % 7 == 6 else rng.randrange(0xE0)
        frame = P.encode_frame(seq, op, _payload(rng, n), lead=rng.random() < 0.5)
        tb.send(frame)
        await tb.drain(what=f"frame {i}")
        if rng.random() < 0.2:                       # a retry: the same bytes again
            tb.send(frame if frame[0] == 0 else b"\x00" + frame)
            await tb.drain(what=f"retry {i}")
    tb.check_stats("round_trip")


@cocotb.test()
async def timeout(dut):
    p, tb = await _start(dut)
    tb.gap_p = 0.0
    T = p.timeout
    for k, gap in enumerate((T - 1, T, T + 7)):
        frame = P.encode_frame(10 + k, 1, bytes([k + 1] * 5))
        tb.send(frame[:4])
        while tb.tx_q:
            await tb.step()
        await tb.idle(gap)                           # exactly ``gap`` cycles without a byte
        if gap < T:
            tb.send(frame[4:])                       # the rest: the frame completes
        else:
            tb.send(P.encode_frame(20 + k, 2, b"next"))   # no leading delimiter
        await tb.drain(what=f"gap {gap}")
    check(tb.ref.stats["timeouts"] == 2, "reference timeouts", seed=tb.seed)
    tb.check_stats("timeout")


@cocotb.test()
async def busy(dut):
    p, tb = await _start(dut)
    tb.gap_p = 0.0
    first = P.encode_frame(1, 5, b"first")
    tb.hold_reply = 400
    tb.send(first)
    for _ in range(100):                             # the request reaches the executor
        await tb.step()
    other = P.encode_frame(2, 6, b"other", lead=True)
    tb.ref.stats["busy_drops"] += 2                  # the reference knows no time: both dropped
    tb.tx_q.extend((b, 0) for b in other + b"\x00" + first)
    saved = tb.ref.byte
    tb.ref.byte = lambda b, c: None                  # these bytes are not frames to the reference
    for _ in range(80):
        await tb.step()
    tb.ref.byte = saved
    await tb.drain(what="held reply")
    tb.send(b"\x00" + first)                         # the retry after the reply: replayed
    await tb.drain(what="replay")
    check(len(tb.got_replies) == 2 and tb.got_replies[0] == tb.got_replies[1], "replay",
          seed=tb.seed)
    tb.check_stats("busy")


@cocotb.test()
async def held(dut):
    """A frame that starts while the previous request's payload is still being read (the
    buffer is held) is dropped even when it ends after the buffer was released: its
    payload bytes could not be stored."""
    p, tb = await _start(dut)
    tb.gap_p = 0.0
    a = P.encode_frame(1, 5, bytes(range(1, 7)))
    b = P.encode_frame(2, 6, bytes(range(100, 140)))
    tb.stall_read = 120                              # B's first half waits < the timeout
    tb.send(a)
    for _ in range(len(a) + 10):                    # A is delivered, its payload not read
        await tb.step()
    saved = tb.ref.byte
    tb.ref.byte = lambda x, c: None                  # the reference does not see B's halves
    tb.send(b[:20])
    while tb.tx_q:
        await tb.step()
    await tb.drain(what="A's reply")                 # the stall ends, A is answered
    tb.send(b[20:])
    while tb.tx_q:
        await tb.step()
    tb.ref.byte = saved
    tb.ref.stats["busy_drops"] += 1
    await tb.drain(what="B dropped")
    tb.send(b"\x00" + b)                            # B again: a new request, delivered
    await tb.drain(what="B again")
    check([x[0] for x in tb.got_deliveries] == [1, 2], "deliveries", seed=tb.seed,
          got=tb.got_deliveries)
    tb.check_stats("held")


# ----------------------------------------------------------------------------- fuzz
def _malformed(rng, mp, seq):
    """One malformed unit: (bytes, kind). Some have no trailing delimiter."""
    n = rng.randrange(0, 24)
    payload = _payload(rng, n)
    body = P.build_body(seq, rng.randrange(256), payload)
    wire = cobs.encode(body)
    kind = rng.choice(["bad_crc", "trunc", "trunc_open", "oversize", "bad_len", "garbage",
                       "random", "drop_byte", "insert_byte", "flip", "runt", "empty_blocks"])
    if kind == "bad_crc":
        b = bytearray(body)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return cobs.encode(bytes(b)) + b"\x00", kind
    if kind == "trunc":
        return wire[:rng.randrange(1, len(wire))] + b"\x00", kind
    if kind == "trunc_open":
        return wire[:rng.randrange(1, len(wire))], kind
    if kind == "oversize":
        if rng.random() < 0.2:                        # really longer than max_payload
            big = _payload(rng, mp + rng.randrange(1, 40))
            return cobs.encode(P.build_body(seq, 1, big)) + b"\x00", kind
        # a length field beyond max_payload (answered too_long whatever follows)
        head = struct.pack("<BBH", seq, 1, rng.randrange(mp + 1, 0x10000)) + payload
        return cobs.encode(head + P.crc16(head).to_bytes(2, "big")) + b"\x00", kind
    if kind == "bad_len":
        head = struct.pack("<BBH", seq, 1, (n + rng.choice([-3, -1, 1, 2, 100])) & 0xFFFF) + payload
        return cobs.encode(head + P.crc16(head).to_bytes(2, "big")) + b"\x00", kind
    if kind == "garbage":
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40))) + b"\x00", kind
    if kind == "random":        # no delimiter: the bytes join the next unit's frame
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60))), kind
    if kind == "drop_byte":
        i = rng.randrange(len(wire))
        return wire[:i] + wire[i + 1:] + b"\x00", kind
    if kind == "insert_byte":
        i = rng.randrange(len(wire) + 1)
        return wire[:i] + bytes([rng.randrange(1, 256)]) + wire[i:] + b"\x00", kind
    if kind == "flip":
        b = bytearray(wire + b"\x00")
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), kind
    if kind == "runt":
        return cobs.encode(body[:rng.randrange(0, 6)]) + b"\x00", kind
    return b"\x01" * rng.randrange(1, 5) + b"\x00", kind


async def _lead(tb, rng, p=0.7):
    """A host's leading delimiter, on its own: it closes whatever partial frame the device
    holds; waiting for that frame's outcome keeps the host stop-and-wait even when the
    partial frame happens to pass the CRC (1 in 65,536) and is answered."""
    if rng.random() < p:
        tb.send(b"\x00")
        await tb.drain(what="lead")


@cocotb.test()
async def fuzz(dut):
    p, tb = await _start(dut)
    rng = tb.rng
    tb.gap_p = 0.05
    tb.ready_p = 0.8
    kinds = {}
    seq, n_bad, last_valid = 0, 0, None
    while n_bad < p.n_malformed:
        r = rng.random()
        if r < 0.2:
            seq = (seq + 1) & 0xFF
            frame = P.encode_frame(seq, rng.randrange(0xE0), _payload(rng, rng.randrange(0, 24)))
            await _lead(tb, rng)
            tb.send(frame)
            last_valid = frame
        elif r < 0.23 and last_valid is not None:
            await _lead(tb, rng, 1.0)
            tb.send(last_valid)                           # a retry
        elif r < 0.235:
            partial, kind = _malformed(rng, p.max_payload, seq)[0][:8] or b"\x05", "timeout"
            tb.send(partial.replace(b"\x00", b"\x07"))
            await tb.drain(what="timeout unit")
            await tb.idle(p.timeout + rng.randrange(3))
            kinds[kind] = kinds.get(kind, 0) + 1
            n_bad += 1
            continue
        else:
            unit, kind = _malformed(rng, p.max_payload, seq)
            tb.send(unit)
            kinds[kind] = kinds.get(kind, 0) + 1
            n_bad += 1
            if kind in ("trunc_open", "random"):
                continue                              # the next unit's bytes join it
        await tb.drain(what=f"unit {n_bad}")
    tb.send(b"\x00")
    await tb.drain(what="end")
    # the link still works: valid frames of every size decode and are answered
    for k in range(5):
        seq = (seq + 1) & 0xFF
        tb.send(P.encode_frame(seq, 3, _payload(rng, rng.randrange(p.max_payload + 1))))
        await tb.drain(what=f"after fuzz {k}")
    tb.check_stats("fuzz")
    dut._log.info(f"fuzz: {n_bad} malformed units {kinds}; {tb.ref.stats}; {tb.cycle} cycles")
    check(tb.ref.stats["frames"] > p.n_malformed // 10, "valid frames between the malformed ones",
          seed=tb.seed)


# ----------------------------------------------------------------------------- serial
BAD_STOP = 0x100       # a tx_q byte sent with its stop bit low: the UART drops it


async def _serial_sender(tb, bit_ps):
    """Bit-bangs ``tb.tx_q`` onto the ``rx`` pin (8N1); the reference sees each byte when
    its stop bit is out, bytes sent with a low stop bit not at all."""
    d = tb.dut
    while True:
        if not tb.tx_q:
            tb.sending = False
            await FallingEdge(d.clk)
            continue
        tb.sending = True
        v = tb.tx_q.pop(0)[0]
        b, bad = v & 0xFF, bool(v & BAD_STOP)
        for bit in [0] + [(b >> k) & 1 for k in range(8)] + [0 if bad else 1]:
            d.rx.value = bit
            await Timer(bit_ps, "ps")
        d.rx.value = 1
        if bad:
            await Timer(bit_ps, "ps")             # high again before the next start bit
        else:
            tb.ref.byte(b, 0)


def _serial_unit(rng, mp, seq):
    """A unit for the serial test: always ends with a delimiter (no partial frame waits
    while replies come, so the link's timeout never fires)."""
    n = rng.randrange(0, 16)
    payload = _payload(rng, n)
    wire = cobs.encode(P.build_body(seq, rng.randrange(0xE0), payload)) + b"\x00"
    kind = rng.choice(["uart_frame_error", "bad_crc", "trunc", "garbage", "drop_byte",
                       "insert_byte", "flip", "bad_len", "oversize"])
    if kind == "uart_frame_error":              # one byte of a good frame lost in the UART
        units = list(wire)
        i = rng.randrange(len(units) - 1)
        units[i] |= BAD_STOP
        return units, kind
    for _ in range(100):
        unit, k = _malformed(rng, mp, seq)
        if k == kind or (kind == "oversize" and k == "oversize" and len(unit) < 80):
            if unit.endswith(b"\x00") and len(unit) < 80:
                return list(unit), kind
    return list(wire[:3] + b"\x00"), "trunc"


@cocotb.test()
async def serial(dut):
    """SerialHostLink from the pins: frames bit-banged at 3 Mbaud into ``rx``, replies read
    from ``tx`` by cocotbext-uart's UartSink, malformed units and UART framing errors."""
    from cocotbext.uart import UartSink

    from spikeforge.sim.cocotb_utils import start_clock

    p = load_params()
    dut._log.info(f"seed {p.seed}")
    dut.rx.value = 1
    for name in ("cmd__ready", "cmd_data__ready", "rsp__valid", "rsp_data__valid"):
        getattr(dut, name).value = 0
    start_clock(dut, round(1e9 / p.clk_hz))
    await reset(dut, clock=False)
    tb = Bench(dut, p, random.Random(p.seed))
    tb.ref.timeout = 1 << 60
    tb.serial, tb.sending = True, False
    tb.sink = UartSink(dut.tx, baud=p.baud)
    cocotb.start_soon(_serial_sender(tb, round(1e12 / p.baud)))
    rng = tb.rng
    seq, last, fe, kinds = 0, None, 0, {}
    for i in range(p.n_units):
        r = rng.random()
        if r < 0.3 or last is None:
            seq = (seq + 1) & 0xFF
            last = P.encode_frame(seq, rng.randrange(0xE0), _payload(rng, rng.randrange(0, 24)),
                                  lead=True)
            tb.send(last)
        elif r < 0.4:
            tb.send(last)                            # a retry (it has its leading 0x00)
        else:
            unit, kind = _serial_unit(rng, p.max_payload, seq)
            kinds[kind] = kinds.get(kind, 0) + 1
            fe += sum(1 for v in unit if v & BAD_STOP)
            tb.tx_q.extend((v, 0) for v in unit)
        for _ in range(200_000):
            if not tb.tx_q and not tb.sending:
                break
            await tb.step()
        await tb.drain(limit=200_000, what=f"serial unit {i}")
    tb.check_stats("serial")
    check(int(dut.uart_frame_errors.value) == fe, "UART framing errors", seed=tb.seed,
          got=int(dut.uart_frame_errors.value), want=fe)
    dut._log.info(f"serial: {p.n_units} units {kinds}; {tb.ref.stats}; {tb.cycle} cycles")


# ----------------------------------------------------------------------------- pytest
MAX_PAYLOAD, MAX_REPLY, TIMEOUT = 600, 520, 300


def _seed():
    return int(os.environ.get("SPIKEFORGE_SEED", random.randrange(1 << 30)))


def _run(testcase, **params):
    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat)")
    run_cocotb(name="hostlink",
               component=lambda: HostLink(MAX_PAYLOAD, MAX_REPLY, timeout_cycles=TIMEOUT),
               test_module=__name__, testcase=testcase,
               build_key={"mp": MAX_PAYLOAD, "mr": MAX_REPLY, "timeout": TIMEOUT},
               params={"seed": seed, "max_payload": MAX_PAYLOAD, "max_reply": MAX_REPLY,
                       "timeout": TIMEOUT, "counter_bits": 16, **params})


def test_hostlink_round_trip():
    _run("round_trip", n_frames=60)


def test_hostlink_timeout_and_busy():
    _run("timeout,busy,held")


def test_hostlink_fuzz():
    _run("fuzz", n_malformed=10_000)


def test_serial_hostlink(n_units=80):
    """UART + framing from the pins (SerialHostLink at 25 MHz, 3 Mbaud)."""
    from spikeforge.rtl.hostlink import SerialHostLink

    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat)")
    run_cocotb(name="serial_hostlink",
               component=lambda: SerialHostLink(25e6, 3e6, max_payload=MAX_PAYLOAD,
                                                max_reply=MAX_REPLY),
               test_module=__name__, testcase="serial",
               build_key={"mp": MAX_PAYLOAD, "mr": MAX_REPLY, "clk": 25e6, "baud": 3e6},
               params={"seed": seed, "max_payload": MAX_PAYLOAD, "max_reply": MAX_REPLY,
                       "timeout": 0, "counter_bits": 16, "clk_hz": 25e6, "baud": 3e6,
                       "n_units": n_units})


@pytest.mark.slow
def test_serial_hostlink_long():
    test_serial_hostlink(n_units=2000)


@pytest.mark.slow
def test_hostlink_fuzz_long():
    _run("fuzz,round_trip", n_malformed=100_000, n_frames=1000)


def test_status_codes_agree():
    from spikeforge.rtl.hostlink import Status

    assert {s.name: s.value for s in Status} == {s.name: int(s) for s in P.Status}


@pytest.mark.parametrize("kwargs,msg", [
    ({"max_payload": 0}, "max_payload must be an integer in 1..65535"),
    ({"max_payload": 70000}, "max_payload"),
    ({"max_payload": 64, "timeout_cycles": 0}, "timeout_cycles"),
    ({"max_payload": 64, "counter_bits": 40}, "counter_bits"),
    ({"max_payload": 64, "max_reply": 1.5}, "max_reply"),
])
def test_parameters_refused(kwargs, msg):
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    with warnings.catch_warnings():      # the half-made object warns when collected
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=msg) as e:
            HostLink(**kwargs)
        del e
        gc.collect()


# ----------------------------------------------------------------------------- lint
def _lint_components():
    from spikeforge.rtl.hostlink import FrameDecoder, FrameEncoder, SerialHostLink

    return {
        "hostlink": lambda: HostLink(1024),
        "hostlink_small": lambda: HostLink(7, 300, timeout_cycles=1, counter_bits=1),
        "frame_decoder": lambda: FrameDecoder(255),
        "frame_encoder": lambda: FrameEncoder(2000),
        "serial_hostlink": lambda: SerialHostLink(25e6, 3e6),
    }


@pytest.mark.parametrize("comp", list(_lint_components()))
def test_lint(comp):
    """Verilator -Wall with only the project's waiver file (as tests/test_lint.py does)."""
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.sim.runner import build_root, lint_verilog

    vfile = build_root() / "lint" / f"{comp}.v"
    write_verilog(_lint_components()[comp](), vfile, name=comp)
    lint_verilog(vfile, comp)
