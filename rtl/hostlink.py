"""The host link's framing layer: bytes <-> checked frames (docs/protocol.md).

Components (``amaranth.lib.stream`` everywhere; ``rx``/``tx`` are byte streams from/to the
UART, or any other byte transport):

* :class:`FrameDecoder` -- ``rx`` bytes -> COBS decode -> CRC-16 -> length checks -> a
  *buffered* frame: the header ``cmd`` ({seq, op, len}) and then exactly ``len`` bytes on
  ``cmd_data``. Buffered, because the CRC is known only at the frame's end: nothing of a
  frame reaches the chip before its CRC has passed, so a corrupted command cannot touch
  the chip's state. Also the retry logic: the key of a frame is ``(seq, CRC field)``; a good
  frame with the last accepted frame's key is a retry: its cached reply is sent again
  (``replay``), or, while that reply is still being made, the retry is dropped.
* :class:`FrameEncoder` -- the reply ``rsp`` ({seq, status, len}) and ``len`` bytes on
  ``rsp_data`` -> CRC-16 appended -> COBS -> ``tx`` bytes and a 0x00 delimiter. The reply
  is COBS-encoded *into* a buffer as it comes (a block's code byte is written into the slot
  reserved for it when the block ends), then sent; the buffer is the reply cache that a
  retry replays.
* :class:`HostLink` -- both, plus the framing-level error replies (``bad_len``,
  ``too_long``) merged into the reply path, and the link's counters.

Malformed input (docs/protocol.md, "what the device does with malformed input"): bad COBS,
frames shorter than 6 bytes and bad CRCs are dropped silently (counted); a good CRC with a
length field that disagrees with the byte count is answered ``bad_len``, one longer than
``max_payload`` ``too_long``; a frame that stops for ``timeout_cycles`` without its
delimiter is abandoned (counted). A new good frame that arrives while the previous one
has no reply yet is dropped (``busy_drops``): the protocol is stop-and-wait. The decoder
never stalls ``rx`` (a UART cannot be stalled).
"""


import functools
import operator
import types

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..host.protocol import Status as HostStatus

__all__ = ["Status", "FrameHeader", "ReplyHeader", "PayloadByte", "ErrReply", "stats_layout",
           "STATS", "crc16_next", "FrameDecoder", "FrameEncoder", "HostLink", "OVERHEAD_BYTES",
           "encoded_max", "SerialHostLink"]

#: header (seq, op/status, len u16) + CRC-16
OVERHEAD_BYTES = 6
CRC_POLY, CRC_INIT = 0x1021, 0xFFFF


#: Reply status codes: ``spikeforge.host.protocol.Status`` (the one list, docs/protocol.md)
#: as an 8-bit Amaranth enum.
Status = types.new_class("Status", (enum.Enum,), {"shape": 8},
                         lambda ns: ns.update({s.name: s.value for s in HostStatus}))


class FrameHeader(data.Struct):
    """A good request's header, on ``cmd``."""
    seq: 8
    op: 8
    len: 16


class ReplyHeader(data.Struct):
    """A reply's header, on ``rsp``; ``len`` bytes follow on ``rsp_data``."""
    seq: 8
    status: Status
    len: 16


class PayloadByte(data.Struct):
    """A request's payload byte on ``cmd_data``; ``last`` marks the ``len``-th."""
    data: 8
    last: 1


class ErrReply(data.Struct):
    """A framing-level error reply (no payload)."""
    seq: 8
    status: Status


#: The link's counters (saturating), in the order of the ``read_counters`` op (core 0xFF).
STATS = ("frames", "crc_errors", "malformed", "timeouts", "busy_drops", "replays", "err_replies")


def stats_layout(bits: int) -> data.StructLayout:
    return data.StructLayout({name: unsigned(bits) for name in STATS})


def encoded_max(n: int) -> int:
    """Bytes of the COBS encoding of ``n`` bytes, at most (without the delimiter)."""
    return n + n // 254 + 1


@functools.cache
def _crc_matrix():
    """For each bit of the next CRC, the set of input bits it XORs: 0..15 the CRC, 16..23
    the byte (CRC-16 poly 0x1021, MSB first, one byte per step)."""
    c = [{i} for i in range(16)]
    for k in range(8):                       # byte bit 7 first
        fb = c[15] ^ {16 + 7 - k}
        nxt = [set() for _ in range(16)]
        for i in range(15, 0, -1):
            nxt[i] = set(c[i - 1])
        nxt[0] = set()
        for i in range(16):
            if (CRC_POLY >> i) & 1:
                nxt[i] = nxt[i] ^ fb
        c = nxt
    return c


