#!/bin/bash
# Run on a GPU machine from the repository root: bash target/gpu-kit/fixtures.sh ($OUT: records).
# Records real CUDA stacks for the repository's replay fixtures (vgpu-trace/tests/data/real),
# scrubbed of what names this machine: its host name, GPU UUIDs and scratch directories.
OUT=${OUT:-/tmp}
K=$(cd "$(dirname "$0")" && pwd)
export VGPU_LAB_LIBS=$K/lab
cd "$K"
uname -r; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
T='import torch; torch.cuda.init(); print("cuda", torch.cuda.is_available(), torch.cuda.device_count())'
./vgpu-trace record -o "$OUT/raw-torch-cuda-init.vgt" -- python3 -c "$T" >/dev/null
./vgpu-trace record -o "$OUT/raw-nvidia-smi-L.vgt" -- nvidia-smi -L >/dev/null
for era in a b c; do
  ./vgpu-trace record -o "$OUT/raw-passthrough-$era.vgt" -- ./vgpu-lab run passthrough --era $era >/dev/null
done
for raw in "$OUT"/raw-*.vgt; do
  python3 "$K/scrub.py" "$raw" "$OUT/$(basename "$raw" | sed 's/^raw-//')"
done
rm -f "$OUT"/raw-*.vgt
ls -l "$OUT"
for f in "$OUT"/*.vgt; do echo "== $f"; ./vgpu-trace replay "$f" 2>&1 | tail -2; done
