#!/usr/bin/env python3
"""Make a tiny random-weight `llama` GGUF that the real Ollama imports and runs.

What it makes: a ~0.8 MB, F32, 2-layer llama model (n_embd 64, 4 heads, 4 KV heads, n_ff 256,
context 256) with a 416-token SentencePiece ("llama") vocabulary: <unk> <s> </s>, the 256 byte
tokens <0x00>..<0xFF> (so any text tokenizes, by byte fallback), then letters, digits,
punctuation, "▁x" pieces and common bigrams. Weights come from a fixed seed, so the file is
byte-for-byte reproducible. The output rows of control and byte tokens are zero, so with Ollama's
default sampling (top_k 40) it never emits </s> and only emits printable pieces: generation runs
to num_predict and prints readable garbage.

Usage:
    python3 make_tiny_gguf.py OUT.gguf           # installs its requirements if needed, then writes OUT
    python3 make_tiny_gguf.py --deps-only        # just make sure the requirements are importable

Requirements (pinned): gguf==0.19.0, numpy==2.4.6. If they are not importable, the script runs
`python3 -m pip install --target DIR gguf==0.19.0 numpy==2.4.6` once (DIR = $TINY_PYENV, default
<repo>/target/pyenv) and puts DIR first on sys.path; equivalently `PYTHONPATH=target/pyenv`.

With Ollama:  printf 'FROM %s\n' "$PWD/OUT.gguf" > Modelfile; ollama create tiny -f Modelfile
"""
import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = ["gguf==0.19.0", "numpy==2.4.6"]
REPO = Path(__file__).resolve().parents[2]
PYENV = Path(os.environ.get("TINY_PYENV", REPO / "target" / "pyenv"))


def ensure_deps() -> None:
    """Make gguf+numpy importable: the pinned versions from PYENV, installed there once."""
    marker = PYENV / "gguf-0.19.0.dist-info"
    if not marker.is_dir():
        env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-warn-script-location", "--target", str(PYENV), *REQUIREMENTS], check=True, env=env)
    sys.path.insert(0, str(PYENV))


# Hyper-parameters.
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 2, 64, 4, 4, 256, 256
HEAD_DIM = N_EMBD // N_HEAD
SEED = 20261215


def vocab():
    """(tokens, scores, types) of a SentencePiece vocab: control, byte, then normal pieces."""
    UNKNOWN, CONTROL, NORMAL, BYTE = 2, 3, 1, 6
    toks = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)]
    toks += [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    lower = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["▁"] + list(lower) + list(lower.upper()) + list("0123456789") + list(".,!?'\"-:;()")
    pieces += ["▁" + c for c in lower]
    pieces += ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te",
               "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou",
               "io", "le", "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce",
               "ll", "lo", "▁the", "▁hi", "▁he", "▁hello", "hel", "llo", "▁in", "▁an", "▁is", "▁it"]
    toks += [(p, NORMAL) for p in pieces]
    toks += [(f"<pad{i}>", 5) for i in range(416 - len(toks))]  # 5 = USER_DEFINED, to a round 416
    # Scores: 0 for specials; normal pieces score higher the longer they are, so SPM merges prefer them.
    scores = [0.0 if t != NORMAL else -100.0 + 10.0 * len(s) - 0.001 * i for i, (s, t) in enumerate(toks)]
    return [s for s, _ in toks], scores, [t for _, t in toks]


def main() -> None:
    args = sys.argv[1:]
    if args == ["--deps-only"]:
        ensure_deps()
        import gguf, numpy  # noqa: F401,E401
        print(f"gguf {gguf.__file__}\nnumpy {numpy.__version__}")
        return
    if len(args) != 1 or args[0].startswith("-"):
        sys.exit(__doc__.split("Requirements")[0].rstrip())
    ensure_deps()
    import numpy as np
    import gguf

    tokens, scores, types = vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(SEED)

    def rand(*shape, scale=0.02):  # numpy shape is ggml's ne reversed: (rows=out, cols=in)
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = gguf.GGUFWriter(args[0], "llama")
    w.add_name("vgpu-trace tiny random llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    w.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD, scale=1.0))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(N_HEAD_KV * HEAD_DIM, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(N_HEAD_KV * HEAD_DIM, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    out = rand(n_vocab, N_EMBD, scale=1.0)
    out[[i for i, t in enumerate(types) if t != 1]] = 0.0  # only normal pieces can win top_k
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{args[0]}: {os.path.getsize(args[0])} bytes, {n_vocab} tokens, {N_LAYER} layers")


if __name__ == "__main__":
    main()
