"""``spikeforge import`` and ``spikeforge export``: networks in and out (NIR, snnTorch, SpikingJelly).

``gen/cli.py`` wires these in with ``add_interchange_parsers(subparsers)``; the logic is in
:mod:`spikeforge.gen.interchange`. Errors become ``UserError`` (one line, exit status 2,
no output file).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TextIO

__all__ = ["add_interchange_parsers", "cmd_import", "cmd_export"]

FORMATS = ("nir", "snntorch", "spikingjelly")   # static: `--help` must not import torch


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time step in seconds, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive time step in seconds, got {text}")
    return v


def _user_error(e: Exception):
    from spikeforge.gen.cli import UserError

    return UserError(str(e))


def cmd_import(args, out: TextIO) -> int:
    import yaml

    from spikeforge.gen.cli import _yaml_dumper
    from spikeforge.gen.config import ConfigError
    from spikeforge.gen import interchange as ic

    config_path = Path(args.output)
    weights_path = Path(args.weights) if args.weights else config_path.with_suffix(".pt")
    if weights_path.resolve() == config_path.resolve():
        raise _user_error(ValueError(f"--weights: {weights_path} is the config file -o names"))
    try:
        for p, flag in ((config_path, "-o"), (weights_path, "--weights")):
            ic._check_writable(p, flag)
        imp = ic.import_network(args.source, base=args.base, dt=args.dt)
        header = [f"# imported by spikeforge import from {args.source} (config digest {imp.cfg.digest()})",
                  f"# initial weights: {weights_path} (spikeforge train --config {config_path} "
                  f"--init {weights_path})"]
        header += [f"# note: {n}" for n in imp.info] + [f"# approximated: {n}" for n in imp.notes]
        text = "\n".join(header) + "\n" + yaml.dump(imp.cfg.to_dict(), Dumper=_yaml_dumper(),
                                                    sort_keys=False, default_flow_style=False)
        data = ic.weights_payload(imp.cfg, imp.weights, source=str(args.source))
        import torch

        ic._atomic_write([(config_path, lambda p: p.write_text(text, encoding="utf-8")),
                          (weights_path, lambda p: torch.save(data, p))])
    except (ic.InterchangeError, ConfigError) as e:
        raise _user_error(e) from None
    for n in imp.info:
        out.write(f"note: {n}\n")
    for n in imp.notes:
        out.write(f"approximated: {n}\n")
    layers = "-".join(map(str, imp.cfg.network.layers))
    out.write(f"imported {layers}, T={imp.cfg.network.timesteps}, leak shift {imp.cfg.neuron.leak_shift}: "
              f"wrote {config_path} and {weights_path}\n")
    return 0


def cmd_export(args, out: TextIO) -> int:
    from spikeforge.gen import interchange as ic

    try:
        cfg, weights = ic.load_weights(args.source)
        files = ic.export(cfg, weights, args.format, args.output, dt=args.dt)
    except ic.InterchangeError as e:
        raise _user_error(e) from None
    out.write(f"exported {'-'.join(map(str, cfg.network.layers))} ({args.format}, config digest "
              f"{cfg.digest()}): wrote {', '.join(map(str, files))}\n")
    return 0


def add_interchange_parsers(subparsers) -> None:
    """Add ``import`` and ``export`` to the ``spikeforge`` subparsers."""
    p = subparsers.add_parser(
        "import", help="import a NIR graph or a snnTorch/SpikingJelly network: config + weights",
        description="Map a foreign network onto the chip: a NIR graph file (Linear/Affine + "
                    "LIF/CubaLIF/IF chain) or a YAML description of a snnTorch (Leaky) or "
                    "SpikingJelly (LIFNode) network with its saved state_dict. Prints what had to "
                    "be approximated; refuses what the chip cannot run.")
    p.add_argument("source", metavar="SOURCE", help="NIR file, or a description .yaml naming a state_dict")
    p.add_argument("-o", "--output", metavar="CONFIG.yaml", required=True, help="config to write")
    p.add_argument("--weights", metavar="W.pt", default=None,
                   help="integer weights to write, for train --init (default: CONFIG with suffix .pt)")
    p.add_argument("--base", metavar="FILE|PRESET", default="digits",
                   help="config the network's layers, leak shift and timesteps go into (default: digits)")
    p.add_argument("--dt", type=_seconds, default=1e-3, metavar="SECONDS",
                   help="NIR time step: tau/dt is tau in steps (default 1e-3; snnTorch exports with 1e-4)")
    p.set_defaults(func=cmd_import)

    e = subparsers.add_parser(
        "export", help="export trained integer weights to NIR, snnTorch or SpikingJelly",
        description="Write the integer weights of a weights file (train --save-weights, import "
                    "--weights) in real units with the neuron parameters, loadable by the named "
                    "library. NIR files carry spikeforge's config in their metadata (exact round trip).")
    e.add_argument("--format", choices=FORMATS, required=True)
    e.add_argument("--from", dest="source", metavar="W.pt|REPORT.json", required=True,
                   help="weights file, or a train --report JSON that names one")
    e.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="file to write (snntorch/spikingjelly: the state_dict; the description "
                        "goes next to it with suffix .yaml)")
    e.add_argument("--dt", type=_seconds, default=1e-3, metavar="SECONDS",
                   help="NIR time step: tau = dt * 2**leak_shift (default 1e-3)")
    e.set_defaults(func=cmd_export)
