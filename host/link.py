"""A chip driven over the host link: :class:`LinkChip` speaks docs/protocol.md to any byte
transport -- the simulated chip (``spikeforge.sim.pipe.PipeSim``), a board's UART
(:class:`SerialTransport`) -- and implements :class:`~spikeforge.host.chip.Chip`, so host
code (``spikeforge train --backend sim``, federated workers) drives it like the model.

A transport has one method, ``exchange(frame) -> bytes``: send the encoded request, return
what came back up to the first frame delimiter (or raise ``TimeoutError``). Lost or
corrupted replies are retried with the same ``seq`` (the device answers a retry from its
reply cache without executing the request twice, docs/protocol.md section 3).
"""

from __future__ import annotations

import struct

import torch

from . import protocol as hp
from .chip import Chip

__all__ = ["LinkChip", "LinkError", "SerialTransport", "link_rows"]


class LinkError(RuntimeError):
    """The chip answered a request with an error status, or never answered it."""

    def __init__(self, msg: str, status: int | None = None):
        super().__init__(msg)
        self.status = status


def link_rows(geometry, layer: int):
    """``(core, local row, layer row)`` of every neuron of weight layer ``layer``."""
    return [(pl.core, i, pl.offset + i) for pl in geometry.layer_cores(layer)
            for i in range(pl.geom.n_neurons)]


def _status_name(code: int) -> str:
    try:
        return hp.Status(code).name.lower()
    except ValueError:
        return f"status {code}"


