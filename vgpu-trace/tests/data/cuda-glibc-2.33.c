/* A CUDA driver shim built against a newer C library than the one that loads it: since glibc
 * 2.33, stat is a function of its own at symbol version GLIBC_2.33 (before, an inline wrapper
 * of __xstat), so built on the host (glibc 2.36) it needs GLIBC_2.33, which Debian 11's glibc
 * 2.31 lacks: its dlopen there maps it, then fails. */
#include <sys/stat.h>

int cuInit(unsigned int flags) {
    struct stat st;
    return flags == 0 && stat("/", &st) == 0 ? 0 : 1;
}
