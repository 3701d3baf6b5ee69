"""The chip behind its host link: :class:`HostChip` = ``HostLink`` + ``Executor`` + ``Chip``.

Byte streams ``rx`` (In, always ready) / ``tx`` (Out) at the top: a board wrapper puts a
UART in front of them (``rtl/uart.py``), a testbench pushes protocol frames
(docs/protocol.md) into ``rx`` and reads replies from ``tx`` (sim/hostchip_tb.py).
``uart_frame_errors`` / ``uart_overruns`` (In, 0 if unconnected) are the UART's counters,
reported by ``read_counters`` core 0xFF. With ``debug`` the chip's monitor ports
(``mon_valid``, ``mon<k>_<kind>``) are passed up for scoreboards, and ``mon_host_ev``
shows each input event the executor hands the chip (``{valid, w: {t, j, end}}``).

``activity`` (Out, for a board's status LEDs; it changes nothing): ``busy`` (a request is
being handled), ``training`` (a ``train`` or ``update`` request), ``error`` (a one-cycle
pulse when the executor sends a reply whose status is not ``ok``, or one of the error
counters of ``read_counters`` core 0xFF moves: CRC errors, malformed frames, timeouts,
busy drops, the link's own error replies, UART framing errors, overruns).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .chip import Chip, chip_event_layout
from .executor import Executor
from .geometry import ChipGeometry
from .hostlink import HostLink, Status

#: ``HostChip.activity``: what a board shows on its status LEDs.
ACTIVITY = data.StructLayout({"busy": 1, "training": 1, "error": 1})
#: The link counters that count errors (``HostLink.stats``; ``frames`` and ``replays`` do not).
ERROR_STATS = ("crc_errors", "malformed", "timeouts", "busy_drops", "err_replies")

__all__ = ["HostChip", "SerialHostChip", "ACTIVITY", "ERROR_STATS"]


class HostChip(wiring.Component):
    """``HostLink`` + ``Executor`` + ``Chip`` (see the module doc)."""

    def __init__(self, cfg, geometry: ChipGeometry | None = None, *, debug: bool = True,
                 weights=None, max_payload: int = 2048, max_reply: int = 2032,
                 timeout_cycles: int = 1 << 20, counter_bits: int = 16, shared_cores: bool = False):
        geometry = ChipGeometry.from_config(cfg) if geometry is None else geometry
        self.cfg, self.geometry = cfg, geometry
        self.chip = Chip(cfg, geometry, debug=debug, weights=weights, shared_cores=shared_cores)
        #: the chip's core modules, emitted beside this top (``shared_cores``)
        self.verilog_modules = self.chip.verilog_modules
        self.link = HostLink(max_payload, max_reply, timeout_cycles, counter_bits)
        self.executor = Executor(cfg, geometry, max_payload=max_payload, counter_bits=counter_bits,
                                 counters=debug, weights_loaded=weights is not None)
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                   "uart_frame_errors": In(counter_bits), "uart_overruns": In(counter_bits),
                   "activity": Out(ACTIVITY)}
        self._mon = [name for name in self.chip.signature.members if name.startswith("mon")]
        for name in self._mon:
            members[name] = self.chip.signature.members[name]
        self.debug = debug
        if debug:
            #: the events the executor hands the chip (``ev_in``), as they are taken
            members["mon_host_ev"] = Out(data.StructLayout({"valid": 1, "w": chip_event_layout(cfg)}))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.executor = ex = self.executor
        m.submodules.chip = chip = self.chip
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        wiring.connect(m, link.cmd, ex.cmd)
        wiring.connect(m, link.cmd_data, ex.cmd_data)
        wiring.connect(m, ex.rsp, link.rsp)
        wiring.connect(m, ex.rsp_data, link.rsp_data)
        wiring.connect(m, ex.chip_cmd, chip.cmd)
        wiring.connect(m, chip.rsp, ex.chip_rsp)
        wiring.connect(m, ex.ev, chip.ev_in)
        m.d.comb += [ex.stats.eq(link.stats), ex.uart_frame_errors.eq(self.uart_frame_errors),
                     ex.uart_overruns.eq(self.uart_overruns),
                     chip.ctr_node.eq(0), chip.ctr_addr.eq(0)]
        for name in self._mon:
            m.d.comb += getattr(self, name).eq(getattr(chip, name))
        # activity: the executor's state; an error is any error counter that moved
        counters = [getattr(link.stats, n) for n in ERROR_STATS] + [self.uart_frame_errors,
                                                                     self.uart_overruns]
        moved = []
        for k, c in enumerate(counters):
            prev = Signal.like(c, name=f"err_prev{k}")
            m.d.sync += prev.eq(c)
            moved.append(prev != c)
        # and any error reply of the executor (``err_replies`` counts only the link's own)
        moved.append(ex.rsp.valid & link.rsp.ready & (ex.rsp.payload.status != Status.OK))
        m.d.comb += [self.activity.busy.eq(ex.busy), self.activity.training.eq(ex.training),
                     self.activity.error.eq(Cat(*moved).any())]
        if self.debug:
            m.d.comb += [self.mon_host_ev.valid.eq(ex.ev.valid & ex.ev.ready),
                         self.mon_host_ev.w.eq(ex.ev.payload)]
        return m


class SerialHostChip(wiring.Component):
    """:class:`~spikeforge.rtl.uart.Uart` + :class:`HostChip`: the chip from its UART pins, as
    a board wrapper has it (without the PLL). Ports: ``rx`` (In 1, the pin, idle high),
    ``tx`` (Out 1, the pin). The UART's ``frame_errors`` / ``overruns`` feed HostChip's
    ``uart_frame_errors`` / ``uart_overruns`` (``read_counters`` core 0xFF, 7 and 8).
    ``timeout_cycles`` None: 64 byte times (as ``SerialHostLink``).
    """

    def __init__(self, cfg, geometry: ChipGeometry | None = None, *, clk_hz: float,
                 baud: float = 3_000_000, frac_bits: int = 4, timeout_cycles: int | None = None,
                 counter_bits: int = 16, **kw):
        from .uart import BaudDivisor

        self.divisor = BaudDivisor(clk_hz, baud, frac_bits)
        if timeout_cycles is None:
            timeout_cycles = round(64 * 10 * clk_hz / baud)
        self._uart_args = (clk_hz, baud, frac_bits, counter_bits)
        self.host = HostChip(cfg, geometry, timeout_cycles=timeout_cycles,
                             counter_bits=counter_bits, **kw)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        from .uart import Uart

        m = Module()
        clk_hz, baud, frac_bits, counter_bits = self._uart_args
        m.submodules.uart = uart = Uart(clk_hz, baud, frac_bits=frac_bits, counter_bits=counter_bits)
        m.submodules.host = host = self.host
        wiring.connect(m, uart.rx_data, host.rx)
        wiring.connect(m, host.tx, uart.tx_data)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     host.uart_frame_errors.eq(uart.frame_errors),
                     host.uart_overruns.eq(uart.overruns)]
        return m
