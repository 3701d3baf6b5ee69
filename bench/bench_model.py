"""Training throughput of the reference model: fixed point vs float twin, side by side.

    python bench/bench_model.py [--batch 64] [--steps 20] [--warm 40] [--repeat 3] [--threads N]

For the digits network (64-128-10) and the MNIST network (784-128-10), with the tuned
defaults otherwise: both backends start from the same weights, are warmed up with
``--warm`` training steps (so that spike rates and dv sparsity are those of a network
that has started to learn, not of the random init), then ``--steps`` training steps
(forward + backward + update) of ``--batch`` rate-coded real samples are timed, ``--repeat``
rounds alternating between the backends (the best round of each is reported). Prints
samples/s of each backend and, per layer, the measured sparsity on the timed batches:
input/output spike rate, the fraction of zero dv, and the event-driven work of the FP,
BP and WG engines relative to the dense equivalent (``model.snn.work_counts``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from spikeforge.gen.config import Config
from spikeforge.model import data
from spikeforge.model.float_twin import FloatTwin
from spikeforge.model.snn import FixedPointSNN, work_counts

NETWORKS = {
    "digits": {"layers": [64, 128, 10]},
    "mnist": {"layers": [784, 128, 10]},
}


def batches(cfg, ds, batch: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(0, ds.x_train.shape[0], (batch,), generator=g)
        out.append((data.rate_encode(ds.x_train[idx], cfg.network.timesteps, g), ds.y_train[idx]))
    return out


def bench_config(name: str, batch: int) -> Config:
    """The tuned defaults on ``name``'s network, with the per-sample learning rate kept.

    The batch sums gradients, so a batch ``2**n`` times the default one takes a step ``2**n``
    times larger; ``lr_shift`` grows by ``n`` to keep training in the same regime.
    """
    base = Config()
    extra = max(0, round(math.log2(batch / base.train.batch_size)))
    return base.replace(network=NETWORKS[name], train={"dataset": name, "batch_size": batch},
                        arithmetic={"lr_shift": base.arithmetic.lr_shift + extra})


def bench(name: str, batch: int, steps: int, warm: int, repeat: int = 3) -> None:
    cfg = bench_config(name, batch)
    ds = data.load_dataset(name)
    warm_b = batches(cfg, ds, batch, warm, 1)
    timed_b = batches(cfg, ds, batch, steps, 2)
    model = FixedPointSNN(cfg)
    twin = FloatTwin.from_fixed(model)
    nets = (("fixed-point", model), ("float32 twin", twin))
    for _, net in nets:
        for x, y in warm_b:
            net.train_step(x, y)
    # alternate the backends over `repeat` rounds and keep each one's best round, so that
    # a busy machine disturbs both alike
    rates = dict.fromkeys(label for label, _ in nets)
    for _ in range(repeat):
        for label, net in nets:
            t0 = time.perf_counter()
            for x, y in timed_b:
                net.train_step(x, y)
            r = batch * steps / (time.perf_counter() - t0)
            rates[label] = max(rates[label] or 0.0, r)
    layers = "-".join(map(str, cfg.network.layers))
    print(f"{name:7s} {layers:12s} T={cfg.network.timesteps} batch={batch} lr_shift={cfg.arithmetic.lr_shift}: "
          + "   ".join(f"{k} {v:8.0f} samples/s" for k, v in rates.items())
          + f"   (fixed/float {rates['fixed-point'] / rates['float32 twin']:.2f})")
    # sparsity of the fixed-point model on the timed batches (after training on them)
    tot = None
    for x, y in timed_b:
        traces = model.forward(x)
        model.backward(traces, y)
        wc = work_counts(traces)
        if tot is None:
            tot = [dict.fromkeys(r, 0) for r in wc]
        for acc, r in zip(tot, wc):
            for k, v in r.items():
                acc[k] += v
    for l, r in enumerate(tot):
        n_in = cfg.network.layers[l]
        n_out = cfg.network.layers[l + 1]
        in_rate = r["spike_events"] / (r["dense_ops"] / n_out)
        out_rate = r["output_spikes"] / r["neuron_steps"]
        zero_dv = 1 - r["nonzero_dv"] / r["neuron_steps"]
        print(f"        layer {l} ({n_in:4d}->{n_out:3d}): input rate {in_rate:.3f}  output rate {out_rate:.3f}  "
              f"zero dv {zero_dv:.3f}  work/dense FP {r['fp_ops'] / r['dense_ops']:.3f} "
              f"BP {r['bp_ops'] / r['dense_ops']:.3f} WG {r['wg_ops'] / r['dense_ops']:.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds per backend (best is kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--networks", default="digits,mnist")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; training step = forward + BPTT + update")
    for name in args.networks.split(","):
        bench(name, args.batch, args.steps, args.warm, args.repeat)


if __name__ == "__main__":
    main()
