"""The host link's frame codec (docs/protocol.md is the specification; this is its reference).

A frame on the wire is ``COBS(body) 0x00`` where ``body`` is

    request: seq u8 | op u8     | len u16 LE | payload[len] | crc u16 BE
    reply:   seq u8 | status u8 | len u16 LE | payload[len] | crc u16 BE

and ``crc`` is CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, not reflected, no final XOR;
a.k.a. CRC-16/CCITT-FALSE) of everything before it. Sent most significant byte first, so
that the CRC of a whole good body is 0 (what the RTL checks). COBS and the CRC come from
the ``cobs`` and ``crc`` packages; this module only arranges fields.

The payload helpers (``pack_*`` / ``unpack_*``) implement the op table of docs/protocol.md,
including the two spike-raster encodings of ``train`` / ``infer``
(:func:`encode_spikes` / :func:`decode_spikes`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from cobs import cobs
from crc import Calculator, Crc16

__all__ = [
    "PROTOCOL_VERSION", "DELIMITER", "HEADER_BYTES", "CRC_BYTES", "OVERHEAD_BYTES",
    "Op", "Status", "Enc", "Feature", "FrameError", "Frame",
    "crc16", "build_body", "encode_frame", "encode_reply", "decode_body", "FrameSplitter",
    "encode_spikes", "decode_spikes", "spike_bytes",
    "pack_write_weights", "unpack_write_weights", "pack_read_weights", "pack_weights",
    "unpack_weights", "pack_seeds", "unpack_seeds", "pack_read_seeds", "pack_sample",
    "unpack_sample", "pack_read_counters", "unpack_counters", "pack_version",
    "unpack_version", "Version", "NO_LABEL", "LINK_CORE",
]

PROTOCOL_VERSION = 1
DELIMITER = 0x00
HEADER_BYTES = 4
CRC_BYTES = 2
OVERHEAD_BYTES = HEADER_BYTES + CRC_BYTES
#: ``label`` of a sample with no label (``infer``; ``train`` answers bad_arg).
NO_LABEL = 0xFFFF
#: ``core`` index of ``read_counters`` that addresses the host link's own counters.
LINK_CORE = 0xFF


class Op(enum.IntEnum):
    VERSION = 0x00
    STATUS = 0x01
    READ_COUNTERS = 0x02
    WRITE_WEIGHTS = 0x10
    READ_WEIGHTS = 0x11
    SET_SEEDS = 0x12
    READ_SEEDS = 0x13
    TRAIN = 0x20
    INFER = 0x21
    UPDATE = 0x22


class Status(enum.IntEnum):
    OK = 0
    #: never sent: a frame whose CRC fails is dropped (its seq cannot be trusted)
    BAD_CRC = 1
    BAD_LEN = 2
    UNKNOWN_OP = 3
    BAD_INDEX = 4
    BUSY = 5
    TOO_LONG = 6
    BAD_ARG = 7


class Enc(enum.IntEnum):
    """Spike-raster encodings of ``train`` / ``infer``."""
    BITMAP = 0
    GAPS = 1
    MASKS = 2


class Feature(enum.IntFlag):
    """Bits of the ``features`` field of the ``version`` reply."""
    ENC_GAPS = 1          # decodes Enc.GAPS (every device decodes Enc.BITMAP)
    ENC_MASKS = 2         # decodes Enc.MASKS
    UPDATE = 4            # has the ``update`` op (mini-batch / accumulate dataflow)
    STOCHASTIC = 8        # stochastic rounding (``set_seeds`` matters)


_CRC = Calculator(Crc16.IBM_3740, optimized=True)


def crc16(data: bytes) -> int:
    """CRC-16/IBM-3740 of ``data`` (the ``crc`` package)."""
    return _CRC.checksum(bytes(data))


class FrameError(ValueError):
    """A body that is not a good frame; ``kind`` is one of ``cobs``, ``runt``, ``crc``,
    ``bad_len``, ``too_long`` (the last two carry a trustworthy ``seq``)."""

    def __init__(self, kind: str, msg: str, seq: int | None = None):
        super().__init__(f"{kind}: {msg}")
        self.kind, self.seq = kind, seq


@dataclass(frozen=True)
class Frame:
    seq: int
    code: int          # op of a request, status of a reply
    payload: bytes
    crc: int           # the frame's CRC field (the device's retry key together with seq)


def build_body(seq: int, code: int, payload: bytes = b"") -> bytes:
    """The un-stuffed body ``seq | code | len | payload | crc``."""
    payload = bytes(payload)
    if not (0 <= seq < 256 and 0 <= code < 256):
        raise ValueError(f"seq {seq} and op/status {code} must be bytes (0..255)")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the 16-bit length field")
    head = struct.pack("<BBH", seq, code, len(payload)) + payload
    return head + struct.pack(">H", crc16(head))


def encode_frame(seq: int, op: int, payload: bytes = b"", *, lead: bool = False) -> bytes:
    """A request as sent on the wire: ``[0x00] COBS(body) 0x00``.

    ``lead``: also send a delimiter first, which ends any partial frame the device holds
    (a host sends it on every retry and after opening the port).
    """
    wire = cobs.encode(build_body(seq, op, payload)) + bytes([DELIMITER])
    return (bytes([DELIMITER]) + wire) if lead else wire


def encode_reply(seq: int, status: int, payload: bytes = b"") -> bytes:
    """A reply as the device sends it: ``COBS(body) 0x00``."""
    return cobs.encode(build_body(seq, status, payload)) + bytes([DELIMITER])


def decode_body(stuffed: bytes, max_payload: int = 0xFFFF) -> Frame:
    """Decode one frame's bytes between delimiters (without them).

    Raises :class:`FrameError`: ``cobs`` (not valid COBS), ``runt`` (< 6 bytes), ``crc``,
    ``too_long`` (good CRC, ``len`` > ``max_payload``), ``bad_len`` (good CRC, ``len``
    disagrees with the byte count) -- the order in which the device checks them.
    """
    try:
        body = cobs.decode(bytes(stuffed))
    except cobs.DecodeError as e:
        raise FrameError("cobs", str(e)) from None
    if len(body) < OVERHEAD_BYTES:
        raise FrameError("runt", f"{len(body)} bytes, a frame has at least {OVERHEAD_BYTES}")
    if crc16(body) != 0:
        raise FrameError("crc", f"CRC of the body is {crc16(body):#06x}, not 0")
    seq, code, n = struct.unpack_from("<BBH", body)
    if n > max_payload:
        raise FrameError("too_long", f"len {n} > max payload {max_payload}", seq)
    if n != len(body) - OVERHEAD_BYTES:
        raise FrameError("bad_len", f"len {n} but {len(body) - OVERHEAD_BYTES} payload bytes", seq)
    return Frame(seq, code, body[HEADER_BYTES:-CRC_BYTES], struct.unpack(">H", body[-2:])[0])


class FrameSplitter:
    """Splits a byte stream at delimiters; ``feed`` yields the bytes of each non-empty frame."""

    def __init__(self, max_bytes: int = 1 << 20):
        self.buf = bytearray()
        self.max_bytes = max_bytes
        self.overflows = 0

    def feed(self, data: Iterable[int]) -> Iterator[bytes]:
        for b in bytes(data):
            if b == DELIMITER:
                if self.buf:
                    yield bytes(self.buf)
                self.buf.clear()
            elif len(self.buf) < self.max_bytes:
                self.buf.append(b)
            else:
                self.overflows += 1


# ------------------------------------------------------------------ spike rasters
def _bitmap_row(row: Sequence[int]) -> bytes:
    out = bytearray((len(row) + 7) // 8)
    for j, s in enumerate(row):
        if s:
            out[j >> 3] |= 1 << (j & 7)
    return bytes(out)


def encode_spikes(raster, enc: Enc) -> bytes:
    """``raster`` (T rows of n_in 0/1) in ``enc`` (docs/protocol.md, spike rasters)."""
    rows = [list(map(int, r)) for r in raster]
    if enc == Enc.BITMAP:
        return b"".join(_bitmap_row(r) for r in rows)
    if enc == Enc.GAPS:
        n_in = len(rows[0]) if rows else 0
        nib, pos = [], 0
        for t, r in enumerate(rows):
            for j, s in enumerate(r):
                if s:
                    p = t * n_in + j
                    gap = p - pos
                    while gap >= 15:
                        nib.append(15)
                        gap -= 15
                    nib.append(gap)
                    pos = p + 1
        if len(nib) % 2:
            nib.append(15)          # padding: skips past the end, no spike
        return bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))
    if enc == Enc.MASKS:
        T, n_in = len(rows), (len(rows[0]) if rows else 0)
        active = [any(r[j] for r in rows) for j in range(n_in)]
        out = bytearray(_bitmap_row(active))
        for j in range(n_in):
            if active[j]:
                out += _bitmap_row([r[j] for r in rows])
        return bytes(out)
    raise ValueError(f"unknown spike encoding {enc!r}")


def decode_spikes(data: bytes, enc: Enc, timesteps: int, n_in: int) -> list[list[int]]:
    """Inverse of :func:`encode_spikes`; raises ValueError on a malformed raster."""
    raster = [[0] * n_in for _ in range(timesteps)]
    if enc == Enc.BITMAP:
        row = (n_in + 7) // 8
        if len(data) != timesteps * row:
            raise ValueError(f"bitmap raster of {len(data)} bytes, expected {timesteps} x {row}")
        for t in range(timesteps):
            for j in range(n_in):
                raster[t][j] = (data[t * row + (j >> 3)] >> (j & 7)) & 1
            if n_in % 8 and data[t * row + row - 1] >> (n_in % 8):
                raise ValueError(f"bitmap row {t} sets bits beyond input {n_in - 1}")
        return raster
    if enc == Enc.GAPS:
        pos, end = 0, timesteps * n_in
        for byte in data:
            for g in (byte & 15, byte >> 4):
                if g == 15:
                    pos += 15
                    continue
                pos += g
                if pos >= end:
                    raise ValueError(f"gap-coded spike at position {pos} beyond T x n_in = {end}")
                raster[pos // n_in][pos % n_in] = 1
                pos += 1
        return raster
    if enc == Enc.MASKS:
        row, mrow = (n_in + 7) // 8, (timesteps + 7) // 8
        if len(data) < row:
            raise ValueError(f"masks raster of {len(data)} bytes < its {row}-byte active bitmap")
        active = [j for j in range(n_in) if (data[j >> 3] >> (j & 7)) & 1]
        if n_in % 8 and data[row - 1] >> (n_in % 8):
            raise ValueError(f"active bitmap sets bits beyond input {n_in - 1}")
        if len(data) != row + mrow * len(active):
            raise ValueError(f"masks raster of {len(data)} bytes, expected {row} + {mrow} x "
                             f"{len(active)} active inputs")
        for k, j in enumerate(active):
            m = int.from_bytes(data[row + k * mrow: row + (k + 1) * mrow], "little")
            if m == 0 or m >> timesteps:
                raise ValueError(f"input {j}: timestep mask {m:#x} empty or beyond T = {timesteps}")
            for t in range(timesteps):
                raster[t][j] = (m >> t) & 1
        return raster
    raise ValueError(f"unknown spike encoding {enc!r}")


def spike_bytes(raster, encs: Iterable[Enc] = tuple(Enc)) -> tuple[Enc, bytes]:
    """The shortest encoding of ``raster`` among ``encs`` (ties: the first)."""
    best = None
    for e in encs:
        b = encode_spikes(raster, e)
        if best is None or len(b) < len(best[1]):
            best = (Enc(e), b)
    return best


# ------------------------------------------------------------------ op payloads
_SAMPLE = struct.Struct("<HBBH")      # label, enc, timesteps, n_in


def pack_sample(raster, label: int = NO_LABEL, enc: Enc | None = None,
                encs: Iterable[Enc] = tuple(Enc)) -> bytes:
    """``train`` / ``infer`` payload: label u16, enc u8, T u8, n_in u16, raster.
    ``enc`` None: the shortest of ``encs`` (those the device's features allow)."""
    T, n_in = len(raster), len(raster[0])
    if enc is None:
        enc, data = spike_bytes(raster, encs)
    else:
        data = encode_spikes(raster, enc)
    return _SAMPLE.pack(label, int(enc), T, n_in) + data


def unpack_sample(payload: bytes) -> tuple[int, Enc, list[list[int]]]:
    if len(payload) < _SAMPLE.size:
        raise ValueError(f"sample payload of {len(payload)} bytes < {_SAMPLE.size}")
    label, enc, T, n_in = _SAMPLE.unpack_from(payload)
    return label, Enc(enc), decode_spikes(payload[_SAMPLE.size:], Enc(enc), T, n_in)


_WADDR = struct.Struct("<BHHH")       # core, row, col, count


def pack_write_weights(core: int, row: int, col: int, words: Sequence[int]) -> bytes:
    return _WADDR.pack(core, row, col, len(words)) + pack_weights(words)


def unpack_write_weights(payload: bytes) -> tuple[int, int, int, list[int]]:
    core, row, col, n = _WADDR.unpack_from(payload)
    words = unpack_weights(payload[_WADDR.size:])
    if len(words) != n:
        raise ValueError(f"write_weights: count {n} but {len(words)} words")
    return core, row, col, words


def pack_read_weights(core: int, row: int, col: int, count: int) -> bytes:
    return _WADDR.pack(core, row, col, count)


def pack_weights(words: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(words)}h", *words)


def unpack_weights(data: bytes) -> list[int]:
    if len(data) % 2:
        raise ValueError(f"{len(data)} bytes of int16 words")
    return list(struct.unpack(f"<{len(data) // 2}h", data))


_SADDR = struct.Struct("<BHH")        # core, first neuron, count


def pack_seeds(core: int, first: int, seeds: Sequence[int]) -> bytes:
    return _SADDR.pack(core, first, len(seeds)) + struct.pack(f"<{len(seeds)}I", *seeds)


def unpack_seeds(payload: bytes) -> tuple[int, int, list[int]]:
    core, first, n = _SADDR.unpack_from(payload)
    rest = payload[_SADDR.size:]
    if len(rest) != 4 * n:
        raise ValueError(f"set_seeds: count {n} but {len(rest)} bytes of seeds")
    return core, first, list(struct.unpack(f"<{n}I", rest))


def pack_read_seeds(core: int, first: int, count: int) -> bytes:
    return _SADDR.pack(core, first, count)


def pack_read_counters(core: int, first: int, count: int) -> bytes:
    return struct.pack("<BBB", core, first, count)


def unpack_counters(data: bytes) -> list[int]:
    if len(data) % 4:
        raise ValueError(f"{len(data)} bytes of u32 counters")
    return list(struct.unpack(f"<{len(data) // 4}I", data))


@dataclass(frozen=True)
class Version:
    protocol: int
    hw_version: int
    max_payload: int
    features: Feature
    n_cores: int
    timesteps: int
    layers: tuple[int, ...]


_VERSION = struct.Struct("<BBHHBBB")


def pack_version(v: Version) -> bytes:
    return _VERSION.pack(v.protocol, v.hw_version, v.max_payload, int(v.features), v.n_cores,
                         v.timesteps, len(v.layers)) + struct.pack(f"<{len(v.layers)}H", *v.layers)


def unpack_version(data: bytes) -> Version:
    p, hw, mp, feat, nc, T, nl = _VERSION.unpack_from(data)
    layers = struct.unpack_from(f"<{nl}H", data, _VERSION.size)
    return Version(p, hw, mp, Feature(feat), nc, T, tuple(layers))
