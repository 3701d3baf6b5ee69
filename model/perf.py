"""Cycle-exact performance model of the core (see docs/core.md).

From the data of one sample (input spike events per timestep, non-zero dv per timestep
and lane) it predicts the cycles of every phase of every engine; the RTL tests assert
that the RTL's cycle counters equal these predictions exactly.
"""


# ------------------------------------------------------------------------------ WG engine
def wg_lane_lengths(dv_t, lanes: int) -> list[int]:
    """Length of each of the ``lanes`` per-lane dv lists of one timestep.

    ``dv_t``: the ``N`` dv values (or a 0/1 non-zero mask) of one sample and timestep;
    lane ``q`` lists the non-zero dv of neurons ``i = b*P + q``.
    """
    lens = [0] * lanes
    for i, v in enumerate(dv_t):
        if int(v) != 0:
            lens[i % lanes] += 1
    return lens


def wg_cycles(events_per_t, lane_lengths_per_t) -> int:
    """Cycles of the WG engine's accumulation of one sample (``WGEngine.cycles`` after ``start``).

    ``events_per_t[t]``: input spike events of timestep ``t``; ``lane_lengths_per_t[t]``:
    the ``P`` lane-list lengths of ``t`` (see :func:`wg_lane_lengths`). One cycle to fetch
    ``ev_start[T]`` at the start (later offsets are read ahead), per timestep 1 cycle to
    accept ``lists`` plus ``events(t) * L(t)`` with ``L(t)`` the longest lane list, and 3
    cycles to drain the read-modify-write pipeline at the end. Cycles spent waiting for BP
    to present the lists are not counted (the engine's ``stalls`` counter has them).
    ``release`` of ``t`` comes ``1 + events(t) * L(t)`` cycles after its acceptance.
    """
    if len(events_per_t) != len(lane_lengths_per_t):
        raise ValueError(f"wg_cycles: {len(events_per_t)} event counts but "
                         f"{len(lane_lengths_per_t)} timesteps of lane lengths")
    total = 4
    for ev, lens in zip(events_per_t, lane_lengths_per_t):
        total += 1 + int(ev) * max((int(x) for x in lens), default=0)
    return total


def wg_work(events_per_t, lane_lengths_per_t) -> int:
    """Useful additions of one sample's accumulation: ``sum_t events(t) * nnz_t(dv)``."""
    return sum(int(ev) * sum(int(x) for x in lens)
               for ev, lens in zip(events_per_t, lane_lengths_per_t))


