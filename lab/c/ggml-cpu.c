/* Stand-in for lib/ollama/libggml-cpu-<variant>.so. Built once per variant with
 * -DVARIANT=<name>; the registry opens every variant, asks each for its score and keeps the
 * best-scoring one, as ggml_backend_load_best does.
 *
 * The variants and their features are those of ggml's GGML_CPU_ALL_VARIANTS (ggml/src/
 * CMakeLists.txt), and the score is ggml_backend_cpu_x86_score (ggml-cpu/arch/x86/
 * cpu-feats.cpp): 0 when the CPU lacks one feature the variant was built with, else 1 plus one
 * bit per feature, read with cpuid as ggml reads it. */
#include <cpuid.h>
#include <stdio.h>
#include <string.h>

#include "ggml-lab.h"

#ifndef VARIANT
#error "build with -DVARIANT=<x64|sse42|sandybridge|ivybridge|piledriver|haswell|skylakex|...>"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

enum {
    FMA = 1 << 0,
    F16C = 1 << 1,
    SSE42 = 1 << 2,
    BMI2 = 1 << 3,
    AVX = 1 << 4,
    AVX2 = 1 << 5,
    AVX_VNNI = 1 << 6,
    AVX512 = 1 << 7,
    AVX512_VBMI = 1 << 8,
    AVX512_BF16 = 1 << 9,
    AVX512_VNNI = 1 << 10,
    AMX_INT8 = 1 << 11,
    AMX_TILE = 1 << 12, /* built with, but not scored (ggml checks AMX_INT8 only) */
};

#define HASWELL (SSE42 | AVX | F16C | FMA | AVX2 | BMI2)

static const struct {
    const char *name;
    unsigned features;
} variants[] = {
    {"x64", 0},
    {"sse42", SSE42},
    {"sandybridge", SSE42 | AVX},
    {"ivybridge", SSE42 | AVX | F16C},
    {"piledriver", SSE42 | AVX | F16C | FMA},
    {"haswell", HASWELL},
    {"skylakex", HASWELL | AVX512},
    {"cannonlake", HASWELL | AVX512 | AVX512_VBMI},
    {"cascadelake", HASWELL | AVX512 | AVX512_VNNI},
    {"icelake", HASWELL | AVX512 | AVX512_VBMI | AVX512_VNNI},
    {"cooperlake", HASWELL | AVX512 | AVX512_VNNI | AVX512_BF16},
    {"zen4", HASWELL | AVX512 | AVX512_VBMI | AVX512_VNNI | AVX512_BF16},
    {"alderlake", HASWELL | AVX_VNNI},
    {"sapphirerapids", HASWELL | AVX512 | AVX512_VBMI | AVX512_VNNI | AVX512_BF16 | AMX_TILE | AMX_INT8},
};

static unsigned built_with(void) {
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++)
        if (strcmp(variants[i].name, STR(VARIANT)) == 0) return variants[i].features;
    return 0;
}

/* What this CPU has, from cpuid (leaf 1, leaf 7 subleaves 0 and 1). */
static unsigned cpu_has(void) {
    unsigned a, b, c, d, has = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        if (c & (1u << 12)) has |= FMA;
        if (c & (1u << 20)) has |= SSE42;
        if (c & (1u << 28)) has |= AVX;
        if (c & (1u << 29)) has |= F16C;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if (b & (1u << 5)) has |= AVX2;
        if (b & (1u << 8)) has |= BMI2;
        /* F, DQ, CD, BW, VL: ggml wants all five for AVX512. */
        unsigned avx512 = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
        if ((b & avx512) == avx512) has |= AVX512;
        if (c & (1u << 1)) has |= AVX512_VBMI;
        if (c & (1u << 11)) has |= AVX512_VNNI;
        if (d & (1u << 24)) has |= AMX_TILE;
        if (d & (1u << 25)) has |= AMX_INT8;
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        if (a & (1u << 4)) has |= AVX_VNNI;
        if (a & (1u << 5)) has |= AVX512_BF16;
    }
    return has;
}

int ggml_backend_score(void) {
    unsigned want = built_with() & ~(unsigned)AMX_TILE;
    if ((cpu_has() & want) != want) return 0;
    return 1 + (int)want;
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

/* The CPU part of llama-server's system_info line, in ggml_backend_cpu_get_features' order. */
static char features[512];

static const char *cpu_features(void) {
    static const struct {
        unsigned bit;
        const char *name;
    } order[] = {
        {SSE42, "SSE3"}, {SSE42, "SSSE3"}, {AVX, "AVX"}, {AVX_VNNI, "AVX_VNNI"},
        {AVX2, "AVX2"}, {F16C, "F16C"}, {FMA, "FMA"}, {BMI2, "BMI2"}, {AVX512, "AVX512"},
        {AVX512_VBMI, "AVX512_VBMI"}, {AVX512_VNNI, "AVX512_VNNI"}, {AVX512_BF16, "AVX512_BF16"},
        {AMX_INT8, "AMX_INT8"},
    };
    unsigned built = built_with();
    size_t len = (size_t)snprintf(features, sizeof(features), "CPU :");
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (built & order[i].bit && len < sizeof(features))
            len += (size_t)snprintf(features + len, sizeof(features) - len, " %s = 1 |", order[i].name);
    if (len < sizeof(features)) snprintf(features + len, sizeof(features) - len, " LLAMAFILE = 1 | REPACK = 1 |");
    return features;
}

static struct ggml_backend_reg cpu_reg = {"CPU", cpu_device_count, cpu_device_get, NULL};

struct ggml_backend_reg *ggml_backend_init(void) {
    cpu_reg.features = cpu_features();
    return &cpu_reg;
}
