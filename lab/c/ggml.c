/* Stand-in for lib/ollama/libggml.so: ggml's backend registry (ggml-backend-reg.cpp).
 * Backends are opened RTLD_NOW | RTLD_LOCAL, so a backend whose imports cannot all be bound
 * fails here with ld.so's "undefined symbol" message, exactly as in real ggml. Each load asks
 * for ggml_backend_score (0: not for this machine) before ggml_backend_init, as ggml does. */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ggml-lab.h"

#define MAX_BACKENDS 16

static struct ggml_backend_reg *registered[MAX_BACKENDS];
static size_t n_registered;

/* A backend registered twice (a second ggml_backend_load_all) is kept once. */
static void register_backend(struct ggml_backend_reg *reg) {
    for (size_t i = 0; i < n_registered; i++)
        if (registered[i] == reg) return;
    if (n_registered < MAX_BACKENDS) registered[n_registered++] = reg;
}

size_t ggml_backend_reg_count(void) { return n_registered; }

struct ggml_backend_reg *ggml_backend_reg_get(size_t index) {
    return index < n_registered ? registered[index] : NULL;
}

static struct ggml_backend_reg *load(const char *path, int silent) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        if (!silent) GGML_LOG_ERROR("load_backend: failed to load %s: %s\n", path, dlerror());
        return NULL;
    }
    ggml_backend_score_t score_fn = (ggml_backend_score_t)dlsym(lib, "ggml_backend_score");
    if (score_fn && score_fn() == 0) {
        if (!silent) GGML_LOG_INFO("load_backend: backend %s is not supported on this system\n", path);
        dlclose(lib);
        return NULL;
    }
    ggml_backend_init_t init = (ggml_backend_init_t)dlsym(lib, "ggml_backend_init");
    if (!init) {
        if (!silent) GGML_LOG_ERROR("load_backend: failed to find ggml_backend_init in %s\n", path);
        dlclose(lib);
        return NULL;
    }
    struct ggml_backend_reg *reg = init();
    if (!reg) {
        if (!silent)
            GGML_LOG_ERROR("load_backend: failed to initialize backend from %s: ggml_backend_init returned NULL\n",
                           path);
        dlclose(lib);
        return NULL;
    }
    GGML_LOG_INFO("load_backend: loaded %s backend from %s\n", reg->name, path);
    register_backend(reg);
    return reg;
}

struct ggml_backend_reg *ggml_backend_load(const char *path) { return load(path, 0); }

/* Scores every libggml-<name>-*.so in dir in directory order (opened, scored, closed), then
 * loads the best; libggml-<name>.so when none scored. `silent` as in Ollama's -DNDEBUG build. */
static struct ggml_backend_reg *load_best(const char *name, const char *dir, int silent) {
    char prefix[64], path[4096], best_path[4096] = "";
    int best = 0;
    snprintf(prefix, sizeof(prefix), "libggml-%s-", name);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || len < 3 ||
            strcmp(e->d_name + len - 3, ".so") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            if (!silent) GGML_LOG_ERROR("load_backend: failed to load %s: %s\n", path, dlerror());
            continue;
        }
        ggml_backend_score_t score_fn = (ggml_backend_score_t)dlsym(lib, "ggml_backend_score");
        int score = score_fn ? score_fn() : 0;
        if (score > best) {
            best = score;
            snprintf(best_path, sizeof(best_path), "%s", path);
        }
        dlclose(lib);
    }
    if (d) closedir(d);
    if (!best_path[0]) {
        snprintf(best_path, sizeof(best_path), "%s/libggml-%s.so", dir, name);
        if (access(best_path, F_OK) != 0) return NULL;
    }
    return load(best_path, silent);
}

struct ggml_backend_reg *ggml_backend_load_best(const char *name, const char *dir) {
    return load_best(name, dir, 1);
}

/* ggml_backend_load_all_from_path(NULL): the executable's dir, every name in ggml's order. */
void ggml_backend_load_all(void) {
    static const char *const names[] = {"blas",   "zendnn", "cann",   "cuda",    "hip",
                                        "metal",  "rpc",    "sycl",   "vulkan",  "virtgpu",
                                        "opencl", "hexagon", "musa",  "openvino", "cpu"};
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) load_best(names[i], exe, 1);
    }
    const char *extra = getenv("GGML_BACKEND_PATH");
    if (extra && *extra) ggml_backend_load(extra);
}
