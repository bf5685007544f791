// Split-K (flash-decoding) decode attention for the harness's GPU decode probe.
// q [B*H, D] fp32; K, V [B*H_kv*S, D] in the cache dtype (fp32, fp16, bf16, int8 with a per-row
// fp32 scale). decode_partial<T, D, G>: one block per (chunk of tokens, batch x kv head); every
// query head of the GQA group (G of them) uses each K and V row the block reads. Scores live in
// shared memory (G x chunk floats); the block writes unnormalised partial outputs, maxima and sums,
// and decode_merge combines the chunks. D is 64, 128 or 256; G is 1, 2, 4 or 8.
//
// Built for bandwidth: every lane loads 16-byte packets (a warp reads 512 contiguous bytes per
// load: one fp32 row of 128, two fp16 rows or four int8 rows), UNROLL rows per lane are in flight
// before the first is used, q and the accumulators stay in registers (compile-time indices only),
// and the cross-lane sums are warp shuffles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define THREADS 256
#define WARPS (THREADS / 32)
#define UNROLL 4
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

// Issue all UNROLL x PER_LANE 16-byte loads of this lane's rows t, t + STEP, ... before any is used
// (zeros past the chunk's end).
template <int PER_ROW, int LANES, int PER_LANE, int STEP>
__device__ __forceinline__ void load_rows(const uint4* __restrict__ src, long long row0, int t, int n, int part,
                                          uint4 (&raw)[UNROLL][PER_LANE]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++, t += STEP)
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            raw[u][i] = t < n ? __ldg(src + (row0 + t) * PER_ROW + part + i * LANES) : make_uint4(0, 0, 0, 0);
}

__device__ __forceinline__ float block_reduce(float x, float* scratch, bool take_max) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(FULL_MASK, x, o);
        x = take_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    float r = scratch[0];
#pragma unroll
    for (int w = 1; w < WARPS; w++) r = take_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    return r;
}

// Two blocks per SM (registers capped at 128) unless q and the accumulators alone need more.
template <typename T, int D, int G>
__global__ void __launch_bounds__(THREADS, G * lane_elems<T, D>() > 64 ? 1 : 2)
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

    extern __shared__ float smem[];  // scores [G][chunk_len]; afterwards the block's output [G][D]
    __shared__ float scratch[WARPS];
    const int chunk = blockIdx.x, bh = blockIdx.y;
    const int b = bh / kv_heads, h = bh % kv_heads;
    const int s0 = chunk * chunk_len, n = min(seq_len - s0, chunk_len);
    const long long row0 = (long long)bh * seq_len + s0;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int slot = lane / LANES, part = lane % LANES;  // this lane's row of the warp's ROWS, its packets
    const uint4* __restrict__ k4 = reinterpret_cast<const uint4*>(k);
    const uint4* __restrict__ v4 = reinterpret_cast<const uint4*>(v);

    float qr[G][E];  // this lane's elements of each query head of the group, pre-scaled by 1/sqrt(D)
    const float scale = rsqrtf((float)D);
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
#pragma unroll
            for (int e = 0; e < P::N; e++)
                qr[g][i * P::N + e] = scale * q[(long long)(b * heads + h * G + g) * D + (part + i * LANES) * P::N + e];

    // scores = q . k for every row of the chunk
    for (int t0 = warp * ROWS; t0 < n; t0 += STEP * UNROLL) {  // uniform per warp: shuffles see all lanes
        uint4 raw[UNROLL][PER_LANE];
        load_rows<PER_ROW, LANES, PER_LANE, STEP>(k4, row0, t0 + slot, n, part, raw);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = t0 + u * STEP + slot;
            float s[G];
#pragma unroll
            for (int g = 0; g < G; g++) s[g] = 0.f;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                float x[P::N];
                P::widen(raw[u][i], x);
#pragma unroll
                for (int g = 0; g < G; g++)
#pragma unroll
                    for (int e = 0; e < P::N; e++) s[g] = fmaf(qr[g][i * P::N + e], x[e], s[g]);
            }
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int o = LANES / 2; o > 0; o >>= 1) s[g] += __shfl_xor_sync(FULL_MASK, s[g], o);
            if (part == 0 && t < n) {
                const float ks = P::SCALED ? k_scale[row0 + t] : 1.f;
#pragma unroll
                for (int g = 0; g < G; g++) smem[g * chunk_len + t] = s[g] * ks;
            }
        }
    }
    __syncthreads();

    // numerically safe softmax numerators over the chunk (the merge divides)
#pragma unroll
    for (int g = 0; g < G; g++) {
        float m = NEG_INF;
        for (int t = threadIdx.x; t < n; t += THREADS) m = fmaxf(m, smem[g * chunk_len + t]);
        m = block_reduce(m, scratch, true);
        float l = 0.f;
        for (int t = threadIdx.x; t < n; t += THREADS) {
            const float p = __expf(smem[g * chunk_len + t] - m);
            smem[g * chunk_len + t] = p;
            l += p;
        }
        l = block_reduce(l, scratch, false);
        if (threadIdx.x == 0) {
            const long long out_slot = ((long long)chunk * gridDim.y + bh) * G + g;
            part_max[out_slot] = m;
            part_sum[out_slot] = l;
        }
    }
    __syncthreads();

    // weights x V, accumulated in registers
    float acc[G][E];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < E; e++) acc[g][e] = 0.f;
    for (int t0 = warp * ROWS; t0 < n; t0 += STEP * UNROLL) {
        uint4 raw[UNROLL][PER_LANE];
        load_rows<PER_ROW, LANES, PER_LANE, STEP>(v4, row0, t0 + slot, n, part, raw);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = t0 + u * STEP + slot;
            if (t < n) {
                const float vs = P::SCALED ? v_scale[row0 + t] : 1.f;
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
    }
    // sum the warp's row slots (lanes LANES apart hold the same elements), then the warps
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < E; e++)
#pragma unroll
            for (int o = LANES; o < 32; o <<= 1) acc[g][e] += __shfl_xor_sync(FULL_MASK, acc[g][e], o);
    __syncthreads();  // every warp is done with the scores: reuse smem for the block's output
    for (int i = threadIdx.x; i < G * D; i += THREADS) smem[i] = 0.f;
    __syncthreads();
    if (slot == 0) {
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
#pragma unroll
                for (int e = 0; e < P::N; e++)
                    atomicAdd(&smem[g * D + (part + i * LANES) * P::N + e], acc[g][i * P::N + e]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += THREADS)
        part_out[(((long long)chunk * gridDim.y + bh) * G) * D + i] = smem[i];
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
