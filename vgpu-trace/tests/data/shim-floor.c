/* What a discovery on an older distribution does first: dlopen the CUDA shim (argv[1]) and
 * the NVML shim (argv[2]), initialise each and count its devices. Prints key=value lines, or
 * dlerror's text when a library does not load. */
#include <dlfcn.h>
#include <stdio.h>

typedef int (*init_fn)(unsigned int);
typedef int (*nvml_init_fn)(void);
typedef int (*count_fn)(int *);
typedef int (*nvml_count_fn)(unsigned int *);

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int failed = 0;
    void *cuda = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (cuda) {
        init_fn init = (init_fn)dlsym(cuda, "cuInit");
        count_fn count = (count_fn)dlsym(cuda, "cuDeviceGetCount");
        int n = -1;
        printf("cuInit=%d\n", init ? init(0) : -1);
        int status = count ? count(&n) : -1;
        printf("cuDeviceGetCount=%d count=%d\n", status, n);
    } else {
        printf("cuda: %s\n", dlerror());
        failed = 1;
    }
    void *nvml = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (nvml) {
        nvml_init_fn init = (nvml_init_fn)dlsym(nvml, "nvmlInit_v2");
        nvml_count_fn count = (nvml_count_fn)dlsym(nvml, "nvmlDeviceGetCount_v2");
        unsigned int n = 0;
        printf("nvmlInit_v2=%d\n", init ? init() : -1);
        int status = count ? count(&n) : -1;
        printf("nvmlDeviceGetCount_v2=%d nvml_count=%u\n", status, n);
    } else {
        printf("nvml: %s\n", dlerror());
        failed = 1;
    }
    return failed;
}
