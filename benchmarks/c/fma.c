/* Reference FMA peak for `make bench`: independent fp32 FMA chains in vector intrinsics (fp16 in
 * AVX512-FP16 ones, built with -DFP16), one block per OpenMP thread. Usage: fma ITERS REPS. Prints
 * the best FLOP/s. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(FP16)
#ifndef __AVX512FP16__
#error "FP16 needs AVX512-FP16 (-march=native on a CPU that has it)"
#endif
typedef __m512h vec;
#define LANES 32
#define NACC 16
#define SET1(v) _mm512_set1_ph((_Float16)(v))
#define FMADD _mm512_fmadd_ph
#define HSUM(v) ((float)_mm512_reduce_add_ph(v))
#define X (1.0f - 1.0f / 64)  /* fp16 chains stop within 2**-4 of 4 = y / (1 - x) */
#define Y (1.0f / 16)
#define FIXED 4.0f
#define RTOL 2.5e-2f
#elif defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define NACC 16
#define SET1 _mm512_set1_ps
#define FMADD _mm512_fmadd_ps
#define HSUM _mm512_reduce_add_ps
#else
typedef __m256 vec;
#define LANES 8
#define NACC 12
#define SET1 _mm256_set1_ps
#define FMADD _mm256_fmadd_ps
static float HSUM(__m256 v) { float t[8]; _mm256_storeu_ps(t, v); float s = 0; for (int i = 0; i < 8; i++) s += t[i]; return s; }
#endif
#ifndef X
#define X (1.0f - 1.0f / 4096)
#define Y (1.0f / 8192)
#define FIXED 0.5f
#define RTOL 1e-2f
#endif

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: fma ITERS REPS\n"); return 2; }
    long iters = atol(argv[1]);
    int reps = atoi(argv[2]);
    double best = 1e30;
    float sink = 0;
    int threads = 1;
    for (int r = 0; r < reps; r++) {
        double t = omp_get_wtime();
        #pragma omp parallel reduction(+ : sink)
        {
            threads = omp_get_num_threads();
            vec acc[NACC];
            for (int j = 0; j < NACC; j++) acc[j] = SET1(0.5f + 0.01f * j + 0.1f * omp_get_thread_num());
            const vec x = SET1(X), y = SET1(Y);
            for (long i = 0; i < iters; i++)
                for (int j = 0; j < NACC; j++) acc[j] = FMADD(acc[j], x, y);
            for (int j = 0; j < NACC; j++) sink += HSUM(acc[j]);
        }
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    /* every chain converges to y / (1 - x) */
    float expect = (float)reps * threads * NACC * LANES * FIXED;
    if (!(fabsf(sink - expect) <= RTOL * expect)) { fprintf(stderr, "fma wrong: %g vs %g\n", sink, expect); return 1; }
    printf("%.6e\n", 2.0 * LANES * NACC * (double)iters * threads / best);
    return 0;
}
