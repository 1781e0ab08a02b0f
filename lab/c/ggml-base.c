/* Stand-in for lib/ollama/libggml-base.so: the core every ggml backend links against.
 * Backends import the logger from here, so each of them carries DT_NEEDED libggml-base.so; so
 * does the device API `ollama gpu-discover` looks up by dlsym (ggml_backend_reg_dev_count, ...). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-lab.h"

/* ggml_log_callback_default: every level, as it is, to stderr. */
static void log_default(enum ggml_log_level level, const char *text, void *user_data) {
    (void)level, (void)user_data;
    fputs(text, stderr);
    fflush(stderr);
}

static ggml_log_callback log_callback = log_default;
static void *log_user_data;

void ggml_log_set(ggml_log_callback callback, void *user_data) {
    log_callback = callback ? callback : log_default;
    log_user_data = user_data;
}

void ggml_log_internal(enum ggml_log_level level, const char *fmt, ...) {
    char text[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    log_callback(level, text, log_user_data);
}

/* A device handle: the backend and its index, with the strings its props point into. */
struct ggml_lab_dev {
    struct ggml_backend_reg *reg;
    int index;
    char name[32];
    struct ggml_lab_device dev;
};

size_t ggml_backend_reg_dev_count(struct ggml_backend_reg *reg) {
    int n = reg && reg->device_count ? reg->device_count() : 0;
    return n > 0 ? (size_t)n : 0;
}

void *ggml_backend_reg_dev_get(struct ggml_backend_reg *reg, size_t index) {
    if (index >= ggml_backend_reg_dev_count(reg)) return NULL;
    struct ggml_lab_dev *handle = calloc(1, sizeof(*handle));
    if (!handle) return NULL;
    handle->reg = reg;
    handle->index = (int)index;
    snprintf(handle->name, sizeof(handle->name), "%s%zu", reg->name, index);
    if (reg->device_get((int)index, &handle->dev) != 0) {
        free(handle);
        return NULL;
    }
    return handle;
}

const char *ggml_backend_reg_name(struct ggml_backend_reg *reg) { return reg ? reg->name : ""; }

void ggml_backend_dev_get_props(void *dev, struct ggml_lab_dev_props *props) {
    struct ggml_lab_dev *handle = dev;
    memset(props, 0, sizeof(*props));
    if (!handle) return;
    props->name = handle->name;
    props->description = handle->dev.name;
    props->memory_free = handle->dev.free;
    props->memory_total = handle->dev.total;
    props->type = strcmp(handle->reg->name, "CPU") == 0 ? GGML_LAB_DEV_CPU : GGML_LAB_DEV_GPU;
    props->device_id = NULL;
}
