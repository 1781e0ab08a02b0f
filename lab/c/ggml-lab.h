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

/* libggml-base.so: ggml's logger, with its levels (ggml.h) and a settable callback; the default
 * prints every level to stderr as it is, as `ollama gpu-discover` shows it. */
enum ggml_log_level {
    GGML_LOG_LEVEL_NONE = 0,
    GGML_LOG_LEVEL_DEBUG = 1,
    GGML_LOG_LEVEL_INFO = 2,
    GGML_LOG_LEVEL_WARN = 3,
    GGML_LOG_LEVEL_ERROR = 4,
    GGML_LOG_LEVEL_CONT = 5,
};
typedef void (*ggml_log_callback)(enum ggml_log_level level, const char *text, void *user_data);
void ggml_log_set(ggml_log_callback callback, void *user_data);
void ggml_log_internal(enum ggml_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define GGML_LOG_DEBUG(...) ggml_log_internal(GGML_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define GGML_LOG_INFO(...) ggml_log_internal(GGML_LOG_LEVEL_INFO, __VA_ARGS__)
#define GGML_LOG_WARN(...) ggml_log_internal(GGML_LOG_LEVEL_WARN, __VA_ARGS__)
#define GGML_LOG_ERROR(...) ggml_log_internal(GGML_LOG_LEVEL_ERROR, __VA_ARGS__)

/* libggml-base.so: what `ollama gpu-discover` asks a loaded backend (ggml-backend.h), by dlsym.
 * The props keep the leading fields of ggml's `struct ggml_backend_dev_props`. */
enum ggml_lab_dev_type { GGML_LAB_DEV_CPU = 0, GGML_LAB_DEV_GPU = 1, GGML_LAB_DEV_IGPU = 2 };
struct ggml_lab_dev_props {
    const char *name;        /* "CUDA0" */
    const char *description; /* the device's own name */
    size_t memory_free;
    size_t memory_total;
    int type;                /* enum ggml_lab_dev_type */
    const char *device_id;   /* PCI bus id, or NULL when the backend does not know it */
};
size_t ggml_backend_reg_dev_count(struct ggml_backend_reg *reg);
void *ggml_backend_reg_dev_get(struct ggml_backend_reg *reg, size_t index);
const char *ggml_backend_reg_name(struct ggml_backend_reg *reg);
void ggml_backend_dev_get_props(void *dev, struct ggml_lab_dev_props *props);

/* libggml.so: the backend registry (ggml-backend-reg.cpp). */
struct ggml_backend_reg *ggml_backend_load(const char *path);
struct ggml_backend_reg *ggml_backend_load_best(const char *name, const char *dir);
/* Every backend name in ggml's order from the executable's dir (CPU variants scored, the best
 * kept), then GGML_BACKEND_PATH; a backend already registered is not registered again. */
void ggml_backend_load_all(void);
size_t ggml_backend_reg_count(void);
struct ggml_backend_reg *ggml_backend_reg_get(size_t index);

#endif
