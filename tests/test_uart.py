"""UART (rtl/uart.py) at the serial-bit level, in Verilator.

The pins are driven and watched by cocotbext-uart's ``UartSource``/``UartSink`` (an
independent bit-level model) at the nominal baud rate or off it by a given error; bytes the
receiver delivers are echoed into the transmitter by the testbench (a loopback through
both halves), under random back-pressure. Per configuration (clock, baud, fraction bits):

* random bytes through rx -> testbench -> tx: every byte arrives, in order, unchanged;
* the host side's baud off by a few per cent (near the limit the divisor check allows);
* framing errors (stop bit low, hand-driven bits): the byte is dropped, ``frame_errors``
  counts it, the next bytes arrive; a glitch shorter than half a bit is ignored; bytes that
  nobody takes are dropped and counted in ``overruns``.
"""

from __future__ import annotations

import os
import random

import cocotb
import pytest
from cocotb.triggers import RisingEdge, Timer

from spikeforge.rtl.uart import BaudDivisor, Uart
from spikeforge.sim.cocotb_utils import check, load_params, reset
from spikeforge.sim.runner import run_cocotb


# ------------------------------------------------------------------------ cocotb side
async def _setup(dut):
    p = load_params()
    period_ns = round(1e9 / p.clk_hz)
    dut.rx.value = 1
    dut.tx_data__valid.value = 0
    dut.rx_data__ready.value = 0
    from spikeforge.sim.cocotb_utils import start_clock

    start_clock(dut, period_ns)
    await reset(dut, clock=False)
    return p


async def _echo(dut, rng, ready_p, got):
    """rx_data -> (list, tx_data); ``ready`` high with probability ``ready_p`` per cycle."""
    pending = []
    while True:
        await RisingEdge(dut.clk)
        if int(dut.rx_data__valid.value) and int(dut.rx_data__ready.value):
            b = int(dut.rx_data__payload.value)
            got.append(b)
            pending.append(b)
        if int(dut.tx_data__valid.value) and int(dut.tx_data__ready.value):
            pending.pop(0)
        dut.rx_data__ready.value = int(rng.random() < ready_p)
        if pending:
            dut.tx_data__valid.value = 1
            dut.tx_data__payload.value = pending[0]
        else:
            dut.tx_data__valid.value = 0


async def _send_bits(pin, bits, bit_ns):
    for b in bits:
        pin.value = b
        await Timer(round(bit_ns * 1000), "ps")


def _frame_bits(byte, stop=1):
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


@cocotb.test()
async def uart_loopback(dut):
    from cocotbext.uart import UartSink, UartSource

    p = await _setup(dut)
    seed = p.seed
    dut._log.info(f"seed {seed}")
    rng = random.Random(seed)
    for err in p.host_errors:
        host_baud = p.baud * (1 + err)
        src = UartSource(dut.rx, baud=host_baud)
        sink = UartSink(dut.tx, baud=p.baud)
        got = []
        echo = cocotb.start_soon(_echo(dut, rng, 0.7, got))
        data = bytes(rng.randrange(256) for _ in range(p.n_bytes))
        await src.write(data)
        await src.wait()
        out = bytearray()
        for _ in range(40):                                 # let the last echoes drain
            await Timer(round(12e9 / p.baud), "ns")
            out += sink.read_nowait()
            if len(out) >= len(data):
                break
        echo.cancel()
        src._run_cr.cancel()
        sink._run_cr.cancel()
        dut.rx.value = 1
        check(bytes(got) == data, "receiver lost or changed bytes", seed=seed, host_error=err,
              sent=data.hex(), got=bytes(got).hex())
        check(bytes(out) == data, "transmitter lost or changed bytes", seed=seed, host_error=err,
              sent=data.hex(), out=bytes(out).hex())
        check(int(dut.frame_errors.value) == 0 and int(dut.overruns.value) == 0,
              "error counters moved on good traffic", seed=seed, host_error=err)
        await Timer(round(3e9 / p.baud), "ns")


