"""``spikeforge generate``: the chip's Verilog, a manifest and a report, for a core count.

:func:`check_mapping` refuses a network that does not fit with the numbers;
:func:`generate` writes ``DIR/chip.v`` (top ``spikeforge_chip``), ``DIR/manifest.json``
and ``DIR/report.md`` atomically: everything is built in a temporary directory beside
``DIR`` and renamed into place at the end, so an error leaves no ``DIR`` (and an existing
``DIR`` untouched unless ``force``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["MappingError", "check_mapping", "manifest", "report_md", "generate", "RESOURCE_ESTIMATE"]

#: Measured with the open flow (out of context, LFE5U-85F, debug off, lanes 1): per core
#: kind of the trainer-20core preset, the router with the chip's planes and the per-core
#: adapters (bench/bench_chip_area.py), the host link (bench/bench_hostlink.py). Cores of
#: other shapes are estimated from these by weight words (block RAM) and neurons x fan-in
#: bits (logic), and labelled estimates.
RESOURCE_ESTIMATE = {
    "core_784x8": {"comb": 2939, "ff": 1617, "ebr": 9, "dsp": 1},
    "core_144x5": {"comb": 2826, "ff": 1397, "ebr": 1, "dsp": 1},
    "router": {"comb": 1041, "ff": 875, "ebr": 0, "dsp": 0},
    "adapters_first_layer": {"comb": 371, "ff": 99, "ebr": 1, "dsp": 0},     # merge + spike source
    "error_reduce": {"comb": 630, "ff": 57, "ebr": 0, "dsp": 0},
    "adapters_later_layer": {"comb": 863, "ff": 147, "ebr": 0, "dsp": 0},    # merge + error source
    "host_link": {"comb": 1287 + 61, "ff": 562 + 21, "ebr": 2, "dsp": 0},
}


class MappingError(ValueError):
    """The network does not fit the chip: the message names the numbers."""


def check_mapping(cfg, cores: int | None = None):
    """The chip geometry of ``cfg`` with ``cores`` cores, or :class:`MappingError`."""
    from ..rtl.geometry import ChipGeometry
    from ..rtl.interfaces import IDX_BITS

    n = cfg.hardware.cores if cores is None else cores
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
        raise MappingError(f"--cores: {n!r} is not a core count in 1..1024")
    try:
        geo = ChipGeometry.from_config(cfg, n)
    except ValueError as e:
        raise MappingError(str(e)) from None
    hw = cfg.hardware
    for pl in geo.cores:
        g = pl.geom
        if g.n_neurons > hw.max_neurons:
            raise MappingError(f"core {pl.core} (layer {pl.layer}) holds {g.n_neurons} neurons, "
                               f"more than hardware.max_neurons={hw.max_neurons}")
        if g.n_in > hw.max_inputs:
            raise MappingError(f"core {pl.core} (layer {pl.layer}) has fan-in {g.n_in}, more than "
                               f"hardware.max_inputs={hw.max_inputs}")
        for what, v in (("fan-in", g.n_in), ("neurons", g.n_neurons)):
            if v >= 1 << IDX_BITS:
                raise MappingError(f"core {pl.core}: {what} {v} does not fit the {IDX_BITS}-bit "
                                   f"command indices")
    used = len(geo.cores)
    if used < n:
        raise MappingError(f"--cores {n}: network.layers={list(cfg.network.layers)} splits over at most "
                           f"{used} cores at hardware.lanes={hw.lanes} (one block of neurons per core at "
                           f"least); use --cores {used} or fewer")
    return geo


def _core_estimate(g) -> dict:
    """Resources of one core: measured for the preset's two kinds, else scaled from them."""
    key = f"core_{g.n_in}x{g.n_neurons}"
    if g.lanes == 1 and key in RESOURCE_ESTIMATE:
        return dict(RESOURCE_ESTIMATE[key], measured=True)
    big = RESOURCE_ESTIMATE["core_784x8"]
    words = g.blocks * g.n_in * g.lanes
    ebr = max(1, -(-words // 1024)) + (1 if g.n_in > 256 else 0) + g.lanes - 1
    scale = g.lanes ** 0.8
    return {"comb": int(big["comb"] * scale * (0.9 + 0.1 * g.n_in / 784)), "ff": int(big["ff"] * scale),
            "ebr": ebr, "dsp": g.lanes, "measured": False}


def estimate(geo) -> dict:
    """Resource estimate per core and for the chip (see :data:`RESOURCE_ESTIMATE`)."""
    last = max(pl.layer for pl in geo.cores)
    per_core, total = [], {"comb": 0, "ff": 0, "ebr": 0, "dsp": 0}
    for pl in geo.cores:
        parts = [_core_estimate(pl.geom), RESOURCE_ESTIMATE["router"],
                 RESOURCE_ESTIMATE["adapters_first_layer" if pl.layer == 0 else "adapters_later_layer"]]
        if pl.layer < last:
            parts.append(RESOURCE_ESTIMATE["error_reduce"])
        row = {k: sum(p[k] for p in parts) for k in total}
        row["core_measured"] = parts[0]["measured"]
        per_core.append(row)
        for k in total:
            total[k] += row[k]
    for k in total:
        total[k] += RESOURCE_ESTIMATE["host_link"][k]
    return {"per_core": per_core, "total": total,
            "all_measured": all(r["core_measured"] for r in per_core)}


def manifest(cfg, geo, chip) -> dict:
    """Everything a user or a host program needs to know about the generated chip."""
    from amaranth.hdl import Shape

    from ..host.protocol import PROTOCOL_VERSION
    from ..rtl.noc import flit_layout, inject_layout

    a = cfg.arithmetic
    cores = []
    for pl in geo.cores:
        g = pl.geom
        cores.append({
            "core": pl.core, "layer": pl.layer, "neuron_offset": pl.offset, "neurons": g.n_neurons,
            "fan_in": g.n_in, "mesh": [pl.row, pl.col], "output_layer": g.output_layer,
            "errors": g.errors,
            "memory": {"weight_banks": g.lanes, "weight_words_per_bank": g.weight_depth,
                       "weight_bits": a.weight_bits, "spike_mask_history_words": g.timesteps * g.blocks,
                       "event_buffer_words": g.n_in if cfg.hardware.wg_dataflow == "inplace" else g.max_events},
        })
    planes = {}
    for spec in chip.planes:
        planes[spec.name] = {"multicast": spec.multicast,
                             "payload_bits": Shape.cast(spec.payload).width,
                             "inject_bits": Shape.cast(inject_layout(chip.mesh, spec.payload, spec.multicast)).width,
                             "flit_bits": Shape.cast(flit_layout(chip.mesh, spec.payload, spec.multicast)).width,
                             "fields": {name: Shape.cast(f.shape).width for name, f in spec.payload}}
    return {
        "generator": "spikeforge generate",
        "config_digest": cfg.digest(),
        "config": cfg.to_dict(),
        "protocol_version": PROTOCOL_VERSION,
        "top": "spikeforge_chip",
        "mesh": {"rows": geo.rows, "cols": geo.cols, "cores": len(geo.cores)},
        "cores": cores,
        "noc_planes": planes,
        "resource_estimate": estimate(geo),
    }


def report_md(cfg, geo, man: dict, board) -> str:
    """A short human-readable summary of the generated chip."""
    est = man["resource_estimate"]
    lines = [f"# spikeforge chip: {len(geo.cores)} cores, network {'-'.join(map(str, cfg.network.layers))}",
             "",
             f"Config digest `{man['config_digest']}`, T = {cfg.network.timesteps}, lanes {cfg.hardware.lanes}, "
             f"{cfg.hardware.wg_dataflow} dataflow, host protocol version {man['protocol_version']}; "
             f"mesh {geo.rows} x {geo.cols}.",
             "", "| core | layer | neurons | fan-in | mesh (row, col) |", "|---|---|---|---|---|"]
    for c in man["cores"]:
        lines.append(f"| {c['core']} | {c['layer']} | {c['neuron_offset']}..{c['neuron_offset'] + c['neurons'] - 1}"
                     f" | {c['fan_in']} | ({c['mesh'][0]}, {c['mesh'][1]}) |")
    lines += ["", "NoC planes (bits): " + ", ".join(
        f"{n} flit {p['flit_bits']}" for n, p in man["noc_planes"].items()), ""]
    kind = "measured per part" if est["all_measured"] else "estimated (core shapes other than the measured ones)"
    lines += [f"## Resource estimate on {board.name} ({kind})", "",
              "| resource | chip | available | share |", "|---|---|---|---|"]
    avail = board.available
    names = {"comb": "LUT4 sites", "ff": "FF", "ebr": "DP16KD / EBR", "dsp": "MULT18"}
    for k, name in names.items():
        have = avail.get(k)
        share = f"{est['total'][k] / have:.0%}" if have else "-"
        lines.append(f"| {name} | {est['total'][k]:,} | {have:,} | {share} |" if have else
                     f"| {name} | {est['total'][k]:,} | - | - |")
    over = [names[k] for k in names if avail.get(k) and est["total"][k] > avail[k]]
    lines += ["", ("**Does not fit:** " + ", ".join(over) + " over the device (sum of parts measured "
                   "out of context; see bench/bench_chip_area.py).") if over else "Fits by this estimate.", ""]
    return "\n".join(lines)


def generate(cfg, out_dir, *, cores: int | None = None, force: bool = False, log=None) -> dict:
    """Write the chip of ``cfg`` to ``out_dir`` atomically; returns the manifest."""
    from ..fpga.boards import get_board
    from ..rtl.chip import Chip
    from .verilog import emit_verilog

    say = log or (lambda msg: None)
    geo = check_mapping(cfg, cores)
    if cores is not None:
        cfg = cfg.replace(hardware={"cores": cores})
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; use --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        t0 = time.monotonic()
        chip = Chip(cfg, geo, debug=False)
        say(f"elaborating and emitting Verilog of {len(geo.cores)} cores")
        (tmp / "chip.v").write_text(emit_verilog(chip, "spikeforge_chip"))
        say(f"Verilog written in {time.monotonic() - t0:.1f} s")
        man = manifest(cfg, geo, chip)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
        (tmp / "report.md").write_text(report_md(cfg, geo, man, get_board(cfg.board)))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return man
