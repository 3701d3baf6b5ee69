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

__all__ = ["MappingError", "check_mapping", "core_kind", "estimate", "memory_map", "manifest", "report_md",
           "generate", "RESOURCE_ESTIMATE"]

#: Synthesis counts of the trainer-20core chip's parts (Yosys ``synth_ecp5 -noflatten
#: -nowidelut``, the whole chip in its board top, ``spikeforge build --board ulx3s-85f
#: --synth-only``; LUT4 sites = LUT4 + 2 per CCU2C + 6 per DPR16X4): per core kind, the
#: routers as the chip builds them (only the ports of its traffic; the mean of its 20,
#: 291 .. 536), the per-core adapters and the host interface (UART, host link, executor).
#: The flattened synthesis of the whole chip is about 12 % smaller and nextpnr's packing
#: adds about 6 % back (docs/fpga.md). Cores of other shapes are scaled from the 784x8 core
#: -- block RAM by weight words, logic by fan-in and lanes -- and labelled estimates.
RESOURCE_ESTIMATE = {
    "core_784x8": {"comb": 2576, "ff": 1621, "ebr": 9, "dsp": 1},
    "core_144x5": {"comb": 2577, "ff": 1401, "ebr": 1, "dsp": 1},
    "router": {"comb": 446, "ff": 457, "ebr": 0, "dsp": 0},
    "adapters_first_layer": {"comb": 317, "ff": 99, "ebr": 1, "dsp": 0},     # merge + spike source
    "error_reduce": {"comb": 254, "ff": 134, "ebr": 1, "dsp": 0},
    "adapters_later_layer": {"comb": 579, "ff": 147, "ebr": 0, "dsp": 0},    # merge + error source
    "host_link": {"comb": 3275, "ff": 1221, "ebr": 3, "dsp": 0},
}


class MappingError(ValueError):
    """The network does not fit the chip: the message names the numbers."""


