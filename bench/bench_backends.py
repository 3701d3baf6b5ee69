"""Training backends and transports side by side: speed, host-link bytes, and what limits a board.

For each config (default: ``digits-1core`` (64 -> 10), ``digits`` on 2 cores and ``trainer-20core``), the first
``--samples`` training samples, rate-encoded and batched exactly as ``spikeforge train``
does, are trained from the same initial weights by:

* ``model``: the bit-exact model (``host/chip.py`` ModelChip) -- samples/s on this CPU;
* ``sim/pipe``: the chip behind its host link, Verilated with a C++ main (``sim/pipe.py``),
  driven by ``host/link.py`` LinkChip: build time, simulated cycles/s while training (the
  host's Python -- encoding, batching -- included), the harness alone clocking with no
  requests, samples/s, cycles per sample. The run also checks that it ends with the
  model's ``weights_sha256``;
* ``sim/cocotb`` (``--cocotb``): the regression harness of the same chip (``sim/chip_tb.py``,
  every message checked in Python as it happens) on ``--cocotb-samples`` samples: cycles/s.

Host link: bytes per sample of the ``train`` requests and replies and the ``update``s (the
weights are loaded once), and at ``--baud`` (8N1: 10 bits a byte) and ``--clock-mhz`` whether
the link or the chip limits a board's training speed (one request in flight: a sample costs
request bytes + chip cycles + reply bytes, in series).

Traffic accounting (the reference architecture's metric): the DRAM bytes a GPU moves for the
same BPTT step in float32, at batch 1 and at the config's batch size, by the lower bound in
:func:`gpu_bptt_bytes`, against the chip's host-link bytes per sample.

With ``--epoch``, instead: ``spikeforge train --backend sim`` and ``--backend model`` for one
whole epoch of digits, on the ``digits`` preset (64-128-10, 2 cores) and on a three-layer
network over 5 cores (64-24-16-10, P = 4): wall time of each and whether their
``weights_sha256`` agree.

    python bench/bench_backends.py [--configs digits,trainer-20core] [--samples 32] [--cocotb]
        [--cocotb-samples 2] [--clock-mhz 94.5] [--baud 3e6] [--json FILE]
    python bench/bench_backends.py --epoch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


def gpu_bptt_bytes(cfg, batch: int) -> dict:
    """Lower bound of the DRAM bytes per sample of one float32 BPTT training step on a GPU.

    Per layer ``n_in -> n_out`` over ``T`` steps: the forward pass writes and the backward
    pass reads the saved state (input spikes ``T*n_in``, membrane ``T*n_out``, output spikes
    ``T*n_out``); the backward pass writes and reads the gradient w.r.t. the membrane
    (``T*n_out``). Weights: read by the forward and the backward pass, the gradient written,
    then read with the weights by the optimiser and the weights written (5 passes), once per
    batch. Activation terms are per sample; weight terms divide by the batch. Everything is
    4 bytes; caches and fusion that keep data on chip are ignored (hence a lower bound only
    for an unfused implementation -- PyTorch eager is one).
    """
    T, sizes = cfg.network.timesteps, cfg.network.layers
    act = wts = 0
    for n_in, n_out in zip(sizes, sizes[1:]):
        act += 2 * T * (n_in + 2 * n_out) + 2 * T * n_out
        wts += 5 * n_in * n_out
    return {"activations": 4 * act, "weights": 4 * wts / batch, "total": 4 * act + 4 * wts / batch}


def _one_core():
    from spikeforge.gen.config import load_config

    return load_config("digits").replace(network={"layers": [64, 10]}, hardware={"cores": 1})


#: Configs beside the presets: ``digits-1core`` is digits without its hidden layer (64 -> 10)
#: on one core.
EXTRA = {"digits-1core": _one_core}


def batches(cfg, n: int):
    from spikeforge.model import data as data_mod
    from spikeforge.model.train import _gen, epoch_batches

    ds = data_mod.load_dataset(cfg.train.dataset)
    return list(epoch_batches(ds.x_train[:n], ds.y_train[:n], cfg.train.batch_size,
                              cfg.network.timesteps, _gen(cfg.train.seed, 1), _gen(cfg.train.seed, 2)))


def bench_config(name: str, args) -> dict:
    from spikeforge.gen.config import load_config
    from spikeforge.host.chip import ModelChip, weights_sha256
    from spikeforge.host.link import LinkChip
    from spikeforge.model.snn import FixedPointSNN
    from spikeforge.rtl.geometry import ChipGeometry
    from spikeforge.sim.pipe import PipeSim, build_pipe_sim

    cfg = EXTRA[name]() if name in EXTRA else load_config(name)
    geo = ChipGeometry.from_config(cfg)
    w0 = FixedPointSNN(cfg).weights
    data = batches(cfg, args.samples)
    n = sum(int(y.shape[0]) for _, y in data)
    row = {"config": name, "cores": len(geo.cores), "layers": list(cfg.network.layers),
           "batch": cfg.train.batch_size, "samples": n}

    model = ModelChip(cfg)
    model.load_weights(w0)
    t0 = time.perf_counter()
    for x, y in data:
        model.train_batch(x, y)
    row["model_samples_s"] = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    exe = build_pipe_sim(cfg, geo, quiet=True)
    row["pipe_build_s"] = time.perf_counter() - t0
    with PipeSim(exe) as sim:
        chip = LinkChip(cfg, sim, geo)
        chip.load_weights(w0)
        chip.set_seeds(cfg.arithmetic.lfsr_seed)
        c0, b0 = sim.cycles, {k: list(v) for k, v in chip.op_bytes.items()}
        t0 = time.perf_counter()
        for x, y in data:
            chip.train_batch(x, y)
        wall = time.perf_counter() - t0
        cycles = sim.cycles - c0
        same = weights_sha256(chip.read_weights()) == weights_sha256(model.read_weights())
        ops = chip.op_bytes
        # the harness alone: clocking with no host work between requests
        t0 = time.perf_counter()
        sim.run(args.idle_cycles)
        row["pipe_idle_cycles_s"] = args.idle_cycles / (time.perf_counter() - t0)
    row.update(pipe_cycles_s=cycles / wall, pipe_samples_s=n / wall, cycles_per_sample=cycles / n,
               same_weights_as_model=same)
    sent = {op: ops.get(op, [0, 0])[0] - b0.get(op, [0, 0])[0] for op in ("train", "update")}
    got = {op: ops.get(op, [0, 0])[1] - b0.get(op, [0, 0])[1] for op in ("train", "update")}
    row["link_tx_per_sample"] = sum(sent.values()) / n
    row["link_rx_per_sample"] = sum(got.values()) / n
    row["weight_load_bytes"] = sum(ops["write_weights"])
    # a board: one request in flight, so request bytes, chip cycles and reply bytes add up
    byte_s = args.baud / 10
    link_s = (row["link_tx_per_sample"] + row["link_rx_per_sample"]) / byte_s
    chip_s = row["cycles_per_sample"] / (args.clock_mhz * 1e6)
    row.update(link_us=link_s * 1e6, chip_us=chip_s * 1e6, board_samples_s=1 / (link_s + chip_s),
               limit="link" if link_s > chip_s else "chip")
    row["gpu_bytes_b1"] = gpu_bptt_bytes(cfg, 1)["total"]
    row["gpu_bytes_batch"] = gpu_bptt_bytes(cfg, cfg.train.batch_size)["total"]

    if args.cocotb:
        import tempfile

        from spikeforge.sim.chip_tb import run_chip_sim

        rep = Path(tempfile.mkstemp(suffix=".json")[1])
        src = cfg.train.dataset if cfg.train.dataset in ("digits", "mnist") else "random"
        run_chip_sim(cfg, seed=0, samples=args.cocotb_samples, source=src, report_file=rep,
                     run_name=f"bench-backends-{name}")
        r = json.loads(rep.read_text())
        row["cocotb_cycles_s"] = r["sim_cycles"] / r["wall_s"]
    return row


def epoch_parity() -> int:
    """One digits epoch on the simulated chip and on the model, two networks: same digest?"""
    import subprocess
    import tempfile

    import yaml

    from spikeforge.gen.config import load_config

    tmp = Path(tempfile.mkdtemp())
    deep = load_config("digits").replace(
        network={"layers": [64, 24, 16, 10]}, train={"batch_size": 4},
        hardware={"cores": 5, "lanes": 4, "max_neurons": 12, "max_inputs": 64})
    (tmp / "deep.yaml").write_text(yaml.safe_dump(deep.to_dict()))
    print("| network | cores | samples | sim wall s | model wall s | sim weights_sha256 | same as model |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for label, cfg_arg, cores in (("digits 64-128-10", "digits", 2), ("64-24-16-10", str(tmp / "deep.yaml"), 5)):
        res = {}
        for backend in ("sim", "model"):
            rep = tmp / f"{backend}.json"
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", "train", "-q", "--config", cfg_arg,
                                "--epochs", "1", "--backend", backend, "--report", str(rep)],
                               capture_output=True, text=True)
            if r.returncode:
                print(r.stderr, file=sys.stderr)
                return 1
            res[backend] = (time.perf_counter() - t0, json.loads(rep.read_text()))
        same = res["sim"][1]["weights_sha256"] == res["model"][1]["weights_sha256"]
        ok &= same
        print(f"| {label} | {cores} | {res['sim'][1]['host_link']['samples_trained']:,} | {res['sim'][0]:,.0f} | "
              f"{res['model'][0]:,.0f} | {res['sim'][1]['weights_sha256'][:16]}... | {'yes' if same else 'NO'} |")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="digits-1core,digits,trainer-20core",
                    help="presets, YAML files or digits-1core (64 -> 10 on one core)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--cocotb", action="store_true", help="also time the cocotb regression harness")
    ap.add_argument("--cocotb-samples", type=int, default=2)
    ap.add_argument("--clock-mhz", type=float, default=94.5,
                    help="chip clock of the board estimate (default: the 784 -> 8 core's measured fmax)")
    ap.add_argument("--baud", type=float, default=3e6)
    ap.add_argument("--idle-cycles", type=int, default=200_000,
                    help="cycles clocked with no requests, for the harness's own speed")
    ap.add_argument("--json", default=None)
    ap.add_argument("--epoch", action="store_true",
                    help="only: one whole digits epoch, sim against model, two networks")
    args = ap.parse_args(argv)
    if args.epoch:
        return epoch_parity()
    rows = []
    for name in args.configs.split(","):
        print(f"[bench_backends] {name} ...", file=sys.stderr, flush=True)
        rows.append(bench_config(name, args))
    print(f"{args.samples} training samples per config, batched as `spikeforge train` does; "
          f"board estimate at {args.clock_mhz:g} MHz and {args.baud / 1e6:g} Mbaud\n")
    print("| config | cores | model samples/s | pipe build s | pipe cycles/s | harness alone cycles/s "
          "| pipe samples/s | cocotb cycles/s | pipe / cocotb | cycles/sample | same weights |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cc = r.get("cocotb_cycles_s")
        ratio = f"{r['pipe_cycles_s'] / cc:,.0f}x" if cc else "-"
        print(f"| {r['config']} | {r['cores']} | {r['model_samples_s']:,.1f} | {r['pipe_build_s']:,.1f} | "
              f"{r['pipe_cycles_s']:,.0f} | {r['pipe_idle_cycles_s']:,.0f} | {r['pipe_samples_s']:,.1f} | "
              f"{f'{cc:,.0f}' if cc else '-'} | {ratio} | "
              f"{r['cycles_per_sample']:,.0f} | {'yes' if r['same_weights_as_model'] else 'NO'} |")
    print("\n| config | link bytes/sample (to chip + back) | link us | chip us | board samples/s | limit "
          "| GPU DRAM bytes/sample, batch 1 | at the config's batch | GPU / link |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        link = r["link_tx_per_sample"] + r["link_rx_per_sample"]
        print(f"| {r['config']} | {r['link_tx_per_sample']:,.0f} + {r['link_rx_per_sample']:,.0f} | "
              f"{r['link_us']:,.0f} | {r['chip_us']:,.0f} | {r['board_samples_s']:,.0f} | {r['limit']} | "
              f"{r['gpu_bytes_b1']:,.0f} | {r['gpu_bytes_batch']:,.0f} (B = {r['batch']}) | "
              f"{r['gpu_bytes_batch'] / link:,.0f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["same_weights_as_model"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
