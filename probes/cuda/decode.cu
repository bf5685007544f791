// Split-K (flash-decoding) decode attention for the harness's GPU decode probe.
// q [B*H, D] fp32; K, V [B*H_kv*S, D] in the cache dtype (fp32, fp16, bf16, int8 with a per-row
// fp32 scale). decode_partial<T, D, G>: one block per (chunk of tokens, batch x kv head); every
// query head of the GQA group (G of them) uses each K and V row the block reads. Scores live in
// shared memory (G x chunk floats); the block writes unnormalised partial outputs, maxima and sums,
// and decode_merge combines the chunks. D is 64, 128 or 256; G is 1, 2, 4 or 8. q, K and V are read
// in 16-byte packets: each must start 16-byte aligned (CuPy's allocations are 256-byte aligned).
//
// Built for bandwidth: every lane loads 16-byte packets (a warp reads 512 contiguous bytes per
// load: one fp32 row of 128, two fp16 rows or four int8 rows), UNROLL rows per lane are in flight
// before the first is used, q and the accumulators stay in registers (compile-time indices only),
// and the cross-lane sums are warp shuffles (the K pass's by recursive halving: one shuffle per
// sum, not one per sum and lane bit).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define THREADS 256
#define WARPS (THREADS / 32)
#ifndef UNROLL  // rows per lane in flight per step: a build option (-DUNROLL=N), 4 unless tuned
#define UNROLL 4
#endif
#define FULL_MASK 0xffffffffu
// -inf without <math.h>: NVRTC (how CuPy compiles this file) has no INFINITY
#define NEG_INF __int_as_float(0xff800000)

// A 16-byte packet of cache elements widened to floats.
template <typename T> struct Packet;

template <> struct Packet<float> {
    static constexpr int N = 4;
    static constexpr bool SCALED = false;
    __device__ __forceinline__ static void widen(const uint4& p, float* x) {
        x[0] = __uint_as_float(p.x); x[1] = __uint_as_float(p.y);
        x[2] = __uint_as_float(p.z); x[3] = __uint_as_float(p.w);
    }
};

template <> struct Packet<__half> {
    static constexpr int N = 8;
    static constexpr bool SCALED = false;
    __device__ __forceinline__ static void widen(const uint4& p, float* x) {
        const unsigned w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {  // low half first: element 2i
            x[2 * i] = __half2float(__ushort_as_half((unsigned short)(w[i] & 0xffffu)));
            x[2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(w[i] >> 16)));
        }
    }
};

template <> struct Packet<__nv_bfloat16> {
    static constexpr int N = 8;
    static constexpr bool SCALED = false;
    __device__ __forceinline__ static void widen(const uint4& p, float* x) {
        const unsigned w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {  // a bfloat16 is the top half of a float
            x[2 * i] = __uint_as_float(w[i] << 16);
            x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};

template <> struct Packet<signed char> {
    static constexpr int N = 16;
    static constexpr bool SCALED = true;
    __device__ __forceinline__ static void widen(const uint4& p, float* x) {
        const unsigned w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) x[4 * i + j] = (float)((int)(w[i] << (24 - 8 * j)) >> 24);
    }
};

// Elements of one row a lane holds (a row is spread over at most 32 lanes).
template <typename T, int D> __host__ __device__ constexpr int lane_elems() {
    return (D / Packet<T>::N > 32 ? D / Packet<T>::N / 32 : 1) * Packet<T>::N;
}

// Issue the UNROLL x PER_LANE 16-byte loads of this lane's rows (p points at the first: rows STEP
// apart, PER_ROW packets each) before any is used; a row at or past `left` is not loaded and keeps
// what it held (the sums it feeds are never stored). Every offset is a compile-time constant.
template <int PER_ROW, int LANES, int PER_LANE, int STEP>
__device__ __forceinline__ void load_rows(const uint4* __restrict__ p, int left, uint4 (&raw)[UNROLL][PER_LANE]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++)
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            if (u * STEP < left) raw[u][i] = __ldg(p + u * STEP * PER_ROW + i * LANES);
}

