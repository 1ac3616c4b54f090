#!/usr/bin/env bash
# The machine's memory read bandwidth: the ceiling of batch-1 decode, which reads every weight
# once per token (docs/benchmarks.md, "Batch-1 decode against a native llama.cpp build").
# Streams a 512 MiB buffer (far above any L3) with THREADS threads (default 2), AVX-512 loads
# where the compiler's host CPU has them, and prints the best of ROUNDS passes in GB/s.
#
# Usage: scripts/slm/read_bandwidth.sh [ROUNDS]      (needs gcc with OpenMP)
set -euo pipefail
rounds=${1:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/bw.c" <<'C'
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
  int rounds = atoi(argv[1]);
  size_t n = (size_t)128 << 20; /* floats: 512 MiB */
  float *a = aligned_alloc(64, n * sizeof(float));
  for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
  double best = 0, total = 0;
  for (int r = 0; r < rounds; r++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < n; i += 64) {
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (size_t k = 0; k < 64; k++) s += a[i + k];
      sum += s;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    double gbs = n * sizeof(float) / dt / 1e9;
    if (gbs > best) best = gbs;
    total += sum;
  }
  printf("{\"threads\":%d,\"read_gb_s\":%.2f,\"checksum\":%.0f}\n", omp_get_max_threads(), best,
         total);
  return 0;
}
C
gcc -O3 -march=native -fopenmp "$dir/bw.c" -o "$dir/bw"
OMP_NUM_THREADS=${THREADS:-2} "$dir/bw" "$rounds"
