"""``spikeforge sim ...``: cocotb simulations of the RTL from the command line.

``gen/cli.py`` wires this in with ``add_sim_parser(subparsers)``. Subcommands:

* ``spikeforge sim core [--config FILE|PRESET] [--seed S] [--samples N] [--input digits|random]
  [--density D] [--waves] [--report FILE.json]`` -- builds one Core for the output layer of
  the config (Verilator, cached under ``build/sim``), trains it on ``N`` samples in
  mini-batches of ``train.batch_size`` and checks every transaction and every weight update
  against the bit-exact model (sim/core_tb.py, the ``core_train`` test). Prints a per-sample
  cycle table on stdout; exit status 0 when everything matched, 1 on a mismatch (the first
  mismatch, with seed, timestep, neuron and cycle, is in the simulator output on stderr).
* ``spikeforge sim chip [--config FILE|PRESET] [--cores N] [--seed S] [--samples N]
  [--input digits|mnist|random] [--density D] [--waves] [--report FILE.json]`` -- builds the
  whole chip (rtl/chip.py) and trains it, checking every message that crosses a core
  boundary and every weight write-back as it happens (sim/chip_tb.py); exit 0 when all
  matched, 1 on the first mismatch (seed, core, timestep, neuron, cycle on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from ..gen.argtypes import positive_int, unit_float

__all__ = ["add_sim_parser", "cmd_sim_core", "cmd_sim_chip", "stdout_to_stderr", "format_report"]


def add_sim_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``sim`` (with its subcommands) to the ``spikeforge`` subparsers; returns it."""
    ps = subparsers.add_parser("sim", help="simulate the RTL in Verilator against the model",
                               description="Cocotb simulations of the generated RTL in Verilator, "
                                           "checked transaction by transaction against the model.")
    ssub = ps.add_subparsers(dest="sim_command", metavar="TARGET", parser_class=type(ps))
    ssub.required = True
    c = ssub.add_parser("core", help="train one core on N samples, bit-exact check against the model",
                        description="Train the output layer of the config on one simulated core and "
                                    "check every spike, dv, error, gradient and weight write against "
                                    "the bit-exact model; print cycles per phase.")
    c.add_argument("--config", metavar="FILE|PRESET", default=None,
                   help="YAML config or preset (default: built-in defaults)")
    c.add_argument("--seed", type=int, default=0, metavar="S", help="weights, data order, spikes (default 0)")
    c.add_argument("--samples", type=positive_int, default=4, metavar="N",
                   help="training samples (rounded up to whole mini-batches; default 4)")
    c.add_argument("--input", choices=("digits", "random"), default=None,
                   help="digits: rate-encoded digits (needs 64 inputs); random: Bernoulli spikes "
                        "(default: digits when the layer has 64 inputs, else random)")
    c.add_argument("--density", type=unit_float, default=0.2, metavar="D",
                   help="spike probability per input and step for --input random (default 0.2)")
    c.add_argument("--waves", action="store_true", help="record waves (dump.fst/.vcd in the run dir)")
    c.add_argument("--report", metavar="FILE.json", default=None, help="also write the counters as JSON")
    c.set_defaults(func=cmd_sim_core)
    h = ssub.add_parser("chip", help="train the N-core chip on N samples, every NoC message checked",
                        description="Build the whole chip of the config (cores, routers, barrier, "
                                    "error reduction, host plane) in Verilator, train it on N samples "
                                    "and check every spike, error and reduced-error message that "
                                    "crosses a core boundary and every weight write-back against "
                                    "the bit-exact model as it happens.")
    h.add_argument("--config", metavar="FILE|PRESET", default="trainer-20core",
                   help="YAML config or preset (default: trainer-20core)")
    h.add_argument("--cores", type=positive_int, default=None, metavar="N",
                   help="cores on the mesh (default: the config's hardware.cores)")
    h.add_argument("--seed", type=int, default=0, metavar="S", help="weights, samples, spikes (default 0)")
    h.add_argument("--samples", type=positive_int, default=2, metavar="N",
                   help="training samples (rounded up to whole mini-batches; default 2)")
    h.add_argument("--input", choices=("digits", "mnist", "random"), default=None,
                   help="digits (64 inputs, 10 classes), mnist (784, 10) or random spikes "
                        "(default: the config's data set when the network fits it, else random)")
    h.add_argument("--density", type=unit_float, default=0.2, metavar="D",
                   help="spike probability per input and step for --input random (default 0.2)")
    h.add_argument("--waves", action="store_true", help="record waves (dump.fst/.vcd in the run dir)")
    h.add_argument("--report", metavar="FILE.json", default=None, help="also write cycles per sample as JSON")
    h.set_defaults(func=cmd_sim_chip)
    return ps


