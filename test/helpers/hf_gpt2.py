#!/usr/bin/env python3
"""An independent GPT-2 reader and forward pass, for test/snapshot/hf-export.test.ts.

Written from the formats' public descriptions, sharing no code with zeromesh:
- safetensors: u64 little-endian header length N, N bytes of JSON
  {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data;
- config.json and the tensor names of transformers' GPT2LMHeadModel (Conv1D weights [in, out]);
- the textbook GPT-2 forward: token + position embeddings, per block
  x += attn(ln_1(x)); x += mlp(ln_2(x)), then ln_f and the head tied to wte; gelu_new is the
  tanh approximation; attention is causal, scaled by 1/sqrt(head size).

Usage: hf_gpt2.py <checkpoint dir> <comma-separated token ids>
Prints one JSON object: {"logits": [[V floats] per position], "vocab_size": V}.
Needs python3 and numpy only.
"""
import json
import math
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = blob[base + begin : base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        tensors[name] = arr.astype(np.float64).reshape(info["shape"])
    return tensors


def layernorm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def forward(ckpt, ids):
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    w = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    w = {(k if k.startswith("transformer.") else "transformer." + k): v for k, v in w.items()}
    eps = cfg["layer_norm_epsilon"]
    nh = cfg["n_head"]
    C = cfg["n_embd"]
    hs = C // nh
    T = len(ids)
    p = lambda name: w["transformer." + name]
    x = p("wte.weight")[ids] + p("wpe.weight")[:T]
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for l in range(cfg["n_layer"]):
        h = lambda name: p(f"h.{l}.{name}")
        a = layernorm(x, h("ln_1.weight"), h("ln_1.bias"), eps)
        qkv = a @ h("attn.c_attn.weight") + h("attn.c_attn.bias")
        q, k, v = np.split(qkv, 3, axis=-1)
        q = q.reshape(T, nh, hs).transpose(1, 0, 2)
        k = k.reshape(T, nh, hs).transpose(1, 0, 2)
        v = v.reshape(T, nh, hs).transpose(1, 0, 2)
        att = q @ k.transpose(0, 2, 1) / math.sqrt(hs)
        att = np.where(mask, -np.inf, att)
        att = np.exp(att - att.max(-1, keepdims=True))
        att = att / att.sum(-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + y @ h("attn.c_proj.weight") + h("attn.c_proj.bias")
        m = layernorm(x, h("ln_2.weight"), h("ln_2.bias"), eps)
        m = gelu_new(m @ h("mlp.c_fc.weight") + h("mlp.c_fc.bias"))
        x = x + m @ h("mlp.c_proj.weight") + h("mlp.c_proj.bias")
    x = layernorm(x, p("ln_f.weight"), p("ln_f.bias"), eps)
    return x @ p("wte.weight").T, cfg["vocab_size"]


def main():
    ckpt, ids = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    logits, vocab = forward(ckpt, ids)
    json.dump({"vocab_size": vocab, "logits": logits.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
