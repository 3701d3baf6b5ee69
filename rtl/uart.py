"""8N1 UART: receiver, transmitter and both together, with a fractional baud divisor.

Bit timing: a bit lasts ``clk_hz / baud`` clock cycles, held as a fixed-point divisor
``div = round(clk_hz * 2**frac_bits / baud)``; a counter adds ``2**frac_bits`` per cycle and
subtracts ``div`` when it reaches it (one bit period). The bit edges then fall within one
clock cycle of their exact times and the error does not accumulate, so 3 Mbaud works from
25 MHz (8.33 cycles per bit, which no integer divisor gives within 2 %). The rate error
``|clk_hz * 2**frac_bits / div - baud| / baud`` must be <= ``max_error`` (2 %): a divisor
that misses it is refused with the numbers, as are fewer than 4 cycles per bit (mid-bit
sampling needs them). ``frac_bits = 0`` is the classic integer divisor.

Receiver: ``rx`` passes a 2-flop synchroniser; a falling edge starts a byte, the counter is
preloaded with half a bit so that it samples the middle of every bit; a start bit that is
high again at mid-bit is a glitch (ignored); a stop bit that is low is a framing error:
the byte is dropped and ``frame_errors`` counts it. A byte that the ``data`` stream has not
taken when the next one completes is dropped and counted in ``overruns`` (a UART cannot
stall its sender). Counters saturate.

Transmitter: the ``data`` stream's byte goes out as start, 8 data bits LSB first, stop;
``ready`` is high while idle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["BaudDivisor", "baud_divisor", "UartRx", "UartTx", "Uart"]

#: The largest rate error a divisor may give (2 %: 8N1 frames tolerate about 4.5 % between
#: both ends; each end takes half).
MAX_BAUD_ERROR = 0.02
#: Fewest clock cycles per bit.
MIN_CYCLES_PER_BIT = 4


class BaudDivisor:
    """``div`` (fixed point, ``frac_bits`` fraction bits) for ``clk_hz`` and ``baud``."""

    def __init__(self, clk_hz: float, baud: float, frac_bits: int = 4,
                 max_error: float = MAX_BAUD_ERROR):
        for name, v in (("clk_hz", clk_hz), ("baud", baud)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"UART: {name} must be a positive number, not {v!r}")
        if not isinstance(frac_bits, int) or not 0 <= frac_bits <= 16:
            raise ValueError(f"UART: frac_bits must be an integer in 0..16, not {frac_bits!r}")
        ratio = clk_hz / baud
        if ratio < MIN_CYCLES_PER_BIT:
            raise ValueError(f"UART: {clk_hz / 1e6:g} MHz / {baud:g} baud = {ratio:.2f} clock cycles "
                             f"per bit; mid-bit sampling needs at least {MIN_CYCLES_PER_BIT} "
                             f"(a faster clock or a lower baud rate)")
        self.clk_hz, self.baud, self.frac_bits = clk_hz, baud, frac_bits
        self.one = 1 << frac_bits
        self.div = round(ratio * self.one)
        self.actual_baud = clk_hz * self.one / self.div
        self.error = (self.actual_baud - baud) / baud
        if abs(self.error) > max_error:
            raise ValueError(
                f"UART: {clk_hz / 1e6:g} MHz / {baud:g} baud needs a divisor of {ratio:.4f}; with "
                f"{frac_bits} fraction bits the nearest is {self.div / self.one:g}, which gives "
                f"{self.actual_baud:,.0f} baud ({100 * self.error:+.2f} %), beyond the "
                f"{100 * max_error:g} % limit: use more fraction bits (frac_bits) or another clock")

    @property
    def cycles_per_bit(self) -> float:
        return self.div / self.one

    def __repr__(self):
        return (f"BaudDivisor({self.clk_hz:g} Hz, {self.baud:g} baud: {self.div}/{self.one}, "
                f"{100 * self.error:+.3f} %)")


def baud_divisor(clk_hz, baud, frac_bits=4, max_error=MAX_BAUD_ERROR) -> BaudDivisor:
    return BaudDivisor(clk_hz, baud, frac_bits, max_error)


def _counter_bits(div: BaudDivisor) -> int:
    # the counter holds values below div + one (it is compared before it is reduced)
    return (div.div + div.one).bit_length()


class UartRx(wiring.Component):
    """8N1 receiver (see the module docstring).

    Ports: ``rx`` (In 1, the pin), ``data`` (Out stream of bytes), ``frame_errors``,
    ``overruns`` (Out, ``counter_bits`` wide, saturating).
    """

    def __init__(self, clk_hz, baud, *, frac_bits: int = 4, counter_bits: int = 16):
        self.divisor = BaudDivisor(clk_hz, baud, frac_bits)
        if not isinstance(counter_bits, int) or counter_bits < 1:
            raise ValueError(f"UartRx: counter_bits must be a positive integer, not {counter_bits!r}")
        self.counter_bits = counter_bits
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_errors": Out(counter_bits),
            "overruns": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)
        prev = Signal(init=1)
        m.d.sync += prev.eq(rx)

        acc = Signal(_counter_bits(d))
        tick = Signal()
        m.d.comb += tick.eq(acc >= d.div)
        nbit = Signal(range(10))          # 0 = start bit, 1..8 data, 9 stop
        shreg = Signal(8)
        hold = Signal(8)                  # the byte the ``data`` stream offers
        busy = Signal()
        full = Signal()
        m.d.comb += [self.data.valid.eq(full), self.data.payload.eq(hold)]
        byte_done = Signal()
        with m.If(self.data.ready):
            m.d.sync += full.eq(0)

        top = (1 << self.counter_bits) - 1

        with m.If(~busy):
            with m.If(prev & ~rx):                        # falling edge: a start bit
                # half a bit (plus the cycle of the edge) so that ticks fall mid-bit
                m.d.sync += [busy.eq(1), nbit.eq(0), acc.eq((d.div + 1) // 2 + d.one)]
        with m.Else():
            with m.If(tick):
                m.d.sync += [acc.eq(acc - d.div + d.one), nbit.eq(nbit + 1)]
                with m.Switch(nbit):
                    with m.Case(0):
                        with m.If(rx):                    # start bit gone at mid-bit: a glitch
                            m.d.sync += busy.eq(0)
                    with m.Case(9):
                        m.d.sync += busy.eq(0)
                        with m.If(rx):
                            m.d.comb += byte_done.eq(1)
                        with m.Elif(self.frame_errors != top):
                            m.d.sync += self.frame_errors.eq(self.frame_errors + 1)
                    with m.Default():
                        m.d.sync += shreg.eq(Cat(shreg[1:], rx))
            with m.Else():
                m.d.sync += acc.eq(acc + d.one)

        with m.If(byte_done):
            with m.If(full & ~self.data.ready):           # the last byte was not taken
                with m.If(self.overruns != top):
                    m.d.sync += self.overruns.eq(self.overruns + 1)
            with m.Else():
                m.d.sync += [hold.eq(shreg), full.eq(1)]
        return m


class UartTx(wiring.Component):
    """8N1 transmitter. Ports: ``data`` (In stream of bytes), ``tx`` (Out 1, the pin, idle high)."""

    def __init__(self, clk_hz, baud, *, frac_bits: int = 4):
        self.divisor = BaudDivisor(clk_hz, baud, frac_bits)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        acc = Signal(_counter_bits(d))
        tick = Signal()
        m.d.comb += tick.eq(acc >= d.div)
        frame = Signal(10, init=(1 << 10) - 1)      # stop, data[7:0], start: shifted out LSB first
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(frame[0]), self.data.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.data.valid):
                m.d.sync += [frame.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))),
                             left.eq(10), acc.eq(d.one)]
        with m.Elif(tick):
            m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), left.eq(left - 1),
                         acc.eq(acc - d.div + d.one)]
        with m.Else():
            m.d.sync += acc.eq(acc + d.one)
        return m


class Uart(wiring.Component):
    """:class:`UartRx` and :class:`UartTx` on one divisor.

    Ports: ``rx`` / ``tx`` (the pins), ``rx_data`` (Out stream: received bytes),
    ``tx_data`` (In stream: bytes to send), ``frame_errors``, ``overruns``.
    """

    def __init__(self, clk_hz, baud, *, frac_bits: int = 4, counter_bits: int = 16):
        self.divisor = BaudDivisor(clk_hz, baud, frac_bits)
        self._args = (clk_hz, baud, frac_bits, counter_bits)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "rx_data": Out(stream.Signature(8)),
            "tx_data": In(stream.Signature(8)),
            "frame_errors": Out(counter_bits),
            "overruns": Out(counter_bits),
        })

    def elaborate(self, platform):
        m = Module()
        clk_hz, baud, frac_bits, counter_bits = self._args
        m.submodules.rxu = rxu = UartRx(clk_hz, baud, frac_bits=frac_bits, counter_bits=counter_bits)
        m.submodules.txu = txu = UartTx(clk_hz, baud, frac_bits=frac_bits)
        wiring.connect(m, rxu.data, wiring.flipped(self.rx_data))
        wiring.connect(m, wiring.flipped(self.tx_data), txu.data)
        m.d.comb += [rxu.rx.eq(self.rx), self.tx.eq(txu.tx),
                     self.frame_errors.eq(rxu.frame_errors), self.overruns.eq(rxu.overruns)]
        return m
