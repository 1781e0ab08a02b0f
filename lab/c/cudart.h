/* The slice of the lab's libcudart.so.12 stand-in that libggml-cuda.so uses. */
#ifndef LAB_CUDART_H
#define LAB_CUDART_H

#include <stddef.h>

typedef int cudaError_t;

/* Real cudaDeviceProp has hundreds of fields; these are the ones ggml-cuda reads. */
struct cudaLabDeviceProp {
    char name[256];
    unsigned char uuid[16];
    size_t totalGlobalMem;
    int major, minor;
};

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaLabGetDeviceProperties(struct cudaLabDeviceProp *prop, int device);
cudaError_t cudaDriverGetVersion(int *version);
/* Creates a context on the device and reads its free memory (cudaSetDevice + cudaMemGetInfo). */
cudaError_t cudaLabInitDevice(int device, size_t *free, size_t *total);
const char *cudaGetErrorString(cudaError_t error);

#endif
