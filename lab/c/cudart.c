/* Stand-in for the bundled lib/ollama/cuda_vNN/libcudart.so.{12,13}.
 *
 * Faithful where discovery depends on it, in the order real libcudart 12.4 does it (traced under
 * Ollama v0.32.15): dlopen("libcuda.so.1", RTLD_NOW) and exactly one dlsym, cuGetProcAddress_v2;
 * every driver function asked for by name through it (real cudart asks for about 400, with the
 * CUDA version of each one's ABI; the stand-in for the few it calls); then cuDriverGetVersion,
 * cuInit, and the driver's private export tables (cuGetExportTable). A missing
 * cuGetProcAddress_v2 or a driver older than the runtime is cudaErrorInsufficientDriver (35);
 * any failure closes the driver again.
 *
 * Real cudart always asks for cuGetExportTable, which only a real driver or a pass-through shim
 * can give (error 500, "named symbol not found", from an emulating one). The stand-in asks only
 * when VGPU_LAB_CUDART_EXPORT_TABLES is set, so the lab's other presets can show the other
 * failures at all: with the real runtime, an emulating shim never gets past this one. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "cudart.h"

/* 12080 for libcudart.so.12 (CUDA 12.8), 13000 for libcudart.so.13: the oldest driver it accepts. */
#ifndef CUDART_VERSION
#define CUDART_VERSION 12080
#endif
#define cudaErrorInsufficientDriver 35
#define cudaErrorNoDevice 100
#define cudaErrorInvalidDevice 101
#define cudaErrorUnknown 999

typedef int CUresult;
typedef int (*proc_address_v2_t)(const char *symbol, void **pfn, int version, unsigned long long flags,
                                 int *status);

static struct {
    CUresult (*init)(unsigned int);
    CUresult (*driver_version)(int *);
    CUresult (*device_count)(int *);
    CUresult (*device_get)(int *, int);
    CUresult (*device_name)(char *, int, int);
    CUresult (*device_uuid)(unsigned char *, int);
    CUresult (*total_mem)(size_t *, int);
    CUresult (*attribute)(int *, int, int);
    CUresult (*ctx_create)(void **, unsigned int, int);
    CUresult (*mem_info)(size_t *, size_t *);
    CUresult (*export_table)(const void **, const unsigned char *);
} drv;

static cudaError_t init_status = -1;

/* Like real cudart, each name is asked for with the CUDA version of the ABI it was built
 * against, so the driver hands back that variant (cuCtxCreate at 3020 is cuCtxCreate_v2). */
static void *lookup(proc_address_v2_t gpa, const char *name, int version) {
    void *fn = NULL;
    int status = 0;
    return gpa(name, &fn, version, 0, &status) == 0 ? fn : NULL;
}

static cudaError_t from_driver(CUresult rc) {
    switch (rc) {
    case 0: return 0;
    case 100: return cudaErrorNoDevice;
    case 101: return cudaErrorInvalidDevice;
    case 999: return cudaErrorUnknown;
    default: return rc;
    }
}

static cudaError_t load_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) return cudaErrorInsufficientDriver;
    proc_address_v2_t gpa = (proc_address_v2_t)dlsym(lib, "cuGetProcAddress_v2");
    cudaError_t err = cudaErrorInsufficientDriver;
    if (!gpa) goto fail;
    /* In the order real cudart asks, each at the version it asks for. */
    drv.init = lookup(gpa, "cuInit", 2000);
    drv.device_get = lookup(gpa, "cuDeviceGet", 2000);
    drv.device_count = lookup(gpa, "cuDeviceGetCount", 2000);
    drv.device_name = lookup(gpa, "cuDeviceGetName", 2000);
    drv.total_mem = lookup(gpa, "cuDeviceTotalMem", 3020);
    drv.attribute = lookup(gpa, "cuDeviceGetAttribute", 2000);
    drv.driver_version = lookup(gpa, "cuDriverGetVersion", 2020);
    drv.device_uuid = lookup(gpa, "cuDeviceGetUuid", 9020);
    drv.ctx_create = lookup(gpa, "cuCtxCreate", 3020);
    drv.mem_info = lookup(gpa, "cuMemGetInfo", 3020);
    drv.export_table = lookup(gpa, "cuGetExportTable", 3000);
    if (!drv.init || !drv.driver_version || !drv.device_count || !drv.device_get || !drv.device_name ||
        !drv.device_uuid || !drv.total_mem || !drv.attribute || !drv.ctx_create || !drv.mem_info)
        goto fail;
    int version = 0;
    if (drv.driver_version(&version) != 0 || version < CUDART_VERSION) goto fail;
    err = from_driver(drv.init(0));
    if (err != 0) goto fail;
    if (getenv("VGPU_LAB_CUDART_EXPORT_TABLES")) {
        static const unsigned char tools_table_id[16] = {0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47,
                                                         0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc};
        const void *table = NULL;
        CUresult rc = drv.export_table ? drv.export_table(&table, tools_table_id) : 500;
        if (rc != 0) {
            err = rc;
            goto fail;
        }
    }
    return 0;
fail:
    dlclose(lib);
    return err;
}

static cudaError_t lazy_init(void) {
    if (init_status < 0) init_status = load_driver();
    return init_status;
}

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 0;
    cudaError_t err = lazy_init();
    if (err != 0) return err;
    err = from_driver(drv.device_count(count));
    if (err == 0 && *count == 0) return cudaErrorNoDevice;
    return err;
}

cudaError_t cudaLabGetDeviceProperties(struct cudaLabDeviceProp *prop, int device) {
    cudaError_t err = lazy_init();
    if (err != 0) return err;
    int dev = 0;
    memset(prop, 0, sizeof(*prop));
    CUresult rc = drv.device_get(&dev, device);
    if (rc == 0) rc = drv.device_name(prop->name, sizeof(prop->name), dev);
    if (rc == 0) rc = drv.device_uuid(prop->uuid, dev);
    if (rc == 0) rc = drv.total_mem(&prop->totalGlobalMem, dev);
    if (rc == 0) rc = drv.attribute(&prop->major, 75, dev);
    if (rc == 0) rc = drv.attribute(&prop->minor, 76, dev);
    return from_driver(rc);
}

cudaError_t cudaLabInitDevice(int device, size_t *free, size_t *total) {
    cudaError_t err = lazy_init();
    if (err != 0) return err;
    int dev = 0;
    void *ctx = NULL;
    CUresult rc = drv.device_get(&dev, device);
    if (rc == 0) rc = drv.ctx_create(&ctx, 0, dev);
    if (rc == 0) rc = drv.mem_info(free, total);
    return from_driver(rc);
}

cudaError_t cudaDriverGetVersion(int *version) {
    *version = 0;
    if (lazy_init() != 0 || !drv.driver_version) return 0;
    return from_driver(drv.driver_version(version));
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case 0: return "no error";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case 3: return "initialization error";
    case 500: return "named symbol not found";
    case cudaErrorUnknown: return "unknown error";
    default: return "unrecognized error code";
    }
}