def check_mapping(cfg, cores: int | None = None):
    """The chip geometry of ``cfg`` with ``cores`` cores, or :class:`MappingError`."""
    from ..rtl.geometry import ChipGeometry
    from ..rtl.interfaces import IDX_BITS

    n = cfg.hardware.cores if cores is None else cores
    who = "hardware.cores" if cores is None else "--cores"
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
        raise MappingError(f"{who}: {n!r} is not a core count in 1..1024")
    try:
        geo = ChipGeometry.from_config(cfg, n)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("hardware.cores: "):
            msg = f"{who}: " + msg[len("hardware.cores: "):]
        raise MappingError(msg) from None
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
        raise MappingError(f"{who}: {n} cores but network.layers={list(cfg.network.layers)} splits over at most "
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


def core_kind(pl) -> str:
    """``layer<l>_<fan-in>x<neurons>``: cores of one kind are the same hardware."""
    return f"layer{pl.layer}_{pl.geom.n_in}x{pl.geom.n_neurons}"


def estimate(geo) -> dict:
    """Resource estimate per core (core, router and adapters), per core kind and for the
    chip with the host link (see :data:`RESOURCE_ESTIMATE`)."""
    last = max(pl.layer for pl in geo.cores)
    per_core, kinds, total = [], {}, {"comb": 0, "ff": 0, "ebr": 0, "dsp": 0}
    for pl in geo.cores:
        parts = [_core_estimate(pl.geom), RESOURCE_ESTIMATE["router"],
                 RESOURCE_ESTIMATE["adapters_first_layer" if pl.layer == 0 else "adapters_later_layer"]]
        if pl.layer < last:
            parts.append(RESOURCE_ESTIMATE["error_reduce"])
        row = {k: sum(p[k] for p in parts) for k in total}
        row["core_measured"] = parts[0]["measured"]
        per_core.append({"core": pl.core, "kind": core_kind(pl), **row})
        kinds.setdefault(core_kind(pl), {"cores": 0, **row})["cores"] += 1
        for k in total:
            total[k] += row[k]
    for k in total:
        total[k] += RESOURCE_ESTIMATE["host_link"][k]
    return {"per_core": per_core, "per_kind": kinds, "host_link": dict(RESOURCE_ESTIMATE["host_link"]),
            "total": total, "all_measured": all(r["core_measured"] for r in per_core)}


def memory_map(fragment, cores: int, core_fragments=None) -> tuple[list[list[dict]], list[dict]]:
    """Every memory of the elaborated chip (``Fragment.get(chip, None)``) as ``{name, words,
    bits}``: one list per core (its core, barrier and error reduction, named by the chip's
    submodule ``core<k>``, ``spk_merge<k>``, ...) and one of the rest of the chip.
    ``core_fragments``: ``{k: elaborated core}`` of a chip whose cores are instances of
    shared modules (``Chip(shared_cores=True)``)."""
    import re

    from amaranth.hdl import MemoryInstance, Shape
    from amaranth.lib.memory import Memory

    per_core, rest = [[] for _ in range(cores)], []

    def walk(frag, path):
        if isinstance(frag, MemoryInstance):
            mem = next(o for o in frag.origins if isinstance(o, Memory))
            m = re.fullmatch(r"([a-z_]+?)(\d+)", path[0]) if path else None
            entry = {"name": ".".join([m.group(1)] + path[1:]) if m else ".".join(path),
                     "words": mem.depth, "bits": Shape.cast(mem.shape).width}
            (per_core[int(m.group(2))] if m and int(m.group(2)) < cores else rest).append(entry)
        for sub, name, *_ in frag.subfragments:
            walk(sub, path + [name if isinstance(name, str) else str(name)])

    walk(fragment, [])
    for k, frag in sorted((core_fragments or {}).items()):
        walk(frag, [f"core{k}"])
    return per_core, rest


def manifest(cfg, geo, chip, fragment=None, core_fragments=None) -> dict:
    """Everything a user or a host program needs to know about the generated chip;
    ``fragment`` (and ``core_fragments``, see :func:`memory_map`): the elaborated chip, for
    the full memory inventory (``memories``)."""
    from amaranth.hdl import Shape

    from ..host.protocol import PROTOCOL_VERSION
    from ..rtl.noc import flit_layout, inject_layout

    a = cfg.arithmetic
    mems, chip_mems = (memory_map(fragment, len(geo.cores), core_fragments) if fragment is not None
                       else (None, None))
    cores = []
    for pl in geo.cores:
        g = pl.geom
        memory = {"weight_banks": g.lanes, "weight_words_per_bank": g.weight_depth,
                  "weight_bits": a.weight_bits, "spike_mask_history_words": g.timesteps * g.blocks,
                  "spike_mask_history_bits": g.lanes,
                  "event_buffer_words": g.n_in if cfg.hardware.wg_dataflow == "inplace" else g.max_events}
        if mems is not None:
            memory["memories"] = mems[pl.core]
            memory["total_bits"] = sum(m["words"] * m["bits"] for m in mems[pl.core])
        cores.append({
            "core": pl.core, "kind": core_kind(pl), "layer": pl.layer, "neuron_offset": pl.offset,
            "neurons": g.n_neurons, "fan_in": g.n_in, "mesh": [pl.row, pl.col],
            "output_layer": g.output_layer, "errors": g.errors, "memory": memory,
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
        **({"chip_memories": chip_mems} if chip_mems is not None else {}),
        "noc_planes": planes,
        "resource_estimate": estimate(geo),
    }


def report_md(cfg, geo, man: dict, board) -> str:
    """A short human-readable summary of the generated chip."""
    est = man["resource_estimate"]
    mem = "memory (kbit) |" if "total_bits" in man["cores"][0]["memory"] else ""
    lines = [f"# spikeforge chip: {len(geo.cores)} cores, network {'-'.join(map(str, cfg.network.layers))}",
             "",
             f"Config digest `{man['config_digest']}`, T = {cfg.network.timesteps}, lanes {cfg.hardware.lanes}, "
             f"{cfg.hardware.wg_dataflow} dataflow, host protocol version {man['protocol_version']}; "
             f"mesh {geo.rows} x {geo.cols}.",
             "", f"| core | kind | layer | neurons | fan-in | mesh (row, col) | {mem}",
             "|---|---|---|---|---|---|" + ("---|" if mem else "")]
    for c in man["cores"]:
        kbit = f" {c['memory']['total_bits'] / 1024:.1f} |" if mem else ""
        lines.append(f"| {c['core']} | {c['kind']} | {c['layer']} | {c['neuron_offset']}.."
                     f"{c['neuron_offset'] + c['neurons'] - 1} | {c['fan_in']} | "
                     f"({c['mesh'][0]}, {c['mesh'][1]}) |{kbit}")
    lines += ["", "NoC planes (bits): " + ", ".join(
        f"{n} flit {p['flit_bits']}" for n, p in man["noc_planes"].items()), ""]
    kind = "measured per part" if est["all_measured"] else \
        "ESTIMATE: cores of shapes other than the two measured ones are scaled from the 784x8 core"
    names = {"comb": "LUT4 sites", "ff": "FF", "ebr": "DP16KD / EBR", "dsp": "MULT18"}
    lines += [f"## Resource estimate on {board.name} ({kind})", "",
              "Per core, with its router and adapters:", "",
              "| kind | cores | " + " | ".join(names.values()) + " | core measured |",
              "|---|---|" + "---|" * len(names) + "---|"]
    for k, row in est["per_kind"].items():
        lines.append(f"| {k} | {row['cores']} | " + " | ".join(f"{row[r]:,}" for r in names)
                     + f" | {'yes' if row['core_measured'] else 'no (estimate)'} |")
    lines.append("| host interface (UART, host link, executor) | 1 | " + " | ".join(f"{est['host_link'][r]:,}" for r in names)
                 + " | yes |")
    lines += ["", "| resource | chip | available | share |", "|---|---|---|---|"]
    avail = board.available
    for k, name in names.items():
        have = avail.get(k)
        lines.append(f"| {name} | {est['total'][k]:,} | {have:,} | {est['total'][k] / have:.0%} |" if have else
                     f"| {name} | {est['total'][k]:,} | - | - |")
    over = [names[k] for k in names if avail.get(k) and est["total"][k] > avail[k]]
    lines += ["", ("**Does not fit:** " + ", ".join(over) + " over the device by the sum of the "
                   "parts' synthesis counts.") if over else
              "Fits by this estimate (the sum of the parts' synthesis counts; `spikeforge build` "
              "places and routes the whole chip).", ""]
    return "\n".join(lines)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def generate(cfg, out_dir, *, cores: int | None = None, force: bool = False, log=None) -> dict:
    """Write the chip of ``cfg`` to ``out_dir`` atomically; returns the manifest.

    Everything is written into a temporary directory beside ``out_dir`` and renamed into
    place at the end; on any error (or Ctrl-C) the temporary directory and any parent
    directories this call created are removed, and an existing ``out_dir`` (replaced only
    with ``force``) is left as it was.
    """
    from amaranth.hdl import Fragment

    from ..fpga.boards import get_board
    from ..rtl.chip import Chip, core_module_name
    from .verilog import emit_verilog

    say = log or (lambda msg: None)
    geo = check_mapping(cfg, cores)
    if cores is not None:
        cfg = cfg.replace(hardware={"cores": cores})
    board = get_board(cfg.board)
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; use --force to replace it")
    made = [p for p in out.parents if not p.exists()]      # nearest first
    tmp = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())                  # mkdtemp makes it private (0700)
        t0 = time.monotonic()
        # each core kind is elaborated and emitted once, then instantiated
        chip = Chip(cfg, geo, debug=False, shared_cores=True)
        say(f"elaborating {len(chip.verilog_modules)} core kinds and a {geo.rows} x {geo.cols} mesh")
        fragment = Fragment.get(chip, None)
        kinds = {name: Fragment.get(core, None) for name, core in chip.verilog_modules.items()}
        core_fragments = {pl.core: kinds[core_module_name(pl)] for pl in geo.cores}
        say(f"emitting Verilog ({time.monotonic() - t0:.1f} s)")
        (tmp / "chip.v").write_text(emit_verilog(chip, "spikeforge_chip", fragment=fragment,
                                                       module_fragments=kinds))
        say(f"Verilog written in {time.monotonic() - t0:.1f} s")
        man = manifest(cfg, geo, chip, fragment, core_fragments)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
        (tmp / "report.md").write_text(report_md(cfg, geo, man, board))
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / "x", out)                 # put the old one back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not (old / "x").exists():
            shutil.rmtree(old, ignore_errors=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return man