// Sums each of x's C values over the lanes whose `part` differs in bit O and every bit below it, by
// recursive halving: at each offset a lane keeps half its values (the upper half where its bit O
// is set), sends its partner the other half and adds what comes back, so C values cost C - 1
// shuffles, not C x log2(2 O). Afterwards x[j] is sum part * (C / 2O) + j (C >= 2O) or, with fewer
// values than lanes, sum part / (2O / C), held by every lane of that run.
template <int C, int O, int V>
__device__ __forceinline__ void halve_sums(float (&x)[V], int part) {
    if constexpr (O > 0) {
        if constexpr (C > 1) {
            const bool upper = part & O;
#pragma unroll
            for (int i = 0; i < C / 2; i++) {
                const float send = upper ? x[i] : x[i + C / 2];
                const float keep = upper ? x[i + C / 2] : x[i];
                x[i] = keep + __shfl_xor_sync(FULL_MASK, send, O);
            }
            halve_sums<C / 2, O / 2>(x, part);
        } else {
            x[0] += __shfl_xor_sync(FULL_MASK, x[0], O);
            halve_sums<1, O / 2>(x, part);
        }
    }
}

// The block's maxima (or sums) of each of x's G values, in every thread: warp shuffles, then the
// warps' results through scratch [WARPS][G] (G of them reduced together: two barriers in all).
template <int G>
__device__ __forceinline__ void block_reduce(float (&x)[G], float* scratch, bool take_max) {
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float y = __shfl_xor_sync(FULL_MASK, x[g], o);
            x[g] = take_max ? fmaxf(x[g], y) : x[g] + y;
        }
    __syncthreads();  // every thread has read the scratch's last contents
    if ((threadIdx.x & 31) == 0)
#pragma unroll
        for (int g = 0; g < G; g++) scratch[(threadIdx.x >> 5) * G + g] = x[g];
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; g++) {
        x[g] = scratch[g];
#pragma unroll
        for (int w = 1; w < WARPS; w++) x[g] = take_max ? fmaxf(x[g], scratch[w * G + g]) : x[g] + scratch[w * G + g];
    }
}

// Registers a lane's long-lived values take in the K pass: q (G x E), the step's sums (UNROLL x G)
// and its loaded packets (UNROLL x PER_LANE x 4).
template <typename T, int D, int G> __host__ __device__ constexpr int live_registers() {
    return G * lane_elems<T, D>() + UNROLL * G + 4 * UNROLL * (lane_elems<T, D>() / Packet<T>::N);
}

// As many blocks per SM as the live values leave room for: three (registers capped at 80), two
// (128) or one.
template <typename T, int D, int G> __host__ __device__ constexpr int min_blocks_per_sm() {
    return live_registers<T, D, G>() <= 64 ? 3 : live_registers<T, D, G>() <= 120 ? 2 : 1;
}

