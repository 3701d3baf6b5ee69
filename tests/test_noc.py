"""The network-on-chip (rtl/noc.py) in Verilator: a whole mesh of routers, every plane.

A harness packs the mesh's per-core inject and eject streams of each plane into a few wide
ports (one cocotb access per plane and direction per cycle). Per run (seeded; the seed is in
every failure message):

* ``noc_random``: every core injects random traffic on every plane -- unicast everywhere,
  on the spike plane also multicast to random core-id ranges (single cores, whole rows,
  ranges over several rows, the whole mesh, ranges with a gap column) -- while every eject
  port takes flits only with a random probability per core (back-pressure). A scoreboard
  checks every delivered flit the cycle it leaves: at a core of its destination set, not
  twice, in the order its source sent to that core (a queue per plane, source and
  destination); at the end, nothing lost. The flits on every link (watched through the
  harness) must equal a reference model of the routes (the union of the XY paths from the
  source to each destination, with the lift out of a partial last row). Then every counter
  of every router: flits and stall cycles of each inject, eject and link port against what
  the testbench saw.
* ``noc_saturation``: every core injects back to back on every plane (multicast on the spike
  plane), every eject port always ready; all flits must arrive within three times a lower
  bound of the cycles the busiest resource needs (a port or link cannot move more than one
  flit every two cycles -- the design moves one every four on a link -- and a router
  plane's bus one flit a cycle per router visited) plus ``8 * (rows + cols) + 64``,
  checked the same way.
"""

from __future__ import annotations

import inspect
import random
from collections import defaultdict, deque

import cocotb
import pytest
from amaranth.hdl import Cat, Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import FallingEdge, RisingEdge

from spikeforge.rtl.noc import (DEFAULT_PLANES, COUNTERS_PER_PLANE, CounterKind, Mesh,
                                MeshShape, Port, counter_index, inject_layout, tree_links)
from spikeforge.sim.cocotb_utils import load_params, reset
from spikeforge.sim.runner import build_root, lint_verilog, run_cocotb


