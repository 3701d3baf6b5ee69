"""Fuzzing the host link (issue 8): malformed and out-of-order frames through the byte
stream (``HostChip``) and through the UART pins (``SerialHostChip``, bit by bit), on the
pipe harness (sim/pipe.py).

Every frame's outcome is predicted from docs/protocol.md, not from the RTL: the reference
codec (``host/protocol.py`` ``decode_body``) classifies what lies between two delimiters
("What the device does with malformed input", sections 1-3): a COBS error or a runt is
dropped with ``malformed`` += 1, a bad CRC with ``crc_errors`` += 1, a good CRC with
``len`` > ``max_payload`` is answered ``too_long`` and a wrong ``len`` ``bad_len`` (both
``err_replies`` += 1); a partial frame followed by ``timeout_cycles`` of silence counts in
``timeouts``; a retry of the last request is answered with the cached reply byte for byte
(``replays``); a new request while the previous one has no reply yet is dropped
(``busy_drops``); good requests the chip cannot execute get ``unknown_op`` / ``bad_index`` /
``bad_len`` / ``bad_arg`` (section 8's checks). Replies are compared byte for byte with the
reference encoder; the link counters (``read_counters`` core 0xFF) are compared with a
model of them after every frame (byte stream) or every ``check_every`` frames (UART).
Every write_weights the fuzzer sends that must not execute carries weights different from
the ones loaded at the start; at the end the weights read back bit-identical, an
``infer`` and a mini-batch of ``train`` + ``update`` are bit-exact against the model
(host/chip.py ``ModelChip``), and a retried ``train`` is not trained twice.

Seeded: the seed is printed and in every message; ``SPIKEFORGE_SEED=<n>`` repeats a run.
"""

from __future__ import annotations

import os
import random
import struct
import time

import pytest
import torch
from cobs import cobs

from spikeforge.gen.config import Config
from spikeforge.host import protocol as hp
from spikeforge.host.chip import ModelChip
from spikeforge.model import fixedpoint as fx
from spikeforge.model.snn import init_weights
from spikeforge.rtl.geometry import ChipGeometry
from spikeforge.sim.pipe import PipeSim

S = hp.Status
MAX_PAYLOAD = 2048
LINK = ("frames", "crc_errors", "malformed", "timeouts", "busy_drops", "replays", "err_replies",
        "uart_frame_errors", "uart_overruns")
CTR_MAX = (1 << 16) - 1            # counter_bits = 16, saturating
# the UART top: 12.5 MHz / 3 Mbaud = 4.17 clock cycles per bit (a fractional divisor, the
# fewest cycles per bit the UART allows, for speed)
CLK_HZ, BAUD = 12_500_000, 3_000_000
BYTE_TIMEOUT = 400                 # timeout_cycles of the byte-stream build
SERIAL_TIMEOUT_BYTES = 16          # timeout_cycles of the UART build, in byte times


def _cfg():
    """The 2-core 12-6-4 chip (accumulate dataflow: train changes no weight before update)."""
    return Config().replace(
        network={"layers": [12, 6, 4], "timesteps": 4},
        hardware={"cores": 2, "lanes": 1, "max_neurons": 8, "max_inputs": 12,
                  "wg_dataflow": "accumulate"},
        train={"batch_size": 2}, arithmetic={"rounding": "nearest"})


def _seed():
    return int(os.environ.get("SPIKEFORGE_SEED", random.randrange(1 << 30)))


class Classified:
    """What docs/protocol.md says the device does with one delimited piece of bytes."""

    def __init__(self, counter=None, reply=None, frame=None):
        self.counter, self.reply, self.frame = counter, reply, frame


def classify(stuffed: bytes) -> Classified:
    """The documented outcome of the bytes between two delimiters (not the good case)."""
    try:
        f = hp.decode_body(stuffed, MAX_PAYLOAD)
    except hp.FrameError as e:
        if e.kind in ("cobs", "runt"):
            return Classified(counter="malformed")
        if e.kind == "crc":
            return Classified(counter="crc_errors")
        status = S.TOO_LONG if e.kind == "too_long" else S.BAD_LEN
        return Classified(counter="err_replies", reply=(e.seq, status))
    return Classified(frame=f)


