/* Stand-in for the llama-server that Ollama bundles from v0.30 on. It links libggml.so (DT_NEEDED,
 * RUNPATH $ORIGIN), loads the CPU backend next to itself and the backend named by
 * GGML_BACKEND_PATH, and answers Ollama's two discovery invocations:
 *   llama-server --list-devices --offline --verbose      prints "Available devices:" and exits
 *   llama-server --port P --host 127.0.0.1 --no-webui ... prints system_info and serves until killed */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ggml-lab.h"

#define MAX_BACKENDS 2

static int load_backends(struct ggml_backend_reg **regs) {
    char exe[PATH_MAX];
    int n = 0;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        if ((regs[n] = ggml_backend_load_best("cpu", exe))) n++;
    }
    const char *extra = getenv("GGML_BACKEND_PATH");
    if (extra && *extra && (regs[n] = ggml_backend_load(extra))) n++;
    return n;
}

static int list_devices(struct ggml_backend_reg **regs, int n) {
    printf("Available devices:\n");
    for (int r = 0; r < n; r++) {
        if (strcmp(regs[r]->name, "CPU") == 0) continue;
        for (int i = 0; i < regs[r]->device_count(); i++) {
            struct ggml_lab_device dev;
            if (regs[r]->device_get(i, &dev) != 0) continue;
            printf("  %s%d: %s (%llu MiB, %llu MiB free)\n", regs[r]->name, i, dev.name, dev.total >> 20,
                   dev.free >> 20);
        }
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    int list = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--list-devices") == 0) list = 1;
    struct ggml_backend_reg *regs[MAX_BACKENDS];
    int n = load_backends(regs);
    if (list) return list_devices(regs, n);

    ggml_log("build: 7100 (lab) with cc for x86_64-linux-gnu\n");
    ggml_log("system_info: n_threads = %ld | CPU : SSE3 = 1 |", sysconf(_SC_NPROCESSORS_ONLN));
    for (int r = 0; r < n; r++)
        if (regs[r]->features) ggml_log(" %s", regs[r]->features);
    ggml_log("\n");
    ggml_log("main: HTTP server is listening\n");
    for (;;) pause(); /* Ollama kills it once system_info is printed */
}
