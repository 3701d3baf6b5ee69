"""The chip on an ECP5 board: PLL, reset, UART and status LEDs around :class:`HostChip`.

:class:`BoardTop` is elaborated for an Amaranth board platform (``amaranth-boards``; the
board table is ``fpga/boards.py``):

* the board's default clock -> an ``EHXPLLL`` (dividers from :func:`ecp5_pll`) -> the
  ``sync`` domain at ``clk_mhz`` (the achieved frequency is :attr:`BoardTop.pll`'s
  ``f_out``);
* reset: ``sync`` is held in reset while the PLL is not locked or the board's reset button
  is pressed (the platform's ``default_rst``, else a ``button_pwr``), released
  synchronously (``ResetSynchronizer``);
* ``Uart(f_out, baud)`` on the board's UART 0 pins feeds ``HostChip(cfg, debug=False)``'s
  byte streams; its ``frame_errors`` / ``overruns`` go to the chip's ``read_counters``;
* status LEDs from ``HostChip.activity``: ``led`` 0 idle (no request in hand), 1 training
  (a ``train``/``update`` request), 2 error (any error counter moved in the last ~0.25 s),
  3 a 1 Hz heartbeat (the clock runs and reset is released); on boards with only an RGB
  LED: green idle, blue training, red error. Busy and error are stretched so that a
  request of a few microseconds is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PllConfig", "ecp5_pll", "board_clocks", "BoardTop", "PLL_TOLERANCE"]

# ECP5 sysCLOCK PLL (Lattice FPGA-TN-02200 and the data sheet DS1044): input 8..400 MHz,
# phase detector 3.125..400 MHz, VCO 400..800 MHz, outputs 3.125..400 MHz; CLKI_DIV
# 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128 (the search of prjtrellis' ecppll).
F_IN = (8e6, 400e6)
F_PFD = (3.125e6, 400e6)
F_VCO = (400e6, 800e6)
F_OUT = (3.125e6, 400e6)
#: The largest relative error between the asked and the achieved PLL frequency.
PLL_TOLERANCE = 0.01


@dataclass(frozen=True)
class PllConfig:
    """Dividers of an ``EHXPLLL`` with CLKOP fed back: f_out = f_in / clki_div * clkfb_div,
    VCO = f_out * clkop_div."""

    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd(self) -> float:
        return self.f_in / self.clki_div

    @property
    def f_out(self) -> float:
        return self.f_pfd * self.clkfb_div

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div

    def __str__(self):
        return (f"{self.f_in / 1e6:g} MHz / {self.clki_div} * {self.clkfb_div} = "
                f"{self.f_out / 1e6:.4g} MHz (VCO {self.f_vco / 1e6:.4g} MHz / {self.clkop_div})")


def ecp5_pll(f_in: float, f_out: float, tolerance: float = PLL_TOLERANCE) -> PllConfig:
    """The dividers that bring ``f_in`` (Hz) closest to ``f_out`` (Hz); a VCO nearer the
    middle of its range breaks ties. Raises ``ValueError`` naming the frequencies when the
    input or output is out of the PLL's range or the best is more than ``tolerance`` off."""
    for name, v in (("f_in", f_in), ("f_out", f_out), ("tolerance", tolerance)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"ECP5 PLL: {name} must be a positive number, not {v!r}")
    if not F_IN[0] <= f_in <= F_IN[1]:
        raise ValueError(f"ECP5 PLL: input clock {f_in / 1e6:g} MHz is outside the PLL's "
                         f"{F_IN[0] / 1e6:g}..{F_IN[1] / 1e6:g} MHz")
    if not F_OUT[0] <= f_out <= F_OUT[1]:
        raise ValueError(f"ECP5 PLL: {f_out / 1e6:g} MHz is not reachable: the PLL's output "
                         f"range is {F_OUT[0] / 1e6:g}..{F_OUT[1] / 1e6:g} MHz")
    best, key = None, None
    mid = sum(F_VCO) / 2
    for clki in range(1, 129):
        pfd = f_in / clki
        if not F_PFD[0] <= pfd <= F_PFD[1]:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not F_OUT[0] <= out <= F_OUT[1]:
                continue
            for clkop in range(1, 129):
                vco = out * clkop
                if vco < F_VCO[0]:
                    continue
                if vco > F_VCO[1]:
                    break
                k = (abs(out - f_out), abs(vco - mid))
                if key is None or k < key:
                    best, key = PllConfig(f_in, clki, clkfb, clkop), k
    if best is None or abs(best.f_out - f_out) > tolerance * f_out:
        near = f"; the nearest is {best}" if best else ""
        raise ValueError(f"ECP5 PLL: {f_out / 1e6:g} MHz is not reachable from {f_in / 1e6:g} MHz "
                         f"within {100 * tolerance:g} %{near}")
    return best


def board_clocks(board_clk_hz: float, clk_mhz: float, baud: int):
    """``(PllConfig, BaudDivisor)`` of a board top: the PLL from the board clock to
    ``clk_mhz`` and the UART's divisor at the achieved frequency; ``ValueError`` (with the
    numbers) when either is out of reach."""
    from .uart import BaudDivisor

    if isinstance(clk_mhz, bool) or not isinstance(clk_mhz, (int, float)) or clk_mhz <= 0:
        raise ValueError(f"BoardTop: clk_mhz must be a positive number, not {clk_mhz!r}")
    pll = ecp5_pll(board_clk_hz, clk_mhz * 1e6)
    return pll, BaudDivisor(pll.f_out, baud)


def _find(platform, names):
    """The first of ``(name, number)`` that the platform has, else ``None``."""
    have = {(r.name, r.number) for r in platform.resources.values()}
    for n in names:
        if n in have:
            return n
    return None


