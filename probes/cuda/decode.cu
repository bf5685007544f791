// Split-K (flash-decoding) decode attention for the harness's GPU decode probe.
// q [B*H, D] fp32; K, V [B*H_kv*S, D] in the cache dtype (fp32, fp16, bf16, int8 with a per-row
// fp32 scale). decode_partial_<dtype>: one block per (chunk of tokens, batch x kv head); every query
// head of the GQA group uses each K and V row the block reads. Scores live in shared memory
// (group x chunk floats); the block writes unnormalised partial outputs, maxima and sums, and
// decode_merge combines the chunks. D <= 256 and a multiple of 32; blockDim.x = 128.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define MAX_GROUP 8
#define THREADS 128

__device__ __forceinline__ float load_elem(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_elem(const __half* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ float load_elem(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load_elem(const signed char* p, long long i) { return (float)p[i]; }

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float block_reduce(float x, float* scratch, bool take_max) {
    for (int o = 16; o > 0; o >>= 1) {
        float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = take_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < THREADS / 32; w++) r = take_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    return r;
}

template <typename T, bool SCALED>
__device__ void decode_partial(const float* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               const float* __restrict__ k_scale, const float* __restrict__ v_scale,
                               float* __restrict__ part_out, float* __restrict__ part_max, float* __restrict__ part_sum,
                               int heads, int kv_heads, int seq_len, int head_dim, int chunk_len) {
    extern __shared__ float scores[];  // [group][chunk_len]
    __shared__ float scratch[THREADS / 32];
    const int group = heads / kv_heads;
    const int chunk = blockIdx.x, chunks = gridDim.x, bh = blockIdx.y;
    const int b = bh / kv_heads, h = bh % kv_heads;
    const int s0 = chunk * chunk_len, s1 = min(seq_len, s0 + chunk_len), n = max(0, s1 - s0);
    const long long row0 = (long long)bh * seq_len + s0;
    const float scale = rsqrtf((float)head_dim);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int per_lane = head_dim / 32;

    float qreg[MAX_GROUP][8];  // this lane's slice of each query head of the group (head_dim <= 256)
    for (int g = 0; g < group; g++)
        for (int e = 0; e < per_lane; e++) qreg[g][e] = q[(long long)(b * heads + h * group + g) * head_dim + e * 32 + lane];

    for (int t = warp; t < n; t += THREADS / 32) {  // scores: a warp per token, lanes across the row
        const long long row = row0 + t;
        float kv[8];
        for (int e = 0; e < per_lane; e++) kv[e] = load_elem(k, row * head_dim + e * 32 + lane);
        const float ks = SCALED ? k_scale[row] : 1.f;
        for (int g = 0; g < group; g++) {
            float s = 0.f;
            for (int e = 0; e < per_lane; e++) s += qreg[g][e] * kv[e];
            s = warp_sum(s);
            if (lane == 0) scores[g * chunk_len + t] = s * scale * ks;
        }
    }
    __syncthreads();
    for (int g = 0; g < group; g++) {  // numerically safe softmax numerators over this chunk
        float m = -INFINITY;
        for (int t = threadIdx.x; t < n; t += THREADS) m = fmaxf(m, scores[g * chunk_len + t]);
        m = block_reduce(m, scratch, true);
        float l = 0.f;
        for (int t = threadIdx.x; t < n; t += THREADS) {
            float p = __expf(scores[g * chunk_len + t] - m);
            scores[g * chunk_len + t] = p;
            l += p;
        }
        l = block_reduce(l, scratch, false);
        if (threadIdx.x == 0) {
            const long long slot = ((long long)chunk * gridDim.y + bh) * group + g;
            part_max[slot] = m;
            part_sum[slot] = l;
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < head_dim; j += THREADS) {  // weights x V: a thread per dimension
        float acc[MAX_GROUP];
        for (int g = 0; g < group; g++) acc[g] = 0.f;
        for (int t = 0; t < n; t++) {
            const long long row = row0 + t;
            const float x = load_elem(v, row * head_dim + j) * (SCALED ? v_scale[row] : 1.f);
            for (int g = 0; g < group; g++) acc[g] += scores[g * chunk_len + t] * x;
        }
        for (int g = 0; g < group; g++)
            part_out[(((long long)chunk * gridDim.y + bh) * group + g) * head_dim + j] = acc[g];
    }
    (void)chunks;
}

#define PARTIAL(SUF, T, SCALED)                                                                          \
extern "C" __global__ void decode_partial_##SUF(const float* q, const T* k, const T* v, const float* ks,    \
        const float* vs, float* po, float* pm, float* pl, int heads, int kv_heads, int seq_len,             \
        int head_dim, int chunk_len) {                                                                      \
    decode_partial<T, SCALED>(q, k, v, ks, vs, po, pm, pl, heads, kv_heads, seq_len, head_dim, chunk_len);  \
}

PARTIAL(fp32, float, false)
PARTIAL(fp16, __half, false)
PARTIAL(bf16, __nv_bfloat16, false)
PARTIAL(int8, signed char, true)

// One block per (batch x kv head, head of the group); threads across dimensions.
extern "C" __global__ void decode_merge(const float* __restrict__ po, const float* __restrict__ pm,
                                        const float* __restrict__ pl, float* __restrict__ out, int chunks,
                                        int batch_kv, int group, int heads, int kv_heads, int head_dim) {
    const int bh = blockIdx.x, g = blockIdx.y;
    const int b = bh / kv_heads, h = bh % kv_heads;
    float m = -INFINITY;
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
