/* A forwarding shim as a C compiler makes one at -O2: each export is a single jump through a
 * pointer to the same function of the library named by VGPU_FORWARD_TO (a tail call), so the
 * forwarded function starts with its caller's return address still on the stack. */
#include <dlfcn.h>
#include <stdlib.h>

typedef int (*init_fn)(unsigned int);
typedef int (*version_fn)(int *);

static int not_initialized_init(unsigned int flags) { (void)flags; return 3; }
static int not_initialized_version(int *v) { (void)v; return 3; }

static init_fn real_init = not_initialized_init;
static version_fn real_version = not_initialized_version;

__attribute__((constructor)) static void resolve(void) {
    const char *path = getenv("VGPU_FORWARD_TO");
    void *lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!lib)
        return;
    void *init = dlsym(lib, "cuInit");
    void *version = dlsym(lib, "cuDriverGetVersion");
    if (init)
        real_init = (init_fn)init;
    if (version)
        real_version = (version_fn)version;
}

int cuInit(unsigned int flags) { return real_init(flags); }
int cuDriverGetVersion(int *version) { return real_version(version); }
