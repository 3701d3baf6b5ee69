"""The ``spikeforge`` command line.

One entry point with subcommands. Every user error (a bad config key or value, a missing
file, a missing data-set package, a bad flag value) prints exactly one line
``spikeforge: error: <message>`` on stderr and exits with status 2, before anything is
printed on stdout. Progress goes to stderr; results go to stdout.

Only what works today is offered: training runs on the bit-exact fixed-point reference
model (``--backend model``); further backends appear here when they exist.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from .config import DATASETS, PRESETS_DIR, Config, ConfigError, load_config

PROG = "spikeforge"

#: Preset a bare ``spikeforge train --dataset NAME`` starts from (network sized for the data).
DATASET_PRESETS = {"digits": "digits", "mnist": "mnist"}


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("spikeforge")
    except Exception:  # pragma: no cover - not installed (running from a bare checkout)
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- config commands
def _presets() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset in configs/."""
    out = []
    for p in sorted(PRESETS_DIR.glob("*.yaml")):
        desc = ""
        for line in p.read_text().splitlines():
            if line.startswith("#"):
                desc = line.lstrip("#").strip()
                break
        out.append((p.stem, desc))
    return out


def _load(spec: str | None) -> Config:
    try:
        return load_config(spec)
    except ConfigError:
        raise
    except OSError as e:  # unreadable file, directory, ...
        raise UserError(f"{spec}: cannot read: {e.strerror or e}") from None


def summary(cfg: Config) -> str:
    """One line describing a configuration."""
    n, h, t = cfg.network, cfg.hardware, cfg.train
    return (f"network {'-'.join(map(str, n.layers))}, T={n.timesteps}; "
            f"{h.cores} core{'s' if h.cores != 1 else ''} x {h.lanes} lanes on {cfg.board}; "
            f"train {t.dataset}, batch {t.batch_size}, {t.epochs} epochs, seed {t.seed}; "
            f"digest {cfg.digest()}")


def cmd_config_validate(args, out: TextIO) -> int:
    cfg = _load(args.config)
    out.write(f"ok: {args.config}: {summary(cfg)}\n")
    try:
        _check_dataset_fit(cfg)
    except UserError as e:  # valid config, but `spikeforge train` will refuse it
        sys.stderr.write(f"{PROG}: warning: {e}\n")
    return 0


def _yaml_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        """Block style for sections, flow style for lists (``layers: [64, 128, 10]``)."""

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                     flow_style=True))
    return Dumper


def cmd_config_show(args, out: TextIO) -> int:
    import yaml

    _Dumper = _yaml_dumper()
    cfg = _load(args.config)
    out.write(f"# spikeforge {_version()}: resolved configuration "
              f"({args.config or 'defaults'}), digest {cfg.digest()}\n")
    out.write(yaml.dump(cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False))
    return 0


def cmd_config_presets(args, out: TextIO) -> int:
    rows = _presets()
    width = max((len(name) for name, _ in rows), default=0)
    for name, desc in rows:
        out.write(f"{name:<{width}}  {desc}\n")
    return 0


# ---------------------------------------------------------------------------------- train
def _dataset_inputs() -> dict[str, int]:
    from spikeforge.model.data import DATASET_INPUTS

    return DATASET_INPUTS


def _check_dataset_fit(cfg: Config) -> None:
    """The network's input layer must match the data set it trains on."""
    n_in = _dataset_inputs().get(cfg.train.dataset)
    if n_in is not None and cfg.network.layers[0] != n_in:
        raise UserError(
            f"network.layers[0]: {cfg.network.layers[0]} inputs, but data set {cfg.train.dataset!r} "
            f"has {n_in} (use --config {DATASET_PRESETS[cfg.train.dataset]} or change network.layers)")
    if cfg.network.layers[-1] < 10:
        raise UserError(f"network.layers[-1]: {cfg.network.layers[-1]} output neurons, but data set "
                        f"{cfg.train.dataset!r} has 10 classes (need >= 10)")


