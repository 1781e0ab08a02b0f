#!/bin/bash
# Run on a GPU machine from the repository root: bash target/gpu-kit/ptrace.sh ($OUT: traces).
# The ptrace backend against eBPF on the same real CUDA stacks: verdicts, calls and cost.
OUT=${OUT:-/tmp}
K=$(cd "$(dirname "$0")" && pwd)
export VGPU_LAB_LIBS=$K/lab
cd "$K"
uname -r; nvidia-smi -L
T='import time; t=time.time(); import torch; torch.cuda.init(); print("cuda", torch.cuda.is_available(), torch.cuda.device_count(), "init_s=%.2f" % (time.time()-t))'
for backend in ebpf ptrace; do
  echo "=== PyTorch CUDA init, --backend $backend"
  ./vgpu-trace run --backend $backend -o "$OUT/torch-$backend.txt" -- python3 -c "$T" 2>&1 | grep -E "^cuda |vgpu-trace:"
  ./vgpu-trace run --backend $backend --format jsonl -o "$OUT/torch-$backend.jsonl" -- python3 -c "$T" >/dev/null 2>&1
  echo "=== pass-through lab era b, --backend $backend"
  ./vgpu-trace run --backend $backend -o "$OUT/passthrough-$backend.txt" -- ./vgpu-lab run passthrough --era b 2>&1 | grep -E "inference compute|vgpu-trace:"
done
for backend in ebpf ptrace; do
  echo "=== attach to a running python before its CUDA init, --backend $backend"
  python3 -c "import time; time.sleep(3); $T" > "$OUT/attach-$backend.out" 2>&1 &
  P=$!
  sleep 1
  ./vgpu-trace attach --backend $backend --format jsonl -o "$OUT/attach-$backend.jsonl" $P 2>&1 | grep -E "vgpu-trace:"
  wait $P; echo "python exit=$?"; cat "$OUT/attach-$backend.out"
done
echo "=== BPF refused (a user namespace): auto falls back"
unshare -Ur ./vgpu-trace run -o "$OUT/torch-userns.txt" -- python3 -c "$T" 2>&1 | grep -E "^cuda |vgpu-trace:"
echo "=== PyTorch CUDA init untraced"
for i in 1 2 3; do python3 -c "$T"; done
echo "=== calls seen by each backend (function = result)"
for trace in torch-ebpf torch-ptrace attach-ebpf attach-ptrace; do
  echo "--- $trace"
  grep -o '"type":"api","function":"[A-Za-z_0-9]*","code":[0-9-]*' "$OUT/$trace.jsonl" | sort | uniq -c | sort -rn | head -20
done
echo "=== cost per dlopen+dlsym+dlclose iteration (dl-bench)"
./dl-bench 200000
./vgpu-trace run --backend ebpf --format jsonl -o /dev/null -- ./dl-bench 200000 2>&1 | grep ns_per
for i in 1 2 3; do ./vgpu-trace run --backend ptrace --format jsonl -o /dev/null -- ./dl-bench 20000 2>&1 | grep ns_per; done
if command -v ltrace >/dev/null; then
  ltrace -f -o /dev/null -x 'dlopen@libc.so.6+dlsym@libc.so.6+dlclose@libc.so.6' ./dl-bench 2000
else
  echo "no ltrace here"
fi