# ------------------------------------------------------------------------------ harness
class MeshHarness(wiring.Component):
    """:class:`Mesh` with each plane's inject/eject streams packed: ``<p>_iv`` (valid bit of
    core k = bit k), ``<p>_id`` (payload of core k at bits ``k*W ..``), ``<p>_ir``; ``<p>_ev``,
    ``<p>_ed``, ``<p>_er`` likewise; the counter read port as is."""

    def __init__(self, mesh: MeshShape, planes=DEFAULT_PLANES, flows=None):
        # flows: the routers have only the ports of this traffic (Mesh(flows=))
        self.mesh, self.planes = mesh, planes
        n = mesh.nodes
        members = {}
        for s in planes:
            iw = Shape.cast(inject_layout(mesh, s.payload, s.multicast)).width
            pw = Shape.cast(s.payload).width
            members.update({f"{s.name}_iv": In(n), f"{s.name}_id": In(n * iw), f"{s.name}_ir": Out(n),
                            f"{s.name}_ev": Out(n), f"{s.name}_ed": Out(n * pw), f"{s.name}_er": In(n)})
        self._mesh = Mesh(mesh, planes, flows=flows)
        members.update(ctr_node=In(self._mesh.ctr_node.shape()), ctr_addr=In(self._mesh.ctr_addr.shape()),
                       ctr_data=Out(self._mesh.ctr_data.shape()))
        for s in planes:   # every link's handshake: bit 4*k + j for port j (N, E, S, W) of core k
            members.update({f"{s.name}_lv": Out(4 * n), f"{s.name}_lr": Out(4 * n)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = mesh = self._mesh
        for s in self.planes:
            iw = Shape.cast(inject_layout(self.mesh, s.payload, s.multicast)).width
            pw = Shape.cast(s.payload).width
            inj, ej = getattr(mesh, f"{s.name}_inject"), getattr(mesh, f"{s.name}_eject")
            iv, idata, ir = (getattr(self, f"{s.name}_{x}") for x in ("iv", "id", "ir"))
            ev, edata, er = (getattr(self, f"{s.name}_{x}") for x in ("ev", "ed", "er"))
            for k in range(self.mesh.nodes):
                m.d.comb += [inj[k].valid.eq(iv[k]), inj[k].payload.eq(idata[k * iw:(k + 1) * iw]),
                             ej[k].ready.eq(er[k])]
            m.d.comb += [ir.eq(Cat(inj[k].ready for k in range(self.mesh.nodes))),
                         ev.eq(Cat(ej[k].valid for k in range(self.mesh.nodes))),
                         edata.eq(Cat(ej[k].payload for k in range(self.mesh.nodes)))]
        m.d.comb += [mesh.ctr_node.eq(self.ctr_node), mesh.ctr_addr.eq(self.ctr_addr),
                     self.ctr_data.eq(mesh.ctr_data)]
        for s in self.planes:
            lv, lr = [], []
            for rt in mesh.routers:
                for d in ("n", "e", "s", "w"):
                    out = getattr(rt, f"{s.name}_{d}_out")
                    lv.append(out.valid)
                    lr.append(out.ready)
            m.d.comb += [getattr(self, f"{s.name}_lv").eq(Cat(lv)), getattr(self, f"{s.name}_lr").eq(Cat(lr))]
        return m


_LINK_PORTS = (Port.N, Port.E, Port.S, Port.W)
#: (row, column) step of a link port, written out here (not rtl/noc.py's) as the tests' reference
_STEP = {Port.N: (-1, 0), Port.S: (1, 0), Port.E: (0, 1), Port.W: (0, -1)}


# ------------------------------------------------------------------ reference routes
# xy_path / tree_links (rtl/noc.py): the routes as docs/noc.md states them, written as a
# walk over positions -- independent of the routers' per-field comparisons they check.


# ---------------------------------------------------------------------- cocotb side
class Plane:
    """Testbench state of one plane: sources, scoreboard, counts."""

    def __init__(self, dut, mesh, spec, rng, seed):
        self.mesh, self.spec, self.rng, self.seed = mesh, spec, rng, seed
        self.name = spec.name
        n = mesh.nodes
        self.iw = Shape.cast(inject_layout(mesh, spec.payload, spec.multicast)).width
        self.pw = Shape.cast(spec.payload).width
        self.sb = max(1, (n - 1).bit_length())
        self.seq_bits = min(16, self.pw - self.sb)
        self.iv_h, self.id_h, self.ir_h = (getattr(dut, f"{self.name}_{x}") for x in ("iv", "id", "ir"))
        self.ev_h, self.ed_h, self.er_h = (getattr(dut, f"{self.name}_{x}") for x in ("ev", "ed", "er"))
        self.lv_h, self.lr_h = getattr(dut, f"{self.name}_lv"), getattr(dut, f"{self.name}_lr")
        self.link_seen = defaultdict(int)             # (node, Port) -> flits seen on the link
        self.link_stalls = defaultdict(int)           # (node, Port) -> valid & ~ready cycles
        self.queue = [deque() for _ in range(n)]      # flits each source still has to send
        self.cur = [None] * n                         # (word, payload, dsts) presented now
        self.expect = defaultdict(deque)              # (src, dst) -> payloads in order
        self.injected = [0] * n
        self.delivered = [0] * n
        self.inj_stalls = [0] * n
        self.ej_stalls = [0] * n
        self.link_flits = defaultdict(int)            # (node, Port) -> flits
        self.seq = [0] * n
        self.sent_total = self.delivered_total = self.expected_total = 0
        self.history = deque(maxlen=24)               # recent events, for failure messages

    # -- flit construction
    def pos_bits(self, node):
        r, c = self.mesh.position(node)
        return r | (c << self.mesh.row_bits)

    def make_flit(self, src, dsts_range):
        lo, hi = dsts_range
        pb = self.mesh.row_bits + self.mesh.col_bits
        if self.spec.multicast:
            dst_word, dw = self.pos_bits(lo) | (self.pos_bits(hi) << pb), 2 * pb
        else:
            assert lo == hi
            dst_word, dw = self.pos_bits(lo), pb
        seq = self.seq[src]
        self.seq[src] += 1
        assert seq < (1 << self.seq_bits), f"seed={self.seed}: too many flits for the sequence field"
        payload = src | (seq << self.sb)
        extra = self.pw - self.sb - self.seq_bits
        if extra > 0:
            payload |= self.rng.getrandbits(extra) << (self.sb + self.seq_bits)
        word = dst_word | (payload << dw)
        assert word < (1 << self.iw)
        self.queue[src].append((word, payload, list(range(lo, hi + 1))))

    def random_range(self, src, mode):
        n, C, rng = self.mesh.nodes, self.mesh.cols, self.rng
        if mode == "flows":                           # only the flows the routers were built for
            return rng.choice(self.flows[src])
        if not self.spec.multicast:
            d = rng.randrange(n)
            return d, d
        kind = rng.random() if mode == "random" else 0.5
        if kind < 0.25:                               # one core (unicast on the spike plane)
            d = rng.randrange(n)
            return d, d
        if kind < 0.35:                               # everything
            return 0, n - 1
        if kind < 0.5:                                # one row
            r = rng.randrange(self.mesh.rows)
            return r * C, min(n, (r + 1) * C) - 1
        if kind < 0.6 and self.mesh.rows > 1 and C > 2:
            # two rows with a gap: [end of a row, start of the next]
            r = rng.randrange(self.mesh.rows - 1)
            lo, hi = r * C + C - 1, min(n - 1, (r + 1) * C)
            return lo, hi
        lo = rng.randrange(n)
        return lo, rng.randrange(lo, n)

    # -- one cycle
    def drive(self, inj_p, ready_p):
        """After the rising edge: present the next flits, set the eject readies."""
        iv = word_all = 0
        for k in range(self.mesh.nodes):
            if self.cur[k] is None and self.queue[k] and self.rng.random() < inj_p:
                self.cur[k] = word, payload, dsts = self.queue[k].popleft()
                # expected from now on: a multicast's first copies may leave before the
                # inject handshake (the fork is asynchronous)
                for d in dsts:
                    self.expect[(k, d)].append(payload)
                    self.expected_total += 1
                for link in tree_links(self.mesh, k, dsts):
                    self.link_flits[link] += 1
            if self.cur[k] is not None:
                iv |= 1 << k
                word_all |= self.cur[k][0] << (k * self.iw)
        self.iv_h.value = iv
        self.id_h.value = word_all
        er = 0
        for k in range(self.mesh.nodes):
            if self.rng.random() < ready_p[k]:
                er |= 1 << k
        self.er_h.value = er
        self.er = er
        self.iv = iv

    def sample(self, cycle):
        """Before the rising edge: what fires at it."""
        ir = int(self.ir_h.value)
        ev = int(self.ev_h.value)
        ed = int(self.ed_h.value) if ev else 0
        mesh = self.mesh
        lv = int(self.lv_h.value)
        if lv:
            lr = int(self.lr_h.value)
            for bits, table in ((lv & lr, self.link_seen), (lv & ~lr, self.link_stalls)):
                while bits:
                    low = bits & -bits
                    j = low.bit_length() - 1
                    table[(j // 4, _LINK_PORTS[j % 4])] += 1
                    bits ^= low
        for k in range(mesh.nodes):
            bit = 1 << k
            if self.iv & bit:
                if ir & bit:
                    word, payload, dsts = self.cur[k]
                    self.cur[k] = None
                    self.history.append(f"{cycle}: {k} sent {payload:#x} to {dsts[0]}..{dsts[-1]}")
                    self.injected[k] += 1
                    self.sent_total += 1
                else:
                    self.inj_stalls[k] += 1
            if ev & bit:
                if self.er & bit:
                    payload = (ed >> (k * self.pw)) & ((1 << self.pw) - 1)
                    src = payload & ((1 << self.sb) - 1)
                    seq = (payload >> self.sb) & ((1 << self.seq_bits) - 1)
                    where = (f"seed={self.seed} plane={self.name} cycle={cycle}: core {k} received "
                             f"from core {src} flit #{seq} (payload {payload:#x})")
                    q = self.expect.get((src, k))
                    self.history.append(f"{cycle}: {k} got {payload:#x}")
                    assert q, (f"{where}, but {src} sent nothing (more) for {k}: wrong destination "
                               f"or a duplicate; recent events: {list(self.history)}")
                    exp = q.popleft()
                    assert payload == exp, (f"{where}, expected {exp:#x} (flit #"
                                            f"{(exp >> self.sb) & ((1 << self.seq_bits) - 1)}): "
                                            f"out of order, corrupted or lost")
                    self.delivered[k] += 1
                    self.delivered_total += 1
                else:
                    self.ej_stalls[k] += 1

    def idle(self):
        return (all(c is None for c in self.cur) and not any(self.queue)
                and self.delivered_total == self.expected_total)

    def missing(self):
        return {f"{s}->{d}": len(q) for (s, d), q in self.expect.items() if q}


async def run_traffic(dut, mesh, planes, *, seed, flits, mode, inj_p, ready_lo, limit, flows=None):
    rng = random.Random(seed)
    ps = [Plane(dut, mesh, spec, random.Random(rng.getrandbits(32)), seed) for spec in planes]
    for p in ps:
        if flows is not None:
            p.flows = defaultdict(list)
            for src, dsts in flows[p.name]:
                p.flows[src].append((dsts[0], dsts[-1]))
        for src in range(mesh.nodes):
            if flows is not None and not p.flows[src]:
                continue
            for _ in range(flits):
                p.make_flit(src, p.random_range(src, mode))
    n = mesh.nodes
    load = busiest(mesh, ps)
    bound = limit(load)
    ready_p = [1.0 if ready_lo >= 1.0 else rng.uniform(ready_lo, 1.0) for _ in range(n)]
    for p in ps:
        p.iv_h.value = 0
        p.er_h.value = 0
    await reset(dut)
    cycle = 0
    while True:
        await RisingEdge(dut.clk)
        if all(p.idle() for p in ps):
            break
        cycle += 1
        assert cycle <= bound, (
            f"seed={seed}: not all flits delivered within {bound} cycles; still missing "
            + "; ".join(f"{p.name}: {p.missing()}" for p in ps if p.missing()))
        for p in ps:
            p.drive(inj_p, ready_p)
        await FallingEdge(dut.clk)
        for p in ps:
            p.sample(cycle)
    # nothing more may come out
    for p in ps:
        p.iv_h.value = 0
        p.er_h.value = (1 << n) - 1
        p.iv, p.er = 0, (1 << n) - 1
    for _ in range(16):
        await FallingEdge(dut.clk)
        for p in ps:
            assert int(p.ev_h.value) == 0, f"seed={seed} plane={p.name}: a flit after all were delivered"
    await check_counters(dut, mesh, ps, seed)
    return cycle, ps, load


async def check_counters(dut, mesh, ps, seed):
    for k in range(mesh.nodes):
        dut.ctr_node.value = k
        for pi, p in enumerate(ps):
            exp = {(Port.INJECT, CounterKind.FLITS): p.injected[k],
                   (Port.INJECT, CounterKind.STALLS): p.inj_stalls[k],
                   (Port.EJECT, CounterKind.FLITS): p.delivered[k],
                   (Port.EJECT, CounterKind.STALLS): p.ej_stalls[k]}
            for port in _LINK_PORTS:
                # the route model's links and the handshakes seen on them must agree
                model, seen = p.link_flits.get((k, port), 0), p.link_seen.get((k, port), 0)
                assert model == seen, (f"seed={seed} plane={p.name} core={k}: {seen} flits went "
                                       f"out on {port.name}, the route model says {model}")
                exp[(port, CounterKind.FLITS)] = model
                exp[(port, CounterKind.STALLS)] = p.link_stalls.get((k, port), 0)
            for (port, kind), want in exp.items():
                dut.ctr_addr.value = counter_index(pi, port, kind)
                await FallingEdge(dut.clk)
                got = int(dut.ctr_data.value)
                assert got == want, (f"seed={seed} plane={p.name} core={k}: counter {port.name} "
                                     f"{kind.name} = {got}, expected {want}")


@cocotb.test()
async def noc_random(dut):
    prm = load_params()
    mesh = MeshShape(*prm.mesh)
    for seed in prm.seeds:
        # random back-pressure: only a loose bound (a deadlock shows as a timeout)
        cycles, ps, load = await run_traffic(dut, mesh, DEFAULT_PLANES, seed=seed, flits=prm.flits,
                                             mode="random", inj_p=0.5, ready_lo=0.2,
                                             limit=lambda load: 20 * load + 2000)
        dut._log.info(f"seed {seed}: " + ", ".join(
            f"{p.name} {p.sent_total} flits -> {p.delivered_total} deliveries" for p in ps)
            + f" in {cycles} cycles; counters match")


def random_flows(mesh: MeshShape, seed: int) -> dict:
    """A fixed traffic pattern like the chip's (``rtl/chip.py`` ``chip_flows``): per plane a
    few sources, each with one to three destination ranges (multicast plane) or cores."""
    rng = random.Random(seed)
    n, flows = mesh.nodes, {}
    for spec in DEFAULT_PLANES:
        fl = []
        for src in rng.sample(range(n), max(1, n // 2)):
            for _ in range(rng.randint(1, 3)):
                lo = rng.randrange(n)
                hi = rng.randrange(lo, n) if spec.multicast else lo
                fl.append((src, list(range(lo, hi + 1))))
        flows[spec.name] = fl
    return flows


@cocotb.test()
async def noc_pruned(dut):
    """Routers built for a fixed traffic pattern (only the ports it uses) deliver it all."""
    prm = load_params()
    mesh = MeshShape(*prm.mesh)
    flows = random_flows(mesh, prm.pattern)
    for seed in prm.seeds:
        cycles, ps, load = await run_traffic(dut, mesh, DEFAULT_PLANES, seed=seed, flits=prm.flits,
                                             mode="flows", inj_p=0.7, ready_lo=0.3,
                                             limit=lambda load: 20 * load + 2000, flows=flows)
        dut._log.info(f"pattern {prm.pattern} seed {seed}: " + ", ".join(
            f"{p.name} {p.sent_total} flits -> {p.delivered_total} deliveries" for p in ps))


def busiest(mesh, ps) -> int:
    """Cycles the busiest resource of the queued traffic needs at least: an inject port, an
    eject port or a link moves at most one flit every two cycles (the design: a link one
    every four, an eject port one every three); a router plane's bus moves one flit a
    cycle, once per router a flit visits (its source, every hop)."""
    worst = 0
    for p in ps:
        links, inj, ej, visits = defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int)
        for src, q in enumerate(p.queue):
            for _, _, dsts in q:
                inj[src] += 1
                visits[src] += 1
                for d in dsts:
                    ej[d] += 1
                for node, port in tree_links(mesh, src, dsts):
                    links[(node, port)] += 1
                    r, c = mesh.position(node)
                    dr, dc = _STEP[port]
                    visits[mesh.node(r + dr, c + dc)] += 1
        worst = max([worst, *(2 * v for v in links.values()), *(2 * v for v in inj.values()),
                     *(2 * v for v in ej.values()), *visits.values()])
    return worst


@cocotb.test()
async def noc_saturation(dut):
    prm = load_params()
    mesh = MeshShape(*prm.mesh)
    for seed in prm.seeds:
        def limit(load):
            return 3 * load + 8 * (mesh.rows + mesh.cols) + 64

        cycles, ps, load = await run_traffic(dut, mesh, DEFAULT_PLANES, seed=seed, flits=prm.flits,
                                             mode="random", inj_p=1.0, ready_lo=1.0, limit=limit)
        dut._log.info(f"seed {seed}: saturation, {sum(p.sent_total for p in ps)} flits, "
                      f"{sum(p.expected_total for p in ps)} deliveries in {cycles} cycles "
                      f"(bound {limit(load)}; the busiest port, link or bus needs {load})")


# ------------------------------------------------------------------------ pytest side
MESHES = [
    pytest.param((1, 1, 1), id="1x1"),
    pytest.param((1, 2, 2), id="1x2"),
    pytest.param((2, 2, 4), id="2x2"),
    pytest.param((3, 3, 7), id="3x3-7"),
    pytest.param((4, 5, 20), id="4x5"),
]
SLOW_MESHES = [
    pytest.param((2, 3, 5), id="2x3-5"),
    pytest.param((3, 4, 10), id="3x4-10"),
    pytest.param((4, 4, 13), id="4x4-13"),
    pytest.param((6, 6, 32), id="6x6-32"),
]


def _run(shape, testcase, seeds, flits):
    mesh = MeshShape(*shape)
    # the build depends on rtl/ (always in the key) and the harness, not on the rest of
    # this file: editing the testbench does not rebuild the meshes
    run_cocotb(name="noc_mesh", component=lambda: MeshHarness(mesh), test_module=__name__,
               build_key={"mesh": list(shape), "harness": inspect.getsource(MeshHarness)},
               testcase=testcase, params={"mesh": list(shape), "seeds": seeds, "flits": flits})


@pytest.mark.parametrize("shape", [pytest.param((3, 3, 7), id="3x3-7"), pytest.param((4, 5, 20), id="4x5")])
def test_noc_pruned(shape):
    """Routers with only the ports of a random fixed traffic pattern (``Mesh(flows=)``, as
    the chip builds them): every flit of that traffic delivered, in order, counters right."""
    mesh, pattern = MeshShape(*shape), 7
    flows = random_flows(mesh, pattern)
    run_cocotb(name="noc_pruned", component=lambda: MeshHarness(mesh, flows=flows), test_module=__name__,
               build_key={"mesh": list(shape), "pattern": pattern, "harness": inspect.getsource(MeshHarness),
                          "flows": inspect.getsource(random_flows)},
               testcase="noc_pruned", params={"mesh": list(shape), "seeds": [4, 5], "flits": 16,
                                              "pattern": pattern})


@pytest.mark.parametrize("shape", MESHES)
def test_noc_random(shape):
    _run(shape, "noc_random", seeds=[1, 2], flits=12)


@pytest.mark.parametrize("shape", MESHES)
def test_noc_saturation(shape):
    _run(shape, "noc_saturation", seeds=[3], flits=16)


@pytest.mark.slow
@pytest.mark.parametrize("shape", MESHES + SLOW_MESHES)
def test_noc_random_slow(shape):
    _run(shape, "noc_random", seeds=list(range(10, 16)), flits=40)


@pytest.mark.slow
@pytest.mark.parametrize("shape", MESHES + SLOW_MESHES)
def test_noc_saturation_slow(shape):
    _run(shape, "noc_saturation", seeds=list(range(20, 24)), flits=40)


# ------------------------------------------------------------------------------- lint
@pytest.mark.parametrize("counters", [True, False], ids=["counters", "board"])
@pytest.mark.parametrize("shape,node", [((4, 5, 20), 6), ((3, 3, 7), 6), ((3, 3, 7), 3), ((1, 1, 1), 0)],
                         ids=["4x5-interior", "3x3-7-last-row", "3x3-7-lift-row", "1x1"])
def test_noc_lint(shape, node, counters):
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.rtl.noc import Router

    vfile = build_root() / "lint" / f"noc-router-{'x'.join(map(str, shape))}-{node}-{counters}.v"
    write_verilog(Router(MeshShape(*shape), node, counters=counters), vfile, name="router")
    lint_verilog(vfile, "router")


def test_noc_lint_mesh():
    from spikeforge.gen.verilog import write_verilog

    vfile = build_root() / "lint" / "noc-mesh-3x3-7.v"
    write_verilog(Mesh(MeshShape(3, 3, 7)), vfile, name="mesh")
    lint_verilog(vfile, "mesh")


# ------------------------------------------------------------------- parameter checks
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_noc_parameters():
    from spikeforge.rtl.geometry import ChipGeometry
    from spikeforge.rtl.noc import PlaneRouter, PlaneSpec, MessageClass, Router, spike_payload

    with pytest.raises(ValueError, match="leave the last"):
        MeshShape(3, 3, 6)
    with pytest.raises(ValueError, match="do not fit"):
        MeshShape(2, 2, 5)
    with pytest.raises(ValueError, match="positive integer"):
        MeshShape(0, 2, 1)
    with pytest.raises(ValueError, match="node 7"):
        Router(MeshShape(3, 3, 7), 7)
    with pytest.raises(TypeError, match="MeshShape"):
        PlaneRouter((2, 2, 4), 0, spike_payload())
    with pytest.raises(ValueError, match="two planes of one class"):
        Router(MeshShape(1, 1, 1), 0, [DEFAULT_PLANES[0], DEFAULT_PLANES[0]])
    with pytest.raises(TypeError, match="not a shape"):
        PlaneSpec(MessageClass.HOST, "wide")
    with pytest.raises(ValueError, match="3 node_domains for 4 nodes"):
        Mesh(MeshShape(2, 2, 4), node_domains=["a", "b", "c"])
    for n in range(1, 33):
        assert MeshShape.for_nodes(n).nodes == n
    from spikeforge.gen.config import load_config
    chip = ChipGeometry.from_config(load_config("trainer-20core"))
    assert MeshShape.from_chip(chip) == MeshShape(4, 5, 20)
    # the counter map: plane-major, 16 per plane, port * 2 + kind
    assert counter_index(1, Port.EJECT, CounterKind.STALLS) == 16 + 3
    assert COUNTERS_PER_PLANE == 12


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 4), (3, 3, 7), (4, 5, 20), (6, 6, 32)])
def test_used_ports(shape):
    """``used_ports``: every path ends at its destination, an output toward a neighbour
    always pairs with that neighbour's input, and all-to-all traffic uses every port a
    router has (so ``Mesh(flows=)`` with every flow builds the generic router)."""
    from spikeforge.rtl.noc import used_ports, xy_path

    mesh = MeshShape(*shape)
    n = mesh.nodes
    step = _STEP
    back = {Port.N: Port.S, Port.S: Port.N, Port.E: Port.W, Port.W: Port.E}
    for s in range(n):
        for d in range(n):
            at = mesh.position(s)
            for node, port in xy_path(mesh, s, d):
                assert mesh.position(node) == at, (s, d)
                at = (at[0] + step[port][0], at[1] + step[port][1])
                assert mesh.exists(*at), (s, d, at)
            assert at == mesh.position(d), (s, d)
    rng = random.Random(shape[2])
    flows = [(rng.randrange(n), list(range(lo, rng.randrange(lo, n) + 1)))
             for lo in (rng.randrange(n) for _ in range(3 * n))]
    used = used_ports(mesh, flows)
    for k, u in enumerate(used):
        r, c = mesh.position(k)
        for p in (Port.N, Port.E, Port.S, Port.W):
            if p in u.outs:
                nb = mesh.node(r + step[p][0], c + step[p][1])
                assert back[p] in used[nb].ins, (k, p)
    full = used_ports(mesh, [(s, [d]) for s in range(n) for d in range(n)])
    for k, u in enumerate(full):
        r, c = mesh.position(k)
        links = {p for p in (Port.N, Port.E, Port.S, Port.W)
                 if mesh.exists(r + step[p][0], c + step[p][1]) and 0 <= r + step[p][0]}
        assert u.outs == {Port.EJECT} | links and u.ins == {Port.INJECT} | links, (k, u, links)
