#!/bin/bash
# Run on a GPU machine from the repository root: bash target/gpu-kit/run.sh ($OUT: where traces go).
# The lab on a GPU machine: the Ollama stand-in discovers the real GPU through the shims.
OUT=${OUT:-/tmp}
K=$(cd "$(dirname "$0")" && pwd)
export VGPU_LAB_LIBS=$K/lab
cd "$K"
nvidia-smi -L
ldconfig -p | grep -E "libcuda.so.1 |libnvidia-ml.so.1 "
uname -r; ldd --version | head -1
for era in b c a; do
  echo "=== passthrough era $era"
  ./vgpu-trace run -o "$OUT/passthrough-$era.txt" -- ./vgpu-lab run passthrough --era "$era" 2>&1 | grep -E "inference compute|armed|vgpu-trace:|vgpu-lab:|rror"
done
./vgpu-trace run --format jsonl -o "$OUT/passthrough-b.jsonl" -- ./vgpu-lab run passthrough --era b >/dev/null 2>&1
echo "=== healthy era b (emulated GPU on a GPU machine)"
./vgpu-trace run -o "$OUT/healthy-b.txt" -- ./vgpu-lab run healthy --era b 2>&1 | grep -E "inference compute|vgpu-trace:"
echo "=== shim-missing-symbols era b"
./vgpu-trace run -o "$OUT/missing-b.txt" -- ./vgpu-lab run shim-missing-symbols --era b 2>&1 | grep -E "inference compute|vgpu-trace:"
grep -E "undefined symbol" "$OUT/missing-b.txt" | head -2
echo "=== PyTorch on NVIDIA's driver, no shim"
./vgpu-trace run -o "$OUT/torch.txt" -- python3 -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.device_count())" 2>&1 | grep -E "^cuda |vgpu-trace:"
echo "=== weight: arming (NVIDIA's libcuda and libnvidia-ml from ld.so.cache are armed at start)"
for i in 1 2 3; do ./vgpu-trace run -o /dev/null -- true 2>&1 | grep -E "armed in|waited"; done
RUST_LOG=vgpu_trace=debug ./vgpu-trace run -o /dev/null -- true 2>&1 | grep -E "layout|loaded and attached|known CUDA|released|probing"
echo "=== weight: holds in the pass-through lab (era c)"
RUST_LOG=vgpu_trace=debug ./vgpu-trace run -o /dev/null -- ./vgpu-lab run passthrough --era c 2>&1 | grep -E "held [0-9]|probing"
echo "=== weight: PyTorch CUDA init, untraced then traced (seconds from start to torch.cuda.init() done)"
T='import time; t=time.time(); import torch; torch.cuda.init(); print("init_s=%.2f" % (time.time()-t))'
for i in 1 2 3; do python3 -c "$T"; done
for i in 1 2 3; do ./vgpu-trace run -o "$OUT/torch-init-$i.txt" -- python3 -c "$T" 2>&1 | grep -E "init_s|armed in|held|lost"; done
