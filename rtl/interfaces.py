"""Shared interface definitions of the core: widths, stream payloads, codes, weight layout.

The one place RTL (rtl/fp.py, rtl/bp.py, rtl/wg.py, rtl/core.py) and the testbenches
(tests/, sim/) take them from:

* widths: :func:`ubits`, :func:`count_bits`, :func:`error_width`;
* the BP -> WG dv lists: :func:`dv_entry_layout`, :func:`lists_layout`, :func:`dv_list_depth`;
* stream payloads: :func:`spike_word_layout` (FP ``spikes``), :func:`err_layout` (BP ``err``),
  :func:`dvw_layout` (BP's ``dvw`` observation port), :func:`active_column_layout` (WG in place),
  :func:`event_layout`, :func:`ds_layout`, :func:`cmd_layout`, :func:`rsp_layout` (the core's
  host streams);
* the core's codes as ``amaranth.lib.enum`` enums: :class:`Op` (``cmd.op``), :class:`Status`
  (``rsp.status``), :class:`Phase` (``status`` op data); :data:`OPS` / :data:`STATUS` are the
  name -> value dicts of the first two (the testbenches send commands by name);
* the skewed weight layout (docs/core.md): :func:`weight_location` (bank and address of
  ``W[i, j]``, on integers or on Amaranth values) and its inverse :func:`weight_index`.
"""

from __future__ import annotations

from amaranth.hdl import Value, signed, unsigned
from amaranth.lib import data, enum

__all__ = ["ubits", "count_bits", "error_width",
           "dv_entry_layout", "lists_layout", "dv_list_depth",
           "spike_word_layout", "err_layout", "dvw_layout", "active_column_layout",
           "event_layout", "ds_layout", "cmd_layout", "rsp_layout", "IDX_BITS",
           "Op", "Status", "Phase", "OPS", "STATUS",
           "weight_location", "weight_index"]


# ------------------------------------------------------------------------------ widths
def ubits(n: int) -> int:
    """Unsigned width that holds ``0 .. n-1`` (at least 1 bit)."""
    return max(1, (n - 1).bit_length())


def count_bits(timesteps: int) -> int:
    """Width of a spike count ``0 .. T`` (``log2(T) + 1`` for a power-of-two T)."""
    return max(1, timesteps.bit_length())


def error_width(cfg, geom) -> int:
    """Signed width of an error partial sum ``e``: ``weight_bits + dv_bits + bits(N)``."""
    a = cfg.arithmetic
    return a.weight_bits + a.dv_bits + geom.n_neurons.bit_length()


# ------------------------------------------------------------------- BP -> WG dv lists
def dv_entry_layout(cfg, geom) -> data.StructLayout:
    """One dv-list entry: ``{b: block index, dv: signed dv_bits}`` (``b`` in the low bits)."""
    return data.StructLayout({
        "b": unsigned(ubits(geom.blocks)),
        "dv": signed(cfg.arithmetic.dv_bits),
    })


def dv_list_depth(geom) -> int:
    """Words per dv-list bank: two buffers of ``NB``; buffer ``t & 1``, entry ``c`` at ``(t&1)*NB + c``."""
    return 2 * geom.blocks


def lists_layout(geom) -> data.StructLayout:
    """Payload of the BP -> WG ``lists`` stream: ``{t, len[P]}`` (``len`` in ``0 .. NB``)."""
    return data.StructLayout({
        "t": unsigned(ubits(geom.timesteps)),
        "len": data.ArrayLayout(unsigned(ubits(geom.blocks + 1)), geom.lanes),
    })


# ------------------------------------------------------------------ engine payloads
def spike_word_layout(geom) -> data.StructLayout:
    """Payload of the FP ``spikes`` stream: ``{t, b, spikes}`` (lane ``q`` = bit ``q``)."""
    return data.StructLayout({
        "t": unsigned(ubits(geom.timesteps)),
        "b": unsigned(ubits(geom.blocks)),
        "spikes": unsigned(geom.lanes),
    })


def err_layout(cfg, geom) -> data.StructLayout:
    """Payload of the BP ``err`` stream: ``e[c] = sum_i W[i, jb*P + c] * dv_i[t]``."""
    return data.StructLayout({"t": unsigned(ubits(geom.timesteps)),
                              "jb": unsigned(ubits(geom.col_blocks)),
                              "e": data.ArrayLayout(signed(error_width(cfg, geom)), geom.lanes)})


