"""FPGA cost of the host link (rtl/uart.py, rtl/hostlink.py) and its bytes per sample.

Area: each component goes through the project's flow (``fpga/flow.py`` ``build_core``: Yosys
``synth_ecp5``, then nextpnr-ecp5 ``--85k --out-of-context``) on the ULX3S-85F and one row
is printed: LUT4 sites (nextpnr's COMB count), FF, DP16KD (EBR), fmax. Components: the UART
(3 Mbaud), the framing layer (HostLink, 2,048-byte requests, 2,032-byte replies) and both (SerialHostLink).

Bytes: a ``train`` frame on the wire for MNIST rate-coded at gain 1 (mean rate ~0.12,
T = 8, 784 inputs) and for uniform Bernoulli 0.12, in each spike encoding (mean over
``--samples`` samples), and what 3 Mbaud (300,000 bytes/s) allows per second.

    python bench/bench_hostlink.py [--clock-mhz 100] [--max-payload 2048] [--max-reply 2032] [--samples 200]
        [--no-area] [--synth-only] [-o DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path


def components(clk_hz, max_payload, max_reply):
    from spikeforge.rtl.hostlink import HostLink, SerialHostLink
    from spikeforge.rtl.uart import Uart

    return {
        "uart": lambda: Uart(clk_hz, 3e6),
        "hostlink": lambda: HostLink(max_payload, max_reply),
        "uart+hostlink": lambda: SerialHostLink(clk_hz, 3e6, max_payload=max_payload, max_reply=max_reply),
    }


def area(clk_hz, max_payload, max_reply, outdir: Path, synth_only: bool):
    from spikeforge.fpga.boards import get_board
    from spikeforge.fpga.flow import build_core
    from spikeforge.gen.config import Config
    from spikeforge.gen.verilog import emit_verilog
    from spikeforge.rtl.geometry import CoreGeometry

    board = get_board("ulx3s-85f")
    # build_core's fit check of the weights needs a core geometry: a 1 x 1 one (no weights
    # to speak of); the Verilog is the host link's, its top renamed to "core".
    geom = CoreGeometry(n_in=1, n_neurons=1, timesteps=1, lanes=1)
    rows = []
    for name, make in components(clk_hz, max_payload, max_reply).items():
        v = emit_verilog(make(), name="core")
        e = build_core(Config(), name, geom, board, outdir / name.replace("+", "_"),
                       target_mhz=clk_hz / 1e6, synth_only=synth_only, verilog=v)
        r = e["resources"]
        rows.append({"component": name, "lut4_sites": r.get("lut4_sites", r.get("comb")),
                     "ff": r.get("ff"), "ebr": r.get("ebr", r.get("dp16kd")),
                     "fmax_mhz": e["fmax_mhz"], "estimated": e["estimated"], "resources": r})
    return rows


def sample_bytes(n):
    import torch

    from spikeforge.host import protocol as P
    from spikeforge.model.data import load_mnist, rate_encode

    g = torch.Generator().manual_seed(0)
    x = load_mnist().x_train[:n]
    data = {"mnist (gain 1)": rate_encode(x, 8, g),
            "uniform 0.12": (torch.rand((n, 8, 784), generator=g) < 0.12).to(torch.int64)}
    out = []
    for name, rasters in data.items():
        rate = rasters.float().mean().item()
        sizes = {e.name.lower(): [] for e in P.Enc}
        best = []
        for r in rasters:
            r = r.tolist()
            for e in P.Enc:
                sizes[e.name.lower()].append(len(P.encode_frame(0, P.Op.TRAIN, P.pack_sample(r, 3, e), lead=True)))
            best.append(len(P.encode_frame(0, P.Op.TRAIN, P.pack_sample(r, 3), lead=True)))
        out.append({"data": name, "rate": rate, **{k: statistics.mean(v) for k, v in sizes.items()},
                    "best": statistics.mean(best)})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock-mhz", type=float, default=100.0)
    ap.add_argument("--max-payload", type=int, default=2048)
    ap.add_argument("--max-reply", type=int, default=2032)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--no-area", action="store_true")
    ap.add_argument("--synth-only", action="store_true")
    ap.add_argument("-o", "--outdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    report = {"clock_mhz": a.clock_mhz, "max_payload": a.max_payload, "max_reply": a.max_reply}

    b = sample_bytes(a.samples)
    report["train_frame_bytes"] = b
    print(f"train frame on the wire (header, CRC, COBS, both delimiters), T = 8, 784 inputs, "
          f"mean of {a.samples} samples")
    print(f"{'data':16} {'rate':>6} {'bitmap':>8} {'gaps':>8} {'masks':>8} {'best':>8} {'samples/s @3Mbaud':>18}")
    for r in b:
        print(f"{r['data']:16} {r['rate']:6.3f} {r['bitmap']:8.1f} {r['gaps']:8.1f} {r['masks']:8.1f} "
              f"{r['best']:8.1f} {300_000 / r['best']:18.0f}")

    if not a.no_area:
        out = a.outdir or Path(tempfile.mkdtemp(prefix="bench_hostlink-"))
        rows = area(a.clock_mhz * 1e6, a.max_payload, a.max_reply, out, a.synth_only)
        report["area"] = rows
        print(f"\nECP5-85F, out of context, {a.clock_mhz:g} MHz target, max payload "
              f"{a.max_payload} B, max reply {a.max_reply} B ({out})")
        print(f"{'component':16} {'LUT4 sites':>10} {'FF':>6} {'EBR':>4} {'fmax MHz':>9}")
        for r in rows:
            fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
            est = "~" if r["estimated"] else ""
            print(f"{r['component']:16} {est + str(r['lut4_sites']):>10} {r['ff']:>6} {r['ebr']:>4} {fmax:>9}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
