"""``spikeforge build``: place and route the cores of a config on a board's FPGA.

``gen/cli.py`` wires this in with ``add_build_parser(subparsers)``. Targets (docs/fpga.md):
``chip`` (default): the whole chip in its board top (rtl/board.py: PLL, reset, UART, LEDs)
placed and routed with the board's pins, and a bitstream; ``core``: the largest core of
each kind, out of context. Results (a short table) go to stdout, progress to stderr, the
reports, tool logs and the bitstream to ``-o DIR``.
Exit status: 0 built and timing met; 1 timing missed (unless ``--allow-slow``) or a tool
failed; 2 a user error (unknown board, tools missing, a design that does not fit, a clock
or baud rate out of reach).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["add_build_parser", "cmd_build", "BuildProgress", "TARGETS"]

#: Targets offered on the command line.
TARGETS = ("chip", "core")


def _mhz(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frequency in MHz, got {text!r}") from None
    if not 0 < v <= 1000:
        raise argparse.ArgumentTypeError(f"expected a frequency in (0, 1000] MHz, got {v:g}")
    return v


def _cores(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a core count, got {text!r}") from None
    if not 1 <= v <= 1024:
        raise argparse.ArgumentTypeError(f"expected a core count in 1..1024, got {v}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= v < 2 ** 31:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{2 ** 31 - 1}, got {v}")
    return v


def add_build_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``build`` to the ``spikeforge`` subparsers; returns it."""
    from .boards import BOARDS

    b = subparsers.add_parser(
        "build", help="synthesise, place and route for an FPGA board; write resource/fmax reports",
        description="Build for an FPGA board with the open tools (YoWASP Yosys and nextpnr). "
                    "--target chip (default) builds the whole chip in its board top (PLL to "
                    "--target-mhz, reset, UART at the config's hardware.baud, status LEDs), "
                    "placed and routed with the board's pins, and packs DIR/top.bit; --target "
                    "core places and routes the largest core of each kind of the config out of "
                    "context. Both report resources, fmax and critical path, per core and per "
                    "module. Boards: " + ", ".join(BOARDS) + ".")
    b.add_argument("--board", metavar="BOARD", default=None,
                   help="board name (default: the config's board); see the list above")
    b.add_argument("--config", metavar="FILE|PRESET", default=None,
                   help="YAML config or preset (default: the board's preset: trainer-20core on "
                        "the 85F boards, federated-worker on the smaller ECP5 boards, the "
                        "built-in defaults on the iCEBreaker)")
    b.add_argument("--cores", type=_cores, default=None, metavar="N",
                   help="map the config's network onto N cores (default: its hardware.cores)")
    b.add_argument("--target", choices=TARGETS, default="chip",
                   help="chip: the whole chip on the board, with pins and a bitstream (default); "
                        "core: each core kind on its own, out of context")
    b.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="build directory: Verilog, tool logs, report.json, report.txt "
                        "(default: build/fpga/<board>-<target>-<config digest>)")
    b.add_argument("--target-mhz", type=_mhz, default=100.0, metavar="MHZ",
                   help="clock of the chip (the PLL's output with --target chip), nextpnr's "
                        "constraint and the timing verdict (default 100)")
    b.add_argument("--seed", type=_seed, default=None, metavar="N",
                   help="nextpnr's placement seed (default: nextpnr's own); another seed is "
                        "another placement: try one when routing does not converge or "
                        "timing just misses")
    b.add_argument("--allow-slow", action="store_true",
                   help="exit 0 even when fmax is below the target (still reported)")
    b.add_argument("--synth-only", action="store_true",
                   help="stop after synthesis: resources are Yosys estimates, no fmax (fast)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    b.set_defaults(func=cmd_build)
    return b


class BuildProgress:
    """Progress on stderr: a spinner with the step and its elapsed time on a terminal,
    one line per step otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO, enabled: bool = True):
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.label, self.t0, self.t_all, self.n = "", time.monotonic(), time.monotonic(), 0

    def start(self, label: str) -> None:
        if not self.enabled:
            return
        self._end_line()
        self.label, self.t0 = label, time.monotonic()
        if self.tty:
            self.tick()
        else:
            self.stream.write(f"build: [{time.monotonic() - self.t_all:6.0f} s] {label}\n")
            self.stream.flush()

    def tick(self) -> None:
        if not (self.enabled and self.tty and self.label):
            return
        self.n += 1
        self.stream.write(f"\r\x1b[K{self.FRAMES[self.n % 4]} {self.label} "
                          f"{time.monotonic() - self.t0:.0f} s")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self.label:
            self.stream.write(f"\r\x1b[K  {self.label} {time.monotonic() - self.t0:.0f} s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._end_line()
            self.label = ""


def _user_error(msg: str):
    from ..gen.cli import UserError

    return UserError(msg)


def cmd_build(args, out: TextIO) -> int:
    """Run ``spikeforge build``; see the module docstring for the exit status."""
    from ..gen.chipgen import MappingError, check_mapping
    from ..gen.config import Config, load_config
    from ..rtl.geometry import ChipGeometry
    from .boards import get_board
    from .report import clear_reports
    from .tools import ToolMissing, tool_env

    config_name = args.config
    if args.config is None:
        # No --config: the board's preset (docs/fpga.md, "Boards"); with no --board either,
        # the board of the built-in defaults.
        board_name = args.board or Config().board
        try:
            board = get_board(board_name)
        except KeyError as e:
            raise _user_error(e.args[0]) from None
        config_name = board.default_preset
    cfg = load_config(config_name)
    if args.cores is not None:
        try:
            check_mapping(cfg, args.cores)
        except MappingError as e:
            raise _user_error(str(e)) from None
        cfg = cfg.replace(hardware={"cores": args.cores})
    board_name = args.board or cfg.board
    try:
        board = get_board(board_name)
    except KeyError as e:
        raise _user_error(e.args[0]) from None
    chip = args.target == "chip"
    try:
        board.platform()
        tools = ("YOSYS", "NEXTPNR_ICE40" if board.family == "ice40" else "NEXTPNR_ECP5")
        if chip and board.family == "ecp5" and not args.synth_only:
            tools += ("ECPPACK",)
        env = tool_env(tools)
    except ToolMissing as e:
        raise _user_error(str(e)) from None
    if chip and board.family != "ecp5":
        raise _user_error(f"--target chip: {board.name} is an {board.device} ({board.family}); "
                          f"the board top (rtl/board.py) needs an ECP5 PLL; use --target core")
    if chip and not board.uart_pins:
        raise _user_error(f"--target chip: {board.name} has no UART pins for the host link "
                          f"(its USB goes to the FPGA directly); choose a board with a USB UART")
    try:
        kinds = ChipGeometry.from_config(cfg).kinds()
    except ValueError as e:
        raise _user_error(str(e)) from None
    if chip:
        from ..rtl.board import board_clocks

        try:   # the PLL's dividers and the UART's divisor, before anything is written
            pll, divisor = board_clocks(board.clock_hz, args.target_mhz, cfg.hardware.baud)
        except ValueError as e:
            raise _user_error(f"--target-mhz {args.target_mhz:g}: {e}") from None
    outdir = Path(args.output or f"build/fpga/{board.name}-{args.target}-{cfg.digest()}")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        clear_reports(outdir)
    except OSError as e:
        raise _user_error(f"-o: cannot use {outdir}: {e.strerror or e}") from None

    progress = BuildProgress(sys.stderr, enabled=not args.quiet)
    if args.config is None and not args.quiet:
        sys.stderr.write(f"build: no --config: building the {board.name} preset "
                         f"{config_name or '(built-in defaults)'}\n")
    if chip and not args.quiet:
        sys.stderr.write(f"build: clock {pll}; UART {cfg.hardware.baud:,} baud "
                         f"({100 * divisor.error:+.2f} %)\n")
    name = config_name or "defaults"
    if chip:
        return _build_chip(args, cfg, name, board, outdir, env, progress, out)
    return _build_cores(args, cfg, name, board, kinds, outdir, env, progress, out)


def _run_steps(progress, fn):
    """``fn(step)`` with the progress spinner; a design that does not fit is a user error,
    a tool failure is exit 1 (returns ``None`` then)."""
    from .flow import DoesNotFit, FlowError, Step

    step = Step(progress.start, progress.tick)
    try:
        return fn(step)
    except DoesNotFit as e:
        progress.close()
        raise _user_error(str(e)) from None
    except FlowError as e:
        progress.close()
        sys.stderr.write(f"spikeforge: error: {e}\n")
        return None
    finally:
        progress.close()


def _timing_verdict(args, slow: list[tuple[str, float, dict | None]]) -> int:
    """Exit status from the (name, fmax, critical path) of the parts that missed the target."""
    if slow and not args.allow_slow:
        name, fmax, cp = min(slow, key=lambda s: s[1])
        cp = cp or {}
        sys.stderr.write(f"spikeforge: timing missed: {', '.join(s[0] for s in slow)}: "
                         f"fmax {fmax:.2f} MHz < target {args.target_mhz:g} MHz "
                         f"(critical path {cp.get('ns', 0):.2f} ns, {cp.get('from')} -> {cp.get('to')}); "
                         f"--allow-slow accepts it\n")
        return 1
    return 0


def _build_cores(args, cfg, config_name, board, kinds, outdir, env, progress, out) -> int:
    from .flow import build_core
    from .report import core_report, write_reports

    t0 = time.monotonic()

    def run(step):
        return [build_core(cfg, name, geom, board, outdir / name, target_mhz=args.target_mhz,
                           synth_only=args.synth_only, step=step, env=env, seed=args.seed)
                for name, geom in kinds]

    cores = _run_steps(progress, run)
    if cores is None:
        return 1
    rep = core_report(cfg, board, cores, target_mhz=args.target_mhz, seconds=time.monotonic() - t0,
                      config_name=config_name, synth_only=args.synth_only)
    j, t = write_reports(outdir, rep)

    out.write(f"{'core':<20} {'LUT4 sites':>10} {'FF':>6} {'EBR':>4} {'DSP':>4} {'fmax MHz':>9}\n")
    slow = []
    for c in cores:
        r = c["resources"]
        f = "-" if c["fmax_mhz"] is None else f"{c['fmax_mhz']:.1f}"
        out.write(f"{c['name']:<20} {r['comb']:>10} {r['ff']:>6} {r['ebr']:>4} {r['dsp']:>4} {f:>9}\n")
        if c["fmax_mhz"] is not None and c["fmax_mhz"] < args.target_mhz:
            slow.append((c["name"], c["fmax_mhz"], c["critical_path"]))
    out.write(f"reports: {j} {t}\n")
    return _timing_verdict(args, slow)


def _build_chip(args, cfg, config_name, board, outdir, env, progress, out) -> int:
    from .flow import build_chip
    from .report import chip_report, write_reports

    t0 = time.monotonic()
    entry = _run_steps(progress, lambda step: build_chip(
        cfg, board, outdir, target_mhz=args.target_mhz, synth_only=args.synth_only, step=step,
        env=env, seed=args.seed))
    if entry is None:
        return 1
    rep = chip_report(cfg, board, entry, target_mhz=args.target_mhz, seconds=time.monotonic() - t0,
                      config_name=config_name, synth_only=args.synth_only)
    j, t = write_reports(outdir, rep)
    out.write(f"{'part':<20} {'LUT4 sites':>10} {'FF':>6} {'EBR':>4} {'DSP':>4}\n")
    for u in entry["units"]:
        r = u["resources"]
        out.write(f"{u['name']:<20} {r['comb']:>10} {r['ff']:>6} {r['ebr']:>4} {r['dsp']:>4}\n")
    r = entry["resources"]
    f = "-" if entry["fmax_mhz"] is None else f"{entry['fmax_mhz']:.1f}"
    out.write(f"{'chip':<20} {r['comb']:>10} {r['ff']:>6} {r['ebr']:>4} {r['dsp']:>4}   "
              f"fmax {f} MHz (clock {entry['clock']['pll_mhz']:g} MHz)\n")
    if entry["bitstream"]:
        out.write(f"bitstream: {entry['bitstream']['path']} ({entry['bitstream']['bytes']:,} bytes)\n")
    out.write(f"reports: {j} {t}\n")
    slow = []
    if entry["fmax_mhz"] is not None and entry["fmax_mhz"] < args.target_mhz:
        slow.append(("chip", entry["fmax_mhz"], entry["critical_path"]))
    return _timing_verdict(args, slow)
