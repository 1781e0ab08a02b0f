/* A stand-in for NVIDIA's libcuda.so.1 in the shim's pass-through tests: a few listed driver
 * functions whose results show whether every argument arrived, and a cuGetProcAddress_v2.
 * The shim forwards without knowing signatures, so cuTexRefSetBorderColor takes one of its
 * own here: variadic, with doubles in every vector register and on the stack. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Calls that reached this library. */
int fake_calls;

static unsigned long long mix(unsigned long long hash, unsigned long long value) {
    return hash * 31 + value;
}

static int folded(unsigned long long hash) { return (int)(hash % 1000003); }

/* The real signature: eleven arguments, five of them on the stack. */
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    unsigned long long values[] = {(uintptr_t)f, gx, gy, gz, bx, by, bz, shared,
                                   (uintptr_t)stream, (uintptr_t)params, (uintptr_t)extra};
    unsigned long long hash = 0;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        hash = mix(hash, values[i]);
    fake_calls++;
    return folded(hash);
}

/* `count` pairs of (int, double): ints past the fifth and doubles past the eighth go on the
 * stack, and the caller sets %al. */
int cuTexRefSetBorderColor(int count, ...) {
    va_list args;
    unsigned long long hash = 0;
    va_start(args, count);
    for (int i = 0; i < count; i++) {
        hash = mix(hash, (unsigned)va_arg(args, int));
        hash = mix(hash, (unsigned long long)(va_arg(args, double) * 8));
    }
    va_end(args);
    fake_calls++;
    return folded(hash);
}

int cuMemGetInfo_v2(size_t *free, size_t *total) {
    *free = 111;
    *total = 222;
    fake_calls++;
    return 0;
}

int cuGetExportTable(const void **table, const void *id) {
    *table = id;
    fake_calls++;
    return 0;
}

/* Not exported: cuGetProcAddress may still hand it out. */
static int hidden_function(void) { return 4242; }

int cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags,
                        int *status) {
    static const struct {
        const char *name;
        void *function;
    } known[] = {
        {"cuLaunchKernel", (void *)cuLaunchKernel},
        {"cuTexRefSetBorderColor", (void *)cuTexRefSetBorderColor},
        {"cuMemGetInfo", (void *)cuMemGetInfo_v2},
        {"cuHidden", (void *)hidden_function},
    };
    (void)version;
    (void)flags;
    fake_calls++;
    *pfn = NULL;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(symbol, known[i].name) == 0)
            *pfn = known[i].function;
    if (status)
        *status = *pfn ? 0 : 1;
    return *pfn ? 0 : 500;
}
