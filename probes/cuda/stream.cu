// STREAM kernels for the harness's GPU bandwidth probe: 16-byte vector accesses (float4 / double2),
// grid-stride loops. n is the number of vectors; the host sizes arrays to whole vectors.
// `read` writes one double partial sum per block (summed on the host) so nothing is optimised away.
// Reads are plain const __restrict__ loads: nvcc makes them LDG.E.128.CONSTANT and unrolls each loop
// four times (77 such loads in the sm_90 module); written as __ldg it unrolls none (15).

#define STREAM_KERNELS(V, SUF, LANES)                                                            \
extern "C" __global__ void copy_##SUF(const V* __restrict__ a, V* __restrict__ c, long long n) {   \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                  \
         i += (long long)gridDim.x * blockDim.x) c[i] = a[i];                                    \
}                                                                                                \
extern "C" __global__ void scale_##SUF(V* __restrict__ b, const V* __restrict__ c, double s,     \
                                       long long n) {                                            \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                  \
         i += (long long)gridDim.x * blockDim.x) {                                               \
        V x = c[i]; SCALE_##LANES(x, s); b[i] = x;                                               \
    }                                                                                            \
}                                                                                                \
extern "C" __global__ void add_##SUF(const V* __restrict__ a, const V* __restrict__ b,           \
                                     V* __restrict__ c, long long n) {                           \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                  \
         i += (long long)gridDim.x * blockDim.x) {                                               \
        V x = a[i], y = b[i]; ADD_##LANES(x, y); c[i] = x;                                       \
    }                                                                                            \
}                                                                                                \
extern "C" __global__ void triad_##SUF(V* __restrict__ a, const V* __restrict__ b,               \
                                       const V* __restrict__ c, double s, long long n) {         \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                  \
         i += (long long)gridDim.x * blockDim.x) {                                               \
        V x = b[i], y = c[i]; SCALE_##LANES(y, s); ADD_##LANES(x, y); a[i] = x;                  \
    }                                                                                            \
}                                                                                                \
extern "C" __global__ void read_##SUF(const V* __restrict__ a, double* __restrict__ partial,      \
                                      long long n) {                                             \
    __shared__ double warp_sums[32];                                                             \
    double acc = 0.0;                                                                            \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                  \
         i += (long long)gridDim.x * blockDim.x) { V x = a[i]; acc += SUM_##LANES(x); }          \
    BLOCK_PARTIAL(acc, warp_sums, partial);                                                      \
}

// A block's sum of every thread's `acc` into partial[blockIdx.x]: warp shuffles, then one double per warp.
#define BLOCK_PARTIAL(acc, warp_sums, partial)                                                     \
    {                                                                                              \
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);            \
        if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;                           \
        __syncthreads();                                                                           \
        if (threadIdx.x == 0) {                                                                    \
            double total = 0.0;                                                                    \
            for (int w = 0; w < (blockDim.x + 31) / 32; w++) total += warp_sums[w];               \
            partial[blockIdx.x] = total;                                                           \
        }                                                                                          \
    }

// Parameters are named p and q: a parameter named x or y would also replace the member names in
// .x and .y (SCALE_4(y, s) once expanded to y.y *= f; y.y *= f; ..., leaving lane x unscaled)
#define SCALE_4(p, s) { float f = (float)(s); p.x *= f; p.y *= f; p.z *= f; p.w *= f; }
#define ADD_4(p, q) { p.x += q.x; p.y += q.y; p.z += q.z; p.w += q.w; }
#define SUM_4(p) ((double)p.x + (double)p.y + (double)p.z + (double)p.w)
#define SCALE_2(p, s) { p.x *= (s); p.y *= (s); }
#define ADD_2(p, q) { p.x += q.x; p.y += q.y; }
#define SUM_2(p) (p.x + p.y)

STREAM_KERNELS(float4, fp32, 4)
STREAM_KERNELS(double2, fp64, 2)

// The hierarchy sweep's reads: `reps` passes over a working set in one launch, so small sets are
// timed by their bandwidth, not by launch overhead. Odd passes read each neighbouring pair swapped
// (i ^ 1), so no pass can reuse the previous one's registers. n must be even. Every block reads the
// same slice in every pass, on the same SM:
// - read_reps_fp32 loads through L2 only (__ldcg: ld.global.cg), so its L2-sized sets measure L2;
//   plain loads would be served from the SM's L1 once its slice fits there (up to 256 KiB per SM
//   on an H100: a 30 MiB set over 132 SMs), and the sweep's "L2" would be L1.
// - read_reps_l1_fp32 loads through L1 (plain const loads) for sets whose slice per SM sits deep in
//   L1, and sums in fp32 lanes: widening each element to fp64 (F2F.F64.F32: 16 per clock per SM on
//   sm_80/sm_90 in the CUDA Programming Guide's throughput table) would cap it at 64 bytes per clock
//   per SM, half of the 128 NVIDIA gives for L1 (neither figure measured here).
extern "C" __global__ void read_reps_fp32(const float4* __restrict__ a, double* __restrict__ partial,
                                          long long n, int reps) {
    __shared__ double warp_sums[32];
    double acc = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (int r = 0; r < reps; r++) {
        const long long f = r & 1;
        long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
        // four loads in flight per thread (nvcc issues each __ldcg of its own unrolled loop only
        // after the previous one's sum), so a small set with few warps per SM still fills the L2
        for (; i + 3 * stride < n; i += 4 * stride) {
            const float4 x0 = __ldcg(a + (i ^ f)), x1 = __ldcg(a + ((i + stride) ^ f));
            const float4 x2 = __ldcg(a + ((i + 2 * stride) ^ f)), x3 = __ldcg(a + ((i + 3 * stride) ^ f));
            acc += (SUM_4(x0) + SUM_4(x1)) + (SUM_4(x2) + SUM_4(x3));
        }
        for (; i < n; i += stride) {
            const float4 x = __ldcg(a + (i ^ f));
            acc += SUM_4(x);
        }
    }
    BLOCK_PARTIAL(acc, warp_sums, partial);
}

#define L1_FLUSH_REPS 64  // passes an fp32 lane sums before it is added to the fp64 total
extern "C" __global__ void read_reps_l1_fp32(const float4* __restrict__ a, double* __restrict__ partial,
                                             long long n, int reps) {
    __shared__ double warp_sums[32];
    double acc = 0.0;
    float4 lanes = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < reps; r++) {
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
             i += (long long)gridDim.x * blockDim.x) {
            float4 x = a[i ^ (long long)(r & 1)];
            ADD_4(lanes, x);
        }
        if (r % L1_FLUSH_REPS == L1_FLUSH_REPS - 1 || r == reps - 1) {
            acc += SUM_4(lanes);
            lanes = make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    BLOCK_PARTIAL(acc, warp_sums, partial);
}
