"""The two reports of a build: ``report.json`` (a stable schema for tools) and
``report.txt`` (the same for a person), written atomically (docs/fpga.md)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .boards import RESOURCE_KEYS

__all__ = ["SCHEMA_VERSION", "core_report", "chip_report", "format_text", "write_reports",
           "clear_reports"]

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "report.txt")


def _report(cfg, board, target: str, flow: str, key: str, value, *, target_mhz: float,
            seconds: float, config_name: str) -> dict:
    """The fields every report.json has, and the target's own entry under ``key``."""
    return {
        "schema": SCHEMA_VERSION,
        "board": board.name,
        "device": board.device,
        "package": board.package,
        "target": target,
        "config": {"name": config_name, "digest": cfg.digest()},
        "flow": flow,
        "target_mhz": target_mhz,
        "available": {k: board.available[k] for k in RESOURCE_KEYS},
        key: value,
        "seconds": round(seconds, 2),
    }


def core_report(cfg, board, cores: list[dict], *, target_mhz: float, seconds: float,
                config_name: str, synth_only: bool) -> dict:
    """report.json of ``--target core``: one entry per core kind in ``cores``."""
    flow = "synthesis only (estimates)" if synth_only else "out-of-context place and route"
    return _report(cfg, board, "core", flow, "cores", cores, target_mhz=target_mhz, seconds=seconds,
                   config_name=config_name)


def chip_report(cfg, board, chip: dict, *, target_mhz: float, seconds: float,
                config_name: str, synth_only: bool) -> dict:
    """report.json of ``--target chip``: the board top's ``chip`` entry (fpga/flow.py
    ``build_chip``)."""
    flow = "synthesis only (estimates)" if synth_only else "place and route with the board's pins"
    return _report(cfg, board, "chip", flow, "chip", chip, target_mhz=target_mhz, seconds=seconds,
                   config_name=config_name)


def _row(label: str, r: dict, avail: dict | None = None) -> str:
    cells = [f"{r[k]:>7}" for k in RESOURCE_KEYS]
    line = f"  {label:<24}" + "".join(cells)
    if avail:
        line += f"   ({100 * r['comb'] / avail['comb']:.1f} % of LUT4 sites)"
    return line


def _entries(rep: dict) -> list[dict]:
    """The built things of a report: the chip, or each core kind."""
    return [rep["chip"]] if rep["target"] == "chip" else list(rep["cores"])


