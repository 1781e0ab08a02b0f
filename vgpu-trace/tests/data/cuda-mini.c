/* A CUDA driver shim as small as one can be: one device, and the calls a discovery makes first.
 * Built once per C library (glibc 2.36 on the host, glibc 2.31 in a Debian 11 root
 * filesystem, musl), so that each program loads a shim of its own C library. */
int cuInit(unsigned int flags) { return flags == 0 ? 0 : 1; }
int cuDriverGetVersion(int *version) { *version = 12080; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return ordinal == 0 ? 0 : 101; }