@cocotb.test()
async def uart_errors(dut):
    p = await _setup(dut)
    seed = p.seed
    dut._log.info(f"seed {seed}")
    rng = random.Random(seed)
    bit_ns = 1e9 / p.baud
    got = []
    echo = cocotb.start_soon(_echo(dut, rng, 1.0, got))
    expect, fe = [], 0
    for _ in range(30):
        b = rng.randrange(256)
        kind = rng.choice(["good", "good", "bad_stop", "glitch"])
        if kind == "bad_stop":
            await _send_bits(dut.rx, _frame_bits(b, stop=0), bit_ns)
            fe += 1
            dut.rx.value = 1                      # line idle again before the next start bit
            await Timer(round(2000 * bit_ns), "ps")
        elif kind == "glitch":
            dut.rx.value = 0
            await Timer(round(300 * bit_ns), "ps")
            dut.rx.value = 1
            await Timer(round(2000 * bit_ns), "ps")
        else:
            await _send_bits(dut.rx, _frame_bits(b), bit_ns)
            expect.append(b)
    await Timer(round(3000 * bit_ns), "ps")
    check(got == expect, "good bytes around framing errors and glitches", seed=seed,
          expect=bytes(expect).hex(), got=bytes(got).hex())
    check(int(dut.frame_errors.value) == fe, "frame_errors", seed=seed, want=fe,
          got=int(dut.frame_errors.value))
    # overruns: nobody takes the bytes; the first waits, the others are dropped and counted
    echo.cancel()
    dut.rx_data__ready.value = 0
    dut.tx_data__valid.value = 0
    for b in (0x11, 0x22, 0x33):
        await _send_bits(dut.rx, _frame_bits(b), bit_ns)
    await Timer(round(bit_ns * 1000), "ps")
    check(int(dut.overruns.value) == 2, "overruns", seed=seed, got=int(dut.overruns.value))
    check(int(dut.rx_data__valid.value) == 1 and int(dut.rx_data__payload.value) == 0x11,
          "the byte that waits is the first one", seed=seed)


# ------------------------------------------------------------------------ pytest side
CONFIGS = [
    # clk_hz, baud, frac_bits, host baud errors
    pytest.param(25e6, 3e6, 4, [0.0, 0.02, -0.02], id="25MHz-3Mbaud-frac4"),
    pytest.param(50e6, 3e6, 0, [0.0, 0.015], id="50MHz-3Mbaud-int17"),    # divisor -1.96 %
    pytest.param(50e6, 3e6, 4, [0.0, 0.03, -0.03], id="50MHz-3Mbaud-frac4"),
    pytest.param(12e6, 115200, 0, [0.0, 0.02], id="12MHz-115200-int"),
]


def _seed():
    return int(os.environ.get("SPIKEFORGE_SEED", random.randrange(1 << 30)))


@pytest.mark.parametrize("clk_hz,baud,frac_bits,host_errors", CONFIGS)
def test_uart(clk_hz, baud, frac_bits, host_errors):
    seed = _seed()
    print(f"seed {seed} (SPIKEFORGE_SEED={seed} to repeat)")
    n_bytes = 40 if baud < 1e6 else 150
    run_cocotb(name="uart", component=lambda: Uart(clk_hz, baud, frac_bits=frac_bits),
               test_module=__name__, build_key={"clk": clk_hz, "baud": baud, "frac": frac_bits},
               params={"seed": seed, "clk_hz": clk_hz, "baud": baud, "host_errors": host_errors,
                       "n_bytes": n_bytes})


def test_divisor_refused_with_numbers():
    with pytest.raises(ValueError, match=r"25 MHz / 3e\+06 baud needs a divisor of 8\.3333.*"
                                         r"3,125,000 baud \(\+4\.17 %\).*2 % limit"):
        BaudDivisor(25e6, 3e6, frac_bits=0)
    with pytest.raises(ValueError, match="clock cycles per bit"):
        BaudDivisor(10e6, 3e6)
    with pytest.raises(ValueError, match="frac_bits"):
        BaudDivisor(25e6, 3e6, frac_bits=-1)
    d = BaudDivisor(50e6, 3e6, frac_bits=0)
    assert d.div == 17 and abs(d.error + 0.0196) < 1e-3
    d = BaudDivisor(25e6, 3e6)
    assert d.div == 133 and abs(d.error) < 0.003


@pytest.mark.parametrize("clk_hz,baud,frac_bits", [(25e6, 3e6, 4), (50e6, 3e6, 0), (100e6, 9600, 8)])
def test_lint(clk_hz, baud, frac_bits):
    """Verilator -Wall with only the project's waiver file (as tests/test_lint.py does)."""
    from spikeforge.gen.verilog import write_verilog
    from spikeforge.sim.runner import build_root, lint_verilog

    vfile = build_root() / "lint" / f"uart-{clk_hz:g}-{baud:g}-{frac_bits}.v"
    write_verilog(Uart(clk_hz, baud, frac_bits=frac_bits), vfile, name="uart")
    lint_verilog(vfile, "uart")
