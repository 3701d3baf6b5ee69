"""Cycles per training sample of each core kind of a preset at real data's spike rates.

The cycle model ``model/perf.py`` equals the RTL's cycle counters exactly (the core tests
assert it per sample), so this bench computes cycles from the bit-exact model's traces
instead of simulating: it trains the preset's network online on the model for
``--warmup`` samples (so that spike and dv rates are those of a network that learns), then
for ``--samples`` test samples takes each core kind's input events per timestep and its
neurons' non-zero dv per timestep and prints, per lane count, the predicted cycles of the
forward, backward and update phases of one ``train`` (the in-place dataflow runs all
three per sample), and the sparse ideal: useful work / P, with the update's useful work
= weights whose gradient can be non-zero (input columns that spiked x neurons with a
non-zero dv); and the same for the in-place core before the one-timestep event buffer and
the sparse update (``before``), from the same traces.

    python bench/bench_core_cycles.py [--config trainer-20core] [--lanes 1,2,4]
                                      [--samples 200] [--warmup 2000]
"""

from __future__ import annotations

import argparse


def main() -> None:
    import torch

    from spikeforge.gen.config import load_config
    from spikeforge.model import data, perf
    from spikeforge.model.snn import FixedPointSNN
    from spikeforge.rtl.geometry import ChipGeometry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="trainer-20core")
    ap.add_argument("--lanes", default="1,2,4")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=2000)
    args = ap.parse_args()
    cfg = load_config(args.config)
    ds = data.load_dataset(cfg.train.dataset)
    net = FixedPointSNN(cfg.replace(train={"batch_size": 1}), seed=cfg.train.seed)
    g = torch.Generator().manual_seed(cfg.train.seed)
    T = cfg.network.timesteps
    xs = data.rate_encode(ds.x_train[: args.warmup], T, g)
    for i in range(args.warmup):
        net.train_step(xs[i : i + 1], ds.y_train[i : i + 1])
    xt = data.rate_encode(ds.x_test[: args.samples], T, torch.Generator().manual_seed(1))
    traces = net.forward(xt)
    net.backward(traces, ds.y_test[: args.samples])

    print(f"{args.config}: cycles per training sample from the model's traces "
          f"({args.samples} test samples after {args.warmup} online training samples)")
    print("| core | lanes | input rate | forward | backward | update | total | ideal (work/P) | total/ideal "
          "| before | before/ideal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    chip = ChipGeometry.from_config(cfg)
    for name, geom in chip.kinds():
        core = next(c for c in chip.cores if c.geom == geom)
        tr = traces[core.layer]
        rows = slice(core.offset, core.offset + geom.n_neurons)
        for P in [int(p) for p in args.lanes.split(",")]:
            NB, JB = -(-geom.n_neurons // P), -(-geom.n_in // P)
            tot = {"forward": 0, "backward": 0, "update": 0, "ideal": 0.0, "before": 0}
            for b in range(args.samples):
                x = tr.x[b]                                   # (T, n_in)
                dv = tr.dv[b][:, rows]                        # (T, N)
                events = [int(v) for v in x.sum(dim=1)]
                nnz = [int(v) for v in (dv != 0).sum(dim=1)]
                ab, ac = perf.inplace_active(x, dv, P)
                c = perf.core_inplace_sample_cycles(geom.n_in, geom.n_neurons, P, nnz, events, ab, ac)
                for k in ("forward", "backward", "update"):
                    tot[k] += c[k]
                tot["before"] += _before(geom, P, NB, JB, nnz, events)
                cols = int((x.sum(dim=0) > 0).sum())
                live_rows = int(((dv != 0).sum(dim=0) > 0).sum())
                work = sum(events) * geom.n_neurons + sum(nnz) * geom.n_in + cols * live_rows
                tot["ideal"] += work / P
            n = args.samples
            total = (tot["forward"] + tot["backward"] + tot["update"]) / n
            rate = float(tr.x.float().mean())
            print(f"| {name} | {P} | {rate:.3f} | {tot['forward'] / n:.0f} | {tot['backward'] / n:.0f} | "
                  f"{tot['update'] / n:.0f} | {total:.0f} | {tot['ideal'] / n:.0f} | "
                  f"{total / (tot['ideal'] / n):.2f} | {tot['before'] / n:.0f} | "
                  f"{tot['before'] / tot['ideal']:.2f} |")


def _before(geom, P, NB, JB, nnz, events) -> int:
    """The in-place core before the one-timestep event buffer and the sparse update, from
    the same cycle model: the event list (forward without the buffer's fill), the capture of
    the x bits in the backward phase (``T + events + 2``) and the dense update pass."""
    from spikeforge.model import perf

    fwd = perf.core_forward_cycles(events, geom.n_neurons, P)
    bp = perf.bp_cycles(NB, JB, nnz, release_delay=1)
    bwd = perf.core_backward_cycles(bp, len(events) + sum(events) + 2, 0)
    return fwd + bwd + perf.core_update_cycles(geom.n_in, geom.n_neurons, P)


if __name__ == "__main__":
    main()
