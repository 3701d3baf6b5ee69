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

__all__ = ["Board", "BOARDS", "BOARD_NAMES", "get_board", "DEVICE_RESOURCES", "RESOURCE_KEYS"]

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
    #: openFPGALoader's ``-b`` name of the board (``openFPGALoader --list-boards``).
    ofl_board: str
    #: The cable that board name selects (openFPGALoader's name), for messages.
    ofl_cable: str
    #: Where to plug the USB cable, for the "no board found" message.
    usb_port: str
    #: Whether openFPGALoader can load the board's SRAM (``False``: SPI flash or DFU only).
    sram: bool = True
    #: Preset of ``configs/`` that ``spikeforge build --board`` builds without ``--config``
    #: (``None``: the built-in defaults).
    default_preset: str | None = None

    @property
    def programming(self) -> str:
        """How a bitstream gets onto the board (what ``spikeforge flash`` runs)."""
        how = "SRAM, or flash with --persist" if self.sram else "flash only"
        return f"openFPGALoader -b {self.ofl_board} ({self.ofl_cable}, {how})"

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


_ULX3S = dict(ofl_board="ulx3s", ofl_cable="ft231X", usb_port="its US1 USB port")
_CRAB = dict(ofl_board="orangeCrab", ofl_cable="dfu", sram=False,
             usb_port="USB-C with the button held while plugging in (DFU bootloader)")
_ECPIX5 = dict(ofl_board="ecpix5", ofl_cable="ecpix5-debug (FT2232)", usb_port="its micro-USB JTAG/UART port")
# ice40_generic: the FT2232H wired to the SPI flash, as on the iCEBreaker; openFPGALoader
# writes the flash directly (docs: "since it's a direct access to the flash (SPI) the -b
# option is required"), the iCE40's SRAM is not reachable that way.
_ICEBREAKER = dict(ofl_board="ice40_generic", ofl_cable="ft2232", sram=False, usb_port="its USB port")
#: Presets by device size: the 20-core trainer needs an 85F, a federated worker fits smaller.
_BIG, _SMALL = dict(default_preset="trainer-20core"), dict(default_preset="federated-worker")
BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("ulx3s-12f", "ulx3s:ULX3S_12F_Platform", "Radiona ULX3S, ECP5 LFE5U-12F", **_ULX3S, **_SMALL),
    Board("ulx3s-25f", "ulx3s:ULX3S_25F_Platform", "Radiona ULX3S, ECP5 LFE5U-25F", **_ULX3S, **_SMALL),
    Board("ulx3s-45f", "ulx3s:ULX3S_45F_Platform", "Radiona ULX3S, ECP5 LFE5U-45F", **_ULX3S, **_SMALL),
    Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "Radiona ULX3S, ECP5 LFE5U-85F", **_ULX3S, **_BIG),
    Board("orangecrab-25f", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
          "OrangeCrab r0.2, ECP5 LFE5U-25F", **_CRAB, **_SMALL),
    Board("orangecrab-85f", "orangecrab_r0_2:OrangeCrabR0_2_85FPlatform",
          "OrangeCrab r0.2, ECP5 LFE5U-85F", **_CRAB, **_BIG),
    Board("ecpix5-45f", "ecpix5:ECPIX545Platform", "LambdaConcept ECPIX-5, ECP5-5G LFE5UM5G-45F",
          **_ECPIX5, **_SMALL),
    Board("ecpix5-85f", "ecpix5:ECPIX585Platform", "LambdaConcept ECPIX-5, ECP5-5G LFE5UM5G-85F",
          **_ECPIX5, **_BIG),
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "1BitSquared iCEBreaker, iCE40 UP5K",
          **_ICEBREAKER),
]}

#: The board names, in table order (what ``gen/config.py`` accepts as ``board``).
BOARD_NAMES = tuple(BOARDS)


def get_board(name: str) -> Board:
    """The board called ``name``; a ``KeyError`` whose message lists the known boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r}, choose one of {', '.join(BOARDS)}") from None