class Fuzz:
    def __init__(self, sim: PipeSim, cfg, rng: random.Random, seed: int, mode: str, check_every: int):
        self.sim, self.cfg, self.rng, self.seed, self.mode = sim, cfg, rng, seed, mode
        self.serial = mode == "uart"
        self.check_every = check_every
        self.geo = ChipGeometry.from_config(cfg)
        self.exp = dict.fromkeys(LINK, 0)
        self.seq = 0
        self.frames_sent = 0          # frames (pieces between delimiters) and partial frames
        self.checks = 0
        self.kinds: dict[str, int] = {}
        self.busy_hits = self.busy_misses = 0
        self.last = None              # (wire frame, reply bytes) of the last executed request
        self.item = 0
        self.history: list[str] = []
        T, n_in = cfg.network.timesteps, cfg.network.layers[0]
        self.T, self.n_in = T, n_in
        if self.serial:
            self.cpb = sim.cycles_per_bit
            self.byte_cycles = int(10 * self.cpb) + 2
            self.timeout = round(SERIAL_TIMEOUT_BYTES * 10 * CLK_HZ / BAUD)
        else:
            self.byte_cycles = 1
            self.timeout = BYTE_TIMEOUT

    # ------------------------------------------------------------------ helpers
    def where(self) -> str:
        return (f"[mode={self.mode} item {self.item}, recent: {' '.join(self.history[-14:])}; "
                f"seed={self.seed}, SPIKEFORGE_SEED={self.seed} to repeat]")

    def next_seq(self) -> int:
        s, self.seq = self.seq, (self.seq + 1) & 0xFF
        return s

    def bump(self, name: str, n: int = 1):
        self.exp[name] = min(CTR_MAX, self.exp[name] + n)

    def send(self, wire: bytes):
        self.sim.write(wire)

    def collect(self, n_replies: int) -> bytes:
        """Clock until ``n_replies`` replies came out, then let the line settle; all bytes."""
        out = b""
        if n_replies:
            out = self.sim.run_until_frames(n_replies, max_cycles=2_000_000)
        out += self.sim.drain(8 * self.byte_cycles + 64)
        return out

    def expect_replies(self, out: bytes, want: list[bytes], what: str):
        got = [bytes(p) + b"\x00" for p in hp.FrameSplitter().feed(out)]
        assert got == want and out == b"".join(want), (
            f"{what}: the chip sent {out.hex(' ')}, expected {b''.join(want).hex(' ') or 'nothing'} "
            f"{self.where()}")

    def request(self, op: int, payload: bytes = b"", *, status=S.OK, reply_payload=None,
                what: str = "") -> bytes:
        """One good request; checks the reply's status (and payload when given)."""
        seq = self.next_seq()
        wire = hp.encode_frame(seq, op, payload)
        self.bump("frames")
        self.send(wire)
        self.frames_sent += 1
        out = self.collect(1)
        frames = list(hp.FrameSplitter().feed(out))
        assert len(frames) == 1 and out.endswith(b"\x00"), (
            f"{what or hp.Op(op).name}: expected one reply, got {out.hex(' ') or 'nothing'} {self.where()}")
        try:
            f = hp.decode_body(frames[0])
        except hp.FrameError as e:
            raise AssertionError(f"{what}: reply does not decode ({e}) {self.where()}") from None
        assert (f.seq, f.code) == (seq, status), (
            f"{what or hp.Op(op).name}: reply seq {f.seq} status {f.code}, expected seq {seq} "
            f"status {int(status)} ({status.name}) {self.where()}")
        if status != S.OK:
            assert f.payload == b"", f"{what}: an error reply with a payload {self.where()}"
        if reply_payload is not None:
            assert f.payload == reply_payload, (
                f"{what or hp.Op(op).name}: payload {f.payload.hex(' ')}, expected "
                f"{reply_payload.hex(' ')} {self.where()}")
        self.last = (wire, out)
        return f.payload

    def check_counters(self):
        """read_counters 0xFF: every link counter equals the model's."""
        self.checks += 1
        self.bump("frames")            # the request itself is counted before it executes
        want = struct.pack("<9I", *(self.exp[n] for n in LINK))
        seq = self.next_seq()
        wire = hp.encode_frame(seq, hp.Op.READ_COUNTERS, hp.pack_read_counters(hp.LINK_CORE, 0, 9))
        self.send(wire)
        out = self.collect(1)
        want_wire = hp.encode_reply(seq, S.OK, want)
        if out != want_wire:
            got = None
            for body in hp.FrameSplitter().feed(out):
                try:
                    f = hp.decode_body(body)
                    got = dict(zip(LINK, hp.unpack_counters(f.payload)))
                except (hp.FrameError, ValueError):
                    pass
            diff = {k: (got[k] if got else None, self.exp[k]) for k in LINK
                    if not got or got[k] != self.exp[k]}
            raise AssertionError(f"link counters (chip, expected): {diff}; the chip sent "
                                 f"{out.hex(' ')} {self.where()}")
        self.last = (wire, out)

    # ------------------------------------------------------------------ good requests
    def good_request(self):
        """A good request with a known reply: (op, payload, reply payload)."""
        r = self.rng.random()
        if r < 0.3:
            return hp.Op.VERSION, b"", self.version
        if r < 0.55:
            pl = self.rng.choice(self.geo.cores)
            i = self.rng.randrange(pl.geom.n_neurons)
            c0 = self.rng.randrange(pl.geom.n_in)
            n = self.rng.randrange(1, pl.geom.n_in - c0 + 1)
            row = self.w0[pl.layer][pl.offset + i].tolist()
            return hp.Op.READ_WEIGHTS, hp.pack_read_weights(pl.core, i, c0, n), hp.pack_weights(row[c0:c0 + n])
        if r < 0.7:
            # writes the loaded values again: harmless if executed
            pl = self.rng.choice(self.geo.cores)
            i = self.rng.randrange(pl.geom.n_neurons)
            c0 = self.rng.randrange(pl.geom.n_in)
            n = self.rng.randrange(0, pl.geom.n_in - c0 + 1)
            row = self.w0[pl.layer][pl.offset + i].tolist()
            return hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(pl.core, i, c0, row[c0:c0 + n]), b""
        if r < 0.85:
            x = (torch.rand(self.T, self.n_in, generator=self.tg) < 0.5).to(torch.int64)
            want = bytes(int(c) for c in self.model.infer(x))
            enc = self.rng.choice(list(hp.Enc))
            return hp.Op.INFER, hp.pack_sample(x.tolist(), hp.NO_LABEL, enc), want
        return hp.Op.STATUS, b"", struct.pack("<BBI", 0, 1, 0)

    def bad_weights(self, n):
        """Weights that differ from any loaded value pattern (so an execution shows)."""
        return [self.rng.randrange(-32768, 32768) for _ in range(n)]

    def refused_request(self):
        """A good frame the chip must refuse: (op, payload, status, label)."""
        T, n_in, n_out = self.T, self.n_in, self.cfg.network.layers[-1]
        nc = len(self.geo.cores)
        pl = self.rng.choice(self.geo.cores)
        N, ni = pl.geom.n_neurons, pl.geom.n_in
        k = self.rng.randrange(12)
        if k == 0:
            ops = {int(o) for o in hp.Op}
            op = self.rng.choice([o for o in range(256) if o not in ops])
            return op, bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(12))), S.UNKNOWN_OP, "unknown_op"
        if k == 1:        # core out of range
            core = self.rng.choice([nc, nc + 1, 0x7F, 0xFE, 0xFF])
            n = self.rng.randrange(1, 4)
            return hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(core, 0, 0, self.bad_weights(n)), S.BAD_INDEX, "core"
        if k == 2:        # row out of range
            row = self.rng.choice([N, N + 1, 0xFFFF])
            return hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(pl.core, row, 0, self.bad_weights(2)), S.BAD_INDEX, "row"
        if k == 3:        # col + count past n_in (written words would land past the row)
            c0 = self.rng.randrange(ni)
            n = ni - c0 + self.rng.randrange(1, 4)
            return hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(pl.core, 0, c0, self.bad_weights(n)), S.BAD_INDEX, "col"
        if k == 4:        # read past the row
            c0 = self.rng.randrange(ni + 2)
            return hp.Op.READ_WEIGHTS, hp.pack_read_weights(pl.core, 0, c0, ni - c0 + 1 + self.rng.randrange(3)), S.BAD_INDEX, "read col"
        if k == 5:        # write_weights: count disagrees with the words
            n = self.rng.randrange(1, ni)
            words = self.bad_weights(n)
            d = self.rng.choice([-1, 1, 2])
            payload = struct.pack("<BHHH", pl.core, 0, 0, n + d) + hp.pack_weights(words)
            return hp.Op.WRITE_WEIGHTS, payload, S.BAD_LEN, "write count"
        if k == 6:        # fixed-size ops with a wrong size
            op, size = self.rng.choice([(hp.Op.VERSION, 0), (hp.Op.STATUS, 0), (hp.Op.READ_WEIGHTS, 7),
                                        (hp.Op.READ_COUNTERS, 3), (hp.Op.READ_SEEDS, 5)])
            n = self.rng.choice([s for s in (size - 1, size + 1, size + 5) if s >= 0])
            return op, bytes(self.rng.randrange(256) for _ in range(n)), S.BAD_LEN, "fixed size"
        if k == 7:        # a bitmap raster of the wrong size
            x = [[self.rng.randrange(2) for _ in range(n_in)] for _ in range(T)]
            p = hp.pack_sample(x, 0, hp.Enc.BITMAP)
            p = p[:-1] if self.rng.random() < 0.5 else p + b"\x01"
            return self.rng.choice([hp.Op.TRAIN, hp.Op.INFER]), p, S.BAD_LEN, "raster size"
        if k == 8:        # T or n_in not the chip's, an unknown encoding, a label out of range
            x = [[self.rng.randrange(2) for _ in range(n_in)] for _ in range(T)]
            p = bytearray(hp.pack_sample(x, 0, hp.Enc.GAPS))
            which = self.rng.randrange(4)
            if which == 0:
                p[3] = T + 1
            elif which == 1:
                struct.pack_into("<H", p, 4, n_in + 1)
            elif which == 2:
                p[2] = self.rng.randrange(3, 256)
            else:
                struct.pack_into("<H", p, 0, self.rng.randrange(n_out, 0xFFFF))
                return hp.Op.TRAIN, bytes(p), S.BAD_ARG, "label"
            return self.rng.choice([hp.Op.TRAIN, hp.Op.INFER]), bytes(p), S.BAD_ARG, "sample arg"
        if k == 9:        # link counters out of range (core counters: unknown_op without debug)
            f = self.rng.randrange(10)
            return hp.Op.READ_COUNTERS, hp.pack_read_counters(0xFF, f, 10 - f + self.rng.randrange(3)), S.BAD_INDEX, "link counters"
        if k == 10:       # a zero seed among good ones
            seeds = [self.rng.randrange(1, 1 << 32) for _ in range(N)]
            seeds[self.rng.randrange(N)] = 0
            return hp.Op.SET_SEEDS, hp.pack_seeds(pl.core, 0, seeds), S.BAD_ARG, "zero seed"
        # seeds past the core's neurons
        f = self.rng.randrange(N + 1)
        return hp.Op.SET_SEEDS, hp.pack_seeds(pl.core, f, [1] * (N - f + 1)), S.BAD_INDEX, "seed range"

    # ------------------------------------------------------------------ malformed pieces
    def base_body(self) -> bytes:
        """A plausible request body (good CRC) to corrupt; often a write of wrong weights."""
        seq = self.next_seq()
        if self.rng.random() < 0.5:
            pl = self.rng.choice(self.geo.cores)
            c0 = self.rng.randrange(pl.geom.n_in)
            words = self.bad_weights(self.rng.randrange(1, pl.geom.n_in - c0 + 1))
            return hp.build_body(seq, hp.Op.WRITE_WEIGHTS,
                                 hp.pack_write_weights(pl.core, self.rng.randrange(pl.geom.n_neurons), c0, words))
        op, payload, _ = self.good_request()
        return hp.build_body(seq, op, payload)

    def noise_piece(self) -> tuple[bytes, str]:
        """Bytes (no delimiter) that the device must drop without a reply, and their kind."""
        for _ in range(100):
            k = self.rng.randrange(8)
            if k == 0:
                s = bytearray(cobs.encode(self.base_body()))
                for _ in range(self.rng.randrange(1, 4)):
                    i = self.rng.randrange(len(s))
                    s[i] ^= 1 << self.rng.randrange(8)
                kind = "bitflip"
            elif k == 1:
                s = cobs.encode(self.base_body())
                s = s[:self.rng.randrange(1, len(s))]
                kind = "truncated"
            elif k == 2:
                s = cobs.encode(self.base_body()) + cobs.encode(self.base_body())
                kind = "glued"
            elif k == 3:
                s = cobs.encode(bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 6))))
                kind = "runt"
            elif k == 4:
                s = bytes(self.rng.randrange(1, 256) for _ in range(self.rng.randrange(1, 40)))
                kind = "garbage"
            elif k == 5:      # a code byte pointing past the delimiter
                s = cobs.encode(self.base_body())
                s = s + bytes([self.rng.randrange(2, 256)]) + bytes(self.rng.randrange(1, 256) for _ in range(self.rng.randrange(0, 3)))
                kind = "cobs"
            elif k == 6:      # a lost byte
                s = bytearray(cobs.encode(self.base_body()))
                del s[self.rng.randrange(len(s))]
                kind = "lost byte"
            else:             # an extra byte
                s = bytearray(cobs.encode(self.base_body()))
                s.insert(self.rng.randrange(len(s) + 1), self.rng.randrange(1, 256))
                kind = "extra byte"
            s = bytes(s)
            pieces = s.split(b"\x00")
            if all(p == b"" or classify(p).reply is None and classify(p).frame is None for p in pieces):
                return s, kind
        raise AssertionError("could not draw a noise piece")

    def drop(self, s: bytes):
        """Count the documented drops of the pieces of ``s`` (split at delimiters)."""
        for p in s.split(b"\x00"):
            if p:
                self.bump(classify(p).counter)
                self.frames_sent += 1

    # ------------------------------------------------------------------ one fuzz item
    def item_noise(self):
        """1-3 noise pieces, each closed by a delimiter; nothing answers."""
        wire = b""
        for _ in range(self.rng.randrange(1, 4)):
            s, kind = self.noise_piece()
            self.history.append(kind)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.drop(s)
            wire += s + b"\x00" * self.rng.randrange(1, 3)     # empty frames are ignored
        self.send(wire)
        self.expect_replies(self.collect(0), [], "noise")

    def item_noise_then(self, op, payload, status, reply_payload, kind):
        """Noise pieces, then a request glued after a leading delimiter: answered."""
        wire = b""
        for _ in range(self.rng.randrange(0, 3)):
            s, nk = self.noise_piece()
            self.history.append(nk)
            self.kinds[nk] = self.kinds.get(nk, 0) + 1
            self.drop(s)
            wire += s + b"\x00"
        self.history.append(kind)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        seq = self.next_seq()
        frame = hp.encode_frame(seq, op, payload)
        self.bump("frames")
        self.frames_sent += 1
        self.send(wire + frame)
        out = self.collect(1)
        want = hp.encode_reply(seq, status, reply_payload if status == S.OK else b"")
        self.expect_replies(out, [want], kind)
        self.last = (frame, out)

    def item_framing_error(self):
        """Good CRC, wrong len: too_long (len > max_payload) or bad_len."""
        seq = self.next_seq()
        r = self.rng.random()
        if r < 0.48:
            n = self.rng.randrange(MAX_PAYLOAD + 1, 0x10000)
            payload = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 20)))
            kind = "oversize len"
        elif r < 0.5:
            n = self.rng.randrange(MAX_PAYLOAD + 1, MAX_PAYLOAD + 40)
            payload = bytes(self.rng.randrange(256) for _ in range(n))   # and that many bytes
            kind = "oversize frame"
        else:
            payload = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 30)))
            n = self.rng.choice([len(payload) + d for d in (-3, -2, -1, 1, 2, 7, 100) if len(payload) + d >= 0])
            kind = "bad len"
        op = self.rng.choice([hp.Op.WRITE_WEIGHTS, hp.Op.VERSION, hp.Op.TRAIN, 0x55])
        head = struct.pack("<BBH", seq, op, n) + payload
        body = head + struct.pack(">H", hp.crc16(head))
        stuffed = cobs.encode(body)
        c = classify(stuffed)
        assert c.reply is not None, "framing-error frame misbuilt"
        self.history.append(kind)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.bump("err_replies")
        self.frames_sent += 1
        self.send(b"\x00" + stuffed + b"\x00")
        out = self.collect(1)
        self.expect_replies(out, [hp.encode_reply(*c.reply)], kind)
        self.last = None      # retries only of executed requests (section 3)

    def item_retry(self):
        """The last request's frame again, after a leading delimiter: its reply byte for byte."""
        if self.last is None:
            return
        wire, reply = self.last
        self.history.append("retry")
        self.kinds["retry"] = self.kinds.get("retry", 0) + 1
        self.bump("replays")
        self.frames_sent += 1
        self.send(b"\x00" + wire.lstrip(b"\x00"))
        self.expect_replies(self.collect(1), [reply], "retry")

    def item_retry_while_sending(self):
        """A good request, and its retry once the reply has begun to go out (the reply is
        complete, so not "still being produced"): the cached reply is sent again after it,
        byte for byte (replays += 1). rtl/hostlink.py used to count the replay and send
        nothing."""
        if self.rng.random() < 0.5:      # long replies, short requests
            op, payload, want = hp.Op.VERSION, b"", self.version
        else:
            pl = self.rng.choice(self.geo.cores)
            i = self.rng.randrange(pl.geom.n_neurons)
            row = self.w0[pl.layer][pl.offset + i].tolist()
            op, payload, want = hp.Op.READ_WEIGHTS, hp.pack_read_weights(pl.core, i, 0, len(row)), hp.pack_weights(row)
        seq = self.next_seq()
        f1 = hp.encode_frame(seq, op, payload)
        r1 = hp.encode_reply(seq, S.OK, want)
        self.history.append("retry while sending")
        self.kinds["retry while sending"] = self.kinds.get("retry while sending", 0) + 1
        self.bump("frames")
        self.bump("replays")
        self.frames_sent += 2
        self.send(f1)
        out, step = b"", max(1, self.byte_cycles // 2)
        for _ in range(100_000):
            out += self.sim.run(step)
            if out:
                break
        assert out, f"no reply to start the retry-while-sending case {self.where()}"
        self.send(b"\x00" + f1)
        out += self.sim.drain(0)
        # the case's premise: the retry ended while the reply was still going out
        assert out.count(0) == 0, f"the reply ended before its retry {self.where()}"
        out += self.collect(2)
        self.expect_replies(out, [r1, r1], "a retry while its reply is being sent")
        self.last = (f1, r1)

    def item_busy(self):
        """A long request (infer) and right behind it a new one: the second is dropped
        while the first has no reply (byte stream: always; UART: when it arrives in time)."""
        op, payload, want = self.good_request()
        x = (torch.rand(self.T, self.n_in, generator=self.tg) < 0.5).to(torch.int64)
        counts = bytes(int(c) for c in self.model.infer(x))
        s1 = self.next_seq()
        f1 = hp.encode_frame(s1, hp.Op.INFER, hp.pack_sample(x.tolist(), hp.NO_LABEL, hp.Enc.BITMAP))
        retry = self.rng.random() < 0.3
        if retry:        # a retry of the running request: dropped too (its reply will come)
            f2, s2 = b"\x00" + f1, s1
        else:
            s2 = self.next_seq()
            f2 = hp.encode_frame(s2, op, payload)
        self.history.append("busy" + (" retry" if retry else ""))
        self.kinds["busy"] = self.kinds.get("busy", 0) + 1
        self.bump("frames")
        self.frames_sent += 2
        self.send(f1 + f2)
        if self.serial:       # a second reply, if the second frame came too late to be dropped
            out = self.sim.run_until_frames(1, max_cycles=2_000_000)
            out += self.sim.run_until_frames(1, max_cycles=200 * self.byte_cycles)
            out += self.sim.drain(8 * self.byte_cycles + 64)
        else:
            out = self.collect(1)
        r1 = hp.encode_reply(s1, S.OK, counts)
        if out == r1:
            self.busy_hits += 1
            self.bump("busy_drops")
            self.last = (f1, r1)
        elif not self.serial:
            self.expect_replies(out, [r1], "request while busy (it must be dropped)")
        else:
            # the first reply was complete before the second frame ended: not busy, so the
            # second is a retry (replayed) or a new request (executed)
            self.busy_misses += 1
            if retry:
                self.bump("replays")
                self.expect_replies(out, [r1, r1], "retry after the reply")
                self.last = (f1, r1)
            else:
                self.bump("frames")
                r2 = hp.encode_reply(s2, S.OK, want)
                self.expect_replies(out, [r1, r2], "request after the reply")
                self.last = (f2, r2)

    def item_timeout(self):
        """Part of a frame, then silence: abandoned after timeout_cycles (timeouts += 1)."""
        s = cobs.encode(self.base_body())
        part = s[:self.rng.randrange(1, len(s))]
        self.history.append("timeout")
        self.kinds["timeout"] = self.kinds.get("timeout", 0) + 1
        self.bump("timeouts")
        self.frames_sent += 1
        self.send(part)
        out = self.sim.drain(self.timeout + 4 * self.byte_cycles + 16)
        self.expect_replies(out, [], "abandoned frame")
        # the next frame needs no leading delimiter: the parser was cleared
        op, payload, want = self.good_request()
        self.history.append("after timeout")
        self.request(op, payload, reply_payload=want, what="the request after an abandoned frame")

    # --- UART line faults (serial mode)
    def item_glitches(self):
        """Short low pulses on the idle line (shorter than half a bit): ignored."""
        n = self.rng.randrange(1, 6)
        width = max(1, int(self.cpb / 2) - 1)
        self.history.append("glitch")
        self.kinds["glitch"] = self.kinds.get("glitch", 0) + 1
        self.sim.write_items([(PipeSim.GLITCH, self.rng.randrange(1, width + 1))
                              for _ in range(n)])
        op, payload, want = self.good_request()
        self.request(op, payload, reply_payload=want, what="the request after glitches")

    def item_bad_stop(self):
        """A byte of a good frame sent with a low stop bit: the UART drops it (frame_errors
        += 1), so the frame has lost a byte: dropped as the reference says."""
        for _ in range(100):
            seq = self.next_seq()
            op, payload, _ = self.good_request()
            s = cobs.encode(hp.build_body(seq, op, payload))
            i = self.rng.randrange(len(s))
            lost = s[:i] + s[i + 1:]
            c = classify(lost)
            if c.reply is None and c.frame is None:
                break
        self.history.append("bad stop")
        self.kinds["bad stop"] = self.kinds.get("bad stop", 0) + 1
        self.bump("uart_frame_errors")
        self.bump(c.counter)
        self.frames_sent += 1
        items = [(PipeSim.BYTE, b) for b in s]
        items[i] = (PipeSim.BAD_STOP, s[i])
        self.sim.write_items(items + [(PipeSim.BYTE, 0)])
        self.expect_replies(self.collect(0), [], "frame with a low stop bit")

    # ------------------------------------------------------------------ the run
    def setup(self):
        cfg = self.cfg
        self.tg = torch.Generator().manual_seed(self.seed)
        self.w0 = [fx.sat(2 * w, cfg.arithmetic.weight_bits)
                   for w in init_weights(cfg, torch.Generator().manual_seed(self.seed))]
        self.model = ModelChip(cfg, [w.clone() for w in self.w0])
        self.sim.write(b"\x00")
        v = self.request(hp.Op.VERSION, what="version")
        self.version = v
        ver = hp.unpack_version(v)
        assert (ver.n_cores, ver.timesteps, ver.layers, ver.max_payload) == \
            (len(self.geo.cores), self.T, tuple(cfg.network.layers), MAX_PAYLOAD), f"{ver} {self.where()}"
        for l, w in enumerate(self.w0):
            for pl in self.geo.layer_cores(l):
                for i in range(pl.geom.n_neurons):
                    self.request(hp.Op.WRITE_WEIGHTS,
                                 hp.pack_write_weights(pl.core, i, 0, w[pl.offset + i].tolist()),
                                 what="load weights")
        self.check_counters()

    def run(self, n_frames: int):
        rng = self.rng
        self.frames_sent = 0
        while self.frames_sent < n_frames:
            self.item += 1
            r = rng.random()
            if r < 0.40:
                self.item_noise()
            elif r < 0.52:
                op, payload, status, kind = self.refused_request()
                self.item_noise_then(op, payload, status, b"", "refused " + kind)
            elif r < 0.64:
                op, payload, want = self.good_request()
                self.item_noise_then(op, payload, S.OK, want, "good " + hp.Op(op).name.lower())
            elif r < 0.72:
                self.item_framing_error()
            elif r < 0.78:
                self.item_retry()
            elif r < 0.80:
                self.item_retry_while_sending()
            elif r < 0.85:
                self.item_busy()
            elif r < 0.88:
                self.item_timeout()
            elif self.serial and r < 0.93:
                self.item_glitches()
            elif self.serial and r < 0.97:
                self.item_bad_stop()
            elif self.serial and r < 0.98:
                # a baud mismatch for a while: the host's clock 1.5 % off either way
                f = rng.choice([0.985, 1.015])
                self.history.append(f"baud x{f}")
                self.sim.set_bit_period(self.cpb * f)
                for _ in range(rng.randrange(1, 5)):
                    self.item_noise() if rng.random() < 0.5 else self.item_framing_error()
                op, payload, want = self.good_request()
                self.request(op, payload, reply_payload=want, what=f"a request at {f} x the bit period")
                self.sim.set_bit_period(self.cpb)
            else:
                self.item_noise()
            if len(self.history) > 64:
                del self.history[:-16]
            if self.item % self.check_every == 0:
                self.check_counters()
        self.check_counters()

    def finish(self):
        """The weights are those loaded; infer, train (+ a retried train) and update are
        bit-exact against the model; the read-back after training is the model's."""
        from spikeforge.host.link import LinkChip

        cfg = self.cfg
        self.sim.write(b"\x00")
        lc = LinkChip(cfg, self.sim)
        got = lc.read_weights()
        for l, (g, w) in enumerate(zip(got, self.w0)):
            diff = torch.nonzero(g != w).tolist()
            assert not diff, (f"layer {l}: {len(diff)} weights changed by the fuzz, e.g. W{diff[0]} = "
                              f"{int(g[tuple(diff[0])])}, loaded {int(w[tuple(diff[0])])} {self.where()}")
        B, batches = cfg.train.batch_size, 3
        for b in range(batches):
            x = (torch.rand(B, self.T, self.n_in, generator=self.tg) < 0.5).to(torch.int64)
            y = torch.randint(0, cfg.network.layers[-1], (B,), generator=self.tg)
            want = self.model.train_batch(x, y)
            # sample by sample, the first one retried: the retry must not train it twice
            counts = []
            for s in range(B):
                payload = hp.pack_sample(x[s].tolist(), int(y[s]))
                counts.append(list(lc.request(hp.Op.TRAIN, payload)))
                if s == 0:
                    seq = (lc.seq - 1) & 0xFF
                    again = self.sim.exchange(hp.encode_frame(seq, hp.Op.TRAIN, payload, lead=True))
                    assert again == hp.encode_reply(seq, S.OK, bytes(counts[0])), (
                        f"retried train answered {again.hex(' ')} {self.where()}")
            lc.request(hp.Op.UPDATE)
            assert counts == want.tolist(), (f"batch {b}: train counts {counts}, model "
                                             f"{want.tolist()} {self.where()}")
        _, _, samples = struct.unpack("<BBI", lc.request(hp.Op.STATUS))
        assert samples == B * batches, (f"status: {samples} samples trained, {B * batches} sent "
                                        f"(some retried) {self.where()}")
        x1 = (torch.rand(self.T, self.n_in, generator=self.tg) < 0.5).to(torch.int64)
        assert lc.infer(x1).tolist() == self.model.infer(x1).tolist(), f"infer after training {self.where()}"
        for l, (g, w) in enumerate(zip(lc.read_weights(), self.model.read_weights())):
            assert torch.equal(g, w), f"layer {l}: weights after training differ from the model {self.where()}"
        changed = sum(int((a != b).sum()) for a, b in zip(self.model.read_weights(), self.w0))
        return changed


def run_fuzz(mode: str, n_frames: int, check_every: int):
    cfg = _cfg()
    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat), mode {mode}, {n_frames} frames")
    t0 = time.monotonic()
    if mode == "uart":
        timeout = round(SERIAL_TIMEOUT_BYTES * 10 * CLK_HZ / BAUD)
        sim = PipeSim.for_config(cfg, serial=True, clk_hz=CLK_HZ, baud=BAUD, timeout_cycles=timeout,
                                 max_cycles=5_000_000)
    else:
        sim = PipeSim.for_config(cfg, timeout_cycles=BYTE_TIMEOUT, max_cycles=5_000_000)
    t1 = time.monotonic()
    with sim:
        fz = Fuzz(sim, cfg, random.Random(seed), seed, mode, check_every)
        fz.setup()
        c0 = sim.cycles
        fz.run(n_frames)
        t2 = time.monotonic()
        changed = fz.finish()
        cycles = sim.cycles - c0
    t3 = time.monotonic()
    print(f"{mode}: build/start {t1 - t0:.1f} s; {fz.frames_sent} fuzz frames in {fz.item} items "
          f"+ {fz.checks} counter checks in {t2 - t1:.1f} s ({fz.frames_sent / (t2 - t1):,.0f} frames/s, "
          f"{cycles / (t2 - t1):,.0f} cycles/s, {cycles:,} cycles); final checks {t3 - t2:.1f} s; "
          f"busy drops {fz.busy_hits}, busy too late {fz.busy_misses}; {changed} weights changed by "
          f"training")
    print("link counters:", fz.exp)
    print("kinds:", dict(sorted(fz.kinds.items())))
    assert fz.frames_sent >= n_frames
    return fz


def test_fuzz_bytes():
    """>= 10,000 frames through the byte stream (HostChip); counters checked after every item."""
    fz = run_fuzz("bytes", 10_000, check_every=1)
    assert fz.busy_hits > 0 and fz.busy_misses == 0


def test_fuzz_uart():
    """>= 10,000 frames through the UART pins (SerialHostChip, 4.17 clocks per bit)."""
    fz = run_fuzz("uart", 10_000, check_every=8)
    assert fz.exp["uart_frame_errors"] > 0 and fz.kinds.get("glitch")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bytes", "uart"])
def test_fuzz_long(mode):
    """100,000 frames per mode (the link counters saturate at 65,535 on the way)."""
    run_fuzz(mode, 100_000, check_every=1 if mode == "bytes" else 8)
