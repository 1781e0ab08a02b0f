/* Stand-in for lib/ollama/libggml-cpu-<variant>.so. Built once per variant with
 * -DVARIANT=<name>; the registry loads every variant and keeps the best-scoring one,
 * as ggml_backend_load_best does. Scores use the CPU features each variant needs. */
#include <string.h>

#include "ggml-lab.h"

#ifndef VARIANT
#error "build with -DVARIANT=<x64|sse42|sandybridge|haswell|skylakex|icelake|alderlake>"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

static int variant_is(const char *name) { return strcmp(STR(VARIANT), name) == 0; }

int ggml_backend_score(void) {
    __builtin_cpu_init();
    if (variant_is("x64")) return 1;
    if (variant_is("sse42")) return __builtin_cpu_supports("sse4.2") ? 2 : 0;
    if (variant_is("sandybridge")) return __builtin_cpu_supports("avx") ? 3 : 0;
    if (variant_is("haswell"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 4 : 0;
    if (variant_is("skylakex")) return __builtin_cpu_supports("avx512f") ? 5 : 0;
    if (variant_is("icelake")) return __builtin_cpu_supports("avx512vbmi") ? 6 : 0;
    if (variant_is("alderlake"))
        return __builtin_cpu_supports("avxvnni") && !__builtin_cpu_supports("avx512f") ? 7 : 0;
    return 0;
}

static int cpu_device_count(void) { return 1; }

static int cpu_device_get(int index, struct ggml_lab_device *out) {
    if (index != 0) return -1;
    memset(out, 0, sizeof(*out));
    strcpy(out->id, "cpu");
    strcpy(out->name, "CPU");
    strcpy(out->library, "CPU");
    return 0;
}

static struct ggml_backend_reg cpu_reg = {"CPU", cpu_device_count, cpu_device_get, NULL};

struct ggml_backend_reg *ggml_backend_init(void) { return &cpu_reg; }
