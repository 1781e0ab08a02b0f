/* Stand-in for lib/ollama/libggml.so: ggml's backend registry (ggml-backend-reg.cpp).
 * Backends are opened RTLD_NOW | RTLD_LOCAL, so a backend whose imports cannot all be bound
 * fails here with ld.so's "undefined symbol" message, exactly as in real ggml. */
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "ggml-lab.h"

static struct ggml_backend_reg *load(const char *path, int silent) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        if (!silent) ggml_log("load_backend: failed to load %s: %s\n", path, dlerror());
        return NULL;
    }
    ggml_backend_init_t init = (ggml_backend_init_t)dlsym(lib, "ggml_backend_init");
    struct ggml_backend_reg *reg = init ? init() : NULL;
    if (!reg) {
        ggml_log("load_backend: failed to initialize backend from %s\n", path);
        dlclose(lib);
        return NULL;
    }
    ggml_log("load_backend: loaded %s backend from %s\n", reg->name, path);
    return reg;
}

struct ggml_backend_reg *ggml_backend_load(const char *path) { return load(path, 0); }

/* Picks the best-scoring libggml-<name>-*.so in dir, else libggml-<name>.so. Losers are closed. */
struct ggml_backend_reg *ggml_backend_load_best(const char *name, const char *dir) {
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
        if (!lib) continue;
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
        return load(best_path, 1);
    }
    return load(best_path, 0);
}
