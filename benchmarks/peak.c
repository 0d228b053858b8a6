/* The cores' fp32 ceiling, for benchmarks/bench.py: fused multiply-adds in independent chains, nothing else.

   Each function runs CHAINS independent accumulators of W-bit vectors through acc = acc * a + b for
   `iters` rounds and returns the rate in GFLOP/s (a multiply-add is 2 FLOPs, as in ktlib.compute.model's count).
   Sixteen chains cover any FMA latency times the FMA units of current x86 and Arm cores, so the loop is
   bound by FMA throughput alone. Where AVX-512 is missing on x86 there are only sixteen vector registers, and sixteen
   chains plus the two operands would spill, so twelve run there (enough for up to six cycles of latency on two FMA
   units). kt_fma_chains says how many. Compiled by bench.py with the engine's compiler and flags, so each width
   becomes what the engine's own vectors become on this machine. */
#include <time.h>

#if defined(__x86_64__) && !defined(__AVX512F__)
#define CHAINS 12
#else
#define CHAINS 16
#endif

#define PEAK(W)                                                                                  \
    typedef float v##W __attribute__((vector_size(W / 8)));                                      \
    double kt_fma_peak_##W(long iters, float *sink) {                                            \
        v##W acc[CHAINS], a = (v##W){0} + 1.0000001f, b = (v##W){0} + 0.9999999f;                \
        for (int i = 0; i < CHAINS; i++) acc[i] = (v##W){0} + (float)i;                          \
        struct timespec t0, t1;                                                                  \
        __asm__ volatile("" : "+m"(a), "+m"(b)); /* unknown to the compiler: nothing is folded */ \
        clock_gettime(CLOCK_MONOTONIC, &t0);                                                     \
        for (long it = 0; it < iters; it++)                                                      \
            for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * a + b;                            \
        clock_gettime(CLOCK_MONOTONIC, &t1);                                                     \
        v##W s = acc[0];                                                                         \
        for (int i = 1; i < CHAINS; i++) s += acc[i];                                            \
        *sink = s[0]; /* the sums are used: the loop cannot be dropped */                        \
        double seconds = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);            \
        return 2.0 * (W / 32) * CHAINS * (double)iters / seconds / 1e9;                          \
    }

int kt_fma_chains(void) { return CHAINS; }

PEAK(512)
PEAK(256)
PEAK(128)
