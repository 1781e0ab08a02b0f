/* Stand-in for lib/ollama/cuda_vNN/libggml-cuda.so (built once per CUDA major version).
 *
 * What matters for discovery is how it links: DT_NEEDED libggml-base.so, libcudart.so.12 and
 * libcuda.so.1, and direct imports of the driver functions real ggml-cuda calls without going
 * through cudart (VMM pool, attributes, error strings). A dlopen(RTLD_NOW) of this file fails
 * unless the libcuda.so.1 that ld.so finds exports all of them. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudart.h"
#include "ggml-lab.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;

/* Driver imports, as real libggml-cuda.so has them (undefined symbols bound by ld.so). */
extern CUresult cuDeviceGet(CUdevice *device, int ordinal);
extern CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device);
extern CUresult cuGetErrorString(CUresult error, const char **str);
extern CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const void *prop,
                            unsigned long long flags);
extern CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                    unsigned long long flags);
extern CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                         unsigned long long flags);
extern CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const void *desc, size_t count);
extern CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
extern CUresult cuMemRelease(CUmemGenericAllocationHandle handle);
extern CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
extern CUresult cuMemGetAllocationGranularity(size_t *granularity, const void *prop, int option);

#define CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED 102
#define MAX_DEVICES 16

struct nvml_api {
    int (*init)(void);
    int (*shutdown)(void);
    int (*handle_by_uuid)(const char *uuid, void **device);
    int (*memory_info)(void *device, unsigned long long info[3]);
    int (*name)(void *device, char *name, unsigned int length);
    const char *(*error_string)(int result);
};

static int device_count = -1;
static struct ggml_lab_device devices[MAX_DEVICES];