def update_cycles(n_in: int, n_neurons: int, lanes: int) -> int:
    """Cycles of the WG engine's weight update (``WGEngine.cycles`` after ``start_update``).

    One column slice (``P`` weights) per cycle over ``NB = ceil(N/P)`` blocks of ``n_in``
    columns, plus one cycle to fetch the first rng states and four to drain the pipeline
    (register the block RAM words, form G, round, write back) after the last slice.
    """
    blocks = -(-n_neurons // lanes)
    return blocks * n_in + 5


# ------------------------------------------------------------------------------ FP engine
def fp_cycles(events_per_t, n_neurons: int, lanes: int, buffered: bool = False) -> int:
    """Cycles of the FP engine's forward pass of one sample (``FPEngine.cycles``).

    ``events_per_t[t]``: input spike events of timestep ``t``. Per timestep and neuron
    block one cycle per event (at least one: a block of a timestep without events still
    leaks), plus 2 cycles to read ``ev_start[0..1]`` and 4 (one LIF stage, ``NB = 1``) or
    5 (two LIF stages, ``NB >= 2``) to drain the column and weight registers, accumulate
    and LIF stages. Cycles frozen by back-pressure on the spike stream are not counted
    (``FPEngine.stalls`` has them).

    ``buffered`` (the in-place dataflow): the events come through a one-timestep buffer
    that the core's loader fills while FP waits -- instead of the 2 cycles for the offsets,
    ``events(t) + 2`` per timestep (one per event, one to close the timestep, one to take
    it), with the events offered back to back.
    """
    blocks = -(-n_neurons // lanes)
    lif_stages = 2 if blocks >= 2 else 1    # two-stage LIF when a block never follows itself
    walk = 3 + lif_stages + blocks * sum(max(int(e), 1) for e in events_per_t)
    if buffered:
        return walk + sum(int(e) + 2 for e in events_per_t)
    return walk + 2


def fp_work(events_per_t, n_neurons: int) -> int:
    """Useful accumulations of one forward pass: ``sum_t events(t) * N``."""
    return sum(int(e) for e in events_per_t) * n_neurons


def fp_dense_cycles(n_in: int, n_neurons: int, lanes: int, timesteps: int) -> int:
    """Cycles of the same FP schedule if every input spiked at every timestep."""
    return fp_cycles([n_in] * timesteps, n_neurons, lanes)


# ------------------------------------------------------------------------------ BP engine
def bp_nnz(dv) -> list[int]:
    """Non-zero dv per timestep of one sample: ``dv`` is ``(T, N)`` (values or a 0/1 mask)."""
    return [sum(1 for v in row if int(v) != 0) for row in dv]


def bp_cycles(n_blocks: int, col_blocks: int, nnz_per_t, release_delay: int = 1) -> int:
    """Cycles of the BP engine for one sample (``BPEngine.cycles`` after ``start``).

    ``n_blocks`` = NB = ceil(N/P), ``col_blocks`` = JB = ceil(n_in/P), ``nnz_per_t[t]`` the
    number of non-zero dv of timestep ``t``. Assumes the WG side accepts ``lists`` as soon
    as they are valid and pulses ``release`` ``release_delay`` (>= 1) cycles after the
    acceptance, and that ``err`` is always ready.

    The engine has two units that overlap (rtl/bp.py): the dv unit issues one block per
    cycle, ``max(NB, 2)`` cycles per timestep (``NB = 1``: one idle cycle, block 0 follows
    itself), and writes a block's dv three cycles after its issue (read and leak | add and
    saturate | write); the lists of ``t`` are complete (``lists`` valid, error unit may
    begin) at ``R(t) = D(t) + NB + 3`` with ``D(t)`` its first issue. The dv
    unit begins ``t`` once it issued ``t+1``, buffer ``t & 1`` was released by WG
    (visible ``release_delay + 1`` cycles after WG accepted ``t+2``) and the error unit is
    done with ``t+2`` (it shares the double-buffered shadow lists). The error unit takes
    ``JB * nnz(t)`` cycles for a ``t`` with non-zero dv (one dv per cycle per column
    block), 1 cycle to skip one without. The last error word leaves 5 cycles after its
    last issue (address, weight read, weight register, multiply, accumulate); ``busy`` falls one cycle after everything is finished.
    """
    if release_delay < 1:
        raise ValueError(f"bp_cycles: release_delay={release_delay} must be >= 1")
    T = len(nnz_per_t)
    return _backward_schedule(n_blocks, col_blocks, nnz_per_t, [1] * T, [release_delay] * T, 0)["bp"]


def _backward_schedule(n_blocks, col_blocks, nnz_per_t, accept_gap, release_after, wg_first) -> dict:
    """BP's two units against a WG side that accepts the lists of ``t`` at ``A(t) = max(R(t),
    wg_free)``, may accept the next ``t`` ``accept_gap[t]`` cycles later and releases the
    buffer ``release_after[t]`` cycles after accepting; ``wg_first``: WG's first cycle that
    can accept. Returns BP's cycles, WG's release time of ``t = 0`` and WG's waiting cycles."""
    NB, JB = int(n_blocks), int(col_blocks)
    T = len(nnz_per_t)
    if T < 1 or NB < 1 or JB < 1:
        raise ValueError(f"bp_cycles: need T, NB, JB >= 1, got {T}, {NB}, {JB}")
    D, Eend, REL = {}, {T: 0}, {}
    wg_free, stalls, last_issue = wg_first, 0, None
    for t in reversed(range(T)):
        d = 0 if t == T - 1 else D[t + 1] + max(NB, 2)
        if t <= T - 3:
            d = max(d, REL[t + 2] + 1, Eend[t + 2])
        D[t] = d
        R = d + NB + 3
        A = max(R, wg_free)
        stalls += A - wg_free
        REL[t] = A + release_after[t]
        wg_free = A + accept_gap[t]
        E = max(R, Eend[t + 1])
        n = JB * int(nnz_per_t[t])
        Eend[t] = E + max(1, n)
        if n:
            last_issue = E + n - 1
    finish = max(A + 1, Eend[0])
    if last_issue is not None:
        finish = max(finish, last_issue + 6)
    return {"bp": finish + 1, "release0": REL[0], "stalls": stalls}


def bp_work(n_in: int, nnz_per_t) -> int:
    """Useful multiply-accumulates of one sample: ``nnz(dv) * n_in``."""
    return int(n_in) * sum(int(x) for x in nnz_per_t)


# ---------------------------------------------------------------------------- the Core
def core_forward_cycles(events_per_t, n_neurons: int, lanes: int, buffered: bool = False) -> int:
    """Forward phase of the Core (``train``/``infer``): the FP engine plus one cycle to
    start it and one to see its ``done``."""
    return fp_cycles(events_per_t, n_neurons, lanes, buffered) + 2


def core_update_cycles(n_in: int, n_neurons: int, lanes: int) -> int:
    """Update phase of the Core: the WG update plus one cycle to start it (WG's ``done`` is
    seen in its last busy cycle)."""
    return update_cycles(n_in, n_neurons, lanes) + 1


def core_backward_cycles(bp_cycles: int, wg_cycles: int, wg_stalls: int) -> int:
    """Backward phase of the Core from the engines' own counters: BP and WG start in the
    same cycle; the phase ends when both are done. WG is busy for ``cycles + stalls``
    (stalls: waiting for BP's lists) and shows ``done`` in its last busy cycle; BP shows
    ``done`` the cycle after its last busy cycle."""
    return max(bp_cycles + 1, wg_cycles + wg_stalls) + 1


def core_backward_schedule(n_blocks: int, col_blocks: int, nnz_per_t, events_per_t,
                           lane_lengths_per_t) -> dict:
    """Predicted backward phase of the Core from the data: BP and WG run concurrently.

    :func:`bp_cycles` with WG's real acceptance and release times instead of an
    always-ready WG: WG accepts the lists of ``t`` (order ``T-1 .. 0``) when it waits for
    them and BP has them complete (``R(t)``) -- WG waits from its second cycle on (the first
    fetches ``ev_start[T]``) -- spends ``1 + events(t) * L(t)`` cycles on them and pulses
    ``release`` at the end (the cycle it waits for the next ``t``; :func:`wg_cycles`); BP's
    dv unit reuses a buffer one cycle after its release; WG drains 3 cycles after ``t = 0``.
    Both engines start in the same cycle. Returns ``bp_cycles``, ``wg_cycles``, ``wg_stalls`` (WG waiting for BP) and
    ``phase`` (:func:`core_backward_cycles` of those).
    """
    T = len(nnz_per_t)
    if not (len(events_per_t) == len(lane_lengths_per_t) == T):
        raise ValueError("core_backward_schedule: nnz, events and lane lengths need one entry per timestep")
    busy = [1 + int(events_per_t[t]) * max((int(x) for x in lane_lengths_per_t[t]), default=0)
            for t in range(T)]
    s = _backward_schedule(n_blocks, col_blocks, nnz_per_t, busy, busy, 1)
    out = {"bp_cycles": s["bp"], "wg_cycles": s["release0"] + 3 - s["stalls"], "wg_stalls": s["stalls"]}
    out["phase"] = core_backward_cycles(out["bp_cycles"], out["wg_cycles"], out["wg_stalls"])
    return out


# ----------------------------------------------- the in-place weight-gradient dataflow
def inplace_active(x, dv, lanes: int) -> tuple[int, int]:
    """What the in-place sparse update of one sample visits: ``(active blocks, active
    columns)``. ``x``: ``(T, n_in)`` input spikes; ``dv``: ``(T, N)`` the core's dv. A block
    of ``lanes`` neurons is active when one of them has a non-zero dv at some ``t``; a column
    when it has an input spike at some ``t``. Every other weight has ``G = 0``."""
    import torch

    x, dv = torch.as_tensor(x), torch.as_tensor(dv)
    live = (dv != 0).any(dim=0)
    n = live.shape[0]
    blocks = sum(bool(live[b:b + lanes].any()) for b in range(0, n, lanes))
    return blocks, int((x != 0).any(dim=0).sum())


def inplace_scan_cycles(n_in: int) -> int:
    """Cycles of the in-place WG engine in the backward phase (``WGEngine.cycles`` after
    ``start``): it reads the input-spike bits of every column, lists the columns that
    spiked (with their bits) and clears them, ``n_in + 1``; the dv history fills from BP's
    ``dvw`` at no cost."""
    return int(n_in) + 1


def inplace_update_cycles(active_blocks: int, active_columns: int) -> int:
    """Cycles of the in-place sparse update (``WGEngine.cycles`` after ``start_update``): one
    column slice per cycle over the active columns of each active block
    (:func:`inplace_active`), and 6 to drain the list read and the update pipeline; 1 when
    nothing is active."""
    work = int(active_blocks) * int(active_columns)
    return 1 if work == 0 else work + 6


def core_inplace_update_cycles(active_blocks: int, active_columns: int) -> int:
    """Update phase of the Core in place: the WG update plus one cycle to start it."""
    return inplace_update_cycles(active_blocks, active_columns) + 1


def core_inplace_backward_cycles(n_blocks: int, col_blocks: int, nnz_per_t, n_in: int) -> dict:
    """Predicted backward phase of the Core in the in-place dataflow.

    BP runs alone: its lists are accepted the cycle they are valid and released one cycle
    later (:func:`bp_cycles` with ``release_delay=1``); WG lists the active columns
    concurrently (:func:`inplace_scan_cycles`, never waits: ``wg_stalls`` = 0). Returns
    ``bp_cycles``, ``wg_cycles``, ``wg_stalls`` and ``phase`` (:func:`core_backward_cycles`)."""
    bp = bp_cycles(n_blocks, col_blocks, nnz_per_t, release_delay=1)
    wg = inplace_scan_cycles(n_in)
    return {"bp_cycles": bp, "wg_cycles": wg, "wg_stalls": 0,
            "phase": core_backward_cycles(bp, wg, 0)}


def core_inplace_sample_cycles(n_in: int, n_neurons: int, lanes: int, nnz_per_t, events_per_t,
                               active_blocks: int, active_columns: int) -> dict:
    """Cycles of one ``train`` command of the Core in the in-place dataflow, per phase:
    forward (:func:`core_forward_cycles`), backward (:func:`core_inplace_backward_cycles`)
    and update (:func:`core_inplace_update_cycles`), which the Core runs back to back."""
    NB, JB = -(-n_neurons // lanes), -(-n_in // lanes)
    fwd = core_forward_cycles(events_per_t, n_neurons, lanes, buffered=True)
    bwd = core_inplace_backward_cycles(NB, JB, nnz_per_t, n_in)["phase"]
    upd = core_inplace_update_cycles(active_blocks, active_columns)
    return {"forward": fwd, "backward": bwd, "update": upd, "total": fwd + bwd + upd}


# ------------------------------------------------------------------ memory of each dataflow
def wg_memory_bits(n_in: int, n_neurons: int, lanes: int, timesteps: int, dv_bits: int,
                   grad_bits: int, dataflow: str) -> dict:
    """Memory bits that depend on the weight-gradient dataflow (beyond ``W`` and the S/M
    histories, which both dataflows share), as the RTL instantiates them.

    accumulate: the gradient memory, ``P`` banks of ``NB*n_in`` words of ``grad_bits``, and
    the BP -> WG dv lists, ``P`` banks of ``2*NB`` entries ``{b, dv}``.
    inplace: the input-spike bits, ``n_in`` words of ``T`` bits, and the dv history, ``P``
    banks of ``NB`` words of ``T*dv_bits``.
    ``events``: accumulate keeps the sample's event list (``T*n_in`` column addresses and
    ``T+1`` offsets), in place a one-timestep buffer of ``n_in`` entries, each a column
    address and ``T`` bits (the sparse update's active-column list ``{j, x}`` between
    forward passes).
    """
    P, T, n = int(lanes), int(timesteps), int(n_in)
    NB = -(-int(n_neurons) // P)
    col = max(1, (n - 1).bit_length())
    if dataflow == "accumulate":
        bbits = max(1, (NB - 1).bit_length())
        parts = {"grad_memory": P * NB * n * int(grad_bits),
                 "dv_lists": P * 2 * NB * (bbits + int(dv_bits)),
                 "events": T * n * col + (T + 1) * (T * n).bit_length()}
    elif dataflow == "inplace":
        parts = {"x_bits": n * T, "dv_history": P * NB * T * int(dv_bits),
                 "events": n * (col + T)}
    else:
        raise ValueError(f"wg_memory_bits: dataflow {dataflow!r}, expected 'accumulate' or 'inplace'")
    parts["total"] = sum(parts.values())
    return parts


# ---------------------------------------------------------------------- the N-core chip
#: Cycles per flit on a NoC link (rtl/noc.py: output registers only, no input buffers).
NOC_LINK_CYCLES = 4
#: Cycles a flit spends in each router it crosses (decide, transfer).
NOC_HOP_CYCLES = 2
#: Cycles per flit of the host's input events, multicast to the first layer (forks of a
#: multicast wait for every branch's output register; measured 5 to 6 on a 4 x 5 mesh).
NOC_MULTICAST_CYCLES = 5
#: Cycles per reduced error word handed from ErrorReduce to its core (read, register, send).
REDUCE_WORD_CYCLES = 3


#: Cycles per flit at the eject port of a hidden core: ErrorReduce takes a flit in its third
#: cycle and the router refills the eject register two cycles after it was drained.
ERROR_EJECT_CYCLES = REDUCE_WORD_CYCLES + 2


def _hops(geometry, a: int, b: int) -> int:
    """Links between cores ``a`` and ``b`` on the row-major mesh (XY route)."""
    (ra, ca), (rb, cb) = divmod(a, geometry.cols), divmod(b, geometry.cols)
    return abs(ra - rb) + abs(ca - cb)


def _error_run_cycles(n: int, hops: int) -> int:
    """Cycles for a run of ``n`` error words from one core to one core ``hops`` links away:
    one link slot each, or, when the eject port is slower, one eject slot each less what the
    path's registers (one per link and the eject's) absorb while the source moves on."""
    return max(NOC_LINK_CYCLES * n, ERROR_EJECT_CYCLES * n - (hops + 1))


def noc_busiest_link(geometry, flows) -> int:
    """Flits on the busiest link, inject or eject port of XY-routed unicast ``flows``
    ``[(source core, destination core, flits), ...]`` on the geometry's mesh (an eject or
    inject port counts like a link; rtl/noc.py's partial-row lift is ignored)."""
    load = {}
    cols = geometry.cols
    for src, dst, n in flows:
        if not n:
            continue
        (r, c), (dr, dc) = divmod(src, cols), divmod(dst, cols)
        load[("inj", src)] = load.get(("inj", src), 0) + n
        while c != dc:
            nc = c + (1 if dc > c else -1)
            load[(r, c, r, nc)] = load.get((r, c, r, nc), 0) + n
            c = nc
        while r != dr:
            nr = r + (1 if dr > r else -1)
            load[(r, c, nr, c)] = load.get((r, c, nr, c), 0) + n
            r = nr
        load[("ej", dst)] = load.get(("ej", dst), 0) + n
    return max(load.values(), default=0)


def chip_sample_cycles(cfg, geometry, traces, b: int) -> dict:
    """Estimated cycles of one training sample on the chip (rtl/chip.py), from the model's
    traces of sample ``b`` -- a timestep-level schedule, not cycle-exact (bench/bench_chip.py
    measures its error against the RTL).

    Forward, per core and timestep: timestep ``t`` is released when every source's marker
    for ``t`` has arrived (the host's events come one flit per :data:`NOC_MULTICAST_CYCLES`; a
    core's marker leaves when its LIF wrote ``t``), plus the scan of the bitmap (three
    cycles a 16-bit word, one per event, one to close; in place the core takes ``t``'s
    events only after its walk of ``t-1``, so the scan waits at ``t``'s first set word and
    scans the rest as the events are taken); the core walks it once the walk of
    ``t-1`` is over (``events(t) + 2`` to fill and take it, ``NB * max(events, 1)`` to walk,
    :func:`fp_cycles`). Backward: a core starts when its forward is over and (hidden) its
    reduced errors are in; it takes its exact backward phase or, when longer, one link
    slot per error word on the busiest link its layer's words cross (:func:`noc_busiest_link`); the reduced errors follow the last error word of every
    core above plus one hand-over per word. In place the update follows. The sample ends
    with the last core's response. Returns ``total`` and per core ``forward_end``,
    ``backward_end``, ``end``.
    """
    P, T = cfg.hardware.lanes, cfg.network.timesteps
    ip = cfg.hardware.wg_dataflow == "inplace"
    hop = NOC_HOP_CYCLES
    def path(a, c):          # a flit's cycles from core a's router to core c (the host's: 0)
        return (_hops(geometry, a, c) + 1) * hop
    ev = [[int(v) for v in tr.x[b].sum(dim=1)] for tr in traces]    # events per layer and t
    step = {}                                                        # core -> done(t) list
    cores = {}
    # host: one flit per link slot, a marker after each timestep's events
    host, h = [], 0
    for t in range(T):
        h += NOC_MULTICAST_CYCLES * (ev[0][t] + 1)
        host.append(h)
    for pl in geometry.cores:
        g, l = pl.geom, pl.layer
        NB = g.blocks
        wb = max(16, P)
        nw = -(-g.n_in // wb)
        src = ([(0, host)] if l == 0 else
               [(c.core, step[c.core]) for c in geometry.layer_cores(l - 1)])
        walk_end, close, done = 0, -1, []
        for t in range(T):
            e = ev[l][t]
            avail = max(s[t] + path(a, pl.core) for a, s in src)
            scan = max(close + 1, avail)          # the scanner starts t
            if ip and e:
                # the core takes t's events only after its walk of t-1: the scan stops at
                # the first set word and scans the rest, word by word, as events are taken
                w0 = int(traces[l].x[b, t].nonzero()[0]) // wb
                close = max(walk_end, scan + 3 * w0 + 2) + e + 3 * (nw - 1 - w0) + 2
            elif ip:
                close = max(walk_end, scan + 3 * nw) + 1
            else:
                close = max(walk_end + e + 1, avail + 3 * nw + e + 1)
            walk_end = close + 2 + NB * max(e, 1)
            done.append(walk_end + 4)
        step[pl.core] = done
        cores[pl.core] = {"forward_end": done[-1] + 2}
    err_end = {}
    for l in reversed(range(len(traces))):
        tr = traces[l]
        # the error words of a layer's cores share links toward the layer below: they
        # drain in one link slot per word on the busiest link (XY routes)
        drain = 0
        if l > 0:
            active = {pl.core: sum(1 for n in bp_nnz(tr.dv[b, :, pl.offset:pl.offset + pl.geom.n_neurons]) if n)
                      for pl in geometry.layer_cores(l)}
            flows = [(pl.core, d.core, active[pl.core] * d.geom.blocks)
                     for pl in geometry.layer_cores(l) for d in geometry.layer_cores(l - 1)]
            drain = NOC_LINK_CYCLES * noc_busiest_link(geometry, flows)
            # and each core's words go out in runs, one run per core below and timestep;
            # a run drains at that core's eject port
            stream = {pl.core: active[pl.core] * sum(
                _error_run_cycles(d.geom.blocks, _hops(geometry, pl.core, d.core))
                for d in geometry.layer_cores(l - 1)) for pl in geometry.layer_cores(l)}
        for pl in geometry.layer_cores(l):
            g = pl.geom
            dv = tr.dv[b, :, pl.offset:pl.offset + g.n_neurons]
            # the error unit's work: none on the first layer (geom.errors False)
            nnz = bp_nnz(dv) if g.errors else [0] * T
            start = cores[pl.core]["forward_end"]
            if not g.output_layer:
                above = geometry.layer_cores(l + 1)
                ready = max(err_end[c.core] + path(c.core, pl.core) for c in above)
                start = max(start, ready + REDUCE_WORD_CYCLES * T * g.blocks + 2)
            if ip:
                bwd = core_inplace_backward_cycles(g.blocks, g.col_blocks, nnz, g.n_in)["phase"]
            else:
                lanes = [wg_lane_lengths(dv[t], P) for t in range(T)]
                bwd = core_backward_schedule(g.blocks, g.col_blocks, nnz, ev[l], lanes)["phase"]
            words = g.col_blocks * sum(1 for n in nnz if n)
            if l > 0:
                if words:
                    bwd = max(bwd, max(drain, stream[pl.core]) + 8)
                err_end[pl.core] = start + bwd + NOC_LINK_CYCLES * len(geometry.layer_cores(l - 1))
            end = start + bwd + 1
            if ip:
                ab, ac = inplace_active(tr.x[b], dv, P)
                end += core_inplace_update_cycles(ab, ac)
            cores[pl.core].update(backward_end=start + bwd, end=end + path(pl.core, 0))
    total = max(c["end"] for c in cores.values())
    return {"total": total, "cores": cores}
