/* The net of ktlib.compute.model, forward and backward, for ktlib.compute.engine's "native" path. What the engine
   computes and why it equals the plain path is explained once, in the book's method chapter (book/method.md); the
   comments here say how this file does it.

   Sixteen images sit in the lanes of one vector (`vec`; eight with AVX2, whose registers hold eight floats), so
   every operation of the net, whatever the layer's shape, is a vector operation, and a whole training step of a run
   is one pass through this file. A sum over a batch's images (a weight's gradient) adds each image's term into one
   of 16 places, image i into place i mod 16, over the batch in order, then adds the 16 places by one tree (`hsum16`);
   C5's weight gradient takes the images out of the lanes and adds them in batch order (`c5_weight_grads`). Either
   way, the same sums whatever the vector width.
   The parameters are the engine's: the net's own times 2S. A layer computes z = 2S a straight from them,
   keeps sigma = sigmoid(z), and hands on y = A tanh(S a) = 2A sigma - A; a sub-sampling layer's input is
   the sum of y over each 2x2 tile.

   Built by ktlib/compute/native.py with the machine's C compiler; GCC's vector extensions become AVX-512, AVX2
   or NEON instructions as the machine has them. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Images per vector, L: 16, or 8 with AVX2 alone, where a vector of 16 floats would not be one register (GCC keeps
   such vectors in memory). A sum over images has 16 places (above): PARTS vectors of L of them. */
#if !defined(__AVX512F__) && defined(__AVX2__)
#define L 8
#else
#define L 16
#endif
#define PARTS (16 / L)
typedef float vec __attribute__((vector_size(4 * L)));
typedef int32_t ivec __attribute__((vector_size(4 * L)));

#define A 1.7159f
#define CHUNKS (32 / L)  /* a training batch of up to 32 images: two or four vectors' worth */

/* Register blocking: how many sums the busiest loops keep side by side. Enough independent sums hide a multiply-add's
   latency (a core that starts two each cycle, four cycles apart, needs eight), and should stay in a register. A
   vector is one register with AVX-512 (32 of them) and with AVX2 (16, eight images a vector). The AVX2 build takes
   the AVX-512 build's blocks but for S2's input gradient (half a row). Timed on an AMD Zen 4, where only those two
   were varied for it, five columns for a kernel's gradient were the fastest tried even though a sum over images, in
   two parts there, then needs more sums than registers (20, against 12 for three columns and 8 for two). Elsewhere (SSE2, NEON: not measured) a vector of 16 floats
   takes four registers, and the smaller blocks are kept. Chosen by the build's instructions, or given with -D (the
   tests build three candidates). Each sum adds its terms in the same order whatever the blocking, so every candidate
   computes the same bits. */
#if defined(__AVX512F__) || defined(__AVX2__)
#define KT_WIDE 1
#else
#define KT_WIDE 0
#endif
#ifndef KT_C1_POSITIONS
#define KT_C1_POSITIONS (KT_WIDE ? 2 : 1)   /* C1: output positions of a row (a divisor of 28), 6 maps each */
#endif
#ifndef KT_C3_POSITIONS
#define KT_C3_POSITIONS (KT_WIDE ? 10 : 5)  /* C3: output positions of a row (a divisor of 10) */
#endif
#ifndef KT_FULL
#define KT_FULL (KT_WIDE ? 8 : 4)           /* C5, F6: outputs (forward), inputs (backward): 4 or 8 */
#endif
#ifndef KT_C5_GRAD_OUTPUTS
#define KT_C5_GRAD_OUTPUTS (KT_WIDE ? 8 : 4)  /* C5's weight gradient: outputs side by side (a divisor of 120, <= 8) */
#endif
#ifndef KT_KERNEL_COLUMNS
#define KT_KERNEL_COLUMNS (KT_WIDE ? 5 : 2)   /* a 5x5 kernel's gradient: columns a pass, two sums each (1 to 5) */
#endif
#ifndef KT_DY_SPAN
#if defined(__AVX512F__)
#define KT_DY_SPAN 14                         /* dL/dy of S2: sums of an input row side by side (a divisor of 14) */
#else
#define KT_DY_SPAN 7
#endif
#endif

/* Parameters per layer, in the order of stacked.slots: C1 w b, S2 coef b, C3 w b, S4 coef b, C5 w b, F6 w b. */
static const int LAYER_SIZE[6] = {156, 12, 2416, 32, 48120, 2420};

typedef struct {
    const float *c1w, *c1b, *s2c, *s2b, *c3w, *c3b, *s4c, *s4b, *c5w, *c5b, *f6w, *f6b;
    int c3_used[16][6], c3_count[16];  /* C3's inputs per output map (c3_inputs), found once per run and call */
} Params;

/* One chunk of L images: each layer's activations (sigma) and its input; the backward pass overwrites
   each sigma with dL/dz of its layer. */
typedef struct {
    vec in[1024];                            /* the input of the first trained layer */
    vec s1[6 * 784], q1[6 * 196], s2[6 * 196], y2[6 * 196];
    vec s3[16 * 100], q3[16 * 25], s4[400], y4[400], s5[120], y5[120], s6[20];
    vec valid;                               /* 1 in the lanes that hold an image, 0 in padding */
} Chunk;

#define OFF(member) offsetof(Chunk, member)

/* The helpers below are always inlined, so that the vectors stay in registers. */
#define INLINE static inline __attribute__((always_inline))

/* The member of a chunk at byte offset `off` (offsetof): one layer's code serves the layers of its kind. */
static inline vec *field(Chunk *c, size_t off) { return (vec *)((char *)c + off); }

/* B(w): a weight, or any float a vector is multiplied by or added to: GCC puts w in every lane. */
#define B(w) (w)

INLINE vec splat(float a) { return (vec){0} + a; }  /* 0 + a in every lane (so -0 becomes +0) */

/* a > b ? a : b, lane by lane, and a < b ? a : b: with AVX-512 or AVX2, the one instruction that is defined as
   exactly that (vmaxps, vminps); elsewhere, as a mask and a select. */
INLINE vec vmax(vec a, float b) {
#if defined(__AVX512F__)
    return (vec)_mm512_max_ps((__m512)a, _mm512_set1_ps(b));
#elif defined(__AVX2__)
    return (vec)_mm256_max_ps((__m256)a, _mm256_set1_ps(b));
#else
    ivec m = a > splat(b);
    return (vec)(((ivec)a & m) | ((ivec)splat(b) & ~m));
#endif
}

INLINE vec vmin(vec a, float b) {
#if defined(__AVX512F__)
    return (vec)_mm512_min_ps((__m512)a, _mm512_set1_ps(b));
#elif defined(__AVX2__)
    return (vec)_mm256_min_ps((__m256)a, _mm256_set1_ps(b));
#else
    ivec m = a < splat(b);
    return (vec)(((ivec)a & m) | ((ivec)splat(b) & ~m));
#endif
}

/* exp(x) by range reduction to [-ln2/2, ln2/2] and Cephes' expf polynomial (about 1 ulp). */
INLINE vec vexp(vec x) {
    x = vmin(vmax(x, -87.0f), 88.0f);
    vec k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    vec r = x - k * 0.693359375f + k * 2.12194440e-4f;
    vec p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
#if defined(__AVX512F__)
    return (vec)_mm512_scalef_ps((__m512)p, (__m512)k);  /* p 2^k in one instruction: the same product */
#else
    ivec e = (__builtin_convertvector(k, ivec) + 127) << 23;  /* 2^k, built in the exponent bits */
    return p * (vec)e;
#endif
}