static void format_uuid(const unsigned char u[16], char *out, size_t len) {
    snprintf(out, len,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* mem_nvml.cpp: the WSL path first, then the soname; failure only costs accurate free memory. */
static void *nvml_open(struct nvml_api *api) {
    void *lib = dlopen("/usr/lib/wsl/lib/libnvidia-ml.so.1", RTLD_LAZY);
    if (!lib) lib = dlopen("libnvidia-ml.so.1", RTLD_LAZY);
    if (!lib) return NULL;
    api->init = (int (*)(void))dlsym(lib, "nvmlInit_v2");
    api->shutdown = (int (*)(void))dlsym(lib, "nvmlShutdown");
    api->handle_by_uuid = (int (*)(const char *, void **))dlsym(lib, "nvmlDeviceGetHandleByUUID");
    api->memory_info = (int (*)(void *, unsigned long long *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
    api->name = (int (*)(void *, char *, unsigned int))dlsym(lib, "nvmlDeviceGetName");
    api->error_string = (const char *(*)(int))dlsym(lib, "nvmlErrorString");
    if (!api->init || !api->shutdown || !api->handle_by_uuid || !api->memory_info || !api->name ||
        !api->error_string || api->init() != 0) {
        dlclose(lib);
        return NULL;
    }
    return lib;
}

/* Called on every memory query in real ggml; once per discovery here. Release is shutdown + dlclose. */
static void nvml_free_memory(void) {
    struct nvml_api api;
    void *lib = nvml_open(&api);
    if (!lib) return;
    for (int i = 0; i < device_count; i++) {
        void *handle = NULL;
        unsigned long long info[3];
        if (api.handle_by_uuid(devices[i].id, &handle) == 0 && api.memory_info(handle, info) == 0) {
            devices[i].total = info[0];
            devices[i].free = info[1];
        }
    }
    api.shutdown();
    dlclose(lib);
}

/* ggml_cuda_init: counts devices through cudart and prints what real ggml prints. */
static void cuda_init(void) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != 0) {
        GGML_LOG_ERROR("ggml_cuda_init: failed to initialize CUDA: %s\n", cudaGetErrorString(err));
        device_count = 0;
        return;
    }
    if (count > MAX_DEVICES) count = MAX_DEVICES;
    int driver = 0;
    cudaDriverGetVersion(&driver);
    GGML_LOG_INFO("ggml_cuda_init: found %d CUDA devices:\n", count);
    for (int i = 0; i < count; i++) {
        struct cudaLabDeviceProp prop;
        struct ggml_lab_device *dev = &devices[i];
        CUdevice handle = 0;
        int vmm = 0;
        memset(dev, 0, sizeof(*dev));
        if (cudaLabGetDeviceProperties(&prop, i) != 0) continue;
        if (cuDeviceGet(&handle, i) == 0)
            cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, handle);
        format_uuid(prop.uuid, dev->id, sizeof(dev->id));
        snprintf(dev->name, sizeof(dev->name), "%s", prop.name);
        strcpy(dev->library, "CUDA");
        dev->total = dev->free = prop.totalGlobalMem;
        dev->cc_major = prop.major;
        dev->cc_minor = prop.minor;
        dev->driver_major = driver / 1000;
        dev->driver_minor = driver % 1000 / 10;
        /* Ollama's GGML_CUDA_INIT=1 pass: really bring the device up, so a device that cannot
         * create a context is reported as absent rather than failing later in inference. */
        if (getenv("GGML_CUDA_INIT")) {
            size_t free = 0, total = 0;
            err = cudaLabInitDevice(i, &free, &total);
            if (err != 0) {
                GGML_LOG_ERROR("ggml_cuda_init: device %d failed to initialize: %s\n", i,
                         cudaGetErrorString(err));
                dev->library[0] = 0;
                continue;
            }
            dev->free = free;
        }
        GGML_LOG_INFO("  Device %d: %s, compute capability %d.%d, VMM: %s, ID: %s\n", i, dev->name,
                 dev->cc_major, dev->cc_minor, vmm ? "yes" : "no", dev->id);
    }
    device_count = 0;
    for (int i = 0; i < count; i++)
        if (devices[i].library[0]) devices[device_count++] = devices[i];
    nvml_free_memory();
}

static int cuda_device_count(void) { return device_count; }

static int cuda_device_get(int index, struct ggml_lab_device *out) {
    if (index < 0 || index >= device_count) return -1;
    *out = devices[index];
    return 0;
}

/* Never called during discovery; it is here so the VMM imports exist, as in real ggml-cuda. */
int ggml_cuda_vmm_reserve(size_t size, CUdeviceptr *out) {
    size_t granularity = 0;
    CUmemGenericAllocationHandle handle = 0;
    const char *msg = NULL;
    CUresult rc = cuMemGetAllocationGranularity(&granularity, NULL, 0);
    if (rc == 0) rc = cuMemAddressReserve(out, size, 0, 0, 0);
    if (rc == 0) rc = cuMemCreate(&handle, size, NULL, 0);
    if (rc == 0) rc = cuMemMap(*out, size, 0, handle, 0);
    if (rc == 0) rc = cuMemSetAccess(*out, size, NULL, 0);
    if (rc != 0 && cuGetErrorString(rc, &msg) == 0) GGML_LOG_ERROR("ggml_cuda: %s\n", msg);
    cuMemUnmap(*out, size);
    cuMemRelease(handle);
    cuMemAddressFree(*out, size);
    return rc;
}

/* The architectures this build was compiled for, as llama-server prints them; Ollama drops a
 * device whose compute capability (major*100 + minor*10) is not listed. */
#ifndef LAB_CUDA_ARCHS
#define LAB_CUDA_ARCHS "500,520,600,610,700,750,800,860,890,900,1000,1200"
#endif

static struct ggml_backend_reg cuda_reg = {"CUDA", cuda_device_count, cuda_device_get,
                                           "CUDA : ARCHS = " LAB_CUDA_ARCHS " | USE_GRAPHS = 1 |"};

struct ggml_backend_reg *ggml_backend_init(void) {
    if (device_count < 0) cuda_init();
    return &cuda_reg;
}
