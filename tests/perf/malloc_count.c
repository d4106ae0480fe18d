/* Counts malloc/calloc/realloc calls and the bytes they ask for, for benchmarks run with PYTHONMALLOC=malloc.
   Build: cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c -ldl
   Use:   LD_PRELOAD=./malloc_count.so PYTHONMALLOC=malloc python ...; read the counter with ctypes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

static unsigned long long count;
static unsigned long long bytes;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);

/* dlsym may call calloc before real_calloc is known: serve it from a static arena */
static char arena[4096];
static size_t arena_used;

unsigned long long malloc_count(void) { return count; }
unsigned long long malloc_bytes(void) { return bytes; }

void *malloc(size_t n) {
    if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
    count++;
    bytes += n;
    return real_malloc(n);
}

void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        static int resolving;
        if (resolving) {
            void *p = arena + arena_used;
            arena_used += (a * b + 15) & ~(size_t)15;
            return p;
        }
        resolving = 1;
        real_calloc = dlsym(RTLD_NEXT, "calloc");
        resolving = 0;
    }
    count++;
    bytes += a * b;
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n) {
    if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
    count++;
    bytes += n;
    return real_realloc(p, n);
}
