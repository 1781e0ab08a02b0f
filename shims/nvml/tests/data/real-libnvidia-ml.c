/* A stand-in for NVIDIA's libnvidia-ml.so.1 in the shim's pass-through tests: two listed NVML
 * functions whose results show whether every argument arrived. */
#include <stdint.h>

/* Calls that reached this library. */
int fake_calls;

int nvmlDeviceGetPowerUsage(void *device, unsigned *milliwatts) {
    *milliwatts = (unsigned)(uintptr_t)device + 1;
    fake_calls++;
    return 0;
}

int nvmlDeviceSetApplicationsClocks(void *device, unsigned memory_mhz, unsigned graphics_mhz) {
    unsigned long long values[] = {(uintptr_t)device, memory_mhz, graphics_mhz}, hash = 0;
    for (int i = 0; i < 3; i++)
        hash = hash * 31 + values[i];
    fake_calls++;
    return (int)(hash % 1000003);
}
