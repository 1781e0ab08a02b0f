"""scrub.py IN OUT: a record with what names the machine replaced, consistently: the host name,
GPU UUIDs (GPU-00000000-0000-0000-0000-00000000000N) and scratch directories of the lab and of
real-ollama.sh. The
output lines of `ldconfig` (the lab lists the host's cache to find NVIDIA's driver) are left
out: a thousand lines of this machine's libraries, and no part of any discovery."""
import json
import re
import sys

uuids = {}
UUID = re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SCRATCH = re.compile(r"/tmp/vgpu-lab-([a-z-]+)-[A-Za-z0-9]{6}(?![A-Za-z0-9])")
# real-ollama.sh's scratch dirs (mktemp): the shims' dir and each serve's home.
MKTEMP = re.compile(r"/tmp/(vgpu-shims|ollama-home)\.[A-Za-z0-9]{6}(?![A-Za-z0-9])")


def uuid(match):
    return uuids.setdefault(match.group(0), "GPU-00000000-0000-0000-0000-%012d" % (len(uuids) + 1))


def scrub(value, host):
    if isinstance(value, str):
        value = UUID.sub(uuid, value)
        value = SCRATCH.sub(r"/tmp/vgpu-lab-\1-SCRATCH", value)
        value = MKTEMP.sub(r"/tmp/\1.SCRATCH", value)
        if value == host:
            return "gpu-host"
        # Inside longer text only as a word, and only a name long enough not to be a syllable.
        if len(host) >= 4:
            value = re.sub(r"\b%s\b" % re.escape(host), "gpu-host", value)
        return value
    if isinstance(value, list):
        return [scrub(v, host) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, host) for k, v in value.items()}
    return value


with open(sys.argv[1]) as src:
    lines = [json.loads(line) for line in src if line.strip()]
host = lines[0].get("host", "") if lines else ""
with open(sys.argv[2], "w") as dst:
    for line in lines:
        if line.get("type") == "log" and line.get("comm", "").startswith("ldconfig"):
            continue
        dst.write(json.dumps(scrub(line, host), separators=(",", ":")) + "\n")