class LinkChip(Chip):
    """The :class:`Chip` API over a protocol byte transport (see the module doc).

    Checks on connecting that the device is the chip of ``cfg`` (``version``: timesteps,
    layer sizes, core count) and raises ``ValueError`` naming the difference otherwise.
    ``counters()`` adds the bytes this host sent and received (``link_tx_bytes``,
    ``link_rx_bytes``) to the device's sample count.
    """

    def __init__(self, cfg, transport, geometry=None, *, retries: int = 3):
        from ..rtl.geometry import ChipGeometry

        super().__init__(cfg)
        self.transport, self.retries = transport, retries
        self.geometry = ChipGeometry.from_config(cfg) if geometry is None else geometry
        self.seq = 0
        self.tx_bytes = self.rx_bytes = 0
        #: bytes sent and received per op (retries included): ``{op name: [tx, rx]}``
        self.op_bytes: dict[str, list[int]] = {}
        self.retried = 0
        self._count = {"samples_trained": 0, "updates": 0, "samples_inferred": 0,
                       "weight_loads": 0, "weight_reads": 0}
        self.version = hp.unpack_version(self.request(hp.Op.VERSION))
        v, net = self.version, cfg.network
        want = (net.timesteps, tuple(net.layers), len(self.geometry.cores))
        got = (v.timesteps, tuple(v.layers), v.n_cores)
        if got != want:
            raise ValueError(f"the chip on the link is T={got[0]}, layers {list(got[1])}, {got[2]} cores; "
                             f"the config wants T={want[0]}, layers {list(want[1])}, {want[2]} cores")
        self.inplace = not (v.features & hp.Feature.UPDATE)
        # Words per frame: a request holds max_payload bytes; a reply at most max_reply
        # (2,032 bytes, docs/protocol.md section 6; `version` does not report it) = 1,016 i16.
        self._w_per_write = (v.max_payload - 7) // 2
        self._w_per_read = min(1016, self._w_per_write)

    # ------------------------------------------------------------------ one request
    def request(self, op: int, payload: bytes = b"") -> bytes:
        """Send one request and return its reply's payload; raises :class:`LinkError` on an
        error status or when no good reply came after ``retries`` retries."""
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        name = hp.Op(op).name.lower() if op in {int(o) for o in hp.Op} else f"op {op:#04x}"
        frame = hp.encode_frame(seq, op, payload)
        acct = self.op_bytes.setdefault(name, [0, 0])
        last = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                frame = hp.encode_frame(seq, op, payload, lead=True)
            self.tx_bytes += len(frame)
            acct[0] += len(frame)
            try:
                out = self.transport.exchange(frame)
            except TimeoutError as e:
                last = f"no reply ({e})"
                continue
            self.rx_bytes += len(out)
            acct[1] += len(out)
            reply = self._reply(out, seq)
            if reply is None:
                last = "a corrupted reply"
                continue
            if reply.code != hp.Status.OK:
                raise LinkError(f"{name}: the chip answered {_status_name(reply.code)}", reply.code)
            return reply.payload
        raise LinkError(f"{name}: {last} after {self.retries} retries")

    @staticmethod
    def _reply(out: bytes, seq: int) -> hp.Frame | None:
        for body in hp.FrameSplitter().feed(out):
            try:
                f = hp.decode_body(body)
            except hp.FrameError:
                continue
            if f.seq == seq:
                return f
        return None

    # ------------------------------------------------------------------ the Chip API
    def load_weights(self, weights: list[torch.Tensor]) -> None:
        sizes = self.cfg.network.layers
        bits = self.cfg.arithmetic.weight_bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for l, w in enumerate(weights):
            if tuple(w.shape) != (sizes[l + 1], sizes[l]):
                raise ValueError(f"layer {l}: weights of shape {tuple(w.shape)}, expected "
                                 f"({sizes[l + 1]}, {sizes[l]})")
            if w.dtype.is_floating_point or w.dtype == torch.bool:
                raise ValueError(f"layer {l}: weights of dtype {w.dtype}, expected an integer dtype")
            if w.numel() and (int(w.min()) < lo or int(w.max()) > hi):
                raise ValueError(f"layer {l}: weights outside the {bits}-bit range [{lo}, {hi}]")
        for l, w in enumerate(weights):
            rows = w.tolist()
            for core, i, row in link_rows(self.geometry, l):
                for c0 in range(0, sizes[l], self._w_per_write):
                    words = rows[row][c0:c0 + self._w_per_write]
                    self.request(hp.Op.WRITE_WEIGHTS, hp.pack_write_weights(core, i, c0, words))
        self._count["weight_loads"] += 1

    def read_weights(self) -> list[torch.Tensor]:
        sizes = self.cfg.network.layers
        out = []
        for l in range(len(sizes) - 1):
            w = [[0] * sizes[l] for _ in range(sizes[l + 1])]
            for core, i, row in link_rows(self.geometry, l):
                for c0 in range(0, sizes[l], self._w_per_read):
                    n = min(self._w_per_read, sizes[l] - c0)
                    w[row][c0:c0 + n] = hp.unpack_weights(
                        self.request(hp.Op.READ_WEIGHTS, hp.pack_read_weights(core, i, c0, n)))
            out.append(torch.tensor(w, dtype=torch.int64))
        self._count["weight_reads"] += 1
        return out

    def _sample(self, op: int, raster: torch.Tensor, label: int) -> torch.Tensor:
        counts = self.request(op, hp.pack_sample(raster.tolist(), label))
        return torch.tensor(list(counts), dtype=torch.int64)

    def train_batch(self, spikes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        counts = torch.stack([self._sample(hp.Op.TRAIN, self._raster(s), int(y))
                              for s, y in zip(spikes, labels)])
        if not self.inplace:
            self.request(hp.Op.UPDATE)
        self._count["samples_trained"] += int(labels.shape[0])
        self._count["updates"] += 1
        return counts

    def infer(self, spikes: torch.Tensor) -> torch.Tensor:
        single = spikes.dim() == 2
        x = spikes[None] if single else spikes
        counts = torch.stack([self._sample(hp.Op.INFER, self._raster(s), hp.NO_LABEL) for s in x])
        self._count["samples_inferred"] += int(x.shape[0])
        return counts[0] if single else counts

    def counters(self) -> dict[str, int]:
        state, flags, samples = struct.unpack("<BBI", self.request(hp.Op.STATUS))
        return {**self._count, "device_samples": samples, "link_tx_bytes": self.tx_bytes,
                "link_rx_bytes": self.rx_bytes, "link_retries": self.retried}

    def set_seeds(self, lfsr_seed: int) -> None:
        """Load the model's per-neuron xorshift32 states (``model.fixedpoint.neuron_seeds``)."""
        from ..model import fixedpoint as fx

        if not self.version.features & hp.Feature.STOCHASTIC:
            return                                   # nearest rounding: no rounding streams
        layers = self.cfg.network.layers
        per = (self.version.max_payload - 5) // 4
        for l in range(len(layers) - 1):
            seeds = fx.neuron_seeds(lfsr_seed, l, layers[l + 1]).tolist()
            for pl in self.geometry.layer_cores(l):
                mine = seeds[pl.offset:pl.offset + pl.geom.n_neurons]
                for f in range(0, len(mine), per):
                    self.request(hp.Op.SET_SEEDS, hp.pack_seeds(pl.core, f, mine[f:f + per]))


class SerialTransport:
    """The host link over a serial port (pyserial): a board's UART.

    ``timeout`` (seconds) bounds the wait for a reply; a reply that does not come in time
    raises ``TimeoutError`` and :class:`LinkChip` retries the request.
    """

    def __init__(self, port: str, baud: int = 3_000_000, timeout: float = 1.0):
        import serial  # pyserial

        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=timeout)
        except serial.SerialException as e:
            raise OSError(f"cannot open serial port {port}: {e}") from None

    def exchange(self, frame: bytes) -> bytes:
        self.port.write(frame)
        out = self.port.read_until(b"\x00")
        if not out.endswith(b"\x00"):
            raise TimeoutError(f"no reply within {self.port.timeout} s on {self.port.port}")
        return out

    def close(self) -> None:
        self.port.close()