INLINE vec sigmoid(vec z) { return 1.0f / (1.0f + vexp(-z)); }
INLINE vec slope(vec s) { return s * (1.0f - s); }  /* sigmoid' from sigmoid */

/* for (k ...) over a batch's chunks, h = k's part: PARTS chunks a pass, so that h is a constant where the loop is
   unrolled (a part's sum then stays in a register). Each part still takes its chunks in order. nch must be a multiple
   of PARTS: kt_gradients pads a batch to whole groups of 16 images. */
#define EACH_CHUNK(k, h, nch) \
    for (int k##0 = 0; k##0 < (nch); k##0 += PARTS) for (int h = 0, k = k##0; h < PARTS; h++, k++)

/* The sum of a sum's 16 places (the PARTS vectors `part`: places 0..L-1 in part[0], L..2L-1 in part[1]), as a tree:
   place l plus place l + 8, then l + 4, l + 2, l + 1. */
INLINE float hsum16(const vec *part) {
#if L == 16
    vec v = part[0];
    v += __builtin_shuffle(v, (ivec){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (ivec){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
    v += __builtin_shuffle(v, (ivec){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    v += __builtin_shuffle(v, (ivec){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#else
    vec v = part[0] + part[1];
    v += __builtin_shuffle(v, (ivec){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (ivec){2, 3, 0, 1, 6, 7, 4, 5});
    v += __builtin_shuffle(v, (ivec){1, 0, 3, 2, 5, 4, 7, 6});
#endif
    return v[0];
}

/* Sixteen sums at once, each by hsum16's own tree (an addition's operands may come in either order: swapping them is
   exact), into out[0..16): out[j] = hsum16(t[j]). Each round adds the halves of two sums' partial sums side by side,
   halving the vectors: with 16 lanes, 15 additions and 30 shuffles for what hsum16 does in 64 and 64. */
INLINE void hsums16(vec t[16][PARTS], float *out) {
#if L == 16
    static const ivec a[4] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                              {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                              {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                              {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}};
    static const ivec b[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                              {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
                              {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
                              {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
    vec v[16];
    for (int j = 0; j < 16; j++) v[j] = t[j][0];
    for (int s = 0, m = 16; s < 4; s++, m /= 2)  /* v[0..m) -> v[0..m/2) */
        for (int j = 0; j < m / 2; j++)
            v[j] = __builtin_shuffle(v[2 * j], v[2 * j + 1], a[s]) + __builtin_shuffle(v[2 * j], v[2 * j + 1], b[s]);
    memcpy(out, &v[0], sizeof(vec));
#else
    /* Round 1 adds each sum's two parts (place l + 8); round 2 the 4-lane halves of two sums' (l + 4); rounds 3 and 4
       pairs within 4 lanes (l + 2, l + 1), which leaves sum j at lane 0 4 1 5 2 6 3 7 of its group of eight: put in
       place by a shuffle, which only moves values. */
    static const ivec lo[3] = {{0, 1, 2, 3, 8, 9, 10, 11}, {0, 1, 8, 9, 4, 5, 12, 13}, {0, 2, 8, 10, 4, 6, 12, 14}};
    static const ivec hi[3] = {{4, 5, 6, 7, 12, 13, 14, 15}, {2, 3, 10, 11, 6, 7, 14, 15}, {1, 3, 9, 11, 5, 7, 13, 15}};
    vec v[16];
    for (int j = 0; j < 16; j++) v[j] = t[j][0] + t[j][1];
    for (int s = 0, m = 16; s < 3; s++, m /= 2)
        for (int j = 0; j < m / 2; j++)
            v[j] = __builtin_shuffle(v[2 * j], v[2 * j + 1], lo[s]) + __builtin_shuffle(v[2 * j], v[2 * j + 1], hi[s]);
    for (int h = 0; h < 2; h++) {
        vec in_place = __builtin_shuffle(v[h], (ivec){0, 4, 1, 5, 2, 6, 3, 7});
        memcpy(out + 8 * h, &in_place, sizeof(vec));
    }
#endif
}

INLINE void store(float *dst, vec v) { memcpy(dst, &v, sizeof v); }  /* dst need not be aligned */

/* ---------------------------------------------------------------- forward */

/* C1: 32x32 image -> 6 maps of 28x28, KT_C1_POSITIONS positions of a row at a time (6 sums each) */
static void c1_forward(const Params *P, const vec *x, vec *s1) {
    enum { W = KT_C1_POSITIONS };
    for (int oy = 0; oy < 28; oy++)
        for (int ox = 0; ox < 28; ox += W) {
            vec acc[W][6];
            for (int k = 0; k < 6; k++)
                for (int j = 0; j < W; j++) acc[j][k] = splat(P->c1b[k]);
            for (int p = 0; p < 5; p++)
                for (int q = 0; q < 5; q++)
                    for (int k = 0; k < 6; k++) {
                        __typeof__(B(0.0f)) wk = B(P->c1w[k * 25 + p * 5 + q]);
                        for (int j = 0; j < W; j++) acc[j][k] += wk * x[(oy + p) * 32 + ox + q + j];
                    }
            for (int k = 0; k < 6; k++)
                for (int j = 0; j < W; j++) s1[k * 784 + oy * 28 + ox + j] = sigmoid(acc[j][k]);
        }
}

/* A sub-sampling layer's input: the sum of y = 2A sigma - A over each 2x2 tile of `maps` side x side maps. */
static void tile_sums(const vec *s, vec *q, int maps, int side) {
    int h = side / 2;
    for (int m = 0; m < maps; m++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < h; j++) {
                const vec *t = s + m * side * side + 2 * i * side + 2 * j;
                q[m * h * h + i * h + j] = (2 * A) * ((t[0] + t[side]) + (t[1] + t[side + 1])) - 4 * A;
            }
}

/* S2, S4: z = coef q + bias per map */
static void sub_forward(const float *coef, const float *bias, const vec *q, vec *s, vec *y, int maps, int size) {
    for (int m = 0; m < maps; m++)
        for (int i = 0; i < size; i++) {
            vec sv = sigmoid(B(coef[m]) * q[m * size + i] + B(bias[m]));
            s[m * size + i] = sv;
            y[m * size + i] = (2 * A) * sv - A;
        }
}

/* Which input maps each of C3's 16 output maps reads: those whose 5x5 kernel has a weight that is not 0. The
   pairs C3's connection table leaves out have zero kernels, and a zero kernel's terms would add exact
   zeros: skipping them changes no sum. Fills used[o] with output map o's inputs in order, and count[o]. */
static void c3_inputs(const float *w, int used[16][6], int count[16]) {
    for (int o = 0; o < 16; o++) {
        count[o] = 0;
        for (int c = 0; c < 6; c++) {
            const float *k = w + o * 150 + c * 25;
            int nonzero = 0;
            for (int j = 0; j < 25; j++) nonzero |= k[j] != 0.0f;
            if (nonzero) used[o][count[o]++] = c;
        }
    }
}

/* C3: 6 maps of 14x14 -> 16 maps of 10x10, KT_C3_POSITIONS sums of an output row side by side; each sum adds its
   terms input map by input map, kernel row by row, column by column: the order the record's numbers were computed
   in, so that they stay the same to the bit. */
static void c3_forward(const Params *P, const vec *x, vec *s3) {
    enum { W = KT_C3_POSITIONS };
    for (int o = 0; o < 16; o++)
        for (int oy = 0; oy < 10; oy++)
            for (int j0 = 0; j0 < 10; j0 += W) {
                vec acc[W];
                for (int j = 0; j < W; j++) acc[j] = splat(P->c3b[o]);
                for (int u = 0; u < P->c3_count[o]; u++) {
                    int c = P->c3_used[o][u];
                    const float *w = P->c3w + o * 150 + c * 25;
                    for (int p = 0; p < 5; p++) {
                        const vec *xr = x + c * 196 + (oy + p) * 14 + j0;
                        for (int q = 0; q < 5; q++)
                            for (int j = 0; j < W; j++) acc[j] += B(w[p * 5 + q]) * xr[j + q];
                    }
                }
                for (int j = 0; j < W; j++) s3[o * 100 + oy * 10 + j0 + j] = sigmoid(acc[j]);
            }
}

/* Outputs o..o+W of a fully connected layer: W sums side by side (W at most 8), each over the inputs in order from
   its bias. Inlined with W a constant, so that the sums stay in registers. */
INLINE void full_block(const float *w, const float *b, const vec *x, vec *s, vec *y, int o, int I, int W) {
    vec acc[8];
    for (int j = 0; j < W; j++) acc[j] = splat(b[o + j]);
    for (int i = 0; i < I; i++)
        for (int j = 0; j < W; j++) acc[j] += B(w[(o + j) * I + i]) * x[i];
    for (int j = 0; j < W; j++) {
        s[o + j] = sigmoid(acc[j]);
        if (y) y[o + j] = (2 * A) * s[o + j] - A;
    }
}

/* C5, F6: fully connected, I inputs -> O outputs (O a multiple of 4): KT_FULL at a time, then 4 */
static void full_forward(const float *w, const float *b, const vec *x, vec *s, vec *y, int O, int I) {
    int o = 0;
    for (; o + KT_FULL <= O; o += KT_FULL) full_block(w, b, x, s, y, o, I, KT_FULL);
    for (; o < O; o += 4) full_block(w, b, x, s, y, o, I, 4);
}

static void forward(const Params *P, Chunk *c, int n) {
    if (n <= 0) c1_forward(P, c->in, c->s1);
    if (n <= 1) {
        if (n < 1) tile_sums(c->s1, c->q1, 6, 28);
        sub_forward(P->s2c, P->s2b, n == 1 ? c->in : c->q1, c->s2, c->y2, 6, 196);
    }
    if (n <= 2) c3_forward(P, n == 2 ? c->in : c->y2, c->s3);
    if (n <= 3) {
        if (n < 3) tile_sums(c->s3, c->q3, 16, 10);
        sub_forward(P->s4c, P->s4b, n == 3 ? c->in : c->q3, c->s4, c->y4, 16, 25);
    }
    if (n <= 4) full_forward(P->c5w, P->c5b, n == 4 ? c->in : c->y4, c->s5, c->y5, 120, 400);
    full_forward(P->f6w, P->f6b, n == 5 ? c->in : c->y5, c->s6, 0, 20, 120);
}

/* ---------------------------------------------------------------- backward: chunk by chunk within each layer */

/* C5's weight gradient, sum over the batch of g x^T, as a matrix product: images out of the lanes first. */
static void c5_weight_grads(Chunk *ch, int nch, size_t g_off, size_t x_off, float *gw) {
    static _Thread_local float xt[CHUNKS * L][400] __attribute__((aligned(64))), gt[CHUNKS * L][120];
    int nl = nch * L;
    for (int k = 0; k < nch; k++) {
        const vec *g = field(&ch[k], g_off), *x = field(&ch[k], x_off);
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < 400; i++) xt[k * L + l][i] = x[i][l];
            for (int o = 0; o < 120; o++) gt[k * L + l][o] = g[o][l];
        }
    }
    enum { W = KT_C5_GRAD_OUTPUTS };
    for (int o = 0; o < 120; o += W)
        for (int i = 0; i < 400; i += L) {
            vec acc[W];
            for (int j = 0; j < W; j++) acc[j] = splat(0.0f);
            for (int l = 0; l < nl; l++) {
                vec xv = *(const vec *)&xt[l][i];
                for (int j = 0; j < W; j++) acc[j] += B(gt[l][o + j]) * xv;
            }
            for (int j = 0; j < W; j++) store(gw + (o + j) * 400 + i, acc[j]);
        }
}

/* F6's weight gradients when its inputs are the data (n = 5), from the input rows as they lie in memory (rows[i]:
   image i's 120 inputs; padding reads a row of zeros): the sums full_backward's lane sums make, each weight's terms
   into 16 places (image i into place i mod 16, in batch order) and the places added by hsum16's tree, computed with L
   weights in the lanes of each place's vector instead of L images, so that no image moves into lanes and the tree
   needs no shuffles. 120 = 7 x 16 + 8: with 16 lanes, the last 8 weights take a vector of 8. */
typedef float vec8 __attribute__((vector_size(32)));
#define F6_ROWS_BLOCK(V, W)                                                                                      \
    do {                                                                                                          \
        V q[8];                                                                                                   \
        for (int l = 0; l < 8; l++) { /* place l plus place l + 8: the tree's first round */                      \
            V a = (V){0}, b = (V){0}, xv;                                                                         \
            memcpy(&xv, rows[l] + i0, sizeof xv);                                                                 \
            a += B(g[l]) * xv;                                                                                    \
            memcpy(&xv, rows[l + 8] + i0, sizeof xv);                                                             \
            b += B(g[l + 8]) * xv;                                                                                \
            if (two) {                                                                                            \
                memcpy(&xv, rows[l + 16] + i0, sizeof xv);                                                        \
                a += B(g[l + 16]) * xv;                                                                           \
                memcpy(&xv, rows[l + 24] + i0, sizeof xv);                                                        \
                b += B(g[l + 24]) * xv;                                                                           \
            }                                                                                                     \
            q[l] = a + b;                                                                                         \
        }                                                                                                         \
        for (int l = 0; l < 4; l++) q[l] += q[l + 4];                                                             \
        for (int l = 0; l < 2; l++) q[l] += q[l + 2];                                                             \
        q[0] += q[1];                                                                                             \
        memcpy(gw + o * 120 + i0, &q[0], W * sizeof(float));                                                      \
    } while (0)

static void f6_weight_grads_rows(Chunk *ch, int nch, const float *const *rows, float *gw) {
    int two = nch * L > 16;  /* a batch of 17 to 32 images: two to a place */
    for (int o = 0; o < 20; o++) {
        float g[32];  /* dL/dz of output o, image by image */
        for (int k = 0; k < nch; k++) memcpy(g + k * L, &ch[k].s6[o], sizeof(vec));
        int i0 = 0;
        for (; i0 + L <= 120; i0 += L) F6_ROWS_BLOCK(vec, L);
#if L == 16
        F6_ROWS_BLOCK(vec8, 8);
#endif
    }
}

/* A fully connected layer; g (dL/dz, O per chunk) -> weight and bias gradients, and, when `below` is given,
   dL/dz of the layer below: dL/dy W, times dy/dz = 2A sigma (1 - sigma), written over its sigma. */
static void full_backward(Chunk *ch, int nch, size_t g_off, size_t x_off, size_t below_off, int has_below,
                          const float *w, float *gw, float *gb, int O, int I, const float *const *rows) {
    /* C5's 48,000 weight gradients as a matrix product; F6's 2,400 as lane sums, or from the rows of its inputs */
    int product = O == 120;
    if (product) c5_weight_grads(ch, nch, g_off, x_off, gw);
    if (rows) f6_weight_grads_rows(ch, nch, rows, gw);
    for (int o = 0; o < O; o++) {
        vec bsum[PARTS];
        for (int p = 0; p < PARTS; p++) bsum[p] = splat(0.0f);
        EACH_CHUNK(k, h, nch) bsum[h] += field(&ch[k], g_off)[o];
        gb[o] = hsum16(bsum);
        if (product || rows) continue;
        int i = 0;
        for (vec acc[16][PARTS]; i + 16 <= I; i += 16) {  /* sixteen weights' sums at once (hsums16) */
            for (int j = 0; j < 16; j++) {
                for (int p = 0; p < PARTS; p++) acc[j][p] = splat(0.0f);
                EACH_CHUNK(k, h, nch) acc[j][h] += field(&ch[k], g_off)[o] * field(&ch[k], x_off)[i + j];
            }
            hsums16(acc, gw + o * I + i);
        }
        for (; i < I; i++) {
            vec acc[PARTS];
            for (int p = 0; p < PARTS; p++) acc[p] = splat(0.0f);
            EACH_CHUNK(k, h, nch) acc[h] += field(&ch[k], g_off)[o] * field(&ch[k], x_off)[i];
            gw[o * I + i] = hsum16(acc);
        }
    }
    if (!has_below) return;
    enum { W = KT_FULL };
    for (int k = 0; k < nch; k++) {  /* KT_FULL inputs' sums side by side (I is a multiple of it) */
        const vec *g = field(&ch[k], g_off);
        vec *s = field(&ch[k], below_off);
        for (int i = 0; i < I; i += W) {
            vec acc[W];
            for (int j = 0; j < W; j++) acc[j] = splat(0.0f);
            for (int o = 0; o < O; o++)
                for (int j = 0; j < W; j++) acc[j] += B(w[o * I + i + j]) * g[o];
            for (int j = 0; j < W; j++) s[i + j] = acc[j] * (2 * A) * slope(s[i + j]);
        }
    }
}

/* A sub-sampling layer: g over its sigma (maps x size per chunk), its input q; when `below` (the sigma of
   the convolution under it, side x side maps) is given, dL/dz of that layer is written over it. */
static void sub_backward(Chunk *ch, int nch, size_t g_off, size_t q_off, size_t below_off, int has_below,
                         const float *coef, float *gc, float *gb, int maps, int size) {
    for (int m = 0; m < maps; m++) {
        vec cs[PARTS], bs[PARTS];
        for (int p = 0; p < PARTS; p++) cs[p] = bs[p] = splat(0.0f);
        EACH_CHUNK(k, h, nch) {
            const vec *g = field(&ch[k], g_off), *q = field(&ch[k], q_off);
            for (int i = 0; i < size; i++) {
                cs[h] += g[m * size + i] * q[m * size + i];
                bs[h] += g[m * size + i];
            }
        }
        gc[m] = hsum16(cs);
        gb[m] = hsum16(bs);
    }
    if (!has_below) return;
    int h = size == 196 ? 14 : 5, side = 2 * h;
    for (int k = 0; k < nch; k++) {
        const vec *g = field(&ch[k], g_off);
        vec *s = field(&ch[k], below_off);
        for (int m = 0; m < maps; m++)
            for (int i = 0; i < h; i++)
                for (int j = 0; j < h; j++) {
                    vec d = B(coef[m] * 2 * A) * g[m * size + i * h + j];  /* dL/dsigma of the tile's cells */
                    vec *t = s + m * side * side + 2 * i * side + 2 * j;
                    t[0] = d * slope(t[0]);
                    t[1] = d * slope(t[1]);
                    t[side] = d * slope(t[side]);
                    t[side + 1] = d * slope(t[side + 1]);
                }
    }
}

/* Columns q0..q0+Q of row p of one 5x5 kernel's gradient: over the chunks, images and side x side output positions,
   the output gradient (at byte offset g_off) times the input under the kernel (at x_off, rows `width` wide), two
   positions at a time: 2Q independent sums, each in the order of every other pass. Inlined with Q a constant. */
INLINE void kernel_columns(Chunk *ch, int nch, size_t g_off, size_t x_off, int side, int width, int p, int q0, int Q,
                           float *out) {
    vec a0[PARTS][5], a1[PARTS][5];
    for (int h = 0; h < PARTS; h++)
        for (int q = 0; q < Q; q++) a0[h][q] = a1[h][q] = splat(0.0f);
    EACH_CHUNK(k, h, nch) {
        const vec *g = field(&ch[k], g_off), *x = field(&ch[k], x_off) + p * width + q0;
        for (int oy = 0; oy < side; oy++)
            for (int ox = 0; ox < side; ox += 2) {
                vec g0 = g[oy * side + ox], g1 = g[oy * side + ox + 1];
                const vec *xr = x + oy * width + ox;
                for (int q = 0; q < Q; q++) {
                    a0[h][q] += g0 * xr[q];
                    a1[h][q] += g1 * xr[q + 1];
                }
            }
    }
    for (int q = 0; q < Q; q++) {
        vec both[PARTS];
        for (int h = 0; h < PARTS; h++) both[h] = a0[h][q] + a1[h][q];
        out[p * 5 + q0 + q] = hsum16(both);
    }
}

/* The gradient of one 5x5 kernel, a row at a time, KT_KERNEL_COLUMNS columns a pass over the images: all five where a
   vector is one register (AVX-512, AVX2: the fastest tried, though AVX2's 20 sums exceed its registers), two where it
   takes several (SSE2, NEON). */
static void kernel_grads(Chunk *ch, int nch, size_t g_off, size_t x_off, int side, int width, float *out) {
    enum { Q = KT_KERNEL_COLUMNS };
    for (int p = 0; p < 5; p++) {
        int q0 = 0;
        for (; q0 + Q <= 5; q0 += Q) kernel_columns(ch, nch, g_off, x_off, side, width, p, q0, Q, out);
        if (q0 < 5) kernel_columns(ch, nch, g_off, x_off, side, width, p, q0, 5 % Q, out);
    }
}

/* Sums j0..j0+J of row iy of dL/dy2 for one (output, input) map pair of C3 (row: the row's 14 sums; g: the output
   map's gradients, 10x10; wc: its kernel): each sum adds its terms over the turned kernel's rows, then its columns,
   in the order of a whole row's pass, whatever J. Inlined with j0 and J constants, so that the sums stay in
   registers (all 14 with AVX-512; with AVX2, KT_DY_SPAN of them). */
INLINE void dy_span(vec *row, const vec *g, const float *wc, int iy, int j0, int J) {
    vec a[14];
    for (int j = 0; j < J; j++) a[j] = row[j0 + j];
    for (int p = 4; p >= 0; p--) {  /* the turned kernel's row 4 - p: the gradients' row iy - p */
        if (iy - p < 0 || iy - p > 9) continue;
        const vec *gr = g + (iy - p) * 10;
        for (int q = 4; q >= 0; q--)
            for (int ox = 0; ox < 10; ox++)
                if (ox + q >= j0 && ox + q < j0 + J) a[ox + q - j0] += B(wc[p * 5 + q]) * gr[ox];
    }
    for (int j = 0; j < J; j++) row[j0 + j] = a[j];
}

/* C3: weight and bias gradients from g over s3 and its input (at x_off); when has_below, dL/dz of S2.
   keep: 0 for the weights of the (output, input) map pairs that C3's connection table leaves out. */
static void c3_backward(Chunk *ch, int nch, size_t x_off, int has_below, const Params *P, const float *keep,
                        float *gw, float *gb) {
    for (int o = 0; o < 16; o++) {
        vec bs[PARTS];
        for (int p = 0; p < PARTS; p++) bs[p] = splat(0.0f);
        EACH_CHUNK(k, h, nch)
            for (int i = 0; i < 100; i++) bs[h] += ch[k].s3[o * 100 + i];
        gb[o] = hsum16(bs);
        for (int c = 0; c < 6; c++) {
            float *out = gw + o * 150 + c * 25;
            if (keep[o * 150 + c * 25] == 0.0f) {  /* a pair C3's connection table leaves out */
                memset(out, 0, 25 * sizeof(float));
                continue;
            }
            kernel_grads(ch, nch, OFF(s3) + o * 100 * sizeof(vec), x_off + c * 196 * sizeof(vec), 10, 14, out);
        }
    }
    if (!has_below) return;
    /* dL/dy2: the gradients, zero-padded by 4, correlated with the kernels turned 180 degrees; computed as
       each gradient row spread over the input row it reaches, a whole input row of 14 sums side by side. Each
       sum still runs over the output maps in order, then the turned kernel's rows and columns, as the padded
       correlation orders them; the padding's terms and a zero kernel's, exact zeros, are never formed, which
       changes no sum. */
    static _Thread_local vec dy[6 * 196];
    for (int k = 0; k < nch; k++) {
        memset(dy, 0, sizeof dy);
        for (int o = 0; o < 16; o++)
            for (int u = 0; u < P->c3_count[o]; u++) {
                int c = P->c3_used[o][u];
                const float *wc = P->c3w + o * 150 + c * 25;
                for (int iy = 0; iy < 14; iy++)
#pragma GCC unroll 14
                    for (int j0 = 0; j0 < 14; j0 += KT_DY_SPAN)  /* unrolled: each span's j0 a constant */
                        dy_span(dy + c * 196 + iy * 14, &ch[k].s3[o * 100], wc, iy, j0, KT_DY_SPAN);
            }
        for (int i = 0; i < 6 * 196; i++) ch[k].s2[i] = dy[i] * (2 * A) * slope(ch[k].s2[i]);
    }
}

static void c1_backward(Chunk *ch, int nch, float *gw, float *gb) {
    for (int m = 0; m < 6; m++) {
        vec bs[PARTS];
        for (int p = 0; p < PARTS; p++) bs[p] = splat(0.0f);
        EACH_CHUNK(k, h, nch)
            for (int i = 0; i < 784; i++) bs[h] += ch[k].s1[m * 784 + i];
        gb[m] = hsum16(bs);
        kernel_grads(ch, nch, OFF(s1) + m * 784 * sizeof(vec), OFF(in), 28, 32, gw + m * 25);
    }
}


/* dL/dz of every layer from n up, and the parameter gradients into g (one row of the stack). frozen: NULL, or one
   byte per map of layer n (C3 or C5, a partly transferred level), nonzero for a map held as copied: its dL/dz is set
   to zero before the layer's gradients are taken, so its weights' and bias's gradients are zero (Adam then moves them
   by exactly nothing) and the others are what they would have been, at the same cost. Layer n, the lowest trained,
   passes no gradient below it. */
static void backward(const Params *P, Chunk *ch, int nch, int n, float *g, const float *keep,
                     const unsigned char *frozen, const float *const *rows) {
    float *gp[6];
    const float *kp[6];  /* each layer's entries of keep, which is laid out as g is */
    for (int l = 0, off = 0; l < 6; l++) {
        gp[l] = l >= n ? g + off : 0;
        kp[l] = l >= n ? keep + off : 0;
        if (l >= n) off += LAYER_SIZE[l];
    }
    full_backward(ch, nch, OFF(s6), n == 5 ? OFF(in) : OFF(y5), OFF(s5), n <= 4, P->f6w, gp[5], gp[5] + 2400,
                  20, 120, n == 5 ? rows : 0);
    if (frozen && n == 4)
        for (int k = 0; k < nch; k++)
            for (int o = 0; o < 120; o++)
                if (frozen[o]) ch[k].s5[o] = splat(0.0f);
    if (n <= 4)
        full_backward(ch, nch, OFF(s5), n == 4 ? OFF(in) : OFF(y4), OFF(s4), n <= 3, P->c5w, gp[4],
                      gp[4] + 48000, 120, 400, 0);
    if (n <= 3)
        sub_backward(ch, nch, OFF(s4), n == 3 ? OFF(in) : OFF(q3), OFF(s3), n <= 2, P->s4c, gp[3], gp[3] + 16,
                     16, 25);
    if (frozen && n == 2)
        for (int k = 0; k < nch; k++)
            for (int o = 0; o < 16; o++)
                if (frozen[o])
                    for (int i = 0; i < 100; i++) ch[k].s3[o * 100 + i] = splat(0.0f);
    if (n <= 2) c3_backward(ch, nch, n == 2 ? OFF(in) : OFF(y2), n <= 1, P, kp[2], gp[2], gp[2] + 2400);
    if (n <= 1)
        sub_backward(ch, nch, OFF(s2), n == 1 ? OFF(in) : OFF(q1), OFF(s1), n == 0, P->s2c, gp[1], gp[1] + 6, 6,
                     196);
    if (n == 0) c1_backward(ch, nch, gp[0], gp[0] + 150);
}

/* ---------------------------------------------------------------- entry points */

/* What this file assumes of the net, which ktlib/compute/native.py checks against ktlib.compute.model when it loads the
   library: parameters per layer, A, the batch limit and the code width (ktlib.Config refuses a
   configuration beyond the last two before any work). */
int kt_max_batch(void) { return CHUNKS * L; }
int kt_code_bits(void) { return 20; }
float kt_tanh_a(void) { return A; }
void kt_layer_sizes(int *out) { memcpy(out, LAYER_SIZE, sizeof LAYER_SIZE); }

/* The widest vector instructions this build was allowed (the compiler's own macros): what `vec` became. */
const char *kt_vectors(void) {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "avx2";
#elif defined(__AVX__)
    return "avx";
#elif defined(__SSE2__)
    return "sse2";
#elif defined(__ARM_NEON)
    return "neon";
#else
    return "scalar";
#endif
}

/* How this build computes, for the benchmark to print beside the CPU: the vectors, and the register blocking of the
   layers that carry most of the arithmetic. */
const char *kt_kernel(void) {
    static char text[700];
    if (!text[0])
        snprintf(text, sizeof text, "%s%s, %d images a vector, %d images a step; blocking: C1 %d positions x 6 "
                 "maps, C3 %d positions, C5 and F6 %d sums, C5's weight gradient %d outputs x %d inputs, a 5x5 "
                 "kernel's gradient %d columns a pass, S2's input gradient %d sums, F6's weight gradients' sums 16 "
                 "at once (%d weights a vector at n=5); images into lanes by %d x %d transposes; an epoch's steps "
                 "and Adam's in one call a thread where a group's layers train at one rate, with the outputs that "
                 "end it; the nearest codes where rounding could not change them, in the call that computes the "
                 "outputs",
                 kt_vectors(),
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
                 " with fused multiply-adds",
#else
                 " without fused multiply-adds (other numbers than the record's)",
#endif
                 L, CHUNKS * L, KT_C1_POSITIONS, KT_C3_POSITIONS, KT_FULL, KT_C5_GRAD_OUTPUTS, L, KT_KERNEL_COLUMNS,
                 KT_DY_SPAN, L, L, L);
    return text;
}

static Params params_of(const float *theta, int n) {
    static const int WEIGHTS[6] = {150, 6, 2400, 16, 48000, 2400};
    Params P = {0};
    const float **field[6][2] = {{&P.c1w, &P.c1b}, {&P.s2c, &P.s2b}, {&P.c3w, &P.c3b},
                                 {&P.s4c, &P.s4b}, {&P.c5w, &P.c5b}, {&P.f6w, &P.f6b}};
    for (int l = n; l < 6; l++) {
        *field[l][0] = theta;
        *field[l][1] = theta + WEIGHTS[l];
        theta += LAYER_SIZE[l];
    }
    if (n <= 2) c3_inputs(P.c3w, P.c3_used, P.c3_count);
    return P;
}

/* Per thread, since the engine's workers call in side by side; freed when the thread ends. */
static _Thread_local Chunk workspace[CHUNKS] __attribute__((aligned(64)));

/* L vectors turned into their transpose, in place: lane l of v[j] becomes lane j of v[l]. Each round swaps the
   off-diagonal blocks of every 2b x 2b block (b = L/2, ..., 2, 1) with two-vector shuffles: it only moves values. */
static void transpose(vec v[L]) {
#if L == 16
    static const ivec lo[4] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                               {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                               {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                               {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
    static const ivec hi[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                               {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
                               {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
                               {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
#else
    static const ivec lo[3] = {{0, 1, 2, 3, 8, 9, 10, 11}, {0, 1, 8, 9, 4, 5, 12, 13}, {0, 8, 2, 10, 4, 12, 6, 14}};
    static const ivec hi[3] = {{4, 5, 6, 7, 12, 13, 14, 15}, {2, 3, 10, 11, 6, 7, 14, 15}, {1, 9, 3, 11, 5, 13, 7, 15}};
#endif
    /* unrolled whole, so that the L vectors stay in registers: as loops, GCC 12.2 kept them in memory and branched on
       i & b (kt_outputs' transposes had taken about as long as F6's sums at n=5, perf on the Zen 4) */
#pragma GCC unroll 8
    for (int s = 0, b = L / 2; b >= 1; s++, b /= 2)
#pragma GCC unroll 16
        for (int i = 0; i < L; i++)
            if (!(i & b)) {
                vec a = v[i], c = v[i + b];
                v[i] = __builtin_shuffle(a, c, lo[s]);
                v[i + b] = __builtin_shuffle(a, c, hi[s]);
            }
}

/* Load images rows[0..count) of x (F values each) into the lanes of dst; lanes past count are 0. L values of
   each image at a time, as rows of an L x L block that is then transposed: whole-vector loads and stores, where
   putting each value into its lane alone would cost a store per value. */
static void gather(vec *dst, const float *x, int F, const int64_t *rows, int count, vec *valid) {
    vec block[L];
    for (int f0 = 0; f0 < F; f0 += L) {
        int width = F - f0 < L ? F - f0 : L;
        for (int l = 0; l < L; l++) {
            if (l >= count) {  /* padding: rows[l] is not read (it lies past the batch) */
                block[l] = splat(0.0f);
                continue;
            }
            const float *from = x + rows[l] * (int64_t)F + f0;
            if (width == L) memcpy(&block[l], from, sizeof(vec));  /* one unaligned load */
            else {
                block[l] = splat(0.0f);
                if (width == 8) memcpy(&block[l], from, 8 * sizeof(float));  /* S2's and C5's outputs end so */
                else memcpy(&block[l], from, width * sizeof(float));
            }
        }
        transpose(block);
        for (int j = 0; j < width; j++) dst[f0 + j] = block[j];
    }
    for (int l = 0; l < L; l++) (*valid)[l] = l < count ? 1.0f : 0.0f;
}

/* The gradient of run r of a call's R runs, of its batch's mean squared error to the codes (over batch and 20
   bits), into its row of grad: kt_gradients' arguments, which its callers check (`refused`). */
static void run_gradients(int r, int n, int P, const float *theta, float *grad, const float *x, int N, int F,
                          const float *target, const int64_t *idx, int B, const float *keep,
                          const unsigned char *frozen, int maps) {
    Chunk *ch = workspace;
    int nch = PARTS * ((B + 15) / 16);  /* whole groups of 16 places: the same padding at any vector width */
    float scale = 4 * A / (20.0f * B);  /* dL/dy6 = 2 (y - t) / (20 B), times dy/dsigma = 2A */
    static const float zeros[120];
    const float *inputs[CHUNKS * L];  /* n = 5: each image's inputs, for F6's weight gradients */
    Params Pr = params_of(theta + (int64_t)r * P, n);
    for (int i = 0; n == 5 && i < nch * L; i++)
        inputs[i] = i < B ? x + ((int64_t)r * N + idx[(int64_t)r * B + i]) * F : zeros;
    for (int k = 0; k < nch; k++) {
        int count = B - k * L < 0 ? 0 : B - k * L < L ? B - k * L : L;
        const int64_t *rows = idx + (int64_t)r * B + (count ? k * L : 0);  /* read up to count only */
        gather(ch[k].in, x + (int64_t)r * N * F, F, rows, count, &ch[k].valid);
        forward(&Pr, &ch[k], n);
        for (int o = 0; o < 20; o++) {
            vec t = splat(0.0f);
            for (int l = 0; l < count; l++) t[l] = target[((int64_t)r * N + rows[l]) * 20 + o];
            vec s = ch[k].s6[o];
            ch[k].s6[o] = ((2 * A) * s - A - t) * B(scale) * slope(s) * ch[k].valid;
        }
    }
    backward(&Pr, ch, nch, n, grad + (int64_t)r * P, keep, frozen ? frozen + (int64_t)r * maps : 0, inputs);
}

/* Whether kt_gradients and kt_epoch take these arguments: a batch of 1 to 32 images, n in 0..5, and frozen maps only
   at C3 (n = 2, 16 maps) or C5 (n = 4, 120). */
static int refused(int n, int B, const unsigned char *frozen, int maps) {
    return B < 1 || PARTS * ((B + 15) / 16) > CHUNKS || n < 0 || n > 5
           || (frozen && !((n == 2 && maps == 16) || (n == 4 && maps == 120)));
}

/* The gradients of R runs, each of its batch's mean squared error to the codes (over batch and 20 bits).
   theta, grad: R rows of P parameters (layers n..F6); x: R x N x F layer-n inputs; target: R x N x 20;
   idx: R x B indices into each run's N images (B <= 32); keep: P values, 0 for a weight C3's connection
   table leaves out; frozen: NULL, or R x (layer n's maps) bytes, nonzero for a map whose gradients are held at
   zero (`backward`), for n = 2 (C3) or 4 (C5). */
int kt_gradients(int n, int R, int P, const float *theta, float *grad, const float *x, int N, int F,
                 const float *target, const int64_t *idx, int B, const float *keep, const unsigned char *frozen,
                 int maps) {
    if (refused(n, B, frozen, maps)) return -1;
    for (int r = 0; r < R; r++) run_gradients(r, n, P, theta, grad, x, N, F, target, idx, B, keep, frozen, maps);
    return 0;
}

/* torch.optim.Adam's step (no weight decay, no amsgrad) on `size` parameters, as torch's fused CPU kernel
   (torch._fused_adam_) computes it in torch 2.13 with its AVX-512 code: m moves towards g by 1 - beta1 in one fused
   multiply-add; v = beta2 v + ((1 - beta2) g) g in one fused multiply-add, which rounds beta2 v first and adds the
   product ((1 - beta2) g) g unrounded, except in the last size % 8 values, where torch's scalar loop rounds
   ((1 - beta2) g) g first and adds beta2 v unrounded; then theta -= (lr / (1 - beta1^t)) m / (sqrt(v) /
   sqrt(1 - beta2^t) + eps). The scalars are torch's: its step count t a float, the corrections in double (pow from
   the C library, as torch's), each rounded to float where torch rounds it. Every other operation is one IEEE
   operation (the fused multiply-adds written out, a division, a square root), the same on every CPU. The tests hold
   it to torch's own step, where torch runs its AVX-512 code, on every size mod 16 and on groups' sizes at n=4, 5. */
/* Value d of adam_step: v rounded as torch's vector loop rounds it, or as its scalar loop does (scalar). */
INLINE void adam_value(float *restrict theta, const float *restrict g, float *restrict m, float *restrict v, int64_t d,
                       int scalar, float c1, float c2, float b2, float root2, float rate, float e) {
    float md = __builtin_fmaf(c1, g[d] - m[d], m[d]);
    float vd = scalar ? __builtin_fmaf(v[d], b2, c2 * g[d] * g[d]) : __builtin_fmaf(c2 * g[d], g[d], v[d] * b2);
    m[d] = md;
    v[d] = vd;
    theta[d] -= rate * md / (__builtin_sqrtf(vd) / root2 + e);
}

static void adam_step(float *restrict theta, const float *restrict g, float *restrict m, float *restrict v,
                      int64_t size, int64_t split, float count, double lr, double beta1, double beta2, double eps) {
    double t = count, bias1 = 1 - pow(beta1, t), bias2 = 1 - pow(beta2, t);
    float c1 = (float)(1 - beta1), c2 = (float)(1 - beta2), b2 = (float)beta2, root2 = (float)sqrt(bias2);
    float rate = (float)(lr / bias1), e = (float)eps;
    /* two loops, so that the first, all but at most seven values, has one formula and is vectorized: each operation
       is the one IEEE operation whatever the vector width */
    for (int64_t d = 0; d < split; d++) adam_value(theta, g, m, v, d, 0, c1, c2, b2, root2, rate, e);
    for (int64_t d = split < 0 ? 0 : split; d < size; d++) adam_value(theta, g, m, v, d, 1, c1, c2, b2, root2, rate, e);
}

/* One Adam step (adam_step) of `size` parameters, its step count *count incremented first, as torch counts: for the
   tests, which hold it to torch's own. */
void kt_adam(float *theta, const float *g, float *m, float *v, int64_t size, float *count, double lr, double beta1,
             double beta2, double eps) {
    *count += 1.0f;
    adam_step(theta, g, m, v, size, size - size % 8, *count, lr, beta1, beta2, eps);
}

/* The engine's sigmoid on `count` values, 16 at a time as the layers compute it: for the tests, which hold it
   to the exact function, and the benchmark, which times it. */
void kt_sigmoid(const float *x, float *out, int64_t count) {
    int64_t i = 0;
    for (vec v; i + L <= count; i += L) {  /* whole vectors: one load and one store each */
        memcpy(&v, x + i, sizeof v);
        v = sigmoid(v);
        memcpy(out + i, &v, sizeof v);
    }
    if (i < count) {  /* the rest, in the low lanes of one more */
        vec v = splat(0.0f);
        memcpy(&v, x + i, (count - i) * sizeof(float));
        v = sigmoid(v);
        memcpy(out + i, &v, (count - i) * sizeof(float));
    }
}

/* The codes the nearest are found among (nearest_lanes), with the largest |c_k| and |c|^2 that its bound needs. */
typedef struct {
    const float *codes;
    int C, finite;
    float cabs, cc;  /* the largest |c_k| of any code, and the largest |c|^2 */
} Codes;

static Codes codes_of(const float *codes, int C) {
    Codes K = {codes, C, C > 0, 0, 0};
    for (int j = 0; j < C; j++) {
        float norm = 0;
        for (int k = 0; k < 20; k++) {
            float c = codes[(int64_t)j * 20 + k];
            K.finite &= __builtin_isfinite(c);
            norm += c * c;
            K.cabs = __builtin_fabsf(c) > K.cabs ? __builtin_fabsf(c) : K.cabs;
        }
        K.cc = norm > K.cc ? norm : K.cc;
    }
    return K;
}

/* The squared distances of the outputs in the lanes of x to codes j..j+W-1, each summed over k in order, side by side
   (one code's sum is a chain of 20 multiply-adds, each waiting for the last), then taken in code order into the least
   (best, its code arg) and the next least (second). Inlined with W a constant. */
INLINE void distances(const vec x[20], const float *codes, int j, int W, vec *best, vec *second, vec *arg) {
    vec r[4];
    for (int w = 0; w < W; w++) r[w] = splat(0.0f);
    for (int k = 0; k < 20; k++)
        for (int w = 0; w < W; w++) {
            vec d = x[k] - codes[(int64_t)(j + w) * 20 + k];
            r[w] += d * d;
        }
    for (int w = 0; w < W; w++) {
        ivec lt = r[w] < *best, below = r[w] < *second;
        vec low = (vec)((below & (ivec)r[w]) | (~below & (ivec)*second));  /* the lesser of r and second */
        *second = (vec)((lt & (ivec)*best) | (~lt & (ivec)low));
        *arg = (vec)((lt & (ivec)splat((float)(j + w))) | (~lt & (ivec)*arg));
        *best = (vec)((lt & (ivec)r[w]) | (~lt & (ivec)*best));
    }
}

/* The nearest codes of the `count` outputs in the lanes of x (x[k]: value k of each), into nearest[0..count), as
   ktlib.compute.model.predict finds them with torch.cdist and argmin, without computing what torch computes: the
   squared distances summed here (`distances`), and the nearest index written only where it is clear of the next by
   more than rounding, here and in torch, could bridge; elsewhere -1, and the caller asks torch. Returns the number of
   -1s. Why that suffices, with u = 2^-24 and S the largest over the codes of the sum over k of x_k^2 + 2 |x_k c_k| +
   c_k^2: for more than 25 rows or codes torch 2.13 sums 22 terms, -2 x_k c_k, |x|^2 and |c|^2, the two norms summed
   in float first; in any order of summation that errs by at most 22u S (the sum) + 20u |x|^2 + 20u |c|^2 (the
   norms), under 42u S. Otherwise it sums 20 rounded squares of rounded differences, under 23u S; `distances` sums the
   same terms, with fused multiply-adds where the CPU has them (fewer roundings), within the same bound. So with a gap
   here over 2 (23 + 42)u S, torch's nearest is this one, strictly; and sqrt, which torch takes next, keeps values
   apart that differ by over 4u S (S bounds them). Needed: a gap over 134u S; 192u S is asked, of an S summed in float
   (under 22u S off). This assumes finite codes (a call with any other is refused whole), no underflow (S is at least
   20 for the codes of +-1 the runs use) and torch's full-precision float32 products (its default; a lower matmul
   precision would void it). One code is every output's nearest, as argmin over one value. */
INLINE int64_t nearest_lanes(const vec x[20], int count, const Codes *K, int64_t *nearest) {
    if (!K->finite || K->C == 1) {  /* refused whole; or one code, every output's nearest */
        for (int l = 0; l < count; l++) nearest[l] = K->finite ? 0 : -1;
        return K->finite ? 0 : count;
    }
    vec xx = splat(0.0f), xa = splat(0.0f);
    for (int k = 0; k < 20; k++) {
        xx += x[k] * x[k];
        xa += (vec)((ivec)x[k] & 0x7fffffff);  /* |x_k| */
    }
    vec best = splat(INFINITY), second = splat(INFINITY), arg = splat(-1.0f);
    int j = 0;
    for (; j + 4 <= K->C; j += 4) distances(x, K->codes, j, 4, &best, &second, &arg);
    for (; j < K->C; j++) distances(x, K->codes, j, 1, &best, &second, &arg);
    vec S = xx + B(2 * K->cabs) * xa + K->cc;
    int64_t unsure = 0;
    for (int l = 0; l < count; l++) {
        int clear = second[l] - best[l] > 192 * (S[l] / 16777216.0f);
        nearest[l] = clear ? (int64_t)arg[l] : -1;  /* NaN compares false: unsure */
        unsure += !clear;
    }
    return unsure;
}

/* For each of `rows` outputs (20 values each), the nearest of C codes (nearest_lanes); returns the number of -1s. */
int64_t kt_nearest(const float *out, int64_t rows, const float *codes, int C, int64_t *nearest) {
    Codes K = codes_of(codes, C);
    int64_t unsure = 0;
    for (int64_t i0 = 0; i0 < rows; i0 += L) {
        int count = rows - i0 < L ? (int)(rows - i0) : L;
        vec x[20];  /* the outputs' values by position: lane l is output i0 + l */
        for (int k = 0; k < 20; k++) {
            x[k] = splat(0.0f);
            for (int l = 0; l < count; l++) x[k][l] = out[(i0 + l) * 20 + k];
        }
        unsure += nearest_lanes(x, count, &K, nearest + i0);
    }
    return unsure;
}

/* The outputs y (R x M x 20) of R runs on M layer-n inputs each: x holds R x M x F values, or one M x F set that
   every run reads when x_shared. With codes (C of them), also each output's nearest code (R x M, as kt_nearest), found
   while the outputs are still in the lanes. Returns the number of nearest codes left at -1. */
static int64_t outputs_of(int n, int R, int P, const float *theta, const float *x, int M, int F, int x_shared,
                          float *out, const Codes *K, int64_t *nearest) {
    Chunk *c = workspace;
    int64_t unsure = 0;
    for (int r = 0; r < R; r++) {
        Params Pr = params_of(theta + (int64_t)r * P, n);
        const float *xr = x + (x_shared ? 0 : (int64_t)r * M * F);
        for (int m0 = 0; m0 < M; m0 += L) {
            int count = M - m0 < L ? M - m0 : L;
            int64_t rows[L], at = (int64_t)r * M + m0;
            for (int l = 0; l < L; l++) rows[l] = m0 + l;
            gather(c->in, xr, F, rows, count, &c->valid);
            forward(&Pr, c, n);
            vec y[20];  /* y = 2A sigma - A */
            for (int o = 0; o < 20; o++) y[o] = (2 * A) * c->s6[o] - A;
            if (K) unsure += nearest_lanes(y, count, K, nearest + at);
            /* image by image: outputs 0..15 out of the lanes by transposes, 16..19 one by one */
            for (int o0 = 0; o0 < 16; o0 += L) {
                transpose(y + o0);
                for (int l = 0; l < count; l++) store(out + (at + l) * 20 + o0, y[o0 + l]);
            }
            for (int l = 0; l < count; l++)
                for (int o = 16; o < 20; o++) out[(at + l) * 20 + o] = y[o][l];
        }
    }
    return unsure;
}

/* outputs_of, with the nearest codes where codes is given (else nearest is not written); -1 for an n outside 0..5. */
int64_t kt_outputs(int n, int R, int P, const float *theta, const float *x, int M, int F, int x_shared, float *out,
                   const float *codes, int C, int64_t *nearest) {
    if (n < 0 || n > 5) return -1;
    Codes K = codes ? codes_of(codes, C) : (Codes){0};
    return outputs_of(n, R, P, theta, x, M, F, x_shared, out, codes ? &K : 0, nearest);
}

/* One epoch of R runs' training steps in one call: the batches of B images each run's order `perms` (R x N) gives,
   in turn (the last may be smaller), each a kt_gradients and an Adam step (adam_step) of all R x P parameters with
   moments m, v and step count *count (torch's state, updated in place). What the engine's Python loop computes step
   by step, without a return to Python between steps. Each run's Adam step follows its gradient, while its numbers
   are in the core's cache (no measurable gain on the Zen 4): Adam's arithmetic is value by value, so the order
   changes nothing. tail: how many of the last values of these R x P take torch's scalar rounding (adam_step): the
   whole tensor's size % 8 where these runs end it, 0 where a caller split its runs into calls and later rows follow
   these. With out, the epoch ends with the runs' outputs on their N images (R x N x 20), and with codes their nearest
   codes, as kt_outputs computes them: what the stopping rule reads, without another call. Returns the number of
   nearest codes left at -1; -1 for arguments it refuses, -2 where it could not allocate a batch's indices. */
int64_t kt_epoch(int n, int R, int P, float *theta, float *grad, const float *x, int N, int F, const float *target,
                 const int64_t *perms, int B, const float *keep, const unsigned char *frozen, int maps, float *m,
                 float *v, float *count, int tail, double lr, double beta1, double beta2, double eps, float *out,
                 const float *codes, int C, int64_t *nearest) {
    if (refused(n, B, frozen, maps) || tail < 0 || tail > 7 || (int64_t)R * P < tail) return -1;
    int64_t *idx = malloc(sizeof(int64_t) * R * (B < N ? B : N));
    if (!idx) return -2;
    int64_t split = (int64_t)R * P - tail;  /* where the scalar rounding starts, counted from these runs' first value */
    for (int b0 = 0; b0 < N; b0 += B) {
        int size = N - b0 < B ? N - b0 : B;
        for (int r = 0; r < R; r++) memcpy(idx + (int64_t)r * size, perms + (int64_t)r * N + b0, size * sizeof *idx);
        *count += 1.0f;  /* exact, as torch counts in a float32 tensor */
        for (int r = 0; r < R; r++) {
            int64_t at = (int64_t)r * P, local = split - at < 0 ? 0 : split - at > P ? P : split - at;
            run_gradients(r, n, P, theta, grad, x, N, F, target, idx, size, keep, frozen, maps);
            adam_step(theta + at, grad + at, m + at, v + at, P, local, *count, lr, beta1, beta2, eps);
        }
    }
    free(idx);
    if (!out) return 0;
    Codes K = codes ? codes_of(codes, C) : (Codes){0};
    return outputs_of(n, R, P, theta, x, N, F, 0, out, codes ? &K : 0, nearest);
}
