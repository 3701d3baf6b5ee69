// The pipe harness: a Verilated HostChip clocked in C++, its byte streams on stdin/stdout.
//
// No Python runs per cycle: the host (sim/pipe.py) sends a command, the harness clocks the
// model until the command is done and answers. Commands (stdin, little-endian):
//
//   'W' u32 n, n bytes     queue n bytes for the chip's rx stream (one a cycle while ready)
//   'X' u32 n, n x (u8 kind, u32 v)   queue raw line items (serial mode; byte mode: kind 0
//                          only): 0 the byte v, 1 the byte v with its stop bit low (then
//                          two idle bit times), 2 a glitch (the rx pin low for v cycles,
//                          then high for two bit times), 3 the line idle for v cycles
//   'B' f64 cpb            serial mode: the host's bit period in clock cycles (a baud
//                          mismatch when it differs from the chip's divisor)
//   'F' u32 k, u64 max     clock until k more reply frames (0x00 delimiters) left tx, or max cycles
//   'C' u64 n              clock n cycles
//   'D' u64 n              clock until everything queued has been sent, then n cycles more
//   'Q'                    exit
//
// 'F', 'C' and 'D' answer 'O' u64 cycles_now, u32 rx_left, u32 n, n bytes (what tx sent
// since the last answer). 'W', 'X' and 'B' answer nothing. The top (sim/pipe.py pipe_top)
// resets itself in its first 4 cycles; the harness clocks those before it counts.
//
// Serial mode (compiled with -DPIPE_SERIAL, the top is rtl/top.py SerialHostChip): the
// harness drives the rx pin bit by bit (8N1, LSB first; bit k of an item starts at
// round(k * cpb) cycles after the item's start, cpb from argv[1]) and samples the tx pin
// back into bytes with its own receiver at the same nominal rate (a falling edge starts a
// byte, bits are sampled mid-bit; a stop bit that is low is counted in stderr's summary and
// the byte is kept, so the host sees the corruption).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "Vhostchip.h"
#include "verilated.h"

// Verilator escapes the "__" of Amaranth's port names ("rx__valid") as "___05F".

namespace {

struct Item {
    uint8_t kind;   // 0 byte, 1 byte with a low stop bit, 2 glitch, 3 idle
    uint32_t v;
};

Vhostchip *top;
uint64_t cycles = 0;
std::vector<Item> rxq;
size_t rx_pos = 0;
std::vector<uint8_t> txq;
uint64_t delimiters = 0;

void pop_item() {
    if (++rx_pos == rxq.size()) {
        rxq.clear();
        rx_pos = 0;
    }
}

void push_tx(uint8_t b) {
    txq.push_back(b);
    delimiters += b == 0;
}

#ifdef PIPE_SERIAL
double cpb = 8.0;                 // the host's bit period, cycles
bool item_active = false;         // transmitter (host -> rx pin)
uint64_t item_t0 = 0;
bool rxs_busy = false;            // receiver (tx pin -> host)
uint64_t rxs_next = 0, rxs_t0 = 0;
int rxs_bit = 0;
uint8_t rxs_shift = 0;
bool tx_prev = true;
uint64_t tx_frame_errors = 0;

uint64_t bit_start(int k) { return uint64_t(std::llround(k * cpb)); }

// The rx pin level for this cycle, advancing the item queue.
bool line_level() {
    for (;;) {
        if (rx_pos >= rxq.size()) return true;
        const Item &it = rxq[rx_pos];
        if (!item_active) {
            item_active = true;
            item_t0 = cycles;
        }
        const uint64_t e = cycles - item_t0;
        if (it.kind == 2) {                          // glitch: low v cycles, then 2 bits high
            if (e < it.v) return false;
            if (e < it.v + bit_start(2)) return true;
        } else if (it.kind == 3) {                   // idle
            if (e < it.v) return true;
        } else {
            const int nbits = it.kind == 1 ? 12 : 10;
            if (e < bit_start(nbits)) {
                int k = 0;
                while (bit_start(k + 1) <= e) ++k;
                if (k == 0) return false;                        // start
                if (k <= 8) return (it.v >> (k - 1)) & 1;        // data, LSB first
                if (k == 9) return it.kind != 1;                 // stop (low: a framing error)
                return true;                                     // idle after a bad stop
            }
        }
        item_active = false;
        pop_item();
    }
}

bool tx_idle() { return !item_active && rx_pos >= rxq.size(); }

// The host's receiver on the tx pin: a falling edge starts a byte, bits sampled mid-bit.
void sample_tx(bool tx) {
    if (!rxs_busy) {
        if (tx_prev && !tx) {
            rxs_busy = true;
            rxs_t0 = cycles;
            rxs_bit = 0;
            rxs_shift = 0;
            rxs_next = rxs_t0 + uint64_t(std::llround(0.5 * cpb));
        }
    }
    if (rxs_busy && cycles == rxs_next) {
        if (rxs_bit == 0) {
            if (tx) rxs_busy = false;                            // glitch
        } else if (rxs_bit <= 8) {
            rxs_shift = uint8_t((rxs_shift >> 1) | (tx ? 0x80 : 0));
        } else {
            if (!tx) ++tx_frame_errors;
            push_tx(rxs_shift);
            rxs_busy = false;
        }
        ++rxs_bit;
        rxs_next = rxs_t0 + uint64_t(std::llround((rxs_bit + 0.5) * cpb));
    }
    tx_prev = tx;
}
#else
bool tx_idle() { return rx_pos >= rxq.size(); }
#endif

void tick() {
#ifdef PIPE_SERIAL
    top->rx = line_level();
    top->clk = 0;
    top->eval();
    const bool tx_pin = top->tx;
    top->clk = 1;
    top->eval();
    sample_tx(tx_pin);
#else
    top->rx___05Fvalid = rx_pos < rxq.size();
    top->rx___05Fpayload = top->rx___05Fvalid ? rxq[rx_pos].v : 0;
    top->tx___05Fready = 1;
    top->clk = 0;
    top->eval();
    // The handshakes of this cycle, sampled before the edge that performs them.
    const bool rx_fire = top->rx___05Fvalid && top->rx___05Fready;
    const bool tx_fire = top->tx___05Fvalid;
    const uint8_t tx_byte = top->tx___05Fpayload;
    top->clk = 1;
    top->eval();
    if (rx_fire) pop_item();
    if (tx_fire) push_tx(tx_byte);
#endif
    ++cycles;
}

void read_exact(void *buf, size_t n) {
    if (n && std::fread(buf, 1, n, stdin) != n) std::exit(0);  // host gone: quit quietly
}

template <typename T> T read_le() {
    T v = 0;
    uint8_t b[sizeof(T)];
    read_exact(b, sizeof(T));
    for (size_t i = 0; i < sizeof(T); ++i) v |= T(b[i]) << (8 * i);
    return v;
}

template <typename T> void write_le(T v) {
    uint8_t b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = uint8_t(v >> (8 * i));
    std::fwrite(b, 1, sizeof(T), stdout);
}

void answer() {
    std::fputc('O', stdout);
    write_le<uint64_t>(cycles);
    write_le<uint32_t>(uint32_t(rxq.size() - rx_pos));
    write_le<uint32_t>(uint32_t(txq.size()));
    if (!txq.empty()) std::fwrite(txq.data(), 1, txq.size(), stdout);
    std::fflush(stdout);
    txq.clear();
}

}  // namespace