def crc16_next(crc, byte):
    """The CRC-16/IBM-3740 register after ``byte`` (XOR network, one byte per cycle)."""
    src = Cat(crc, byte)
    return Cat(*(functools.reduce(operator.xor, [src[i] for i in sorted(bits)], Const(0, 1))
                 for bits in _crc_matrix()))


def _check_int(who, name, v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{who}: {name} must be an integer in {lo}..{hi}, not {v!r}")


def _sat_inc(m, ctr):
    with m.If(ctr != (1 << len(ctr)) - 1):
        m.d.sync += ctr.eq(ctr + 1)


class FrameDecoder(wiring.Component):
    """Bytes -> good, buffered frames (see the module docstring).

    Ports: ``rx`` (In stream, bytes; always ready), ``cmd`` (Out stream of
    :class:`FrameHeader`), ``cmd_data`` (Out stream of :class:`PayloadByte`: after ``cmd``
    was taken, exactly ``len`` bytes), ``err`` (Out stream of :class:`ErrReply`),
    ``replay`` (Out, one-cycle strobe: send the cached reply again), ``reply_done``
    (In strobe: the reply to the last accepted frame is complete; releases the payload
    buffer, discarding what the consumer did not read), ``stats`` (Out, the counters that
    the decoder keeps; ``err_replies`` is HostLink's).
    """

    def __init__(self, max_payload: int = 2048, timeout_cycles: int = 1 << 20,
                 counter_bits: int = 16):
        _check_int("FrameDecoder", "max_payload", max_payload, 1, 0xFFFF)
        _check_int("FrameDecoder", "timeout_cycles", timeout_cycles, 1, (1 << 32) - 1)
        _check_int("FrameDecoder", "counter_bits", counter_bits, 1, 32)
        self.max_payload, self.timeout_cycles, self.counter_bits = max_payload, timeout_cycles, counter_bits
        super().__init__({
            "rx": In(stream.Signature(8)),
            "cmd": Out(stream.Signature(FrameHeader)),
            "cmd_data": Out(stream.Signature(PayloadByte)),
            "err": Out(stream.Signature(ErrReply)),
            "replay": Out(1),
            "reply_done": In(1),
            "stats": Out(stats_layout(counter_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        MP = self.max_payload
        st = self.stats
        m.submodules.buf = buf = Memory(shape=8, depth=MP, init=[])
        wp, rp = buf.write_port(), buf.read_port()

        # ---------------------------------------------------------------- receive side
        m.d.comb += self.rx.ready.eq(1)
        b = self.rx.payload
        in_frame = Signal()            # bytes since the last delimiter
        blk = Signal(8)                # bytes left in the current COBS block
        zero_next = Signal()           # the block that ended implies a zero
        pos_max = MP + OVERHEAD_BYTES + 1
        pos = Signal(range(pos_max + 1))
        crc = Signal(16, init=CRC_INIT)
        p_seq, p_op, p_len = Signal(8), Signal(8), Signal(16)
        tail = Signal(16)              # the last two decoded bytes (the CRC field at the end)
        lost = Signal()                # a payload write of this frame was refused (buffer held)
        idle = Signal(range(self.timeout_cycles + 1))

        held = Signal()                # the buffer holds a frame being delivered
        pending = Signal()             # the last accepted frame has no complete reply yet
        last_valid = Signal()
        last_key = Signal(24)          # (seq, CRC field) of the last accepted frame

        dv, db = Signal(), Signal(8)   # a decoded byte this cycle
        end = Signal()                 # a delimiter this cycle, closing a non-empty frame
        restart = Signal()             # clear the parser (delimiter or timeout)

        with m.If(self.rx.valid):
            m.d.sync += idle.eq(0)
            with m.If(b == 0):
                m.d.comb += [restart.eq(1), end.eq(in_frame)]
            with m.Else():
                m.d.sync += in_frame.eq(1)
                with m.If(blk == 0):                   # a code byte
                    m.d.sync += [blk.eq(b - 1), zero_next.eq(b != 0xFF)]
                    m.d.comb += [dv.eq(in_frame & zero_next), db.eq(0)]
                with m.Else():
                    m.d.sync += blk.eq(blk - 1)
                    m.d.comb += [dv.eq(1), db.eq(b)]
        with m.Elif(in_frame):
            with m.If(idle == self.timeout_cycles - 1):
                m.d.comb += restart.eq(1)
                _sat_inc(m, st.timeouts)
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.If(dv):
            m.d.sync += [crc.eq(crc16_next(crc, db)), tail.eq(Cat(db, tail[:8]))]
            with m.If(pos != pos_max):
                m.d.sync += pos.eq(pos + 1)
            with m.Switch(pos):
                with m.Case(0):
                    m.d.sync += p_seq.eq(db)
                with m.Case(1):
                    m.d.sync += p_op.eq(db)
                with m.Case(2):
                    m.d.sync += p_len[:8].eq(db)
                with m.Case(3):
                    m.d.sync += p_len[8:].eq(db)
                with m.Default():
                    with m.If(pos < MP + 4):
                        with m.If(held):
                            m.d.sync += lost.eq(1)
                        with m.Else():
                            m.d.comb += [wp.addr.eq(pos - 4), wp.data.eq(db), wp.en.eq(1)]

        with m.If(restart):
            m.d.sync += [in_frame.eq(0), blk.eq(0), zero_next.eq(0), pos.eq(0), crc.eq(CRC_INIT),
                         lost.eq(0), idle.eq(0)]

        # ---------------------------------------------------------------- frame checks
        err_valid, err_seq, err_status = Signal(), Signal(8), Signal(Status)
        m.d.comb += [self.err.valid.eq(err_valid), self.err.payload.seq.eq(err_seq),
                     self.err.payload.status.eq(err_status)]
        with m.If(self.err.ready):
            m.d.sync += err_valid.eq(0)

        h_seq, h_op, h_len = Signal(8), Signal(8), Signal(16)
        deliver = Signal()
        key = Cat(tail, p_seq)
        with m.If(end):
            with m.If((blk != 0) | (pos < OVERHEAD_BYTES)):
                _sat_inc(m, st.malformed)
            with m.Elif(crc != 0):
                _sat_inc(m, st.crc_errors)
            with m.Elif(last_valid & (key == last_key)):
                with m.If(pending):
                    _sat_inc(m, st.busy_drops)         # its reply is still being made
                with m.Else():
                    m.d.comb += self.replay.eq(1)
                    _sat_inc(m, st.replays)
            with m.Elif(pending | held | lost):
                _sat_inc(m, st.busy_drops)
            with m.Else():
                m.d.sync += [last_key.eq(key), last_valid.eq(1), pending.eq(1)]
                with m.If(p_len > MP):
                    m.d.sync += [err_valid.eq(1), err_seq.eq(p_seq), err_status.eq(Status.TOO_LONG)]
                with m.Elif(pos != p_len + OVERHEAD_BYTES):
                    m.d.sync += [err_valid.eq(1), err_seq.eq(p_seq), err_status.eq(Status.BAD_LEN)]
                with m.Else():
                    m.d.comb += deliver.eq(1)
                    m.d.sync += [h_seq.eq(p_seq), h_op.eq(p_op), h_len.eq(p_len), held.eq(1)]
                    _sat_inc(m, st.frames)
        with m.If(self.reply_done):
            m.d.sync += pending.eq(0)

        # ---------------------------------------------------------------- delivery
        idx = Signal(range(MP + 1))
        m.d.comb += [self.cmd.payload.seq.eq(h_seq), self.cmd.payload.op.eq(h_op),
                     self.cmd.payload.len.eq(h_len),
                     rp.addr.eq(idx), self.cmd_data.payload.data.eq(rp.data),
                     self.cmd_data.payload.last.eq(idx == h_len - 1)]
        def release():         # replied: what the consumer did not read is discarded
            with m.If(self.reply_done):
                m.d.sync += held.eq(0)
                m.next = "IDLE"

        with m.FSM(name="deliver"):
            with m.State("IDLE"):
                m.d.comb += rp.en.eq(0)
                with m.If(deliver):
                    m.d.sync += idx.eq(0)
                    m.next = "HDR"
            with m.State("HDR"):
                m.d.comb += [self.cmd.valid.eq(1), rp.en.eq(0)]
                with m.If(self.cmd.ready):
                    with m.If(h_len == 0):
                        m.d.sync += held.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
                release()
            with m.State("READ"):                      # address out, data next cycle
                m.d.comb += rp.en.eq(1)
                m.next = "DATA"
                release()
            with m.State("DATA"):
                m.d.comb += [self.cmd_data.valid.eq(1), rp.en.eq(0)]
                with m.If(self.cmd_data.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == h_len - 1):
                        m.d.sync += held.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
                release()
        return m


class FrameEncoder(wiring.Component):
    """Replies -> CRC -> COBS -> bytes (see the module docstring).

    Ports: ``rsp`` (In stream of :class:`ReplyHeader`), ``rsp_data`` (In stream of bytes:
    exactly ``len`` after each header), ``tx`` (Out stream of bytes: the encoded reply and
    its 0x00 delimiter), ``replay`` (In strobe: send the cached reply again; ignored unless
    a reply is cached; one that comes while a reply is being sent is sent after it, before
    the next reply is taken), ``done`` (Out strobe: a reply is encoded and cached),
    ``busy`` (Out). A reply with ``len`` > ``max_payload`` has its bytes consumed and is
    replaced by ``{seq, too_long, 0}``.
    """

    def __init__(self, max_payload: int = 2032):
        _check_int("FrameEncoder", "max_payload", max_payload, 1, 0xFFFF)
        self.max_payload = max_payload
        self.depth = encoded_max(max_payload + OVERHEAD_BYTES)
        super().__init__({
            "rsp": In(stream.Signature(ReplyHeader)),
            "rsp_data": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "replay": In(1),
            "done": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        MP, D = self.max_payload, self.depth
        m.submodules.buf = buf = Memory(shape=8, depth=D, init=[])
        wp, rp = buf.write_port(), buf.read_port()

        seq, status, n = Signal(8), Signal(8), Signal(16)      # n: payload bytes
        drain = Signal(16)
        crc = Signal(16, init=CRC_INIT)
        # the byte source, from registers only (short paths): phase, index within it
        ph = Signal(2)                                         # 0 header, 1 payload, 2 CRC
        hi = Signal(2)                                         # header byte index
        pay_left = Signal(16)
        pay_one = Signal()                                     # pay_left == 1
        ci = Signal()                                          # CRC byte index
        slot = Signal(range(D))                                # the open block's code slot
        wptr = Signal(range(D + 1))
        k = Signal(8)                                          # bytes in the open block
        final = Signal()
        cached = Signal()
        ri = Signal(range(D + 1))
        # A replay asked for while the reply is still going out (a retry that arrived after
        # the reply was complete, during its transmission): sent when this one is done.
        replay_req = Signal()

        fb, fv = Signal(8), Signal()
        is_last = Signal()
        with m.Switch(ph):
            with m.Case(0):
                m.d.comb += [fb.eq(Mux(hi[1], Mux(hi[0], n[8:], n[:8]), Mux(hi[0], status, seq))),
                             fv.eq(1)]
            with m.Case(1):
                m.d.comb += [fb.eq(self.rsp_data.payload), fv.eq(self.rsp_data.valid)]
            with m.Default():
                m.d.comb += [fb.eq(Mux(ci, crc[:8], crc[8:])), fv.eq(1), is_last.eq(ci)]

        with m.FSM(name="enc"):
            with m.State("IDLE"):
                m.d.comb += self.rsp.ready.eq(~replay_req)
                with m.If(replay_req):
                    m.d.sync += [ri.eq(0), replay_req.eq(0)]
                    with m.If(cached):
                        m.next = "READ"
                with m.Elif(self.rsp.valid):
                    h = self.rsp.payload
                    m.d.sync += [seq.eq(h.seq), crc.eq(CRC_INIT), slot.eq(0), wptr.eq(1),
                                 k.eq(0), cached.eq(0), ph.eq(0), hi.eq(0), ci.eq(0)]
                    with m.If(h.len > MP):
                        m.d.sync += [status.eq(Status.TOO_LONG), n.eq(0), drain.eq(h.len),
                                     pay_left.eq(0)]
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += [status.eq(h.status), n.eq(h.len), pay_left.eq(h.len),
                                     pay_one.eq(h.len == 1)]
                        m.next = "FEED"
            with m.State("DRAIN"):
                m.d.comb += [self.busy.eq(1), self.rsp_data.ready.eq(1)]
                with m.If(self.rsp_data.valid):
                    m.d.sync += drain.eq(drain - 1)
                    with m.If(drain == 1):
                        m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += [self.busy.eq(1), self.rsp_data.ready.eq(ph == 1)]
                with m.If(fv):
                    with m.Switch(ph):                 # advance the source
                        with m.Case(0):
                            m.d.sync += [hi.eq(hi + 1), crc.eq(crc16_next(crc, fb))]
                            with m.If(hi == 3):
                                m.d.sync += ph.eq(Mux(n == 0, 2, 1))
                        with m.Case(1):
                            m.d.sync += [pay_left.eq(pay_left - 1), pay_one.eq(pay_left == 2),
                                         crc.eq(crc16_next(crc, fb))]
                            with m.If(pay_one):
                                m.d.sync += ph.eq(2)
                        with m.Default():
                            m.d.sync += ci.eq(1)
                    with m.If(fb == 0):                # close the block in its reserved slot
                        m.d.comb += [wp.addr.eq(slot), wp.data.eq(k + 1), wp.en.eq(1)]
                        m.d.sync += [slot.eq(wptr), wptr.eq(wptr + 1), k.eq(0)]
                        with m.If(is_last):
                            m.d.sync += final.eq(1)
                            m.next = "CLOSE"
                    with m.Else():
                        m.d.comb += [wp.addr.eq(wptr), wp.data.eq(fb), wp.en.eq(1)]
                        m.d.sync += [wptr.eq(wptr + 1), k.eq(k + 1)]
                        with m.If((k == 253) | is_last):
                            m.d.sync += final.eq(is_last)
                            m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.busy.eq(1), wp.addr.eq(slot), wp.data.eq(k + 1), wp.en.eq(1)]
                with m.If(final):
                    m.d.sync += [cached.eq(1), ri.eq(0)]
                    m.d.comb += self.done.eq(1)
                    m.next = "READ"
                with m.Else():
                    m.d.sync += [slot.eq(wptr), wptr.eq(wptr + 1), k.eq(0)]
                    m.next = "FEED"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), rp.addr.eq(ri), rp.en.eq(1)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), rp.en.eq(0), self.tx.valid.eq(1),
                             self.tx.payload.eq(rp.data)]
                with m.If(self.tx.ready):
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri == wptr - 1):
                        m.next = "DELIM"
                    with m.Else():
                        m.next = "READ"
            with m.State("DELIM"):
                m.d.comb += [self.busy.eq(1), self.tx.valid.eq(1), self.tx.payload.eq(0)]
                with m.If(self.tx.ready):
                    m.next = "IDLE"
        # (after the FSM: a replay asked for in the cycle one starts is one more replay)
        with m.If(self.replay):
            m.d.sync += replay_req.eq(1)
        return m


class HostLink(wiring.Component):
    """:class:`FrameDecoder` + :class:`FrameEncoder` + framing-level error replies.

    Ports (the chip's host interface attaches to ``cmd``/``cmd_data``/``rsp``/``rsp_data``):

    * ``rx`` (In stream, bytes from the UART or a transport; always ready),
    * ``tx`` (Out stream, bytes to the UART or transport),
    * ``cmd`` (Out, :class:`FrameHeader`) then ``len`` bytes on ``cmd_data`` (Out,
      :class:`PayloadByte`): each good, new request, once,
    * ``rsp`` (In, :class:`ReplyHeader`) then ``len`` bytes on ``rsp_data`` (In): exactly
      one reply per request taken on ``cmd``, with its ``seq``,
    * ``stats`` (Out, :func:`stats_layout`): the link's saturating counters.

    Defaults: requests up to 2,048 payload bytes (the buffer is one 2,048 x 9 EBR; a
    784-word weight row, 1,575 bytes with its address, fits one frame); replies up to
    2,032 bytes (the largest whose COBS encoding, 2,047 bytes, fits one EBR).
    """

    def __init__(self, max_payload: int = 2048, max_reply: int = 2032,
                 timeout_cycles: int = 1 << 20, counter_bits: int = 16):
        _check_int("HostLink", "max_payload", max_payload, 1, 0xFFFF)
        _check_int("HostLink", "max_reply", max_reply, 1, 0xFFFF)
        _check_int("HostLink", "timeout_cycles", timeout_cycles, 1, (1 << 32) - 1)
        _check_int("HostLink", "counter_bits", counter_bits, 1, 32)
        self.max_payload, self.max_reply = max_payload, max_reply
        self.timeout_cycles, self.counter_bits = timeout_cycles, counter_bits
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(stream.Signature(FrameHeader)),
            "cmd_data": Out(stream.Signature(PayloadByte)),
            "rsp": In(stream.Signature(ReplyHeader)),
            "rsp_data": In(stream.Signature(8)),
            "stats": Out(stats_layout(counter_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dec = dec = FrameDecoder(self.max_payload, self.timeout_cycles, self.counter_bits)
        m.submodules.enc = enc = FrameEncoder(self.max_reply)
        wiring.connect(m, wiring.flipped(self.rx), dec.rx)
        wiring.connect(m, enc.tx, wiring.flipped(self.tx))
        wiring.connect(m, dec.cmd, wiring.flipped(self.cmd))
        wiring.connect(m, dec.cmd_data, wiring.flipped(self.cmd_data))
        wiring.connect(m, wiring.flipped(self.rsp_data), enc.rsp_data)
        m.d.comb += [enc.replay.eq(dec.replay), dec.reply_done.eq(enc.done)]

        # error replies first; an executor's reply waits while one is offered
        with m.If(dec.err.valid):
            m.d.comb += [enc.rsp.valid.eq(1), enc.rsp.payload.seq.eq(dec.err.payload.seq),
                         enc.rsp.payload.status.eq(dec.err.payload.status),
                         enc.rsp.payload.len.eq(0), dec.err.ready.eq(enc.rsp.ready)]
        with m.Else():
            m.d.comb += [enc.rsp.valid.eq(self.rsp.valid), enc.rsp.payload.eq(self.rsp.payload),
                         self.rsp.ready.eq(enc.rsp.ready)]

        err_replies = Signal(self.counter_bits)
        with m.If(dec.err.valid & enc.rsp.ready):
            _sat_inc(m, err_replies)
        for name in STATS:
            src = err_replies if name == "err_replies" else getattr(dec.stats, name)
            m.d.comb += getattr(self.stats, name).eq(src)
        return m


class SerialHostLink(wiring.Component):
    """:class:`~spikeforge.rtl.uart.Uart` + :class:`HostLink`: the host link from the pins.

    Ports: ``rx`` / ``tx`` (the UART pins), ``cmd``, ``cmd_data``, ``rsp``, ``rsp_data``,
    ``stats`` (as :class:`HostLink`), ``uart_frame_errors``, ``uart_overruns``.
    """

    def __init__(self, clk_hz: float, baud: float = 3_000_000, *, frac_bits: int = 4,
                 max_payload: int = 2048, max_reply: int = 2032,
                 timeout_cycles: int | None = None, counter_bits: int = 16):
        from .uart import BaudDivisor

        self.divisor = BaudDivisor(clk_hz, baud, frac_bits)
        if timeout_cycles is None:       # 64 byte times: far beyond any gap inside a frame
            timeout_cycles = round(64 * 10 * clk_hz / baud)
        self._uart_args = (clk_hz, baud, frac_bits, counter_bits)
        self._link_args = (max_payload, max_reply, timeout_cycles, counter_bits)
        HostLink(*self._link_args)._MustUse__silence = True    # validate now, with its messages
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "cmd": Out(stream.Signature(FrameHeader)),
            "cmd_data": Out(stream.Signature(PayloadByte)),
            "rsp": In(stream.Signature(ReplyHeader)),
            "rsp_data": In(stream.Signature(8)),
            "stats": Out(stats_layout(counter_bits)),
            "uart_frame_errors": Out(counter_bits),
            "uart_overruns": Out(counter_bits),
        })

    def elaborate(self, platform):
        from .uart import Uart

        m = Module()
        clk_hz, baud, frac_bits, counter_bits = self._uart_args
        m.submodules.uart = uart = Uart(clk_hz, baud, frac_bits=frac_bits, counter_bits=counter_bits)
        m.submodules.link = link = HostLink(*self._link_args)
        wiring.connect(m, uart.rx_data, link.rx)
        wiring.connect(m, link.tx, uart.tx_data)
        for name in ("cmd", "cmd_data"):
            wiring.connect(m, getattr(link, name), wiring.flipped(getattr(self, name)))
        for name in ("rsp", "rsp_data"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(link, name))
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx), self.stats.eq(link.stats),
                     self.uart_frame_errors.eq(uart.frame_errors),
                     self.uart_overruns.eq(uart.overruns)]
        return m
