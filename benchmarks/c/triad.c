/* Reference STREAM-style triad for `make bench`: a[i] = b[i] + s*c[i], OpenMP static schedule.
 * Usage: triad N REPS. Prints the best bandwidth in bytes/s (STREAM counting: 3 arrays x 8 bytes). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "pages.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: triad N REPS\n"); return 2; }
    long n = atol(argv[1]);
    int reps = atoi(argv[2]);
    double *a = huge_array(n), *b = huge_array(n), *c = huge_array(n);
    if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); return 1; }
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 0.0; b[i] = 1.0 + (i % 7); c[i] = 0.5 + (i % 3); }
    double best = 1e30, s = 3.0;
    for (int r = 0; r < reps; r++) {
        double t = omp_get_wtime();
        #pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    for (long i = 0; i < n; i += n / 97 + 1)
        if (a[i] != b[i] + s * c[i]) { fprintf(stderr, "triad wrong at %ld\n", i); return 1; }
    printf("%.6e\n", 3.0 * sizeof(double) * n / best);
    return 0;
}
