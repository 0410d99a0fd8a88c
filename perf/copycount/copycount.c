// LD_PRELOAD shim that counts large user-space copies: every memcpy/memmove of at least
// COPYCOUNT_MIN bytes (default 16384) is counted, and the totals are written to the file named
// by COPYCOUNT_OUT (default stderr) when the process exits. Used by perf/copycount.sh to show
// how many times a server copies each 32 KB payload (kernel socket copies are not counted).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*real_memcpy)(void *, const void *, size_t);
static void *(*real_memmove)(void *, const void *, size_t);
static size_t threshold = 16384;
static unsigned long long large_calls, large_bytes;

__attribute__((constructor)) static void init(void) {
  real_memcpy = dlsym(RTLD_NEXT, "memcpy");
  real_memmove = dlsym(RTLD_NEXT, "memmove");
  const char *min = getenv("COPYCOUNT_MIN");
  if (min) threshold = strtoull(min, NULL, 10);
}

static void count(size_t n) {
  if (n >= threshold) {
    __atomic_fetch_add(&large_calls, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&large_bytes, n, __ATOMIC_RELAXED);
  }
}

static void *slow_copy(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if (d < s) {
    for (size_t i = 0; i < n; i++) d[i] = s[i];
  } else {
    for (size_t i = n; i > 0; i--) d[i - 1] = s[i - 1];
  }
  return dst;
}

void *memcpy(void *dst, const void *src, size_t n) {
  count(n);
  return real_memcpy ? real_memcpy(dst, src, n) : slow_copy(dst, src, n);
}

void *memmove(void *dst, const void *src, size_t n) {
  count(n);
  return real_memmove ? real_memmove(dst, src, n) : slow_copy(dst, src, n);
}

__attribute__((destructor)) static void report(void) {
  const char *path = getenv("COPYCOUNT_OUT");
  FILE *out = path ? fopen(path, "w") : stderr;
  if (!out) return;
  fprintf(out, "threshold %zu\nlarge_copies %llu\nlarge_bytes %llu\n", threshold, large_calls,
          large_bytes);
  if (path) fclose(out);
}
