// FMA peak kernels: every thread runs ACC independent FMA chains a = a * x + y for `iters` steps
// (fp64, fp32, and fp16 as half2 where one instruction is two FMAs). The sum of the chains is
// stored, so no chain can be removed; the host checks it against the closed form, after the timed
// launches and after one of three steps (probes/gpu_peak.py).
#include <cuda_fp16.h>

#define ACC 8

extern "C" __global__ void fma_fp32(float* __restrict__ out, float x, float y, int iters) {
    float a[ACC];
    for (int k = 0; k < ACC; k++) a[k] = 0.5f + 0.0625f * k;
#pragma unroll 16  // 16 x ACC FMAs per loop branch
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < ACC; k++) a[k] = fmaf(a[k], x, y);
    }
    float s = 0.f;
    for (int k = 0; k < ACC; k++) s += a[k];
    out[blockIdx.x * (long long)blockDim.x + threadIdx.x] = s;
}

extern "C" __global__ void fma_fp64(double* __restrict__ out, double x, double y, int iters) {
    double a[ACC];
    for (int k = 0; k < ACC; k++) a[k] = 0.5 + 0.0625 * k;
#pragma unroll 16  // 16 x ACC FMAs per loop branch
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < ACC; k++) a[k] = fma(a[k], x, y);
    }
    double s = 0.0;
    for (int k = 0; k < ACC; k++) s += a[k];
    out[blockIdx.x * (long long)blockDim.x + threadIdx.x] = s;
}

extern "C" __global__ void fma_fp16(float* __restrict__ out, float x, float y, int iters) {
    __half2 a[ACC];
    const __half2 hx = __float2half2_rn(x), hy = __float2half2_rn(y);
    for (int k = 0; k < ACC; k++) a[k] = __float2half2_rn(0.5f + 0.0625f * k);
#pragma unroll 16  // 16 x ACC FMAs per loop branch
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < ACC; k++) a[k] = __hfma2(a[k], hx, hy);
    }
    float s = 0.f;
    for (int k = 0; k < ACC; k++) s += __low2float(a[k]) + __high2float(a[k]);
    out[blockIdx.x * (long long)blockDim.x + threadIdx.x] = s;
}