def _load_cfg(spec):
    from ..gen.config import load_config

    return load_config(spec)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout -- by Python and by subprocesses such as the
    simulator, which write to file descriptor 1 -- to stderr while the block runs."""
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    old = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = old
        sys.stdout.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


def cmd_sim_core(args, out: TextIO) -> int:
    """Run ``sim core``; results on ``out``, progress and simulator output on stderr."""
    from ..rtl.geometry import CoreGeometry
    from .core_tb import run_core_sim

    cfg = _load_cfg(args.config)
    geom = CoreGeometry.from_config(cfg)
    source = args.input or ("digits" if geom.n_in == 64 else "random")
    if source == "digits" and geom.n_in != 64:
        from ..gen.cli import UserError

        raise UserError(f"--input digits needs a layer with 64 inputs, the output layer has {geom.n_in}")
    report = Path(args.report) if args.report else Path(tempfile.mkstemp(suffix=".json")[1])
    print(f"sim core: {geom.n_in} -> {geom.n_neurons}, T={geom.timesteps}, P={geom.lanes}, "
          f"B={cfg.train.batch_size}, {args.samples} samples, input {source}", file=sys.stderr)
    try:
        with stdout_to_stderr():
            run_core_sim(cfg, seed=args.seed, samples=args.samples, source=source, density=args.density,
                         waves=args.waves or None, report_file=report, run_name=f"cli-seed{args.seed}")
        ok = True
    except AssertionError as e:
        print(f"sim core: MISMATCH: {e}", file=sys.stderr)
        ok = False
    if not ok:
        out.write("FAIL: the core differs from the model (first mismatch on stderr)\n")
        return 1
    rep = json.loads(report.read_text())
    out.write(format_report(rep))
    return 0


def cmd_sim_chip(args, out: TextIO) -> int:
    """Run ``sim chip``; results on ``out``, progress and simulator output on stderr."""
    from ..gen.cli import UserError
    from ..rtl.geometry import ChipGeometry
    from .chip_tb import run_chip_sim

    cfg = _load_cfg(args.config)
    if args.cores is not None:
        cfg = cfg.replace(hardware={"cores": args.cores})
    try:
        geo = ChipGeometry.from_config(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    sizes = cfg.network.layers
    fits = {"digits": (64, 10), "mnist": (784, 10)}
    source = args.input or (cfg.train.dataset if (sizes[0], sizes[-1]) == fits.get(cfg.train.dataset)
                            else "random")
    if source in fits and (sizes[0], sizes[-1]) != fits[source]:
        raise UserError(f"--input {source} needs a network {fits[source][0]}-...-{fits[source][1]}, "
                        f"the config has {'-'.join(map(str, sizes))}")
    samples = -(-args.samples // cfg.train.batch_size) * cfg.train.batch_size
    report = Path(args.report) if args.report else Path(tempfile.mkstemp(suffix=".json")[1])
    print(f"sim chip: {len(geo.cores)} cores on a {geo.rows} x {geo.cols} mesh, network "
          f"{'-'.join(map(str, sizes))}, T={cfg.network.timesteps}, P={cfg.hardware.lanes}, "
          f"{cfg.hardware.wg_dataflow}, B={cfg.train.batch_size}, {samples} samples, input {source}",
          file=sys.stderr)
    try:
        with stdout_to_stderr():
            run_chip_sim(cfg, seed=args.seed, samples=samples, source=source, density=args.density,
                         waves=args.waves or None, report_file=report, run_name=f"cli-seed{args.seed}")
        ok = True
    except AssertionError as e:
        print(f"sim chip: MISMATCH: {e}", file=sys.stderr)
        ok = False
    if not ok:
        out.write("FAIL: the chip differs from the model (first mismatch on stderr)\n")
        return 1
    rep = json.loads(report.read_text())
    cyc = rep["cycles_per_sample"]
    out.write(f"PASS: {len(cyc)} samples on {rep['cores']} cores bit-identical to the model: every "
              f"event, spike word, error word, reduced error and weight write-back (seed {args.seed}, "
              f"input {source})\n")
    out.write("cycles per sample: " + ", ".join(map(str, cyc)) + f" (mean {sum(cyc) / len(cyc):.0f})\n")
    out.write(f"simulation: {rep['sim_cycles']} cycles in {rep['wall_s']:.1f} s "
              f"({rep['sim_cycles'] / max(rep['wall_s'], 1e-9):.0f} cycles/s under cocotb)\n")
    return 0


def format_report(rep: dict) -> str:
    lines = [f"PASS: {len(rep['samples'])} samples, {len(rep['updates'])} updates bit-identical to the model "
             f"(seed {rep['seed']}, input {rep['input']})",
             f"{'sample':>6} {'events':>6} {'nnz_dv':>6} {'fwd':>6} {'bwd':>6} {'fp':>6} {'bp':>6} "
             f"{'wg':>6} {'wg_wait':>7}"]
    for s in rep["samples"]:
        lines.append(f"{s['sample']:>6} {sum(s['events']):>6} {sum(s['nnz_dv']):>6} {s['fwd_phase']:>6} "
                     f"{s['bwd_phase']:>6} {s['fp_cycles']:>6} {s['bp_cycles']:>6} {s['wg_cycles']:>6} "
                     f"{s['wg_stalls']:>7}")
    for u in rep["updates"]:
        lines.append(f"update after batch {u['batch']}: {u['upd_phase']} cycles")
    n = len(rep["samples"])
    if n:
        per = sum(s["fwd_phase"] + s["bwd_phase"] for s in rep["samples"]) / n
        upd = sum(u["upd_phase"] for u in rep["updates"]) / n
        lines.append(f"cycles per training sample: {per:.1f} (+ {upd:.1f} update, amortised)")
    if rep.get("wall_s"):
        lines.append(f"simulation: {rep['sim_cycles']} cycles in {rep['wall_s']:.1f} s "
                     f"({rep['sim_cycles'] / rep['wall_s']:.0f} cycles/s under cocotb)")
    return "\n".join(lines) + "\n"