int main(int argc, char **argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    top = new Vhostchip{ctx.get()};
#ifdef PIPE_SERIAL
    if (argc > 1) cpb = std::atof(argv[1]);
    if (!(cpb >= 2.0)) {
        std::fprintf(stderr, "pipe harness: bad bit period %s\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    top->rx = 1;
#endif
    for (int i = 0; i < 4; ++i) tick();  // the top's power-on reset
    cycles = 0;
    for (;;) {
        int c = std::fgetc(stdin);
        if (c == EOF || c == 'Q') break;
        if (c == 'W') {
            uint32_t n = read_le<uint32_t>();
            std::vector<uint8_t> buf(n);
            read_exact(buf.data(), n);
            for (uint8_t b : buf) rxq.push_back(Item{0, b});
        } else if (c == 'X') {
            uint32_t n = read_le<uint32_t>();
            for (uint32_t i = 0; i < n; ++i) {
                Item it;
                it.kind = read_le<uint8_t>();
                it.v = read_le<uint32_t>();
#ifndef PIPE_SERIAL
                if (it.kind != 0) {
                    std::fprintf(stderr, "pipe harness: line item kind %d needs the serial mode\n", it.kind);
                    return 2;
                }
#endif
                rxq.push_back(it);
            }
        } else if (c == 'B') {
            uint64_t bits = read_le<uint64_t>();
#ifdef PIPE_SERIAL
            std::memcpy(&cpb, &bits, sizeof cpb);
#else
            (void)bits;
#endif
        } else if (c == 'F') {
            uint32_t k = read_le<uint32_t>();
            uint64_t max = read_le<uint64_t>();
            const uint64_t want = delimiters + k, stop = cycles + max;
            while (delimiters < want && cycles < stop) tick();
            answer();
        } else if (c == 'C') {
            uint64_t n = read_le<uint64_t>();
            for (uint64_t i = 0; i < n; ++i) tick();
            answer();
        } else if (c == 'D') {
            uint64_t n = read_le<uint64_t>();
            while (!tx_idle()) tick();
            for (uint64_t i = 0; i < n; ++i) tick();
            answer();
        } else {
            std::fprintf(stderr, "pipe harness: unknown command byte %d\n", c);
            return 2;
        }
    }
#ifdef PIPE_SERIAL
    if (tx_frame_errors)
        std::fprintf(stderr, "pipe harness: %llu bytes from tx had a low stop bit\n",
                     (unsigned long long)tx_frame_errors);
#endif
    top->final();
    delete top;
    return 0;
}
