// The pipe harness: a Verilated HostChip clocked in C++, its byte streams on stdin/stdout.
//
// No Python runs per cycle: the host (sim/pipe.py) sends a command, the harness clocks the
// model until the command is done and answers. Commands (stdin, little-endian):
//
//   'W' u32 n, n bytes     queue n bytes for the chip's rx stream (one a cycle while ready)
//   'F' u32 k, u64 max     clock until k more reply frames (0x00 delimiters) left tx, or max cycles
//   'C' u64 n              clock n cycles
//   'Q'                    exit
//
// 'F' and 'C' answer 'O' u64 cycles_now, u32 rx_left, u32 n, n bytes (what tx sent since the
// last answer). 'W' answers nothing. The top (sim/pipe.py pipe_top) resets itself in its
// first 4 cycles; the harness clocks those before it counts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "Vhostchip.h"
#include "verilated.h"

// Verilator escapes the "__" of Amaranth's port names ("rx__valid") as "___05F".

namespace {

Vhostchip *top;
uint64_t cycles = 0;
std::vector<uint8_t> rxq;
size_t rx_pos = 0;
std::vector<uint8_t> txq;
uint64_t delimiters = 0;

void tick() {
    top->rx___05Fvalid = rx_pos < rxq.size();
    top->rx___05Fpayload = top->rx___05Fvalid ? rxq[rx_pos] : 0;
    top->tx___05Fready = 1;
    top->clk = 0;
    top->eval();
    // The handshakes of this cycle, sampled before the edge that performs them.
    const bool rx_fire = top->rx___05Fvalid && top->rx___05Fready;
    const bool tx_fire = top->tx___05Fvalid;
    const uint8_t tx_byte = top->tx___05Fpayload;
    top->clk = 1;
    top->eval();
    if (rx_fire && ++rx_pos == rxq.size()) {
        rxq.clear();
        rx_pos = 0;
    }
    if (tx_fire) {
        txq.push_back(tx_byte);
        delimiters += tx_byte == 0;
    }
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
    for (int i = 0; i < 4; ++i) tick();  // the top's power-on reset
    cycles = 0;
    for (;;) {
        int c = std::fgetc(stdin);
        if (c == EOF || c == 'Q') break;
        if (c == 'W') {
            uint32_t n = read_le<uint32_t>();
            size_t at = rxq.size();
            rxq.resize(at + n);
            read_exact(rxq.data() + at, n);
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
        } else {
            std::fprintf(stderr, "pipe harness: unknown command byte %d\n", c);
            return 2;
        }
    }
    top->final();
    delete top;
    return 0;
}
