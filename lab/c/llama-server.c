/* Stand-in for the llama-server that Ollama bundles from v0.30 on (llama.cpp b10488 in
 * v0.32.15). It links libggml.so (DT_NEEDED, RUNPATH $ORIGIN) and answers Ollama's two
 * discovery invocations as the real one does:
 *   llama-server --list-devices --offline --verbose      prints "Available devices:" and exits
 *   llama-server --port P --host 127.0.0.1 --no-webui ... prints system_info and serves until killed
 *
 * Backends are loaded while the arguments are parsed, before --verbose takes effect: every
 * backend name from the executable's dir (the CPU variants scored, the best loaded), then
 * GGML_BACKEND_PATH. --list-devices loads them all again before it lists (a backend already
 * registered is kept once). ggml's messages go through llama.cpp's common logger: at the
 * default verbosity ggml's errors and warnings are shown, with its time and level prefix
 * ("0.00.075.098 E ggml_cuda_init: ..."), and its info lines ("load_backend: loaded ...") are
 * not. */
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ggml-lab.h"

/* common/log.h's verbosity levels. */
#define LOG_LEVEL_OUTPUT 0
#define LOG_LEVEL_ERROR 1
#define LOG_LEVEL_WARN 2
#define LOG_LEVEL_INFO 3
#define LOG_LEVEL_TRACE 4
#define LOG_LEVEL_DEBUG 5

static int verbosity = LOG_LEVEL_INFO; /* LOG_DEFAULT_LLAMA */
static struct timespec start;

/* common_log_entry::print: "M.SS.mmm.uuu L " before each line that has a level. */
static void print_line(enum ggml_log_level level, const char *text) {
    if (level == GGML_LOG_LEVEL_DEBUG && verbosity < LOG_LEVEL_DEBUG) return;
    if (level != GGML_LOG_LEVEL_NONE && level != GGML_LOG_LEVEL_CONT) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long us = (now.tv_sec - start.tv_sec) * 1000000LL + (now.tv_nsec - start.tv_nsec) / 1000;
        char tag = level == GGML_LOG_LEVEL_INFO    ? 'I'
                   : level == GGML_LOG_LEVEL_WARN  ? 'W'
                   : level == GGML_LOG_LEVEL_ERROR ? 'E'
                                                   : 'D';
        fprintf(stderr, "%d.%02d.%03d.%03d %c ", (int)(us / 1000000 / 60), (int)(us / 1000000 % 60),
                (int)(us / 1000 % 1000), (int)(us % 1000), tag);
    }
    fputs(text, stderr);
    fflush(stderr);
}

/* common_log_default_callback: ggml's info lines count as trace. */
static void common_log_callback(enum ggml_log_level level, const char *text, void *user_data) {
    (void)user_data;
    int needed = level == GGML_LOG_LEVEL_DEBUG   ? LOG_LEVEL_DEBUG
                 : level == GGML_LOG_LEVEL_INFO  ? LOG_LEVEL_TRACE
                 : level == GGML_LOG_LEVEL_WARN  ? LOG_LEVEL_WARN
                 : level == GGML_LOG_LEVEL_ERROR ? LOG_LEVEL_ERROR
                 : level == GGML_LOG_LEVEL_CONT  ? LOG_LEVEL_TRACE
                                                 : LOG_LEVEL_OUTPUT;
    if (needed <= verbosity) print_line(level, text);
}

/* LOG_INF: llama-server's own info lines. */
static void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_info(const char *fmt, ...) {
    char text[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    if (verbosity >= LOG_LEVEL_INFO) print_line(GGML_LOG_LEVEL_INFO, text);
}

/* common_print_available_devices. */
static int list_devices(void) {
    ggml_backend_load_all();
    printf("Available devices:\n");
    int listed = 0;
    for (size_t r = 0; r < ggml_backend_reg_count(); r++) {
        struct ggml_backend_reg *reg = ggml_backend_reg_get(r);
        if (strcmp(reg->name, "CPU") == 0) continue;
        for (int i = 0; i < reg->device_count(); i++) {
            struct ggml_lab_device dev;
            if (reg->device_get(i, &dev) != 0) continue;
            printf("  %s%d: %s (%llu MiB, %llu MiB free)\n", reg->name, i, dev.name, dev.total >> 20,
                   dev.free >> 20);
            listed++;
        }
    }
    if (!listed) printf("  (none)\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    clock_gettime(CLOCK_MONOTONIC, &start);
    ggml_log_set(common_log_callback, NULL);
    /* common_params_parse: the parser's setup loads every backend. */
    ggml_backend_load_all();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list-devices") == 0) return list_devices();
        if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) verbosity = INT_MAX;
    }

    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    log_info("cmn  common_param: common_params_print_info: build 0 (lab) with cc for Linux x86_64\n");
    log_info("cmn  common_param: common_params_print_info: verbosity = %d (adjust with the `-lv N` CLI arg)\n",
             verbosity);
    char info[2048];
    size_t len = (size_t)snprintf(info, sizeof(info), "system_info: n_threads = %ld (n_threads_batch = %ld) / %ld |",
                                  threads, threads, threads);
    for (size_t r = 0; r < ggml_backend_reg_count() && len < sizeof(info); r++) {
        const char *features = ggml_backend_reg_get(r)->features;
        if (features) len += (size_t)snprintf(info + len, sizeof(info) - len, " %s", features);
    }
    log_info("cmn  common_param: %s \n", info);
    for (;;) pause(); /* Ollama kills it once system_info is printed */
}
