#!/bin/bash
# Run on a GPU machine from the repository root: bash target/gpu-kit/real-ollama.sh ($OUT: where
# records go). The real Ollama v0.32.15 there, under the tracer, each run checked against its
# rules (real/NAME.toml, as in tests/data/real):
#   real-ollama-driver       serve on NVIDIA's driver: Ollama finds the GPU through cuda_v13;
#   real-ollama-passthrough  serve with the reference shims on its LD_LIBRARY_PATH, forwarding
#                            to NVIDIA's libraries: Ollama finds the GPU through the shims;
#   real-ollama-model        the same serve, then a tiny random model imported and run: the
#                            runner that serves loads the shim and generates through it;
#   torch-passthrough        PyTorch through the shims: a matrix product on the GPU.
# The cuda_v13 backend is built against the machine's CUDA 13 toolkit the first time (about 4
# minutes on 16 cores) into $DEST, which later runs on a warm machine reuse.
set -u
OUT=${OUT:-/tmp}
K=$(cd "$(dirname "$0")" && pwd)
R=$K/real-ollama
DEST=$(realpath -m "${DEST:-$K/../real-ollama-gpu}")
if [ ! -e "$DEST/lib/ollama/cuda_v13/libggml-cuda.so" ]; then
  t=$(date +%s)
  TARBALL=$R/ollama-v0.32.15-linux-amd64.tar.xz bash "$R/gpu/build-cuda_v13.sh" "$DEST" >/dev/null || exit 1
  echo "built cuda_v13 in $(($(date +%s) - t)) s"
fi
# cuda_v12's runtime comes from PyPI, which this machine cannot reach: that dir cannot load here.
rm -rf "$DEST/lib/ollama/cuda_v12"
real_cuda=$(ldconfig -p | awk '/libcuda\.so\.1 \(/ {print $NF; exit}')
real_nvml=$(ldconfig -p | awk '/libnvidia-ml\.so\.1 \(/ {print $NF; exit}')
echo "NVIDIA: $real_cuda $real_nvml"; nvidia-smi -L
SHIMS=$(mktemp -d /tmp/vgpu-shims.XXXXXX)
cp "$K/libvgpu_cuda.so" "$SHIMS/libvgpu-cuda.so"; ln -s libvgpu-cuda.so "$SHIMS/libcuda.so.1"
cp "$K/libvgpu_nvml.so" "$SHIMS/libvgpu-nvml.so"; ln -s libvgpu-nvml.so "$SHIMS/libnvidia-ml.so.1"
THROUGH_SHIMS=(LD_LIBRARY_PATH="$SHIMS" VGPU_CUDA_PASSTHROUGH="$real_cuda" VGPU_NVML_PASSTHROUGH="$real_nvml")
PORT=31434
failed=0

check() { # NAME: the record against its rules
  if "$K/vgpu-trace" check "$OUT/$1.vgt" --expect "$K/real/$1.toml" >"$OUT/$1.check" 2>&1; then
    echo "PASS $1"
  else
    echo "FAIL $1"; cat "$OUT/$1.check"; failed=1
  fi
}

stop_serve() { pkill -f "$DEST/bin/ollama serve"; sleep 1; pkill -9 -f "$DEST/bin/ollama serve"; }

record_serve() { # NAME [VAR=VALUE...]: serve until Ollama concludes
  local name=$1; shift
  local home; home=$(mktemp -d /tmp/ollama-home.XXXXXX)
  env "$@" HOME="$home" OLLAMA_HOST=127.0.0.1:$PORT OLLAMA_MODELS="$home" \
    "$K/vgpu-trace" record -o "$OUT/$name.vgt" --until 'log=inference compute' --duration 60s \
    --view compact --color never -- "$DEST/bin/ollama" serve >"$OUT/$name.txt" 2>&1
  stop_serve
  grep -E "inference compute|^verdict|events," "$OUT/$name.txt" | cut -c1-400
  check "$name"
}

record_serve real-ollama-driver
record_serve real-ollama-passthrough "${THROUGH_SHIMS[@]}"

echo "=== a tiny model through the shims"
home=$(mktemp -d /tmp/ollama-home.XXXXXX)
sed "/^FROM/s|@GGUF@|$K/tiny.gguf|" "$K/Modelfile.in" >"$home/Modelfile"
export OLLAMA_HOST=127.0.0.1:$PORT
env "${THROUGH_SHIMS[@]}" HOME="$home" OLLAMA_MODELS="$home" \
  "$K/vgpu-trace" record -o "$OUT/real-ollama-model.vgt" --duration 120s --view compact --color never \
  -- "$DEST/bin/ollama" serve >"$OUT/real-ollama-model.txt" 2>&1 &
tracer=$!
for _ in $(seq 100); do curl -sf "http://$OLLAMA_HOST/api/version" >/dev/null && break; sleep 0.2; done
HOME=$home "$DEST/bin/ollama" create tiny -f "$home/Modelfile" 2>&1 | tail -1
curl -s "http://$OLLAMA_HOST/api/generate" \
  -d '{"model":"tiny","prompt":"hi","stream":false,"options":{"num_predict":8}}' >"$OUT/real-ollama-model-generate.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("generated", r.get("eval_count"), "tokens:", repr(r.get("response")), r.get("error", ""))' \
  "$OUT/real-ollama-model-generate.json"
HOME=$home "$DEST/bin/ollama" ps
kill -INT $tracer; wait $tracer
stop_serve
grep -E "llama-server --model|^verdict|events," "$OUT/real-ollama-model.txt" | cut -c1-400
check real-ollama-model
unset OLLAMA_HOST

echo "=== PyTorch through the shims"
env "${THROUGH_SHIMS[@]}" "$K/vgpu-trace" record -o "$OUT/torch-passthrough.vgt" --view compact --color never -- \
  python3 -c 'import torch; x = torch.ones(1024, 1024, device="cuda"); print("torch", torch.cuda.get_device_name(0), float((x @ x).sum()))' \
  >"$OUT/torch-passthrough.txt" 2>&1
grep -E "^torch|^verdict|events,|Error" "$OUT/torch-passthrough.txt" | cut -c1-400
check torch-passthrough
rm -rf "$SHIMS"
exit $failed