def dvw_layout(cfg, geom) -> data.StructLayout:
    """The BP ``dvw`` observation port: one block's dv as it is written."""
    return data.StructLayout({"valid": 1, "t": unsigned(ubits(geom.timesteps)),
                              "b": unsigned(ubits(geom.blocks)),
                              "dv": data.ArrayLayout(signed(cfg.arithmetic.dv_bits), geom.lanes)})


def active_column_layout(geom) -> data.StructLayout:
    """An entry of the in-place active-column list: column ``j`` and its ``T`` input-spike bits."""
    return data.StructLayout({
        "j": unsigned(ubits(geom.n_in)),
        "x": unsigned(geom.timesteps),
    })


# ------------------------------------------------------------------- core host side
#: Width of the ``i`` / ``j`` indices of a core command.
IDX_BITS = 16


class Op(enum.Enum, shape=4):
    """Command opcodes of the core's ``cmd`` stream (rtl/core.py)."""
    NOP = 0
    WRITE_W = 1
    READ_W = 2
    WRITE_RNG = 3
    READ_RNG = 4
    SET_LABEL = 5
    TRAIN = 6
    INFER = 7
    UPDATE = 8
    READ_COUNTER = 9
    READ_COUNT = 10
    STATUS = 11
    TRAIN_DS = 12     # train; a hidden core takes ds from ds_in between forward and backward


class Status(enum.Enum, shape=2):
    """Response status codes of the core's ``rsp`` stream."""
    OK = 0
    BAD_OP = 1        # unknown op, or ``update`` in the in-place dataflow
    BAD_INDEX = 2     # index out of range (nothing changed)


class Phase(enum.Enum, shape=2):
    """Phase of the core (low bits of the ``status`` op's data)."""
    IDLE = 0
    FWD = 1
    BWD = 2
    UPD = 3


#: Opcodes by lower-case name (``OPS["write_w"] == 1``).
OPS = {op.name.lower(): op.value for op in Op}
#: Status codes by lower-case name (``STATUS["ok"] == 0``).
STATUS = {s.name.lower(): s.value for s in Status}


def cmd_layout() -> data.StructLayout:
    """Payload of the core's ``cmd`` stream: ``{op, i, j, data}``."""
    return data.StructLayout({"op": Op, "i": unsigned(IDX_BITS), "j": unsigned(IDX_BITS),
                              "data": unsigned(32)})


def rsp_layout() -> data.StructLayout:
    """Payload of the core's ``rsp`` stream: ``{status, data}``."""
    return data.StructLayout({"status": Status, "data": unsigned(32)})


def event_layout(geom) -> data.StructLayout:
    """Payload of the core's ``ev_in`` stream: ``{t, j, end, close}``. ``close`` (no event):
    timestep ``t`` has no more events -- the in-place buffer closes at once instead of
    waiting for the next timestep's first event (the chip's barrier sends it)."""
    return data.StructLayout({"t": unsigned(ubits(geom.timesteps)), "j": unsigned(ubits(geom.n_in)),
                              "end": unsigned(1), "close": unsigned(1)})


def ds_layout(cfg, geom) -> data.StructLayout:
    """Payload of the core's ``ds_in`` stream (hidden layers): ``{t, b, ds[P]}``."""
    return data.StructLayout({"t": unsigned(ubits(geom.timesteps)), "b": unsigned(ubits(geom.blocks)),
                              "ds": data.ArrayLayout(signed(cfg.arithmetic.error_bits), geom.lanes)})


# ------------------------------------------------------------- skewed weight layout
def weight_location(i, j, lanes: int, n_in: int):
    """Bank and address of ``W[i, j]`` (also ``G``) in the ``lanes`` skewed banks.

    ``bank = (i + j) % P``, ``addr = (i // P) * n_in + j`` (docs/core.md). ``i`` and ``j``
    are integers, or Amaranth values (then ``P`` must be a power of two; the address is
    ``mul_const(i >> log2 P, n_in) + j``, one bit wider than the weight depth needs).
    """
    P = lanes
    if isinstance(i, int) and isinstance(j, int):
        return (i + j) % P, (i // P) * n_in + j
    from .geometry import mul_const
    if P & (P - 1):
        raise ValueError(f"weight_location: {P} lanes is not a power of two")
    lp = P.bit_length() - 1
    i, j = Value.cast(i), Value.cast(j)
    bank = (i + j)[:lp] if lp else Value.cast(0)
    return bank, mul_const(i >> lp, n_in) + j


def weight_index(bank: int, addr: int, lanes: int, n_in: int) -> tuple[int, int]:
    """``(i, j)`` of the skewed word at ``(bank, addr)``: the inverse of :func:`weight_location`."""
    b, j = divmod(addr, n_in)
    return b * lanes + (bank - j) % lanes, j
