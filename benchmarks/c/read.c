/* Reference read bandwidth for `make bench`: a vectorised sum of one array (OpenMP static schedule,
 * a reduction), as the harness's `read` kernel sums it. Usage: read N REPS. Prints the best bandwidth
 * in bytes/s (1 array x 8 bytes). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "pages.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: read N REPS\n"); return 2; }
    long n = atol(argv[1]);
    int reps = atoi(argv[2]);
    double *a = huge_array(n);
    if (!a) { fprintf(stderr, "out of memory\n"); return 1; }
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) a[i] = 1.0 + (i % 7);
    double expect = 0.0;
    for (long k = 0; k < 7; k++) expect += (1.0 + k) * ((n - k + 6) / 7);  /* each residue's count */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double s = 0.0, t = omp_get_wtime();
        #pragma omp parallel for simd schedule(static) reduction(+ : s)  /* simd: reassociated, vectorised */
        for (long i = 0; i < n; i++) s += a[i];
        t = omp_get_wtime() - t;
        if (t < best) best = t;
        if (fabs(s - expect) > 1e-9 * expect) { fprintf(stderr, "read wrong: %.17g vs %.17g\n", s, expect); return 1; }
    }
    printf("%.6e\n", sizeof(double) * n / best);
    return 0;
}
