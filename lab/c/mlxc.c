/* Stand-in for lib/ollama/mlx_cuda_v13/libmlxc.so, MLX's C API built with CUDA (the official
 * amd64 Docker image ships it; the Linux tarball does not).
 *
 * What matters is how it links: DT_NEEDED libcuda.so.1. Every `ollama` process dlopens it at
 * start (RTLD_LAZY | RTLD_GLOBAL), so `ollama serve` itself maps the CUDA driver, or the shim
 * that stands in for it, through ld.so with no dlopen of libcuda of its own. */
typedef int CUresult;
extern CUresult cuDriverGetVersion(int *version);

/* Never called at load; it is here so the driver import exists, as in the real library. */
int mlx_cuda_driver_version(void) {
    int version = 0;
    return cuDriverGetVersion(&version) == 0 ? version : 0;
}

const char *mlx_version(void) { return "0.29.2 (lab)"; }
