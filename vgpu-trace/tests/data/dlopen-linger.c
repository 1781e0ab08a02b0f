/* dlopen-linger LIB: dlopen LIB (RTLD_NOW), say what dlerror said, then linger a while before
 * exiting 1 on failure: a process gone at once would take its root, where LIB lies, with it
 * before the tracer reads the file behind its load. */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib)
        printf("error=%s\n", dlerror());
    fflush(stdout);
    usleep(300 * 1000);
    return lib ? 0 : 1;
}
