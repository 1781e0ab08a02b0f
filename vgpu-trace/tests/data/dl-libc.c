/* The dl* calls a discovery makes, the same on every C library: load the shim named by
 * argv[1], look up three functions (one missing, so dlerror has something to say), ask for a
 * library that is nowhere, call the driver, unload. The tracer must see the same calls
 * whichever C library runs them: glibc 2.36, glibc 2.31 (dlopen in libdl.so.2), musl. */
#include <dlfcn.h>
#include <stdio.h>

typedef int (*init_fn)(unsigned int);
typedef int (*count_fn)(int *);

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *cuda = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!cuda) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    init_fn init = (init_fn)dlsym(cuda, "cuInit");
    count_fn count = (count_fn)dlsym(cuda, "cuDeviceGetCount");
    void *missing = dlsym(cuda, "cuNoSuchFunction");
    const char *why = dlerror();
    void *absent = dlopen("libvgpu-absent.so.1", RTLD_NOW);
    const char *absent_why = dlerror();
    int devices = 0;
    int init_ret = init ? init(0) : -1;
    int count_ret = count ? count(&devices) : -1;
    printf("init=%d count=%d devices=%d missing=%s absent=%s\n", init_ret, count_ret, devices,
           missing || !why ? "found" : "not-found", absent || !absent_why ? "found" : "not-found");
    dlclose(cuda);
    return 0;
}