class Progress:
    """A text progress bar on a TTY; on anything else, one line per epoch (no spam).

    Called as ``progress(done_steps, total_steps, info)`` after every training step, with
    ``info`` from :func:`spikeforge.model.train.train` (``epoch`` counted from 0, ``loss``,
    ``train_accuracy`` so far in the epoch).
    """

    def __init__(self, stream: TextIO, epochs: int, enabled: bool = True, width: int = 30):
        self.stream = stream
        self.epochs = max(1, epochs)
        self.enabled = enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.width = width
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def _fmt(self, info: dict, loss: bool = True) -> str:
        parts = []
        if isinstance(info.get("epoch"), int):
            parts.append(f"epoch {info['epoch'] + 1}/{self.epochs}")
        acc = info.get("train_accuracy")
        if isinstance(acc, float):
            parts.append(f"train acc {100 * acc:.2f} %")
        value = info.get("loss")
        if loss and isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"batch loss {value:.4g}")
        return "  ".join(parts)

    def __call__(self, done: int, total: int, info: dict | None = None) -> None:
        if not self.enabled:
            return
        info = info or {}
        now = time.monotonic()
        elapsed = now - self.start
        if self.tty:
            if done < total and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            frac = done / total if total else 1.0
            fill = int(self.width * frac)
            bar = "#" * fill + "." * (self.width - fill)
            eta = f"eta {elapsed / frac * (1 - frac):5.0f} s" if 0 < frac < 1 else f"{elapsed:.0f} s"
            line = f"[{bar}] {100 * frac:5.1f} %  {eta}  {self._fmt(info)}"
            self.stream.write("\r" + line[:160] + "\033[K")
            self.stream.flush()
            self.drawn = True
            return
        # Not a TTY (a log file, CI): one line at the end of every epoch.
        steps_per_epoch = max(1, total // self.epochs)
        if done % steps_per_epoch == 0 or done >= total:
            self.stream.write(f"{PROG}: {self._fmt(info, loss=False)}  ({elapsed:.1f} s)\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


#: Training backends offered: spikeforge.model.train.BACKENDS (the test suite checks that)
#: and the chips trained over the host link (CHIP_BACKENDS). Kept static so that
#: `spikeforge --help` does not import torch.
CHIP_BACKENDS = ("sim", "board")
TRAIN_BACKENDS = ("model", "float") + CHIP_BACKENDS


def build_train_config(args) -> Config:
    """The config of a train run: --config (or the data set's preset), then the flags."""
    if args.config is None:
        dataset = args.dataset or "digits"
        cfg = _load(DATASET_PRESETS[dataset])
    else:
        cfg = _load(args.config)
    overrides: dict[str, Any] = {}
    for flag, key in (("dataset", "dataset"), ("epochs", "epochs"), ("seed", "seed"),
                      ("batch_size", "batch_size")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if overrides:
        cfg = cfg.replace(train=overrides)
    _check_dataset_fit(cfg)
    return cfg


def _result_dict(result, cfg: Config, backend: str) -> dict:
    d: dict[str, Any] = {"backend": backend, "config_digest": cfg.digest(), "config": cfg.to_dict()}
    for key in ("test_accuracy", "train_accuracy", "epochs", "sparsity"):
        if hasattr(result, key):
            d[key] = getattr(result, key)
    return d


def cmd_train(args, out: TextIO, err: TextIO) -> int:
    cfg = build_train_config(args)
    for flag, path in (("--report", args.report), ("--save-weights", args.save_weights)):
        if path:  # fail now, not after a long run
            parent = Path(path).resolve().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise UserError(f"{flag}: cannot write {path}: {parent} is not a writable directory")
    init = _init_weights(args.init, cfg) if args.init else None
    try:
        from spikeforge.model.train import train
    except ImportError as e:
        raise UserError(f"training is not available in this installation: {e}") from None
    try:
        from spikeforge.model.data import DatasetError
    except ImportError:  # pragma: no cover
        DatasetError = ()  # type: ignore[assignment]

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit: {args.limit} is not a positive number of training samples")
    if args.baud is not None and not 0 < args.baud <= 12_000_000:
        raise UserError(f"--baud: {args.baud} is not a serial rate in 1..12000000")
    if (args.port is not None) != (args.backend == "board"):
        raise UserError("--port DEV goes with --backend board (the board's serial port)"
                        if args.port is not None else "--backend board needs --port DEV (the board's serial port)")
    from spikeforge.host.link import LinkError

    chip = None
    if args.backend == "sim":
        chip = _sim_chip(cfg, err, args.quiet)
    elif args.backend == "board":
        chip = _board_chip(cfg, args.port, args.baud if args.baud is not None else cfg.hardware.baud)
    progress = Progress(err, cfg.train.epochs, enabled=not args.quiet)
    try:
        result = train(cfg, backend="model" if chip else args.backend, progress=progress, init=init,
                       train_subset=args.limit, chip=chip)
        link = _link_report(chip) if chip is not None else None
    except DatasetError as e:
        raise UserError(str(e)) from None
    except LinkError as e:
        raise UserError(f"--backend {args.backend}: the chip stopped answering: {e}") from None
    finally:
        progress.close()
        if chip is not None:
            chip.transport.close()
    t = cfg.train
    if args.save_weights:
        _save_weights(args.save_weights, cfg, result, args.backend)
    if args.report:
        rep = _result_dict(result, cfg, args.backend)
        from spikeforge.host.chip import weights_sha256

        rep["weights_sha256"] = weights_sha256(_integer_weights(cfg, result))
        if link is not None:
            rep["host_link"] = link
        if args.save_weights:
            rep["weights_file"] = os.path.relpath(Path(args.save_weights).resolve(),
                                                  Path(args.report).resolve().parent)
        try:
            Path(args.report).write_text(json.dumps(rep, indent=2, default=str) + "\n")
        except OSError as e:
            raise UserError(f"--report: cannot write {args.report}: {e.strerror or e}") from None
    train_acc = getattr(result, "train_accuracy", None)
    if train_acc is not None:
        out.write(f"train accuracy: {100 * train_acc:.2f} % (last epoch, during training)\n")
    out.write(f"test accuracy: {100 * result.test_accuracy:.2f} % "
              f"({t.dataset}, {args.backend} backend, {t.epochs} epoch{'s' if t.epochs != 1 else ''}, "
              f"seed {t.seed})\n")
    return 0


def _sim_chip(cfg: Config, err: TextIO, quiet: bool):
    """``train --backend sim``: the config's chip, Verilated behind its host link (sim/pipe.py)."""
    from spikeforge.gen.chipgen import MappingError, check_mapping
    from spikeforge.host.link import LinkChip
    from spikeforge.sim.pipe import PipeSim, build_pipe_sim

    try:
        geo = check_mapping(cfg)
    except MappingError as e:
        raise UserError(f"--backend sim: {e}") from None
    if not quiet:
        err.write(f"train: building the simulated {len(geo.cores)}-core chip (Verilator; once per config)\n")
        err.flush()
    return LinkChip(cfg, PipeSim(build_pipe_sim(cfg, geo, quiet=True)), geo)


def _board_chip(cfg: Config, port: str, baud: int):
    """``train --backend board``: the chip on a board's serial port (host/link.py)."""
    from spikeforge.gen.chipgen import MappingError, check_mapping
    from spikeforge.host.link import LinkChip, LinkError, SerialTransport

    try:
        geo = check_mapping(cfg)
    except MappingError as e:
        raise UserError(f"--backend board: {e}") from None
    try:
        transport = SerialTransport(port, baud, timeout=2.0)
    except OSError as e:
        raise UserError(f"--port: {e}") from None
    try:
        return LinkChip(cfg, transport, geo)
    except LinkError as e:
        transport.close()
        raise UserError(f"--port {port}: no spikeforge chip answered ({e})") from None
    except ValueError as e:
        transport.close()
        raise UserError(f"--port {port}: {e}") from None


def _link_report(chip) -> dict:
    """Host-link traffic (and, on the simulated chip, cycles) of a chip backend's run."""
    c = chip.counters()
    n = max(1, c["samples_trained"])
    per_op = {op: {"tx": tx, "rx": rx} for op, (tx, rx) in sorted(chip.op_bytes.items())}
    training = sum(tx + rx for op, (tx, rx) in chip.op_bytes.items() if op in ("train", "update"))
    return {"tx_bytes": c["link_tx_bytes"], "rx_bytes": c["link_rx_bytes"], "bytes_per_op": per_op,
            "samples_trained": c["samples_trained"],
            # the train requests and their replies, and the updates: what a sample costs on
            # the link once the weights are loaded
            "training_bytes_per_sample": training / n,
            **({"cycles": chip.transport.cycles, "cycles_per_sample": chip.transport.cycles / n}
               if hasattr(chip.transport, "cycles") else {})}


def _integer_weights(cfg: Config, result) -> list:
    """The final integer weights of a run (the float backend's rounded to the integer grid)."""
    from spikeforge.model.float_twin import to_integer_weights

    return [w if not w.is_floating_point() else to_integer_weights(w, cfg) for w in result.weights]


def _init_weights(path: str, cfg: Config):
    """``train --init``: integer weights from a weights file made for a compatible config."""
    from spikeforge.gen import interchange as ic

    try:
        wcfg, weights = ic.load_weights(path)
        ic.check_init(cfg, wcfg, path)
    except ic.InterchangeError as e:
        raise UserError(f"--init: {e}" if not str(e).startswith("--init") else str(e)) from None
    return weights


def _save_weights(path: str, cfg: Config, result, backend: str) -> None:
    """``train --save-weights``: the final integer weights (the float backend's rounded) + config."""
    from spikeforge.gen import interchange as ic

    ws = _integer_weights(cfg, result)
    try:
        ic.save_weights(path, cfg, ws, source=f"spikeforge train --backend {backend}")
    except (ic.InterchangeError, OSError) as e:
        raise UserError(f"--save-weights: cannot write {path}: {e}") from None


# ------------------------------------------------------------------------------ generate
def cmd_generate(args, out: TextIO) -> int:
    """``spikeforge generate``: the chip's Verilog, manifest and report (gen/chipgen.py)."""
    from .chipgen import MappingError, generate

    cfg = _load(args.config)
    n = cfg.hardware.cores if args.cores is None else args.cores
    name = Path(args.config).stem if args.config else "default"
    dest = Path(args.out) if args.out else Path("build") / f"chip-{name}-{n}c"
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"generate: {msg}", file=sys.stderr))
    t0 = time.monotonic()
    try:
        man = generate(cfg, dest, cores=args.cores, force=args.force, log=say)
    except MappingError as e:
        raise UserError(str(e)) from None
    except FileExistsError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{dest}: cannot write: {e.strerror or e}") from None
    est = man["resource_estimate"]["total"]
    out.write(f"{dest}: {man['mesh']['cores']} cores on a {man['mesh']['rows']} x {man['mesh']['cols']} mesh, "
              f"network {'-'.join(map(str, cfg.network.layers))}; estimate {est['comb']:,} LUT4 sites, "
              f"{est['ebr']} EBR, {est['dsp']} MULT18 ({time.monotonic() - t0:.1f} s)\n")
    return 0


# --------------------------------------------------------------------------------- parser
def _int_flag(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Generate, verify and deploy a multi-core processor that "
                                       "trains spiking neural networks on chip.")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    pc = sub.add_parser("config", help="validate, show and list configurations",
                        description="Validate, show and list configurations (YAML files or preset names).")
    csub = pc.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    v = csub.add_parser("validate", help="check a config file or preset; prints 'ok: <summary>'")
    v.add_argument("config", metavar="FILE|PRESET")
    v.set_defaults(func=cmd_config_validate)
    s = csub.add_parser("show", help="print the full resolved config as YAML (defaults filled in)")
    s.add_argument("config", metavar="FILE|PRESET", nargs="?", default=None,
                   help="omit for the built-in defaults")
    s.set_defaults(func=cmd_config_show)
    pr = csub.add_parser("presets", help="list the presets shipped in configs/")
    pr.set_defaults(func=cmd_config_presets)

    backends = TRAIN_BACKENDS
    t = sub.add_parser(
        "train", help="train a network on a data set and report its accuracy",
        description="Train a network on a data set and report its test accuracy. Flags override "
                    "the config's train section. Without --config, the preset of the data set "
                    "(digits or mnist) is used.")
    t.add_argument("--config", metavar="FILE|PRESET", default=None,
                   help="YAML config or preset name (default: the data set's preset)")
    t.add_argument("--backend", choices=backends, default="model",
                   help="model: the bit-exact fixed-point reference model"
                        + ("; float: its float32 autograd twin" if "float" in backends else "")
                        + ("; sim: the config's chip in Verilator, driven over its host link "
                           "(same bits as model)" if "sim" in backends else "")
                        + ("; board: the chip on a board's serial port (--port)" if "board" in backends else "")
                        + " (default: model)")
    t.add_argument("--port", default=None, metavar="DEV",
                   help="--backend board: the board's serial port (e.g. /dev/ttyUSB0)")
    t.add_argument("--baud", type=_int_flag, default=None, metavar="BAUD",
                   help="--backend board: the serial rate, 8N1 (default: the config's hardware.baud, "
                        "3000000 unless set: the ULX3S FT231X)")
    t.add_argument("--limit", type=_int_flag, default=None, metavar="N",
                   help="train on the first N training samples only (a seeded subset)")
    t.add_argument("--dataset", choices=DATASETS, default=None, help="data set (default: the config's)")
    t.add_argument("--epochs", type=_int_flag, default=None, metavar="N",
                   help="passes over the training set (train.epochs)")
    t.add_argument("--seed", type=_int_flag, default=None, metavar="S",
                   help="seed of weight init, shuffling and spike encoding (train.seed)")
    t.add_argument("--batch-size", type=_int_flag, default=None, metavar="B", dest="batch_size",
                   help="samples per weight update (train.batch_size)")
    t.add_argument("--report", metavar="FILE.json", default=None,
                   help="also write accuracies per epoch, sparsity and the config as JSON")
    t.add_argument("--init", metavar="W.pt", default=None,
                   help="start from these integer weights (spikeforge import --weights, "
                        "--save-weights): fine-tuning")
    t.add_argument("--save-weights", metavar="W.pt", default=None, dest="save_weights",
                   help="write the final integer weights + config (for export, --init)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser(
        "generate", help="write the N-core chip's Verilog, manifest.json and report.md",
        description="Map the config's network onto the cores of the chip, check that it fits, and "
                    "write DIR/chip.v (top spikeforge_chip), DIR/manifest.json (mesh, per-core "
                    "mapping, memory map, NoC message formats, protocol version, resource "
                    "estimate) and DIR/report.md. Atomic: on any error no DIR is left.")
    g.add_argument("--config", metavar="FILE|PRESET", default="trainer-20core",
                   help="YAML config or preset (default: trainer-20core)")
    g.add_argument("--cores", type=_int_flag, default=None, metavar="N",
                   help="cores on the mesh, 1..1024 (default: the config's hardware.cores)")
    g.add_argument("-o", "--out", metavar="DIR", default=None,
                   help="output directory (default: build/chip-<config>-<N>c)")
    g.add_argument("--force", action="store_true",
                   help="replace an existing DIR (refused without it), once the new one is complete")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    g.set_defaults(func=cmd_generate)

    # `spikeforge sim ...` lives with the testbenches (sim/cli.py).
    from spikeforge.sim.cli import add_sim_parser

    add_sim_parser(sub)
    # `spikeforge import` / `export` (NIR, snnTorch, SpikingJelly): gen/cli_interchange.py.
    from spikeforge.gen.cli_interchange import add_interchange_parsers

    add_interchange_parsers(sub)
    # `spikeforge federated` lives with the Flower apps (federated/cli.py).
    from spikeforge.federated.cli import add_federated_parser

    add_federated_parser(sub)
    # `spikeforge build ...` lives with the FPGA flow (fpga/cli.py).
    from spikeforge.fpga.cli import add_build_parser

    add_build_parser(sub)
    # `spikeforge flash ...`: openFPGALoader (fpga/flash.py).
    from spikeforge.fpga.flash import add_flash_parser

    add_flash_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Results are buffered and written only on success: an error leaves no partial output.
    out = io.StringIO()
    try:
        if args.func is cmd_train:
            # Training streams nothing to stdout before it ends, so the buffer is enough.
            rc = args.func(args, out, sys.stderr)
        else:
            rc = args.func(args, out)
    except (ConfigError, UserError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    try:
        sys.stdout.write(out.getvalue())
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `spikeforge config show | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return rc


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy: subcommand modules raise the
    # package's UserError, which a second copy of this module would not catch.
    from spikeforge.gen.cli import main as _main

    sys.exit(_main())
