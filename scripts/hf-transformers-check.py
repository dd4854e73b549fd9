#!/usr/bin/env python3
"""Loads a `zeromesh export --format hf` directory with transformers and compares its logits
with zeromesh's own (scripts/hf-logits.ts, run here with node unless --ours names a .npy).

Usage: python3 scripts/hf-transformers-check.py <hf dir> [--ids 464,2068,7586] [--ours ours.npy]
       [--device cpu|cuda] [--node node_modules/.bin/node]
Prints one JSON line: {"ok", "max_abs_diff", "max_abs_logit", "tokens", "vocab", ...};
exit 0 when the difference is within --tol (default 1e-3 of the largest logit), 1 otherwise,
2 when transformers or torch is not importable.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ids", default="464,2068,7586,21831,18045,625,262,16931,3290")
    ap.add_argument("--ours")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--node", default=os.path.join(os.path.dirname(__file__), "..", "node_modules", ".bin", "node"))
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError as e:
        print(json.dumps({"ok": False, "error": f"transformers/torch not importable: {e}"}))
        sys.exit(2)
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    ids = [int(x) % cfg["vocab_size"] for x in a.ids.split(",")]
    ours_path = a.ours
    if ours_path is None:
        ours_path = os.path.join(tempfile.mkdtemp(), "ours.npy")
        script = os.path.join(os.path.dirname(__file__), "hf-logits.ts")
        subprocess.run([a.node, script, a.dir, ",".join(map(str, ids)), ours_path, a.device], check=True, stdout=subprocess.DEVNULL)
    ours = np.load(ours_path)
    model = GPT2LMHeadModel.from_pretrained(a.dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float().numpy()
    diff = float(np.abs(theirs - ours).max())
    scale = float(np.abs(theirs).max())
    ok = diff <= a.tol * max(1.0, scale)
    print(json.dumps({"ok": ok, "max_abs_diff": diff, "max_abs_logit": scale, "tokens": len(ids), "vocab": int(theirs.shape[-1]),
                      "argmax_agree": bool((theirs.argmax(-1) == ours.argmax(-1)).all()), "transformers_dir": a.dir}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