template <typename T, int D, int G>
__global__ void __launch_bounds__(THREADS, min_blocks_per_sm<T, D, G>())
decode_partial(const float* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
               const float* __restrict__ k_scale, const float* __restrict__ v_scale,
               float* __restrict__ part_out, float* __restrict__ part_max, float* __restrict__ part_sum,
               int heads, int kv_heads, int seq_len, int chunk_len) {
    using P = Packet<T>;
    constexpr int PER_ROW = D / P::N;                     // packets in one row
    constexpr int LANES = PER_ROW < 32 ? PER_ROW : 32;    // lanes sharing one row
    constexpr int PER_LANE = PER_ROW / LANES;             // packets per lane per row
    constexpr int ROWS = 32 / LANES;                      // rows one warp load covers
    constexpr int E = lane_elems<T, D>();                 // elements per lane per row
    constexpr int STEP = WARPS * ROWS;                    // rows the block covers per unrolled slot
    static_assert(PER_ROW % LANES == 0 && 32 % LANES == 0, "D must be 64, 128 or 256");
    static_assert(G >= 1 && G <= 8, "G must be 1, 2, 4 or 8");
    static_assert(UNROLL >= 1 && UNROLL <= 8 && (UNROLL & (UNROLL - 1)) == 0, "UNROLL must be 1, 2, 4 or 8");

    extern __shared__ float smem[];  // scores [G][chunk_len]; afterwards the warps' sums [WARPS / 2][G][D]
    __shared__ float scratch[WARPS * 8];  // block_reduce's [WARPS][G] (G at most 8)
    const int chunk = blockIdx.x, bh = blockIdx.y;
    const int b = bh / kv_heads, h = bh % kv_heads;
    const int s0 = chunk * chunk_len, n = min(seq_len - s0, chunk_len);
    const long long row0 = (long long)bh * seq_len + s0;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int slot = lane / LANES, part = lane % LANES;  // this lane's row of the warp's ROWS, its packets
    const uint4* __restrict__ k4 = reinterpret_cast<const uint4*>(k);
    const uint4* __restrict__ v4 = reinterpret_cast<const uint4*>(v);

    // Each pass's first rows are in flight before the work that precedes the pass: the first K rows
    // while q arrives (except at G = 8, where those registers beside q's 64 spill at the 128-register
    // cap), the first V rows while the softmax runs.
    uint4 raw[UNROLL][PER_LANE] = {};
    const uint4* __restrict__ kp = k4 + (row0 + warp * ROWS + slot) * PER_ROW + part;
    if constexpr (G < 8) load_rows<PER_ROW, LANES, PER_LANE, STEP>(kp, n - warp * ROWS - slot, raw);

    float qr[G][E];  // this lane's elements of each query head of the group
    // in float4s: this lane's first, then at compile-time offsets (a head is D / 4, a packet N / 4)
    const float4* __restrict__ q4 = reinterpret_cast<const float4*>(q) + (long long)(b * heads + h * G) * (D / 4) +
                                    part * (P::N / 4);
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
#pragma unroll
            for (int e = 0; e < P::N; e += 4) {
                const float4 f = __ldg(q4 + g * (D / 4) + i * LANES * (P::N / 4) + e / 4);
                float* to = &qr[g][i * P::N + e];
                to[0] = f.x, to[1] = f.y, to[2] = f.z, to[3] = f.w;
            }

    // scores = q . k for every row of the chunk: the UNROLL x G dot products of a step (sum u * G + g:
    // row slot u, head g), each summed over the LANES lanes of its row and stored by one of them
    constexpr float SCALE = D == 64 ? 0.125f : D == 128 ? 0.08838834764831845f : 0.0625f;  // 1 / sqrt(D)
    constexpr int SUMS = UNROLL * G;
    constexpr int HELD = SUMS >= LANES ? SUMS / LANES : 1;  // sums a lane stores per step
    constexpr int RUN = SUMS >= LANES ? 1 : LANES / SUMS;   // lanes holding the same sum
    if constexpr (G == 8) load_rows<PER_ROW, LANES, PER_LANE, STEP>(kp, n - warp * ROWS - slot, raw);
    for (int t0 = warp * ROWS; t0 < n; t0 += STEP * UNROLL) {  // uniform per warp
        float s[SUMS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
#pragma unroll
            for (int g = 0; g < G; g++) s[u * G + g] = 0.f;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                float x[P::N];
                P::widen(raw[u][i], x);
#pragma unroll
                for (int g = 0; g < G; g++)
#pragma unroll
                    for (int e = 0; e < P::N; e++) s[u * G + g] = fmaf(qr[g][i * P::N + e], x[e], s[u * G + g]);
            }
        }
        halve_sums<SUMS, LANES / 2>(s, part);
        if (part % RUN == 0) {
#pragma unroll
            for (int j = 0; j < HELD; j++) {
                const int v = part / RUN * HELD + j, u = v / G, g = v % G;
                const int t = t0 + u * STEP + slot;
                if (t < n) smem[g * chunk_len + t] = s[j] * (P::SCALED ? SCALE * __ldg(k_scale + row0 + t) : SCALE);
            }
        }
        kp += STEP * UNROLL * PER_ROW;
        load_rows<PER_ROW, LANES, PER_LANE, STEP>(kp, n - t0 - STEP * UNROLL - slot, raw);
    }
    const uint4* __restrict__ vp = v4 + (row0 + warp * ROWS + slot) * PER_ROW + part;
    load_rows<PER_ROW, LANES, PER_LANE, STEP>(vp, n - warp * ROWS - slot, raw);
    __syncthreads();

    // numerically safe softmax numerators over the chunk (the merge divides), every head at once
    float m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) m[g] = NEG_INF, l[g] = 0.f;
    for (int t = threadIdx.x; t < n; t += THREADS)
