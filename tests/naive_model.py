"""A deliberately naive scalar model of one training step: plain Python ints and loops.

Written from the table in ``model/fixedpoint.py``'s docstring, not from ``model/snn.py``:
no torch, no vectorisation, no helper of ``fixedpoint`` (only ``neuron_seeds`` is used, for
the initial xorshift32 states). ``test_model_exact.py`` checks the vectorised model against
it bit for bit. It also counts how often each saturation and each exact rounding half
happened, so that a test sweep can prove it exercised those edges.

Python's ``>>`` on a negative int is a floor shift, the same as an arithmetic shift of a
two's-complement register; ``<<`` is multiplication by a power of two.
"""

from __future__ import annotations

from collections import Counter

M32 = 0xFFFFFFFF


class Naive:
    """One training step of a layered LIF SNN, scalar by scalar.

    ``p``: a plain dict of the parameters (see :func:`params_of`); ``weights``: list of
    ``n_out x n_in`` lists of ints; ``rng``: list (per layer) of lists of per-neuron states.
    """

    def __init__(self, p: dict, weights, rng):
        self.p = p
        self.W = [[list(row) for row in w] for w in weights]
        self.rng = [list(r) for r in rng]
        self.events = Counter()   # edge cases seen: saturations, rounding halves

    # -- primitives ------------------------------------------------------------------
    def sat(self, x: int, bits: int, what: str) -> int:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if x > hi:
            self.events[f"sat_{what}_hi"] += 1
            return hi
        if x < lo:
            self.events[f"sat_{what}_lo"] += 1
            return lo
        return x

    @staticmethod
    def xorshift(x: int) -> int:
        x ^= (x << 13) & M32
        x ^= x >> 17
        x ^= (x << 5) & M32
        return x

    # -- forward ---------------------------------------------------------------------
    def forward_layer(self, l: int, x):
        """x[b][t][j] -> dict of current, v, s, mask (lists [b][t][i])."""
        p, W = self.p, self.W[l]
        n_out, n_in = len(W), len(W[0])
        theta, k = p["threshold"], p["leak_shift"]
        half = 2 ** (p["surrogate_shift"] - 1)
        out = {"current": [], "v": [], "s": [], "mask": []}
        for xb in x:
            h = [0] * n_out
            cur_b, v_b, s_b, m_b = [], [], [], []
            for xt in xb:
                cur_t, v_t, s_t, m_t = [], [], [], []
                for i in range(n_out):
                    I = 0
                    for j in range(n_in):
                        if xt[j]:
                            I += W[i][j]
                    v = self.sat(h[i] - (h[i] >> k) + I, p["membrane_bits"], "v")
                    s = 1 if v >= theta else 0
                    m = 1 if -half < v - theta < half else 0
                    h[i] = 0 if s else v
                    cur_t.append(I); v_t.append(v); s_t.append(s); m_t.append(m)
                cur_b.append(cur_t); v_b.append(v_t); s_b.append(s_t); m_b.append(m_t)
            out["current"].append(cur_b); out["v"].append(v_b)
            out["s"].append(s_b); out["mask"].append(m_b)
        out["x"] = x
        return out

    # -- backward --------------------------------------------------------------------
    def backward_layer(self, l: int, tr: dict, ds):
        """ds[b][t][i] -> fills dv, e, ds_below (lists [b][t][.]) and grad [i][j]."""
        p, W = self.p, self.W[l]
        n_out, n_in = len(W), len(W[0])
        k, ss = p["leak_shift"], p["surrogate_shift"]
        B, T = len(ds), len(ds[0])
        dv = [[[0] * n_out for _ in range(T)] for _ in range(B)]
        for b in range(B):
            for i in range(n_out):
                d = 0
                for t in range(T - 1, -1, -1):
                    carry = 0 if tr["s"][b][t][i] else d - (d >> k)
                    d = self.sat(tr["mask"][b][t][i] * ds[b][t][i] + carry, p["dv_bits"], "dv")
                    dv[b][t][i] = d
        e = [[[0] * n_in for _ in range(T)] for _ in range(B)]
        below = [[[0] * n_in for _ in range(T)] for _ in range(B)]
        for b in range(B):
            for t in range(T):
                for j in range(n_in):
                    acc = 0
                    for i in range(n_out):
                        acc += W[i][j] * dv[b][t][i]
                    e[b][t][j] = acc
                    if acc % (2 ** ss) == 2 ** (ss - 1):
                        self.events["half_error"] += 1
                    below[b][t][j] = self.sat((acc + 2 ** (ss - 1)) // 2 ** ss, p["error_bits"], "ds_below")
        grad = [[0] * n_in for _ in range(n_out)]
        for i in range(n_out):
            for j in range(n_in):
                acc = 0
                for b in range(B):
                    for t in range(T):
                        if tr["x"][b][t][j]:
                            acc += dv[b][t][i]
                grad[i][j] = self.sat(acc, p["grad_bits"], "grad")
        tr.update(ds=ds, dv=dv, e=e, ds_below=below, grad=grad)

    # -- update ----------------------------------------------------------------------
    def update_layer(self, l: int, grad):
        p = self.p
        r = p["lr_shift"]
        W = self.W[l]
        for i in range(len(W)):
            for j in range(len(W[0])):
                g = grad[i][j]
                if g == 0:
                    continue  # rounds to 0 with any r; the stream does not step
                if p["rounding"] == "stochastic":
                    self.rng[l][i] = self.xorshift(self.rng[l][i])
                    step = (g + (self.rng[l][i] % (2 ** r))) // (2 ** r)
                else:
                    if r > 0 and g % (2 ** r) == 2 ** (r - 1):
                        self.events["half_update"] += 1
                    step = (g + (2 ** (r - 1) if r > 0 else 0)) // (2 ** r)
                W[i][j] = self.sat(W[i][j] - step, p["weight_bits"], "w")

    # -- one step --------------------------------------------------------------------
    def step(self, x, labels) -> list[dict]:
        p = self.p
        traces = []
        inp = x
        for l in range(len(self.W)):
            tr = self.forward_layer(l, inp)
            traces.append(tr)
            inp = tr["s"]
        out = traces[-1]
        B, T = len(x), len(x[0])
        n_last = len(self.W[-1])
        ds = []
        for b in range(B):
            row = []
            for i in range(n_last):
                c = sum(out["s"][b][t][i] for t in range(T))
                target = p["target_count"] if i == labels[b] else 0
                row.append(self.sat((c - target) * 2 ** p["loss_shift"], p["error_bits"], "ds_out"))
            ds.append([list(row) for _ in range(T)])
        for l in range(len(self.W) - 1, -1, -1):
            self.backward_layer(l, traces[l], ds)
            ds = traces[l]["ds_below"]
        for l in range(len(self.W)):
            self.update_layer(l, traces[l]["grad"])
        return traces


def params_of(cfg) -> dict:
    """The numbers the naive model needs, read from a :class:`Config`."""
    a, n = cfg.arithmetic, cfg.neuron
    return {
        "threshold": n.threshold, "leak_shift": n.leak_shift, "surrogate_shift": n.surrogate_shift,
        "weight_bits": a.weight_bits, "membrane_bits": a.membrane_bits, "error_bits": a.error_bits,
        "dv_bits": a.dv_bits, "grad_bits": a.grad_bits, "loss_shift": a.loss_shift,
        "lr_shift": a.lr_shift, "rounding": a.rounding, "target_count": cfg.target_count,
    }
