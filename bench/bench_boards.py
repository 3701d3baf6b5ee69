"""The chip on the board's FPGA against core count, and the training throughput that follows.

    python bench/bench_boards.py [--config trainer-20core] [--board ulx3s-85f]
        [--cores 1,2,4,8,16,20] [--target-mhz 100] [--synth-only] [--samples 16]
        [--plot build/bench/boards.png] [--json FILE] [-o DIR]

For each core count the config's network is mapped onto that many cores (the smallest
``hardware.max_neurons`` that maps it; a count too small for the network is a row that says
so) and built with ``spikeforge build --target chip`` -- the board top, the whole chip,
placed and routed with the board's pins (``--synth-only``: Yosys estimates marked ``~``,
no fmax, throughput at the target clock). A finished build in ``DIR/<cores>/report.json``
of the same config is reused (a placed and routed one also under ``--synth-only``): a
20-core build takes about 45 minutes. Printed per count: LUT4 sites, FF, DP16KD, MULT18 (used and % of the device) and fmax; then the
training throughput at that fmax: cycles per sample from the chip's perf model
(``model.perf.chip_sample_cycles``) on ``--samples`` real training samples, the host link's
time per sample (the exact ``train`` request and reply frames at the config's baud, 8N1, one
request in flight) and the samples/s of a board; beside them, measured in the same run,
PyTorch BPTT (``model.float_twin.FloatTwin``, float32, the same network and timesteps) on
this CPU at batch 1 and at its best batch size. The plot shows resources and fmax against
core count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO.parent))

from spikeforge.gen.chipgen import MappingError, check_mapping  # noqa: E402
from spikeforge.gen.config import load_config  # noqa: E402
from spikeforge.model import perf  # noqa: E402
from spikeforge.model.snn import FixedPointSNN, init_weights  # noqa: E402
from spikeforge.rtl.geometry import ChipGeometry  # noqa: E402


def config_for(cfg, cores: int):
    """``cfg`` on ``cores`` cores with the smallest ``max_neurons`` that maps it, or the
    mapping error of the count."""
    widest = max(cfg.network.layers[1:])
    err = None
    for m in range(1, widest + 1):
        c = cfg.replace(hardware={"cores": cores, "max_neurons": max(m, cfg.hardware.lanes)})
        try:
            check_mapping(c)
            return c, None
        except (MappingError, ValueError) as e:
            err = str(e)
    return None, err


def build(cfg, cores: int, args) -> dict:
    """``spikeforge build --target chip`` of ``cfg`` in ``DIR/<cores>``; its report.json."""
    import yaml

    d = Path(args.out) / str(cores)
    d.mkdir(parents=True, exist_ok=True)
    rep = d / "report.json"
    if rep.exists():
        old = json.loads(rep.read_text())
        if old["config"]["digest"] == cfg.digest() and (args.synth_only or not old["chip"]["estimated"]):
            return old
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "spikeforge.gen.cli", "build", "--board", args.board, "--config",
           str(d / "config.yaml"), "-o", str(d), "--target-mhz", f"{args.target_mhz:g}",
           "--allow-slow", "-q"] + (["--synth-only"] if args.synth_only else [])
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO.parent)
    if r.returncode != 0 or not rep.exists():
        return {"error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]}
    out = json.loads(rep.read_text())
    out["bench_seconds"] = round(time.monotonic() - t0)
    return out


def chip_cycles(cfg, x, labels) -> float:
    """Mean cycles per training sample of the chip (perf model) on the samples."""
    geo = ChipGeometry.from_config(cfg)
    model = FixedPointSNN(cfg, weights=init_weights(cfg, torch.Generator().manual_seed(cfg.train.seed)))
    B = cfg.train.batch_size
    est = []
    for b0 in range(0, x.shape[0], B):
        traces = model.train_step(x[b0:b0 + B], labels[b0:b0 + B])
        est += [perf.chip_sample_cycles(cfg, geo, traces, s)["total"] for s in range(min(B, x.shape[0] - b0))]
    return sum(est) / len(est)


def link_seconds(cfg, x, labels) -> float:
    """Mean seconds per training sample on the host link: the ``train`` request and its reply
    (counts of the output layer) as framed, 10 bits a byte at the config's baud."""
    from spikeforge.host import protocol as hp

    n_out = cfg.network.layers[-1]
    total = 0
    for s in range(x.shape[0]):
        req = hp.encode_frame(s & 0xFF, hp.Op.TRAIN, hp.pack_sample(x[s].tolist(), int(labels[s])))
        rep = hp.encode_reply(s & 0xFF, 0, bytes(n_out))
        total += len(req) + len(rep)
    return total / x.shape[0] * 10 / cfg.hardware.baud


