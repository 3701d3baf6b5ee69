"""The fast simulation transport: the chip behind its host link, Verilated and clocked in C++.

:func:`build_pipe_sim` verilates ``HostChip(cfg, debug=False)`` -- the bytes a board's UART
would carry, minus the UART -- or, with ``serial=True``, ``SerialHostChip`` (the UART's pins,
driven bit by bit by the harness: 8N1, optional baud mismatch, glitches, bad stop bits) with ``sim/pipe_harness.cpp`` as its ``main``: no cocotb, no
Python per cycle. :class:`PipeSim` runs that executable with its stdin/stdout as pipes and
is a byte transport for :class:`spikeforge.host.link.LinkChip`: it writes a request frame,
then lets the harness clock the model until a reply frame has left ``tx``.

Builds are cached like the cocotb ones (``build/sim/pipe-<hash>``, keyed by config, geometry,
RTL sources, the harness and the C++ optimisation ``$SPIKEFORGE_PIPE_OPT``, default ``-O1``:
``-O2`` compiles the 20-core chip for minutes longer for little speed).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from .runner import WAIVER_FILE, _build_key, _lock, _verilator_root, build_root, verilator_env

__all__ = ["build_pipe_sim", "PipeSim", "PtyBridge", "SimTimeout", "HARNESS"]

HARNESS = Path(__file__).resolve().parent / "pipe_harness.cpp"
_TOP = "hostchip"


class SimTimeout(TimeoutError):
    """The simulated chip sent no reply within the cycle budget."""


def _pipe_opt() -> str:
    return os.environ.get("SPIKEFORGE_PIPE_OPT", "-O1")



def pipe_top(cfg, geometry, weights=None, *, serial: bool = False, clk_hz=None, baud=3_000_000, **kw):
    """The top the harness clocks: ``HostChip`` (its UART counters tied to 0), or with
    ``serial`` ``SerialHostChip`` (its UART pins), with its own power-on reset. Its only
    inputs are ``clk`` and ``rx`` (and ``tx.ready`` of the byte stream).

    Why not ``HostChip`` itself: Verilator re-evaluates, at every ``eval()``, all logic that
    depends on a top-level input, and Amaranth's synchronous reset is an input of every
    register's next-state logic -- with ``rst`` a port, the whole chip was evaluated three
    times a cycle (measured: the input-logic functions took a third of the harness's time).
    """
    from amaranth.hdl import ClockDomain, ClockSignal, Module, Signal
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from ..rtl.top import HostChip, SerialHostChip

    class PipeTop(wiring.Component):
        def __init__(self):
            if serial:
                super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "clk": In(1)})
                self.chip = SerialHostChip(cfg, geometry, clk_hz=clk_hz, baud=baud, debug=False,
                                           weights=weights, shared_cores=weights is None, **kw)
                self.verilog_modules = self.chip.host.verilog_modules
            else:
                super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                                  "clk": In(1)})
                self.chip = HostChip(cfg, geometry, debug=False, weights=weights,
                                     shared_cores=weights is None, **kw)
                self.verilog_modules = self.chip.verilog_modules

        def elaborate(self, platform):
            m = Module()
            m.domains.sync = sync = ClockDomain("sync", local=True)
            m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
            hold = Signal(3, init=4)                 # reset for the first 4 cycles
            m.d.comb += [sync.clk.eq(self.clk), por.clk.eq(self.clk), sync.rst.eq(hold != 0)]
            with m.If(hold != 0):
                m.d.por += hold.eq(hold - 1)
            m.submodules.chip = chip = self.chip
            if serial:
                m.d.comb += [chip.rx.eq(self.rx), self.tx.eq(chip.tx)]
            else:
                wiring.connect(m, wiring.flipped(self.rx), chip.rx)
                wiring.connect(m, chip.tx, wiring.flipped(self.tx))
                m.d.comb += [chip.uart_frame_errors.eq(0), chip.uart_overruns.eq(0)]
            return m

    return PipeTop()


def build_pipe_sim(cfg, geometry=None, *, weights=None, quiet: bool = False, serial: bool = False,
                   clk_hz: float | None = None, baud: float = 3_000_000,
                   timeout_cycles: int | None = None) -> Path:
    """Verilate and compile the pipe harness for ``cfg``; returns the executable (cached).

    ``serial``: the top is ``SerialHostChip(cfg, clk_hz=clk_hz, baud=baud)`` (a UART in front
    of the chip) and the harness drives its rx pin bit by bit (``-DPIPE_SERIAL``); else the
    byte-stream ``HostChip``. ``timeout_cycles``: the host link's (None: each top's default,
    2^20 cycles for ``HostChip``, 64 byte times for ``SerialHostChip``).
    """
    from ..gen.verilog import write_verilog
    from ..rtl.geometry import ChipGeometry

    geometry = ChipGeometry.from_config(cfg) if geometry is None else geometry
    if serial and clk_hz is None:
        raise ValueError("build_pipe_sim(serial=True) needs clk_hz (and baud)")
    wkey = None if weights is None else [w.tolist() for w in weights]
    # The hardware does not depend on the train section (seed, batch size, epochs...): one
    # build serves every training run of a chip.
    hw = {k: v for k, v in cfg.to_dict().items() if k != "train"}
    extra = {"serial": [clk_hz, baud] if serial else None, "timeout_cycles": timeout_cycles}
    key = _build_key(_TOP, hw, geometry, {"pipe": _pipe_opt(), "weights": wkey, **extra}, False,
                     extra_sources=[HARNESS, Path(__file__)])
    tkw = {} if timeout_cycles is None else {"timeout_cycles": timeout_cycles}
    top = pipe_top(cfg, geometry, weights, serial=serial, clk_hz=clk_hz, baud=baud, **tkw)
    bdir = build_root() / f"pipe-{'serial-' if serial else ''}{key}"
    exe = bdir / "obj" / f"{_TOP}_pipe"
    with _lock(build_root() / f".pipe-{key}.lock"):
        if (bdir / ".built").exists() and exe.exists():
            return exe
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        t0 = time.monotonic()
        vfile = write_verilog(top, bdir / f"{_TOP}.v", name=_TOP)
        env = verilator_env()
        flags = env.get("MAKEFLAGS", "").split()
        flags = [f for f in flags if not f.startswith(("OPT_FAST=", "OPT_SLOW="))]
        env["MAKEFLAGS"] = " ".join(flags + [f"OPT_FAST={_pipe_opt()}", f"OPT_SLOW={_pipe_opt()}",
                                             "OPT_GLOBAL=-O1"])
        cmd = [str(_verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build",
               "-j", str(os.cpu_count() or 1), "-Wno-fatal", "-Wno-lint", "-Wno-style",
               "--x-assign", "fast", "--x-initial", "fast", "-O3", "--top-module", _TOP,
               "--Mdir", str(bdir / "obj"), "-o", exe.name,
               *(["-CFLAGS", "-DPIPE_SERIAL"] if serial else []),
               str(WAIVER_FILE), str(vfile), str(HARNESS)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        (bdir / "build.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0 or not exe.exists():
            lines = (res.stdout + res.stderr).splitlines()
            errors = [l for l in lines if "error" in l.lower()][:20] or lines[-30:]
            raise RuntimeError(f"pipe harness build failed ({bdir / 'build.log'}):\n" + "\n".join(errors))
        if serial:     # PipeSim reads the bit period from here
            (bdir / "obj" / "serial.json").write_text(json.dumps({"clk_hz": clk_hz, "baud": baud}))
        (bdir / ".built").write_text(f"{time.monotonic() - t0:.1f}\n")
        if not quiet:
            print(f"[spikeforge.sim] built {bdir.name} (pipe harness) in {time.monotonic() - t0:.1f} s")
    return exe


class PipeSim:
    """A running pipe harness: the simulated chip's host byte streams.

    ``max_cycles``: the most cycles :meth:`exchange` clocks waiting for a reply before it
    raises :class:`SimTimeout`. ``cycles``: simulated cycles since reset.
    """

    def __init__(self, exe: str | Path, *, max_cycles: int = 50_000_000):
        self.exe, self.max_cycles = Path(exe), max_cycles
        self.cycles = 0
        self.rx_left = 0
        info = self.exe.parent / "serial.json"
        #: serial mode: the chip's clock and baud rate, the cycles per bit of its divisor
        self.serial = json.loads(info.read_text()) if info.exists() else None
        args = [str(self.exe)]
        if self.serial:
            from ..rtl.uart import BaudDivisor

            self.cycles_per_bit = BaudDivisor(self.serial["clk_hz"], self.serial["baud"]).cycles_per_bit
            args.append(repr(self.cycles_per_bit))
        self._p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    @classmethod
    def for_config(cls, cfg, geometry=None, *, serial: bool = False, clk_hz: float | None = None,
                   baud: float = 3_000_000, timeout_cycles: int | None = None, **kw) -> "PipeSim":
        exe = build_pipe_sim(cfg, geometry, serial=serial, clk_hz=clk_hz, baud=baud,
                             timeout_cycles=timeout_cycles)
        return cls(exe, **kw)

    # ------------------------------------------------------------------ the harness commands
    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._p.stdout.read(n - len(buf))
            if not chunk:
                rc = self._p.poll()
                raise RuntimeError(f"pipe harness {self.exe.name} stopped (exit status {rc})")
            buf += chunk
        return buf

    def _answer(self) -> bytes:
        tag = self._read(1)
        if tag != b"O":
            raise RuntimeError(f"pipe harness: unexpected answer {tag!r}")
        self.cycles, self.rx_left, n = struct.unpack("<QII", self._read(16))
        return self._read(n)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the chip's rx stream (it takes one byte a cycle)."""
        self._p.stdin.write(b"W" + struct.pack("<I", len(data)) + bytes(data))

    #: line items of :meth:`write_items` (serial mode; byte mode takes BYTE only)
    BYTE, BAD_STOP, GLITCH, IDLE = range(4)

    def write_items(self, items) -> None:
        """Queue line items ``(kind, value)``: ``BYTE`` b; ``BAD_STOP`` b (its stop bit low,
        then two idle bit times); ``GLITCH`` n (rx low n cycles, then high two bit times);
        ``IDLE`` n (the line high n cycles)."""
        items = list(items)
        self._p.stdin.write(b"X" + struct.pack("<I", len(items))
                            + b"".join(struct.pack("<BI", k, v) for k, v in items))

    def set_bit_period(self, cycles_per_bit: float) -> None:
        """Serial mode: the host's bit period in clock cycles (the chip's is
        ``cycles_per_bit``; another value is a baud-rate mismatch)."""
        self._p.stdin.write(b"B" + struct.pack("<d", cycles_per_bit))

    def drain(self, cycles: int = 0) -> bytes:
        """Clock until everything queued has entered the chip, then ``cycles`` more; the
        bytes tx sent meanwhile."""
        self._p.stdin.write(b"D" + struct.pack("<Q", cycles))
        return self._answer()

    def run_until_frames(self, frames: int = 1, max_cycles: int | None = None) -> bytes:
        """Clock until ``frames`` more frame delimiters left tx (or ``max_cycles``); the bytes sent."""
        mc = self.max_cycles if max_cycles is None else max_cycles
        self._p.stdin.write(b"F" + struct.pack("<IQ", frames, mc))
        return self._answer()

    def run(self, cycles: int) -> bytes:
        """Clock ``cycles`` cycles; the bytes tx sent meanwhile."""
        self._p.stdin.write(b"C" + struct.pack("<Q", cycles))
        return self._answer()

    # ------------------------------------------------------------------ transport
    def exchange(self, frame: bytes) -> bytes:
        """Send one request frame; return the bytes up to and including the reply's delimiter."""
        c0 = self.cycles
        self.write(frame)
        out = self.run_until_frames(1)
        if not out.endswith(b"\x00"):
            raise SimTimeout(f"no reply from the simulated chip within {self.cycles - c0} cycles")
        return out

    def close(self) -> None:
        if self._p.poll() is None:
            try:
                self._p.stdin.write(b"Q")
                self._p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self._p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait()
        self._p.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class PtyBridge:
    """The simulated chip behind a pseudo-terminal: what a board's USB serial port is to the
    host, so that the serial path (pyserial, ``SerialTransport``, ``--backend board``) runs
    end to end without a board.

    A thread reads what the host writes to the terminal, queues it for ``rx`` and, for each
    complete frame it saw (a delimiter after at least one other byte), clocks the chip until
    one more reply left ``tx`` (at most ``max_cycles``: a frame the chip drops gets none),
    then writes the reply back. ``port`` is the terminal's path (``/dev/pts/N``).
    """

    def __init__(self, sim: PipeSim, *, max_cycles: int = 2_000_000):
        import pty
        import threading
        import tty

        self.sim, self.max_cycles = sim, max_cycles
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pty-bridge", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select

        in_frame = False
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            frames = 0
            for b in data:
                if b == 0:
                    frames += in_frame
                    in_frame = False
                else:
                    in_frame = True
            self.sim.write(data)
            out = self.sim.run_until_frames(frames, frames * self.max_cycles) if frames else b""
            if out:
                os.write(self._master, out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
