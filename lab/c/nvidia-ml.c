/* NVIDIA's libnvidia-ml.so.1 as it behaves on a machine whose driver is not loaded: every
 * init variant opens /dev/nvidiactl, fails, and answers NVML_ERROR_DRIVER_NOT_LOADED. */
#include <fcntl.h>
#include <unistd.h>

typedef int nvmlReturn_t;

#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_DRIVER_NOT_LOADED 9

static nvmlReturn_t driver_init(void) {
    int fd = open("/dev/nvidiactl", O_RDWR | O_CLOEXEC);
    if (fd >= 0) close(fd);
    return NVML_ERROR_DRIVER_NOT_LOADED;
}

nvmlReturn_t nvmlInit_v2(void) { return driver_init(); }
nvmlReturn_t nvmlInit(void) { return driver_init(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return driver_init(); }
nvmlReturn_t nvmlShutdown(void) { return NVML_ERROR_UNINITIALIZED; }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { *count = 0; return NVML_ERROR_UNINITIALIZED; }
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **device) {
    (void)uuid, (void)device;
    return NVML_ERROR_UNINITIALIZED;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, void *memory) {
    (void)device, (void)memory;
    return NVML_ERROR_UNINITIALIZED;
}
nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    (void)device, (void)name, (void)length;
    return NVML_ERROR_UNINITIALIZED;
}
nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    (void)version, (void)length;
    return NVML_ERROR_UNINITIALIZED;
}
const char *nvmlErrorString(nvmlReturn_t result) {
    return result == NVML_ERROR_DRIVER_NOT_LOADED ? "Driver Not Loaded" : "Uninitialized";
}