def cpu_bptt(cfg, x, labels, batches=(1, 8, 32, 128, 512), seconds=2.0) -> dict[int, float]:
    """Samples/s of float32 PyTorch BPTT (the model's float twin) per batch size, on this
    CPU: repeated training steps for about ``seconds`` each, the best of two rounds."""
    from spikeforge.model.float_twin import FloatTwin

    twin = FloatTwin.from_fixed(FixedPointSNN(cfg))
    out = {}
    for b in batches:
        idx = torch.arange(b) % x.shape[0]
        xb, yb = x[idx].to(torch.float32), labels[idx]
        twin.train_step(xb, yb)                       # warm up
        best = 0.0
        for _ in range(2):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                twin.train_step(xb, yb)
                n += b
            best = max(best, n / (time.perf_counter() - t0))
        out[b] = best
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="trainer-20core")
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--cores", default="1,2,4,8,16,20")
    ap.add_argument("--target-mhz", type=float, default=100.0)
    ap.add_argument("--synth-only", action="store_true")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=str(REPO / "build" / "bench" / "boards.png"))
    ap.add_argument("--json", default=None)
    ap.add_argument("-o", "--out", default=str(REPO / "build" / "bench" / "boards"))
    args = ap.parse_args(argv)

    from spikeforge.fpga.boards import get_board
    from spikeforge.sim.chip_tb import _samples

    base = load_config(args.config)
    board = get_board(args.board)
    counts = [int(c) for c in args.cores.split(",")]
    source = base.train.dataset if base.train.dataset in ("digits", "mnist") else "random"
    x, labels = _samples(base, source, args.samples, args.seed)
    cpu = cpu_bptt(base, x, labels)
    best_b = max(cpu, key=cpu.get)
    link_s = link_seconds(base, x, labels)
    avail = None
    rows = []
    net = "-".join(map(str, base.network.layers))
    print(f"{args.config} ({net}, T={base.network.timesteps}) on {board.name} ({board.device}), "
          f"target {args.target_mhz:g} MHz{', synthesis estimates' if args.synth_only else ''}")
    print("| cores | max neurons | LUT4 sites | FF | DP16KD | MULT18 | fmax MHz | cycles/sample | "
          "chip samples/s | board samples/s (with link) | vs CPU batch 1 | vs CPU best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in counts:
        cfg, err = config_for(base, n)
        if cfg is None:
            print(f"| {n} | - | does not map: {err} |||||||||")
            rows.append({"cores": n, "error": err})
            continue
        rep = build(cfg, n, args)
        if "error" in rep:
            print(f"| {n} | {cfg.hardware.max_neurons} | {rep['error']} |||||||||")
            rows.append({"cores": n, "error": rep["error"]})
            continue
        res, avail, fmax = rep["chip"]["resources"], rep["available"], rep["chip"]["fmax_mhz"]
        f_hz = (fmax or args.target_mhz) * 1e6
        cyc = chip_cycles(cfg, x, labels)
        chip_sps = f_hz / cyc
        board_sps = 1 / (link_s + cyc / f_hz)

        def pct(k):
            return f" ({100 * res[k] / avail[k]:.0f} %)" if avail and avail.get(k) else ""
        # a synthesis-only row: Yosys estimates (~), throughput at the target clock
        est = "~" if rep["chip"]["estimated"] else ""
        fm = f"{fmax:.1f}" if fmax else f"({args.target_mhz:g})"
        print(f"| {n} | {cfg.hardware.max_neurons} | {est}{res['comb']:,}{pct('comb')} | {est}{res['ff']:,}{pct('ff')} | "
              f"{res['ebr']}{pct('ebr')} | {res['dsp']}{pct('dsp')} | {fm} | {cyc:,.0f} | {chip_sps:,.0f} | "
              f"{board_sps:,.0f} | {chip_sps / cpu[1]:.1f}x | {chip_sps / cpu[best_b]:.1f}x |", flush=True)
        rows.append({"cores": n, "max_neurons": cfg.hardware.max_neurons, "resources": res, "fmax_mhz": fmax,
                     "critical_path": rep["chip"]["critical_path"], "cycles_per_sample": cyc,
                     "chip_samples_per_s": chip_sps, "board_samples_per_s": board_sps})
    print(f"CPU (PyTorch float32 BPTT, {torch.get_num_threads()} threads): "
          + ", ".join(f"batch {b}: {v:,.0f} samples/s" for b, v in cpu.items())
          + f"; best batch {best_b}")
    print(f"host link: {link_s * 1e6:,.0f} us per training sample at {base.hardware.baud:,} baud")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "board": board.name, "rows": rows,
                                               "cpu": cpu, "link_s": link_s}, indent=1))
    ok = [r for r in rows if "resources" in r]
    if args.plot and ok:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ns = [r["cores"] for r in ok]
        for k, label in (("comb", "LUT4 sites"), ("ff", "FF"), ("ebr", "DP16KD"), ("dsp", "MULT18")):
            if avail and avail.get(k):
                a1.plot(ns, [100 * r["resources"][k] / avail[k] for r in ok], "o-", label=label)
        a1.axhline(100, color="k", lw=0.8)
        a1.set_xlabel("cores")
        a1.set_ylabel(f"% of the {board.device}")
        a1.legend()
        a1.grid(alpha=0.3)
        if any(r["fmax_mhz"] for r in ok):
            a2.plot(ns, [r["fmax_mhz"] or float("nan") for r in ok], "s-", color="C3", label="fmax")
            a2.axhline(args.target_mhz, color="k", lw=0.8, ls="--", label="target")
            a2.legend(loc="upper left")
        a2b = a2.twinx()
        a2b.plot(ns, [r["chip_samples_per_s"] for r in ok], "^:", color="C2", label="samples/s at fmax")
        a2.set_xlabel("cores")
        a2.set_ylabel("fmax (MHz)")
        a2b.set_ylabel("training samples/s (chip)")
        a2b.legend(loc="upper right")
        a2.grid(alpha=0.3)
        fig.suptitle(f"{args.config} {net} on {board.name}")
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