#pragma unroll
        for (int g = 0; g < G; g++) m[g] = fmaxf(m[g], smem[g * chunk_len + t]);
    block_reduce(m, scratch, true);
    for (int t = threadIdx.x; t < n; t += THREADS)
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float p = __expf(smem[g * chunk_len + t] - m[g]);
            smem[g * chunk_len + t] = p;
            l[g] += p;
        }
    block_reduce(l, scratch, false);
    if (threadIdx.x == 0)
#pragma unroll
        for (int g = 0; g < G; g++) {
            const long long out_slot = ((long long)chunk * gridDim.y + bh) * G + g;
            part_max[out_slot] = m[g];
            part_sum[out_slot] = l[g];
        }
    __syncthreads();

    // weights x V, accumulated in registers
    float acc[G][E];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < E; e++) acc[g][e] = 0.f;
    for (int t0 = warp * ROWS; t0 < n; t0 += STEP * UNROLL) {
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = t0 + u * STEP + slot;
            if (t < n) {
                const float vs = P::SCALED ? __ldg(v_scale + row0 + t) : 1.f;
                float p[G];
#pragma unroll
                for (int g = 0; g < G; g++) p[g] = smem[g * chunk_len + t] * vs;
#pragma unroll
                for (int i = 0; i < PER_LANE; i++) {
                    float x[P::N];
                    P::widen(raw[u][i], x);
#pragma unroll
                    for (int g = 0; g < G; g++)
#pragma unroll
                        for (int e = 0; e < P::N; e++) acc[g][i * P::N + e] = fmaf(p[g], x[e], acc[g][i * P::N + e]);
                }
            }
        }
        vp += STEP * UNROLL * PER_ROW;
        load_rows<PER_ROW, LANES, PER_LANE, STEP>(vp, n - t0 - STEP * UNROLL - slot, raw);
    }
    // sum the warp's row slots (lanes LANES apart hold the same elements), then the warps
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < E; e++)
#pragma unroll
            for (int o = LANES; o < 32; o <<= 1) acc[g][e] += __shfl_xor_sync(FULL_MASK, acc[g][e], o);
    // then the warps' sums, in shared memory (the scores are done with): the upper half of the warps
    // writes its sums, the lower half adds its own (HALF x G x D floats), every thread adds the halves
    constexpr int HALF = WARPS / 2;
    float* __restrict__ mine = smem + (warp % HALF) * G * D;
    __syncthreads();  // every warp is done with the scores
#pragma unroll
    for (int upper = 1; upper >= 0; upper--) {
        if (slot == 0 && (warp >= HALF) == (bool)upper) {
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int i = 0; i < PER_LANE; i++)
#pragma unroll
                    for (int e = 0; e < P::N; e++) {
                        float& o = mine[g * D + (part + i * LANES) * P::N + e];
                        o = upper ? acc[g][i * P::N + e] : o + acc[g][i * P::N + e];
                    }
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < G * D; i += THREADS) {
        float r = 0.f;
#pragma unroll
        for (int w = 0; w < HALF; w++) r += smem[w * G * D + i];
        part_out[(((long long)chunk * gridDim.y + bh) * G) * D + i] = r;
    }
}

// One block per (batch x kv head, head of the group); threads across dimensions.
extern "C" __global__ void decode_merge(const float* __restrict__ po, const float* __restrict__ pm,
                                        const float* __restrict__ pl, float* __restrict__ out, int chunks,
                                        int batch_kv, int group, int heads, int kv_heads, int head_dim) {
    const int bh = blockIdx.x, g = blockIdx.y;
    const int b = bh / kv_heads, h = bh % kv_heads;
    float m = NEG_INF;
    for (int c = 0; c < chunks; c++) m = fmaxf(m, pm[((long long)c * batch_kv + bh) * group + g]);
    float l = 0.f;
    for (int c = 0; c < chunks; c++) {
        const long long slot = ((long long)c * batch_kv + bh) * group + g;
        l += __expf(pm[slot] - m) * pl[slot];
    }
    for (int j = threadIdx.x; j < head_dim; j += blockDim.x) {
        float acc = 0.f;
        for (int c = 0; c < chunks; c++) {
            const long long slot = ((long long)c * batch_kv + bh) * group + g;
            acc += __expf(pm[slot] - m) * po[slot * head_dim + j];
        }
        out[(long long)(b * heads + h * group + g) * head_dim + j] = acc / l;
    }
}
