"""The host link's frame codec (host/protocol.py) against the libraries and known vectors.

The codec is the scoreboard of the RTL tests (tests/test_hostlink.py), so it is checked
here on its own: CRC-16/IBM-3740's check value, COBS vectors of the COBS paper/Wikipedia,
bodies built by hand with ``struct`` + ``crc`` + ``cobs`` byte-equal to the codec's, every
error class of :func:`decode_body`, and the spike-raster encodings round-trip.
"""

from __future__ import annotations

import random
import struct

import pytest
from cobs import cobs
from crc import Calculator, Configuration

from spikeforge.host import protocol as P

SEED = 20261123


def test_crc_check_value_and_residue():
    assert P.crc16(b"123456789") == 0x29B1            # CRC-16/IBM-3740 (CCITT-FALSE) check
    # the same CRC from its parameters, with the crc package's generic engine
    cfg = Configuration(width=16, polynomial=0x1021, init_value=0xFFFF, final_xor_value=0,
                        reverse_input=False, reverse_output=False)
    generic = Calculator(cfg)
    rng = random.Random(SEED)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        c = P.crc16(data)
        assert c == generic.checksum(data)
        assert P.crc16(data + struct.pack(">H", c)) == 0   # good body -> residue 0 (the RTL check)


@pytest.mark.parametrize("raw,enc", [
    (b"\x00", b"\x01\x01"), (b"\x00\x00", b"\x01\x01\x01"), (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"), (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_vectors(raw, enc):
    """Wikipedia's COBS examples: the frames the RTL encoder must produce byte for byte."""
    assert cobs.encode(raw) == enc and cobs.decode(enc) == raw


def test_frames_match_hand_built():
    rng = random.Random(SEED)
    for _ in range(300):
        seq, op = rng.randrange(256), rng.randrange(256)
        payload = bytes(rng.choice([0, 0, rng.randrange(256)]) for _ in range(rng.randrange(0, 600)))
        head = struct.pack("<BBH", seq, op, len(payload)) + payload
        body = head + P.crc16(head).to_bytes(2, "big")
        assert P.build_body(seq, op, payload) == body
        wire = P.encode_frame(seq, op, payload)
        assert wire == cobs.encode(body) + b"\x00" and wire.count(0) == 1
        assert P.encode_frame(seq, op, payload, lead=True) == b"\x00" + wire
        assert P.encode_reply(seq, op, payload) == wire
        f = P.decode_body(wire[:-1])
        assert (f.seq, f.code, f.payload, f.crc) == (seq, op, payload, int.from_bytes(body[-2:], "big"))


def test_decode_errors():
    good = P.build_body(7, P.Op.TRAIN, b"abc")
    with pytest.raises(P.FrameError) as e:
        P.decode_body(b"\x05\x01")                       # code points past the end
    assert e.value.kind == "cobs"
    with pytest.raises(P.FrameError) as e:
        P.decode_body(cobs.encode(good[:5]))
    assert e.value.kind == "runt"
    bad = bytearray(good)
    bad[5] ^= 0x10
    with pytest.raises(P.FrameError) as e:
        P.decode_body(cobs.encode(bytes(bad)))
    assert e.value.kind == "crc"
    head = struct.pack("<BBH", 9, 1, 5) + b"abc"          # len says 5, 3 bytes follow
    with pytest.raises(P.FrameError) as e:
        P.decode_body(cobs.encode(head + P.crc16(head).to_bytes(2, "big")))
    assert (e.value.kind, e.value.seq) == ("bad_len", 9)
    with pytest.raises(P.FrameError) as e:
        P.decode_body(cobs.encode(P.build_body(3, 1, bytes(20))), max_payload=16)
    assert (e.value.kind, e.value.seq) == ("too_long", 3)


def test_splitter():
    wire = b"\x00\x00" + P.encode_frame(1, 2, b"x") + b"\x00" + P.encode_frame(2, 3, b"\x00y")
    sp = P.FrameSplitter()
    frames = [P.decode_body(b) for b in sp.feed(wire)]
    assert [(f.seq, f.code, f.payload) for f in frames] == [(1, 2, b"x"), (2, 3, b"\x00y")]


@pytest.mark.parametrize("T,n_in", [(8, 784), (1, 1), (3, 13), (9, 20), (16, 64)])
@pytest.mark.parametrize("enc", list(P.Enc))
def test_spike_encodings_round_trip(enc, T, n_in):
    rng = random.Random(SEED + T * 1000 + n_in)
    for rate in (0.0, 0.02, 0.12, 0.5, 1.0):
        raster = [[int(rng.random() < rate) for _ in range(n_in)] for _ in range(T)]
        data = P.encode_spikes(raster, enc)
        assert P.decode_spikes(data, enc, T, n_in) == raster, (enc, T, n_in, rate)
        if enc == P.Enc.BITMAP:
            assert len(data) == T * ((n_in + 7) // 8)
        label = rng.randrange(n_in)
        payload = P.pack_sample(raster, label, enc)
        assert P.unpack_sample(payload) == (label, enc, raster)


def test_spike_decode_rejects_malformed():
    with pytest.raises(ValueError):
        P.decode_spikes(b"\x00" * 3, P.Enc.BITMAP, 2, 16)
    with pytest.raises(ValueError):
        P.decode_spikes(b"\x80", P.Enc.BITMAP, 1, 7)       # bit beyond n_in
    with pytest.raises(ValueError):
        P.decode_spikes(b"\xf5", P.Enc.GAPS, 1, 4)         # spike at position 5 of 4
    with pytest.raises(ValueError):
        P.decode_spikes(b"\x01", P.Enc.MASKS, 2, 8)        # active input without its mask
    with pytest.raises(ValueError):
        P.decode_spikes(b"\x01\x00", P.Enc.MASKS, 2, 8)    # empty mask


def test_shortest_encoding_and_mnist_like_sizes():
    """Uniform Bernoulli 0.12 over T = 8 x 784: bitmap 784 B, gap nibbles ~440 B."""
    rng = random.Random(SEED)
    raster = [[int(rng.random() < 0.12) for _ in range(784)] for _ in range(8)]
    sizes = {e: len(P.encode_spikes(raster, e)) for e in P.Enc}
    assert sizes[P.Enc.BITMAP] == 784
    assert 380 < sizes[P.Enc.GAPS] < 500
    enc, data = P.spike_bytes(raster)
    assert enc == P.Enc.GAPS and len(data) == sizes[P.Enc.GAPS]
    enc, _ = P.spike_bytes(raster, encs=(P.Enc.BITMAP, P.Enc.MASKS))
    assert enc == P.Enc.MASKS


def test_op_payloads():
    p = P.pack_write_weights(2, 5, 100, [-32768, 0, 1, 32767])
    assert p == bytes([2, 5, 0, 100, 0, 4, 0]) + struct.pack("<4h", -32768, 0, 1, 32767)
    assert P.unpack_write_weights(p) == (2, 5, 100, [-32768, 0, 1, 32767])
    assert P.pack_read_weights(1, 2, 3, 4) == bytes([1, 2, 0, 3, 0, 4, 0])
    s = P.pack_seeds(0, 3, [1, 0xFFFFFFFF])
    assert P.unpack_seeds(s) == (0, 3, [1, 0xFFFFFFFF])
    assert P.unpack_counters(struct.pack("<3I", 1, 2, 3)) == [1, 2, 3]
    v = P.Version(1, 0, 1024, P.Feature.ENC_GAPS | P.Feature.UPDATE, 20, 8, (784, 144, 10))
    assert P.unpack_version(P.pack_version(v)) == v
