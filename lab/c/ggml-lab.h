/* The backend interface shared by the lab's stand-ins for Ollama's bundled ggml libraries.
 *
 * Real ggml hands out a `ggml_backend_reg_t` whose vtable enumerates devices and their
 * properties. The lab keeps that shape with the few fields Ollama's discovery reads, so the
 * `ollama` stand-in (Rust) and `llama-server` (C) can ask any loaded backend for its devices. */
#ifndef GGML_LAB_H
#define GGML_LAB_H

#include <stddef.h>

struct ggml_lab_device {
    char id[96];          /* "GPU-<uuid>" for CUDA, "cpu" for the CPU backend */
    char name[256];
    char library[16];     /* "CUDA" or "CPU" */
    unsigned long long total;
    unsigned long long free;
    int cc_major, cc_minor;
    int driver_major, driver_minor;
};

struct ggml_backend_reg {
    const char *name;
    int (*device_count)(void);
    int (*device_get)(int index, struct ggml_lab_device *out);
    /* The backend's part of llama-server's `system_info:` line ("CUDA : ARCHS = ... |"), or NULL. */
    const char *features;
};

/* Exported by every backend library (GGML_BACKEND_DL_IMPL in real ggml). */
typedef struct ggml_backend_reg *(*ggml_backend_init_t)(void);
/* Exported by CPU variants only: 0 means "this CPU cannot run me". */
typedef int (*ggml_backend_score_t)(void);

/* libggml-base.so */
void ggml_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* libggml.so: the backend registry (ggml-backend-reg.cpp). */
struct ggml_backend_reg *ggml_backend_load(const char *path);
struct ggml_backend_reg *ggml_backend_load_best(const char *name, const char *dir);

#endif
