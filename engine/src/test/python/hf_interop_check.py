#!/usr/bin/env python3
"""Checks that files written by the Java format writers load in HF transformers and PEFT.

Run on a machine with torch/transformers/peft (the GPU machine) over a directory the Java side
wrote with HfCheckpointWriter and PeftAdapter, one sub-directory per model family:
  FAMILY/model/       config.json + model.safetensors (F32)
  FAMILY/model-bf16/  the same weights (bf16-representable) in BF16, sharded with an index
  FAMILY/adapter/     PEFT adapter (adapter_config.json + adapter_model.safetensors)
  FAMILY/merged/      the F32 checkpoint with the adapter merged (W += s*B*A)
What is checked, per family:
  * AutoModelForCausalLM loads model/ and model-bf16/ and both give the same logits;
  * PeftModel.from_pretrained loads adapter/ with every tensor landing on its module (PEFT only
    warns about unmatched keys, so each saved tensor is compared with the live parameter) and
    the config's r / alpha / rsLoRA arrive as written;
  * the adapter changes the logits, and merged/ gives the logits PEFT computes with the adapter.
Exit status 0 when all hold; prints one line per check.

Usage: python3 hf_interop_check.py DIR
The directory is written by the Java test HfInteropFilesTest (engine/target/hf-interop after
`./mvnw -q -o -pl engine -am test -Dtest=HfInteropFilesTest -Dsurefire.failIfNoSpecifiedTests=false`);
on the GPU machine, carry engine/target/hf-interop and run
`python3 engine/src/test/python/hf_interop_check.py engine/target/hf-interop`.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)


def load(path):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()


def main(root):
    torch.manual_seed(0)
    for fam in sorted(os.listdir(root)):
        d = os.path.join(root, fam)
        if not os.path.isdir(d):
            continue
        base = load(os.path.join(d, "model"))
        cfg = base.config
        ids = torch.randint(0, cfg.vocab_size, (2, 10))
        with torch.no_grad():
            l0 = base(input_ids=ids).logits
        bf = load(os.path.join(d, "model-bf16"))
        with torch.no_grad():
            lb = bf(input_ids=ids).logits
        check(torch.allclose(l0, lb, atol=1e-5, rtol=0), f"{fam}: F32 and sharded BF16 checkpoints give the same logits "
              f"(max diff {(l0 - lb).abs().max().item():.2e})")
        if fam == "llama":
            rs = getattr(cfg, "rope_scaling", None) or getattr(cfg, "rope_parameters", None) or {}
            check(rs.get("rope_type") == "llama3", f"{fam}: llama3 rope scaling read by HF ({rs})")
        if fam == "qwen2":
            check(base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr(), f"{fam}: head tied")
            check(base.model.layers[0].self_attn.q_proj.bias is not None, f"{fam}: q/k/v biases present")

        with open(os.path.join(d, "adapter", "adapter_config.json")) as f:
            acfg = json.load(f)
        pm = PeftModel.from_pretrained(load(os.path.join(d, "model")), os.path.join(d, "adapter")).eval()
        pc = pm.peft_config["default"]
        check(pc.r == acfg["r"] and pc.lora_alpha == acfg["lora_alpha"] and pc.use_rslora == acfg["use_rslora"],
              f"{fam}: PEFT config r={pc.r} alpha={pc.lora_alpha} rslora={pc.use_rslora}")
        saved = load_file(os.path.join(d, "adapter", "adapter_model.safetensors"))
        live = dict(pm.named_parameters())
        missing = []
        for k, v in saved.items():
            name = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
            if name not in live or not torch.equal(live[name].detach().float(), v.float()):
                missing.append(k)
        n_lora = sum(1 for n in live if ".lora_A." in n or ".lora_B." in n)
        check(not missing and n_lora == len(saved),
              f"{fam}: all {len(saved)} adapter tensors loaded onto their modules ({n_lora} LoRA params; bad: {missing[:3]})")
        with torch.no_grad():
            lp = pm(input_ids=ids).logits
        check((lp - l0).abs().max().item() > 1e-3, f"{fam}: the adapter changes the logits "
              f"(max change {(lp - l0).abs().max().item():.3f})")
        merged = load(os.path.join(d, "merged"))
        with torch.no_grad():
            lm = merged(input_ids=ids).logits
        check(torch.allclose(lp, lm, atol=1e-4, rtol=1e-4),
              f"{fam}: merged checkpoint matches PEFT with the adapter (max diff {(lp - lm).abs().max().item():.2e})")
    print("FAILED: " + "; ".join(failures) if failures else "all interop checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
