"""Bring your own network, end to end: a snnTorch network trained in float on digits,
imported onto the chip, fine-tuned on the bit-exact model, exported back to snnTorch.

Prints a table: the float network's test accuracy, the imported fixed-point model's (before
any on-chip training), after fine-tuning, and whether the exported snnTorch network's spike
counts equal the float twin's on the whole test set (every layer). Every accuracy uses the
same test raster (the training loop's seeded encoder). ``tests/test_interchange.py`` runs
:func:`run` under ``-m slow`` and asserts the claims.

    python bench/bench_interchange.py [--epochs 20] [--finetune 5] [--seed 0] [--beta 0.875]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from spikeforge.gen import interchange as ic
from spikeforge.gen.config import load_config
from spikeforge.model import data as data_mod
from spikeforge.model.float_twin import FloatTwin
from spikeforge.model.snn import FixedPointSNN
from spikeforge.model.train import _test_spikes, evaluate, train


class SnnTorchNet:
    """A snnTorch Linear + Leaky stack, stepped over time; ``predict`` for ``evaluate``."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def counts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Spike counts (B, n) of every Leaky layer over the T steps of ``x`` (B, T, n_in)."""
        import snntorch.utils

        snntorch.utils.reset(self.module)
        layers = [m for m in self.module if not isinstance(m, torch.nn.Linear)]
        sums = None
        for t in range(x.shape[1]):
            h, outs = x[:, t].to(torch.float32), []
            for m in self.module:
                h = m(h)
                if m in layers:
                    outs.append(h)
            sums = outs if sums is None else [a + b for a, b in zip(sums, outs)]
        return sums

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.counts(x)[-1].argmax(dim=1)


def train_snntorch(epochs: int, seed: int, hidden: int = 128, T: int = 8, beta: float = 0.875) -> torch.nn.Module:
    """A 64-hidden-10 snnTorch network (``beta``, threshold 1, reset to zero, snnTorch's own
    fast-sigmoid surrogate), Adam + cross-entropy on spike counts, the digits rate code."""
    import snntorch as snn
    from snntorch import surrogate

    torch.manual_seed(seed)
    grad = surrogate.fast_sigmoid()
    net = torch.nn.Sequential(
        torch.nn.Linear(64, hidden, bias=False),
        snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", init_hidden=True, spike_grad=grad),
        torch.nn.Linear(hidden, 10, bias=False),
        snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", init_hidden=True, spike_grad=grad))
    ds = data_mod.load_digits()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 100)
    wrap = SnnTorchNet(net)
    for _ in range(epochs):
        perm = torch.randperm(ds.x_train.shape[0], generator=g)
        for i in range(0, perm.numel(), 32):
            idx = perm[i:i + 32]
            x = data_mod.rate_encode(ds.x_train[idx], T, g)
            loss = torch.nn.functional.cross_entropy(wrap.counts(x)[-1], ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def save_snntorch(net: torch.nn.Module, folder: Path, T: int = 8) -> Path:
    """Its state_dict and the description ``spikeforge import`` reads."""
    torch.save(net.state_dict(), folder / "snn.pt")
    n = len(net) // 2
    desc = {"library": "snntorch", "state_dict": "snn.pt", "timesteps": T,
            "layers": [{"linear": str(2 * l), "neuron": str(2 * l + 1)} for l in range(n)]}
    (folder / "snn.yaml").write_text(yaml.safe_dump(desc, sort_keys=False))
    return folder / "snn.yaml"


def run(epochs: int = 20, finetune: int = 5, seed: int = 0, beta: float = 0.875) -> dict:
    """The whole pipeline; returns the numbers (accuracies in [0, 1]). A ``beta`` other than
    1 - 2**-k is approximated by the importer (e.g. 0.9 = 10 steps -> 8)."""
    cfg0 = load_config("digits")
    ds = data_mod.load_digits()
    t0 = time.perf_counter()
    net = train_snntorch(epochs, seed, beta=beta)
    t_float = time.perf_counter() - t0
    res = {"float": evaluate(SnnTorchNet(net), cfg0, ds.x_test, ds.y_test), "float_s": t_float}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        imp = ic.import_network(save_snntorch(net, tmp), base="digits")
        res["notes"] = imp.notes
        cfg = imp.cfg
        res["imported"] = evaluate(FixedPointSNN(cfg, imp.weights), cfg, ds.x_test, ds.y_test)
        t0 = time.perf_counter()
        tuned = train(cfg.replace(train={"epochs": finetune}), backend="model", init=imp.weights, dataset=ds)
        res["finetune_s"] = time.perf_counter() - t0
        res["finetuned"] = tuned.test_accuracy
        ic.export(cfg, tuned.weights, "snntorch", tmp / "out.pt")
        back, bcfg = ic.load_snntorch(tmp / "out.yaml")
        twin = FloatTwin(bcfg, weights=tuned.weights)
        equal = total = 0
        for _, spikes in _test_spikes(cfg, ds.x_test):
            theirs = SnnTorchNet(back).counts(spikes)
            with torch.no_grad():
                ours = [tr.count for tr in twin.forward(spikes)]
            for a, b in zip(theirs, ours):
                equal += int((a == b).all(dim=1).sum())
                total += a.shape[0]
        res["spike_rows_equal"], res["spike_rows"] = equal, total
        res["exported_acc"] = evaluate(SnnTorchNet(back), cfg, ds.x_test, ds.y_test)
        res["twin_acc"] = evaluate(twin, cfg, ds.x_test, ds.y_test)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="snnTorch float training epochs")
    p.add_argument("--finetune", type=int, default=5, help="fine-tuning epochs on the model backend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=0.875, help="snnTorch Leaky beta (default 0.875 = 1 - 2**-3)")
    a = p.parse_args()
    r = run(a.epochs, a.finetune, a.seed, beta=a.beta)
    for n in r["notes"]:
        print(f"approximated: {n}")
    print("| stage | test accuracy (digits, 360 samples) |\n|---|---|")
    print(f"| snnTorch float (beta {a.beta}), {a.epochs} epochs ({r['float_s']:.0f} s) | {100 * r['float']:.2f} % |")
    print(f"| imported, fixed point, before on-chip training | {100 * r['imported']:.2f} % |")
    print(f"| fine-tuned on the model, {a.finetune} epochs ({r['finetune_s']:.0f} s) | {100 * r['finetuned']:.2f} % |")
    print(f"| exported to snnTorch / float twin | {100 * r['exported_acc']:.2f} % / {100 * r['twin_acc']:.2f} % |")
    print(f"spike counts (every layer, every test sample) equal between exported snnTorch and the "
          f"float twin: {r['spike_rows_equal']} of {r['spike_rows']}")


if __name__ == "__main__":
    main()