def format_text(rep: dict) -> str:
    """report.txt: resources, fmax and critical path per core kind, then per module."""
    head = "".join(f"{k:>7}" for k in RESOURCE_KEYS)
    out = [f"spikeforge build --target {rep['target']}: board {rep['board']} ({rep['device']}, "
           f"{rep['package']}), config {rep['config']['name']} (digest {rep['config']['digest']})",
           f"flow: {rep['flow']}; target {rep['target_mhz']:g} MHz; {rep['seconds']:.0f} s"
           + "".join(f"; nextpnr seed {s}" for s in {e.get("seed") for e in _entries(rep)} if s is not None),
           ""]
    if rep["flow"].startswith("synthesis"):
        out.append("comb is an estimate: LUT4 + 2 per CCU2C + 6 per DPR16X4 (no fmax without "
                   "place and route)")
        out.append("")
    if rep["target"] == "chip":
        return _format_chip(rep, out, head)
    for c in rep["cores"]:
        out.append(f"core {c['name']}: {c['n_in']} -> {c['n_neurons']} neurons, "
                   f"T={c['timesteps']}, P={c['lanes']}")
        out.append(f"  {'':<24}{head}")
        out.append(_row("total", c["resources"], rep["available"]))
        out.append(_row("device", rep["available"]))
        if c["fmax_mhz"] is not None:
            verdict = "met" if c["fmax_mhz"] >= rep["target_mhz"] else "MISSED"
            out.append(f"  fmax {c['fmax_mhz']:.2f} MHz (target {rep['target_mhz']:g} MHz: {verdict})")
        cp = c.get("critical_path")
        if cp:
            out.append(f"  critical path {cp['ns']:.2f} ns: {cp['from']} -> {cp['to']}")
        out.append("  per module (Yosys synth -noflatten; module with its submodules):")
        for m in c["modules"]:
            out.append(_row(m["name"], m["resources"]))
        sec = c.get("seconds", {})
        out.append("  tool wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items()))
        out.append("")
    return "\n".join(out)


def _timing(out: list[str], c: dict, target_mhz: float) -> None:
    if c["fmax_mhz"] is not None:
        verdict = "met" if c["fmax_mhz"] >= target_mhz else "MISSED"
        out.append(f"  fmax {c['fmax_mhz']:.2f} MHz (target {target_mhz:g} MHz: {verdict})")
    cp = c.get("critical_path")
    if cp:
        out.append(f"  critical path {cp['ns']:.2f} ns: {cp['from']} -> {cp['to']}")


def _shown(name: str) -> bool:
    """Modules of report.txt: down to the chip's parts (cores, NoC routers, adapters, link,
    executor); the engines inside a core are in report.json."""
    parts = name.split(".")
    return len(parts) <= 3 or (parts[:3] == ["hostchip", "chip", "noc"] and len(parts) == 4)


def _format_chip(rep: dict, out: list[str], head: str) -> str:
    c = rep["chip"]
    ck, u = c["clock"], c["uart"]
    out.append(f"chip: {c['n_cores']} cores, network {'-'.join(map(str, c['layers']))}, "
               f"T={c['timesteps']}, P={c['lanes']}")
    p = ck["pll"]
    out.append(f"clock: board {ck['board_mhz']:g} MHz -> PLL {ck['pll_mhz']:g} MHz (CLKI_DIV "
               f"{p['clki_div']}, CLKFB_DIV {p['clkfb_div']}, CLKOP_DIV {p['clkop_div']}, VCO "
               f"{p['vco_mhz']:g} MHz)")
    out.append(f"UART: {u['baud']:,} baud ({u['actual_baud']:,} actual, {u['error_percent']:+.2f} %) "
               f"on rx {u['pins'].get('rx')} / tx {u['pins'].get('tx')}; reset button: "
               f"{c['reset_button'] or 'none'}; LEDs: "
               + (", ".join(f"{n} {k} {what}" for n, k, what in c["leds"]) or "none"))
    if c.get("bitstream"):
        out.append(f"bitstream: {c['bitstream']['path']} ({c['bitstream']['bytes']:,} bytes)")
    out.append("")
    out.append(f"  {'':<24}{head}")
    out.append(_row("total", c["resources"], rep["available"]))
    out.append(_row("device", rep["available"]))
    _timing(out, c, rep["target_mhz"])
    out.append("  per part (Yosys synth -noflatten; a part with its submodules):")
    for unit in c["units"]:
        out.append(_row(unit["name"], unit["resources"]))
    out.append("  per module (down to cores and routers; every module in report.json):")
    for m in c["modules"]:
        if _shown(m["name"]):
            out.append(_row(m["name"], m["resources"]))
    sec = c.get("seconds", {})
    out.append("  tool wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items()))
    out.append("")
    return "\n".join(out)


def clear_reports(outdir: Path) -> None:
    """Remove the reports of an earlier build, so a failed build leaves none behind."""
    for name in REPORT_FILES:
        (outdir / name).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(outdir: Path, rep: dict) -> tuple[Path, Path]:
    """Write report.json and report.txt into ``outdir``, each all or nothing."""
    outdir.mkdir(parents=True, exist_ok=True)
    j, t = outdir / "report.json", outdir / "report.txt"
    _atomic_write(j, json.dumps(rep, indent=2) + "\n")
    _atomic_write(t, format_text(rep) + "\n")
    return j, t
