/* Two libraries with SONAME libcuda.so.1 that are not the reference shim:
 *
 *  - default: NVIDIA's driver library as it behaves on a machine without a GPU (installed as
 *    libcuda.so.<driver version>). cuInit opens /dev/nvidiactl, fails, and answers
 *    CUDA_ERROR_NO_DEVICE; it exports the whole surface, so it also serves as the link-time
 *    libcuda.so.1 for libggml-cuda.so.
 *  - -DEARLY_SHIM: an early remoting shim that emulates one GPU but exports only what Ollama's
 *    era-A dlsym list and era-C probe use: no VMM functions and no cuGetProcAddress, so
 *    libggml-cuda.so cannot bind to it and libcudart rejects it. */
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_INVALID_DEVICE 101
#define CUDA_ERROR_NOT_FOUND 500

static int initialized;

#ifdef EARLY_SHIM
static const char device_name[] = "vGPU early shim";
static const unsigned char device_uuid[16] = {0xe0, 0x11, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1};

CUresult cuInit(unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    initialized = 1;
    return CUDA_SUCCESS;
}
#else
CUresult cuInit(unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    int fd = open("/dev/nvidiactl", O_RDWR | O_CLOEXEC);
    if (fd < 0) return CUDA_ERROR_NO_DEVICE;
    close(fd);
    return CUDA_ERROR_NO_DEVICE; /* a control node but no GPU behind it */
}
#endif

#define REQUIRE_INIT()                                                                             \
    do {                                                                                           \
        if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;                                       \
    } while (0)
#define REQUIRE_DEVICE(dev)                                                                        \
    do {                                                                                           \
        REQUIRE_INIT();                                                                            \
        if ((dev) != 0) return CUDA_ERROR_INVALID_DEVICE;                                          \
    } while (0)

CUresult cuDriverGetVersion(int *version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 12080; /* driver 570: CUDA 12.8 */
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
    REQUIRE_INIT();
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    REQUIRE_DEVICE(ordinal);
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice dev) {
    REQUIRE_DEVICE(dev);
    *value = attribute == 75 ? 8 : attribute == 76 ? 6 : 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    REQUIRE_DEVICE(dev);
#ifdef EARLY_SHIM
    strncpy(name, device_name, len);
#else
    (void)name, (void)len;
#endif
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(unsigned char uuid[16], CUdevice dev) {
    REQUIRE_DEVICE(dev);
#ifdef EARLY_SHIM
    memcpy(uuid, device_uuid, 16);
#else
    memset(uuid, 0, 16);
#endif
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    REQUIRE_DEVICE(dev);
    *bytes = (size_t)24 << 30;
    return CUDA_SUCCESS;
}

static int context_token;

CUresult cuCtxCreate_v3(void **ctx, void *params, int num_params, unsigned int flags, CUdevice dev) {
    (void)params, (void)num_params, (void)flags;
    REQUIRE_DEVICE(dev);
    *ctx = &context_token;
    return CUDA_SUCCESS;
}

CUresult cuCtxDestroy(void *ctx) {
    REQUIRE_INIT();
    return ctx == &context_token ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemGetInfo_v2(size_t *free, size_t *total) {
    REQUIRE_INIT();
    *total = (size_t)24 << 30;
    *free = *total - ((size_t)1 << 30);
    return CUDA_SUCCESS;
}

#ifndef EARLY_SHIM
CUresult cuGetErrorString(CUresult error, const char **str) {
    *str = error == CUDA_ERROR_NO_DEVICE ? "no CUDA-capable device is detected" : "unknown error";
    return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(void **ctx, unsigned int flags, CUdevice dev) {
    return cuCtxCreate_v3(ctx, NULL, 0, flags, dev);
}

#define VMM_STUB(name, ...)                                                                        \
    CUresult name(__VA_ARGS__) {                                                                   \
        REQUIRE_INIT();                                                                            \
        return CUDA_ERROR_INVALID_VALUE;                                                           \
    }
VMM_STUB(cuMemCreate, void *h, size_t s, const void *p, unsigned long long f)
VMM_STUB(cuMemAddressReserve, void *p, size_t s, size_t a, unsigned long long addr, unsigned long long f)
VMM_STUB(cuMemMap, unsigned long long p, size_t s, size_t o, unsigned long long h, unsigned long long f)
VMM_STUB(cuMemSetAccess, unsigned long long p, size_t s, const void *d, size_t c)
VMM_STUB(cuMemUnmap, unsigned long long p, size_t s)
VMM_STUB(cuMemRelease, unsigned long long h)
VMM_STUB(cuMemAddressFree, unsigned long long p, size_t s)
VMM_STUB(cuMemGetAllocationGranularity, size_t *g, const void *p, int o)

CUresult cuGetExportTable(const void **table, const void *id) {
    (void)id;
    *table = NULL;
    REQUIRE_INIT();
    return CUDA_ERROR_NOT_FOUND;
}

static const struct {
    const char *name;
    void *fn;
} exports[] = {
    {"cuInit", (void *)cuInit},
    {"cuDriverGetVersion", (void *)cuDriverGetVersion},
    {"cuDeviceGetCount", (void *)cuDeviceGetCount},
    {"cuDeviceGet", (void *)cuDeviceGet},
    {"cuDeviceGetAttribute", (void *)cuDeviceGetAttribute},
    {"cuDeviceGetName", (void *)cuDeviceGetName},
    {"cuDeviceGetUuid", (void *)cuDeviceGetUuid},
    {"cuDeviceTotalMem", (void *)cuDeviceTotalMem_v2},
    {"cuCtxCreate", (void *)cuCtxCreate_v2},
    {"cuMemGetInfo", (void *)cuMemGetInfo_v2},
    {"cuGetExportTable", (void *)cuGetExportTable},
};

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags,
                             int *status) {
    (void)version, (void)flags;
    for (size_t i = 0; i < sizeof(exports) / sizeof(exports[0]); i++) {
        if (strcmp(symbol, exports[i].name) == 0) {
            *pfn = exports[i].fn;
            if (status) *status = 0;
            return CUDA_SUCCESS;
        }
    }
    *pfn = NULL;
    if (status) *status = 1;
    return CUDA_ERROR_NOT_FOUND;
}
#endif