class BoardTop(Elaboratable):
    """``HostChip`` on a board (see the module doc).

    ``cfg``: the chip's configuration (``hardware.baud`` is the UART's rate); ``clk_mhz``:
    the ``sync`` frequency the PLL makes from the board clock; ``chip``: a ready
    ``HostChip`` (default ``HostChip(cfg, debug=False)``); ``timeout_cycles`` of its link
    default to 64 byte times at ``baud``. The PLL is computed in the constructor when
    ``board_clk_hz`` is given (then a frequency out of reach is refused before any
    elaboration), else from the platform's default clock at elaboration.
    """

    def __init__(self, cfg, clk_mhz: float = 100.0, *, board_clk_hz: float | None = None,
                 baud: int | None = None, chip=None, led_hz: float = 4.0):
        if isinstance(clk_mhz, bool) or not isinstance(clk_mhz, (int, float)) or clk_mhz <= 0:
            raise ValueError(f"BoardTop: clk_mhz must be a positive number, not {clk_mhz!r}")
        self.cfg = cfg
        self.clk_hz = clk_mhz * 1e6
        self.baud = cfg.hardware.baud if baud is None else baud
        self.led_hz = led_hz
        self.pll = self.divisor = None
        if board_clk_hz is not None:          # refuse a clock or baud rate out of reach now
            self.pll, self.divisor = board_clocks(board_clk_hz, clk_mhz, self.baud)
        self._chip = chip

    def _make_chip(self, f_out):
        from .top import HostChip

        if self._chip is not None:
            return self._chip
        return HostChip(self.cfg, debug=False, timeout_cycles=round(64 * 10 * f_out / self.baud))

    def elaborate(self, platform):
        from .uart import Uart

        if platform is None:
            raise ValueError("BoardTop: elaborate it for a board platform (fpga/boards.py), "
                             "not for simulation")
        m = Module()
        # ---------------------------------------------------------------- clock and reset
        clk_res = platform.lookup(platform.default_clk)
        f_in = float(clk_res.clock.frequency)
        if self.pll is None:
            self.pll = ecp5_pll(f_in, self.clk_hz)
        elif self.pll.f_in != f_in:
            raise ValueError(f"BoardTop: built for a {self.pll.f_in / 1e6:g} MHz board clock, the "
                             f"platform's {platform.default_clk} is {f_in / 1e6:g} MHz")
        pll = self.pll
        clk_in = platform.request(platform.default_clk, 0).i
        clk_out, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.f_out / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_div - 1, p_CLKOP_FPHASE=0,
            i_CLKI=clk_in, i_CLKFB=clk_out, o_CLKOP=clk_out, o_LOCK=locked,
            i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk_out)
        arst = Signal()
        button = platform.default_rst or _find(platform, [("button_pwr", 0)])
        if isinstance(button, tuple):
            button = button[0]
        if button is not None:
            m.d.comb += arst.eq(~locked | platform.request(button, 0).i)
        else:
            m.d.comb += arst.eq(~locked)
        m.submodules.reset_sync = ResetSynchronizer(arst, domain="sync")
        self.reset_button = button

        # ---------------------------------------------------------------- UART + chip
        m.submodules.uart = uart = Uart(pll.f_out, self.baud)
        m.submodules.hostchip = chip = self._make_chip(pll.f_out)
        pins = platform.request("uart", 0)
        m.d.comb += [uart.rx.eq(pins.rx.i), pins.tx.o.eq(uart.tx),
                     chip.rx.payload.eq(uart.rx_data.payload), chip.rx.valid.eq(uart.rx_data.valid),
                     uart.rx_data.ready.eq(chip.rx.ready),
                     uart.tx_data.payload.eq(chip.tx.payload), uart.tx_data.valid.eq(chip.tx.valid),
                     chip.tx.ready.eq(uart.tx_data.ready),
                     chip.uart_frame_errors.eq(uart.frame_errors),
                     chip.uart_overruns.eq(uart.overruns)]

        # ---------------------------------------------------------------- status LEDs
        stretch = max(1, round(pll.f_out / self.led_hz))
        act = chip.activity
        busy_t, err_t = Signal(range(stretch + 1)), Signal(range(stretch + 1))
        with m.If(act.training):
            m.d.sync += busy_t.eq(stretch)
        with m.Elif(busy_t != 0):
            m.d.sync += busy_t.eq(busy_t - 1)
        with m.If(act.error):
            m.d.sync += err_t.eq(stretch)
        with m.Elif(err_t != 0):
            m.d.sync += err_t.eq(err_t - 1)
        idle, training, error = ~act.busy & (busy_t == 0), busy_t != 0, err_t != 0
        half = max(1, round(pll.f_out / 2))
        beat_n, beat = Signal(range(half)), Signal()
        with m.If(beat_n == half - 1):
            m.d.sync += [beat_n.eq(0), beat.eq(~beat)]
        with m.Else():
            m.d.sync += beat_n.eq(beat_n + 1)
        self.leds = []
        if _find(platform, [("led", 0)]):
            for k, v in enumerate((idle, training, error, beat)):
                if _find(platform, [("led", k)]):
                    m.d.comb += platform.request("led", k).o.eq(v)
                    self.leds.append(("led", k, ("idle", "training", "error", "heartbeat")[k]))
        elif _find(platform, [("rgb_led", 0)]):
            rgb = platform.request("rgb_led", 0)
            m.d.comb += [rgb.g.o.eq(idle), rgb.b.o.eq(training), rgb.r.o.eq(error)]
            self.leds = [("rgb_led", 0, "g idle, b training, r error")]
        return m
