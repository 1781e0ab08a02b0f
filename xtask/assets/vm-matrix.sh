# The kernel matrix's workload (cargo xtask test, cargo xtask vm): on each kernel, what the
# eBPF backend gets and what the verifier made of every program (with every attach method the
# kernel has), the lab's verdicts, and exact counts of a fork/exec storm and a dlopen loop.
# Every session is `--backend ebpf`: a refusal is a failure, never a fall back. Results are
# `VGPU-VM key=value` lines; /kit holds the kit.
T=/kit/vgpu-trace
export VGPU_LAB_LIBS=/kit/lab
echo "VGPU-VM uname=$(uname -r)"

# What this kernel gets, each program loaded and attached as a session would (JSON, one line).
$T doctor --kernel --format json > /tmp/kernel.json 2> /tmp/kernel.err
echo "VGPU-VM doctor_exit=$?"
echo "VGPU-VM doctor=$(tr '\n' ' ' < /tmp/kernel.json)"
tail -n 2 /tmp/kernel.err | while IFS= read -r line; do echo "VGPU-VM doctor_stderr=$line"; done
# Every attach method the kernel can do, so that each set of programs meets its verifier.
# (A method the kernel lacks fails, as it should; one it has must not.)
for method in uprobe-multi perf-event-cookie perf-event-per-function; do
    VGPU_TRACE_ATTACH=$method $T doctor --kernel --format json > /tmp/m.json 2>/dev/null
    echo "VGPU-VM method_${method}_exit=$?"
    echo "VGPU-VM method_$method=$(tr '\n' ' ' < /tmp/m.json)"
done

# The lab's Ollama stand-in (era B), healthy and with a shim that lacks symbols.
for preset in healthy shim-missing-symbols; do
    $T run --backend ebpf --format jsonl -o "/tmp/$preset.jsonl" -- \
        /kit/vgpu-lab run "$preset" --era b > "/tmp/$preset.out" 2> "/tmp/$preset.err"
    echo "VGPU-VM lab_${preset}_exit=$?"
    echo "VGPU-VM lab_${preset}=$(grep -o '"outcome":"[a-z-]*"' "/tmp/$preset.jsonl" | tail -n 1 | cut -d'"' -f4)"
    echo "VGPU-VM lab_${preset}_lost=$(grep -o '"lost":[0-9]*' "/tmp/$preset.jsonl" | tail -n 1 | cut -d: -f2)"
    echo "VGPU-VM lab_${preset}_skipped=$(grep -o 'skipped [0-9]* runs of [a-z_]*' "/tmp/$preset.err" | awk '{ printf "%s:%s ", $5, $2 }')"
    tail -n 2 "/tmp/$preset.err" | while IFS= read -r line; do echo "VGPU-VM lab_${preset}_stderr=$line"; done
done

# A fork/exec storm: every exec of `storm nothing` the storm counted, and nothing lost.
$T run --backend ebpf --ring-size 64M --format jsonl -o /tmp/storm.jsonl -- \
    /kit/storm exec 3 2 > /tmp/storm.out 2> /tmp/storm.err
echo "VGPU-VM storm_exit=$?"
echo "VGPU-VM storm_truth=$(grep -o 'execs=[0-9]*' /tmp/storm.out | cut -d= -f2)"
echo "VGPU-VM storm_seen=$(grep -c '"argv":\["[^"]*","nothing"\]' /tmp/storm.jsonl)"
echo "VGPU-VM storm_lost=$(grep -o '"lost":[0-9]*' /tmp/storm.jsonl | tail -n 1 | cut -d: -f2)"
# Runs the kernel skipped (a program already running on that CPU, preempted): PROGRAM:N ...
echo "VGPU-VM storm_skipped=$(grep -o 'skipped [0-9]* runs of [a-z_]*' /tmp/storm.err | awk '{ printf "%s:%s ", $5, $2 }')"

# 20k iterations of dlopen+dlsym+dlclose (and dl-bench's first dlopen).
$T run --backend ebpf --ring-size 64M --format jsonl -o /tmp/dl.jsonl -- \
    /kit/dl-bench 20000 > /tmp/dl.out 2> /tmp/dl.err
echo "VGPU-VM dl_exit=$?"
for func in dlopen dlsym dlclose; do
    echo "VGPU-VM dl_$func=$(grep -c "\"func\":\"$func\"" /tmp/dl.jsonl)"
done
echo "VGPU-VM dl_lost=$(grep -o '"lost":[0-9]*' /tmp/dl.jsonl | tail -n 1 | cut -d: -f2)"
echo "VGPU-VM dl_skipped=$(grep -o 'skipped [0-9]* runs of [a-z_]*' /tmp/dl.err | awk '{ printf "%s:%s ", $5, $2 }')"
tail -n 2 /tmp/dl.err | while IFS= read -r line; do echo "VGPU-VM dl_stderr=$line"; done
