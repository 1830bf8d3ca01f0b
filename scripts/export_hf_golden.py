#!/usr/bin/env python3
"""Export the HF transformers + PEFT golden fixtures that the Java engine is tested against.

This script owns the *reference side* of the golden test (issue 2): it builds two tiny random
models with HF transformers (a GQA Llama with Llama-3 `rope_scaling`, untied head; a Qwen2 with
q/k/v biases and tied embeddings), a tiny byte-level BPE tokenizer for each, a PEFT LoRA adapter
with non-zero A and B, a padded batch, and writes what HF/PEFT compute for them: logits (with and
without the adapter), the loss, the gradient of every LoRA tensor, and per-text scoring losses.
Everything runs in float32 on the CPU with eager attention, so the numbers are exact references
rather than GPU approximations. The Java tests read the files; this script is only re-run when the
fixtures must change (on the GPU machine, which has torch/transformers/peft; no network needed).

Usage:  python3 scripts/export_hf_golden.py OUT_DIR [--seed 1234]
        python3 scripts/export_hf_golden.py --full OUT_DIR

--full adds the full-parameter references to fixtures already in OUT_DIR (it reads NAME/model/ and
NAME/inputs.json and writes only NAME/expected_full.safetensors, so every other file stays
byte-identical): HF autograd's gradient of the base model's loss (no adapter) with respect to every
parameter — embedding, RMSNorm weights, all seven projections, the q/k/v biases (Qwen2) and the head
(Llama's untied lm_head; Qwen2's tied head is the embedding, whose gradient holds both uses):
  OUT_DIR/NAME/expected_full.safetensors  loss (1): HF mean CE as loss_base; output_tokens (1);
                                          grad.<HF parameter name> for every parameter, F32

Layout written (per model NAME in llama, qwen2):
  OUT_DIR/NAME/model/                   save_pretrained, F32, single model.safetensors (+ tokenizer)
  OUT_DIR/NAME/model-bf16-sharded/      the same weights in BF16, >= 2 shards + index (+ tokenizer)
  OUT_DIR/NAME/tokenizer.json           tiny byte-level BPE (+ tokenizer_config.json)
  OUT_DIR/NAME/adapter/                 PEFT LoRA r=4 alpha=8, all seven projections, random A and B
  OUT_DIR/NAME/inputs.json              input_ids, labels, attention_mask, position_ids (B=2, T=12)
  OUT_DIR/NAME/expected.safetensors     logits, logits_base, loss, loss_base, grad.<PEFT key>
  OUT_DIR/NAME/score/texts.jsonl        3 records {"text": ...}
  OUT_DIR/NAME/score/expected.jsonl     {"index", "tokens", "loss"} for the base model
  OUT_DIR/NAME/score/expected_adapter.jsonl   the same with the adapter
  OUT_DIR/NAME/score/ids.jsonl          {"index", "ids"}: the token ids HF's tokenizer gave
  OUT_DIR/NAME/meta.json                versions, seed, shapes, notes for the Java test
All base weights are rounded to bf16-representable values before anything is computed, so the
F32 and BF16 checkpoints hold identical values and the same expected numbers apply to both.
"""

import argparse
import copy
import inspect
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F

import safetensors
from safetensors.torch import save_file, load_file
import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
import transformers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)
import peft
from peft import LoraConfig, get_peft_model

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 4, 8
BATCH, SEQ, LEFT_PAD = 2, 12, 3
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}

# Fixed training text for the tokenizers: a BPE trained on it gives a ~300-token vocabulary.
TOKENIZER_TEXT = [
    "Once upon a time there was a little robot who loved to count the stars.",
    "The robot counted one, two, three stars and then it fell asleep.",
    "Every morning the sun rose over the quiet hills and the birds began to sing.",
    "Alice had 12 apples; she gave 5 to Bob and kept the rest for later.",
    "How many apples does Alice have now? She has 7 apples left.",
    "def add(a, b): return a + b  # a tiny function",
    "Sparse training skips most of the frozen channels while the adapter stays dense.",
    "Low-rank adapters learn a small update B times A for every projection.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Numbers like 3.14, 2.71 and 1.41 appear in many math problems.",
    "She said: \"Let's go home!\" and they walked back together.",
    "Unicode text such as café, naïve and 東京 is split into bytes.",
]
SCORE_TEXTS = [
    "Once upon a time the little robot counted the apples.",
    "Alice gave 3 apples to Bob; how many are left?",
    "The adapter learns a low-rank update for the frozen weights.",
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    raise SystemExit("export_hf_golden: " + msg)


def kwargs_supported(fn, **kwargs):
    """Keep only the keyword arguments `fn` accepts (APIs moved between transformers 4 and 5)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


# ----------------------------------------------------------------------------------------------
# tokenizer

def train_tokenizer(vocab_size, specials, bos_token):
    """Byte-level BPE on TOKENIZER_TEXT; with `bos_token`, a `<s> $A` template post-processor."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TOKENIZER_TEXT, trainer=trainer)
    if bos_token is not None:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def save_tokenizer(tok, specials_map, out_dir):
    """Save through transformers (tokenizer.json + tokenizer_config.json), reload with
    AutoTokenizer, and check it encodes exactly as the raw `tokenizers` file does: the Java side
    reads tokenizer.json directly, HF users call tokenizer(text); both must agree."""
    from transformers import PreTrainedTokenizerFast
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, **specials_map)
    hf_tok.save_pretrained(out_dir)
    reloaded = AutoTokenizer.from_pretrained(out_dir)
    raw = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    for text in SCORE_TEXTS + TOKENIZER_TEXT[:3]:
        a = reloaded(text)["input_ids"]
        b = raw.encode(text).ids
        if list(a) != list(b):
            fail(f"HF tokenizer and tokenizer.json disagree on {text!r}: {a} vs {b}")
    return reloaded


# ----------------------------------------------------------------------------------------------
# models

def llama3_inv_freq(theta, dim, rs):
    """Llama-3 scaled RoPE frequencies written from the published formula, to check that HF
    really applied the rope_scaling we asked for (a silently dropped key would make a golden
    fixture that tests nothing)."""
    inv = [1.0 / (theta ** (i / dim)) for i in range(0, dim, 2)]
    orig = rs["original_max_position_embeddings"]
    lo, hi, factor = rs["low_freq_factor"], rs["high_freq_factor"], rs["factor"]
    low_wavelen, high_wavelen = orig / lo, orig / hi
    out = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append((1 - smooth) * f / factor + smooth * f)
    return torch.tensor(out, dtype=torch.float64)


def rope_kwargs(config_cls, theta, scaling):
    """transformers 5 folds rope_theta/rope_scaling into `rope_parameters`; 4.x takes them apart."""
    if "rope_parameters" in inspect.signature(config_cls.__init__).parameters:
        rp = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            rp = dict(scaling, rope_theta=theta)
        return {"rope_parameters": rp}
    return {"rope_theta": theta, "rope_scaling": scaling}


def build_config(name, vocab, specials_ids):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  attn_implementation="eager", use_cache=False, **specials_ids)
    if name == "llama":
        return LlamaConfig(head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=False,
                           attention_bias=False, mlp_bias=False,
                           **rope_kwargs(LlamaConfig, 10000.0, LLAMA3_ROPE), **common)
    return Qwen2Config(rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                       **rope_kwargs(Qwen2Config, 10000.0, None), **common)


@torch.no_grad()
def init_base(model, gen):
    """Deterministic init with every parameter non-trivial (norm weights != 1, biases != 0, so a
    Java bug that ignores them shows), then rounded to bf16-representable fp32 values."""
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if "norm" in name:
            p.copy_(1.0 + 0.1 * noise)
        elif name.endswith(".bias"):
            p.copy_(0.1 * noise)
        else:
            p.copy_(0.05 * noise)
        p.copy_(p.to(torch.bfloat16).to(torch.float32))


def check_rope(name, model, config):
    if name != "llama":
        return
    rot = getattr(model.model, "rotary_emb", None)
    if rot is None or not hasattr(rot, "inv_freq"):
        fail("cannot find model.model.rotary_emb.inv_freq to check the llama3 rope scaling")
    want = llama3_inv_freq(10000.0, 16, LLAMA3_ROPE)
    got = rot.inv_freq.detach().to(torch.float64).cpu()
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=0):
        fail(f"HF did not apply the llama3 rope scaling: inv_freq {got.tolist()} != {want.tolist()}")
    scale = getattr(rot, "attention_scaling", 1.0)
    if abs(float(scale) - 1.0) > 1e-12:
        fail(f"unexpected rope attention_scaling {scale}")


def make_inputs(gen, vocab_tok, special_ids, bos_id, pad_id):
    """Row 0: 12 real tokens; row 1: left-padded by 3. Labels -100 on padding and a prompt prefix.
    Ids are drawn from the tokenizer's non-special range so every id decodes to text."""
    lo = max(special_ids) + 1

    def rand(n):
        return torch.randint(lo, vocab_tok, (n,), generator=gen).tolist()

    ids, labels, mask, pos = [], [], [], []
    for row, (pad, prompt) in enumerate([(0, 5), (LEFT_PAD, 3)]):
        n = SEQ - pad
        real = ([bos_id] + rand(n - 1)) if bos_id is not None else rand(n)
        ids.append([pad_id] * pad + real)
        lab = [-100] * pad + [-100] * prompt + real[prompt:]
        labels.append(lab)
        mask.append([0] * pad + [1] * n)
        # position 0 at the first real token; pad slots get 0 (they are masked as keys and their
        # own outputs carry no loss, so any value there is fine)
        pos.append([0] * pad + list(range(n)))
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos}


def shifted_ce(logits, labels):
    """HF's causal-LM loss: mean CE over non-ignored shifted labels, in float32."""
    lg = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()
    lb = labels[:, 1:].reshape(-1)
    return F.cross_entropy(lg, lb, ignore_index=-100, reduction="mean")


@torch.no_grad()
def score(model, tok, ids_out=None):
    out = []
    for i, text in enumerate(SCORE_TEXTS):
        ids = list(tok(text)["input_ids"])
        if ids_out is not None:
            ids_out.append({"index": i, "ids": ids})
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(input_ids=x).logits.float()
        loss = F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="mean")
        out.append({"index": i, "tokens": len(ids), "loss": float(loss)})
    return out


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def from_pretrained_f32(path):
    for key in ("dtype", "torch_dtype"):
        try:
            return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                        **{key: torch.float32})
        except TypeError:
            continue
    fail(f"could not load {path} back with AutoModelForCausalLM")


def legacy_rope_config(cfg_path):
    """Rewrite a transformers-5 config.json (`rope_parameters`) to the form the Hub's Llama-3.x
    checkpoints carry (`rope_theta` + `rope_scaling`). The BF16 copy gets this form so the Java
    config reader is tested on both spellings; the reload check below proves HF reads it the same."""
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    if "rope_parameters" not in cfg:
        return False
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return True


def copy_tokenizer_files(src_dir, dst_dir):
    for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(src_dir, fn)):
            shutil.copy(os.path.join(src_dir, fn), os.path.join(dst_dir, fn))


def export_one(name, root, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    os.makedirs(os.path.join(root, "score"))

    # -- tokenizer -----------------------------------------------------------------------------
    if name == "llama":
        specials = ["<s>", "</s>", "<pad>"]
        tok = train_tokenizer(300, specials, bos_token="<s>")
        specials_map = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = train_tokenizer(300, specials, bos_token=None)
        specials_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    hf_tok = save_tokenizer(tok, specials_map, root)
    vocab_tok = tok.get_vocab_size()
    special_ids = [tok.token_to_id(s) for s in specials]
    bos_id = tok.token_to_id("<s>") if name == "llama" else None
    pad_id = tok.token_to_id("<pad>") if name == "llama" else tok.token_to_id("<|endoftext|>")
    eos_id = tok.token_to_id("</s>") if name == "llama" else tok.token_to_id("<|im_end|>")
    # Qwen2 checkpoints pad the embedding past the tokenizer; do the same so the Java side sees
    # a model vocabulary larger than the tokenizer's.
    vocab_model = vocab_tok if name == "llama" else vocab_tok + 8
    ids_cfg = {"pad_token_id": pad_id, "eos_token_id": eos_id}
    if bos_id is not None:
        ids_cfg["bos_token_id"] = bos_id

    # -- base model ----------------------------------------------------------------------------
    config = build_config(name, vocab_model, ids_cfg)
    model = (LlamaForCausalLM if name == "llama" else Qwen2ForCausalLM)(config).float()
    arch = type(model).__name__
    model.eval()  # dropout-free either way; eval keeps HF from any training-only path
    init_base(model, gen)
    check_rope(name, model, config)
    if name == "qwen2" and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        fail("qwen2 head is not tied to the embedding")
    log(f"[{name}] attn={getattr(model.config, '_attn_implementation', '?')} "
        f"params={sum(p.numel() for p in model.parameters())} vocab model/tok={vocab_model}/{vocab_tok}")

    inputs = make_inputs(gen, vocab_tok, special_ids, bos_id, pad_id)
    t = {k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}
    fwd = dict(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
               position_ids=t["position_ids"])
    pad_mask = t["attention_mask"].bool()

    with torch.no_grad():
        out = model(**fwd, labels=t["labels"])
        logits_base = out.logits.float().clone()
        loss_base = out.loss.float().reshape(1).clone()
    if not torch.allclose(loss_base, shifted_ce(logits_base, t["labels"]).reshape(1), rtol=1e-6):
        fail("HF loss differs from the mean shifted cross-entropy")
    score_ids = []
    score_base = score(model, hf_tok, score_ids)

    # -- checkpoints: F32 single file, BF16 sharded ---------------------------------------------
    model_dir = os.path.join(root, "model")
    model.save_pretrained(model_dir, **kwargs_supported(model.save_pretrained,
                                                        safe_serialization=True,
                                                        max_shard_size="50MB"))
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        fail(f"{model_dir} has no single model.safetensors: {sorted(os.listdir(model_dir))}")
    copy_tokenizer_files(root, model_dir)

    bf16_dir = os.path.join(root, "model-bf16-sharded")
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    total_bytes = sum(p.numel() * 2 for p in model_bf16.parameters())
    model_bf16.save_pretrained(bf16_dir, **kwargs_supported(model_bf16.save_pretrained,
                                                            safe_serialization=True,
                                                            max_shard_size=total_bytes // 3))
    del model_bf16
    shards = sorted(f for f in os.listdir(bf16_dir) if f.endswith(".safetensors"))
    if len(shards) < 2 or not os.path.exists(os.path.join(bf16_dir, "model.safetensors.index.json")):
        fail(f"{bf16_dir} is not sharded: {sorted(os.listdir(bf16_dir))}")
    legacy = legacy_rope_config(os.path.join(bf16_dir, "config.json")) if name == "llama" else False
    copy_tokenizer_files(root, bf16_dir)

    # Both checkpoints must load back in HF and give the very logits computed above.
    for d in (model_dir, bf16_dir):
        m2 = from_pretrained_f32(d)
        m2.eval()
        with torch.no_grad():
            diff = (m2(**fwd).logits.float() - logits_base)[pad_mask].abs().max().item()
        if diff > 1e-5:
            fail(f"{d} reloaded gives logits off by {diff}")
        log(f"[{name}] reload {os.path.basename(d)}: max |dlogits| = {diff:.2e}")
        del m2

    # -- PEFT adapter ---------------------------------------------------------------------------
    lcfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=SEVEN,
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    lora_params = []
    with torch.no_grad():
        for pname, p in sorted(pm.named_parameters()):
            if "lora_A" in pname or "lora_B" in pname:
                # PEFT would zero B; random A and B make every LoRA gradient non-zero
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
                lora_params.append((pname, p))
            elif p.requires_grad:
                fail(f"unexpected trainable parameter {pname}")
    if len(lora_params) != 2 * 7 * config.num_hidden_layers:
        fail(f"expected {2 * 7 * config.num_hidden_layers} LoRA tensors, found {len(lora_params)}")
    pm.eval()

    adapter_dir = os.path.join(root, "adapter")
    pm.save_pretrained(adapter_dir)
    readme = os.path.join(adapter_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)  # PEFT's model card template: nothing the tests need
    # PEFT keeps target_modules as a set, so its order in the file follows Python's string hash
    # seed; sort it so two exports are byte-identical.
    acfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(acfg_path, encoding="utf-8") as f:
        acfg = json.load(f)
    if isinstance(acfg.get("target_modules"), list):
        acfg["target_modules"] = sorted(acfg["target_modules"])
    with open(acfg_path, "w", encoding="utf-8") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))

    pm.zero_grad(set_to_none=True)
    out = pm(**fwd, labels=t["labels"])
    out.loss.backward()
    logits = out.logits.float().detach().clone()
    loss = out.loss.float().detach().reshape(1).clone()
    if not torch.allclose(loss, shifted_ce(logits, t["labels"]).reshape(1), rtol=1e-6):
        fail("PEFT loss differs from the mean shifted cross-entropy")

    expected = {}
    for pname, p in lora_params:
        key = pname.replace(".default.", ".")
        if key not in saved:
            fail(f"gradient name {key} (from {pname}) is not a key of adapter_model.safetensors")
        if not torch.equal(saved[key], p.detach()):
            fail(f"saved adapter tensor {key} differs from the live parameter")
        g = p.grad
        if g is None or not torch.isfinite(g).all() or g.abs().max().item() == 0.0:
            fail(f"gradient of {pname} is missing, non-finite or zero")
        expected["grad." + key] = g.detach().float().contiguous().clone()
    if set(k[len("grad."):] for k in expected) != set(saved):
        fail("adapter keys and gradient keys differ")

    with torch.no_grad(), pm.disable_adapter():
        again = pm(**fwd).logits.float()
    if (again - logits_base)[pad_mask].abs().max().item() > 1e-6:
        fail("disabling the adapter does not give the base logits back")
    score_adapter = score(pm, hf_tok)

    # Logits at padded query positions are not defined by the method (HF gives whatever its mask
    # convention yields); zero them so no test can come to depend on them.
    keep = pad_mask.unsqueeze(-1).float()
    expected["logits"] = (logits * keep).contiguous()
    expected["logits_base"] = (logits_base * keep).contiguous()
    expected["loss"] = loss.contiguous()
    expected["loss_base"] = loss_base.contiguous()
    save_file(expected, os.path.join(root, "expected.safetensors"),
              metadata={"source": "scripts/export_hf_golden.py"})

    with open(os.path.join(root, "inputs.json"), "w", encoding="utf-8") as f:
        json.dump(inputs, f)
        f.write("\n")
    write_jsonl(os.path.join(root, "score", "texts.jsonl"), [{"text": s} for s in SCORE_TEXTS])
    write_jsonl(os.path.join(root, "score", "ids.jsonl"), score_ids)
    write_jsonl(os.path.join(root, "score", "expected.jsonl"), score_base)
    write_jsonl(os.path.join(root, "score", "expected_adapter.jsonl"), score_adapter)

    meta = {
        "model": name,
        "architecture": arch,
        "seed": seed,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "tokenizers": tokenizers.__version__,
                     "safetensors": safetensors.__version__},
        "dtype": "float32, CPU, eager attention",
        "vocab_model": vocab_model, "vocab_tokenizer": vocab_tok,
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": 0.0, "targets": SEVEN,
                 "scaling": LORA_ALPHA / LORA_R, "init": "A and B ~ N(0, 0.1^2), seeded"},
        "batch": BATCH, "seq": SEQ, "left_pad_row1": LEFT_PAD,
        "loss": float(loss), "loss_base": float(loss_base),
        "notes": [
            "base weights are bf16-representable: model/ (F32) and model-bf16-sharded/ hold the same values",
            "logits/logits_base at positions with attention_mask 0 are written as 0 and must not be compared",
            "loss = HF mean cross-entropy over labels[:,1:] != -100 against logits[:, :-1]",
            "grad.<key>: d loss / d (PEFT tensor <key>), keys exactly as in adapter/adapter_model.safetensors",
            "score losses: mean next-token CE (nats) over ids = tokenizer(text)['input_ids']",
        ] + (["model-bf16-sharded/config.json uses the legacy rope_theta + rope_scaling keys; "
              "model/config.json is as transformers wrote it"] if legacy else []),
    }
    with open(os.path.join(root, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    log(f"[{name}] loss_base={float(loss_base):.6f} loss(adapter)={float(loss):.6f} "
        f"grads={len(lora_params)}")


def export_full(name, root):
    """Full-parameter gradients of the fixture's base model on the fixture's batch, from the files
    already exported (so the references belong to exactly the weights and inputs the Java test reads)."""
    model_dir = os.path.join(root, "model")
    for need in (os.path.join(model_dir, "config.json"), os.path.join(root, "inputs.json"),
                 os.path.join(root, "expected.safetensors")):
        if not os.path.exists(need):
            fail(f"--full needs an exported fixture: {need} is missing (run without --full first)")
    model = from_pretrained_f32(model_dir)
    model.eval()  # dropout-free; autograd still records
    with open(os.path.join(root, "inputs.json"), encoding="utf-8") as f:
        inputs = json.load(f)
    t = {k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}
    fwd = dict(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
               position_ids=t["position_ids"])
    pad_mask = t["attention_mask"].bool()

    params = dict(model.named_parameters())   # tied weights appear once (Qwen2: no lm_head.weight)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if tied != ("lm_head.weight" not in params):
        fail(f"[{name}] tie_word_embeddings={tied} but named_parameters has lm_head.weight: {'lm_head.weight' in params}")
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    out = model(**fwd, labels=t["labels"])
    out.loss.backward()
    loss = out.loss.float().detach().reshape(1).clone()
    logits = out.logits.float().detach()

    # the same model and batch as expected.safetensors: its base logits and loss must come back
    ref = load_file(os.path.join(root, "expected.safetensors"))
    diff = (logits - ref["logits_base"])[pad_mask].abs().max().item()
    if diff > 1e-5 or not torch.allclose(loss, ref["loss_base"], rtol=1e-6):
        fail(f"[{name}] the fixture's model/ and inputs.json do not reproduce expected.safetensors "
             f"(max |dlogits| {diff}, loss {float(loss)} vs {float(ref['loss_base'])})")
    if not torch.allclose(loss, shifted_ce(logits, t["labels"]).reshape(1), rtol=1e-6):
        fail(f"[{name}] HF loss differs from the mean shifted cross-entropy")

    expected = {"loss": loss.contiguous()}
    n_out = int((t["labels"][:, 1:] != -100).sum())
    expected["output_tokens"] = torch.tensor([float(n_out)], dtype=torch.float32)
    kinds = set()
    for pname, p in sorted(params.items()):
        g = p.grad
        if g is None or not torch.isfinite(g).all() or g.abs().max().item() == 0.0:
            fail(f"[{name}] gradient of {pname} is missing, non-finite or zero")
        expected[GRAD_PREFIX + pname] = g.detach().float().contiguous().clone()
        kinds.add(pname.split(".")[-2] if pname.startswith("model.layers.") else pname)
    want = {"model.embed_tokens.weight", "model.norm.weight", "input_layernorm", "post_attention_layernorm"} | set(SEVEN)
    want |= {"lm_head.weight"} if not tied else set()
    if not want <= kinds:
        fail(f"[{name}] parameter kinds without a gradient: {sorted(want - kinds)}")
    if name == "qwen2" and not any(k.endswith(".bias") for k in params):
        fail("[qwen2] no bias parameters")
    # write beside, then rename: never a half-written file
    dst = os.path.join(root, "expected_full.safetensors")
    tmp = dst + ".tmp"
    save_file(expected, tmp, metadata={"source": "scripts/export_hf_golden.py --full",
                                       "loss": "HF mean CE over labels[:,1:] != -100 (as loss_base)",
                                       "grads": "d loss / d parameter, HF names; a tied head is the embedding"})
    os.replace(tmp, dst)
    log(f"[{name}] full: loss={float(loss):.6f} output_tokens={n_out} grads={len(params)}")


GRAD_PREFIX = "grad."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--full", action="store_true",
                    help="add expected_full.safetensors (full-parameter gradients) to the fixtures in OUT_DIR")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # same summation order on every machine
    if args.full:
        out_dir = os.path.abspath(args.out_dir)
        for name in ("llama", "qwen2"):
            export_full(name, os.path.join(out_dir, name))
        return
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for i, name in enumerate(("llama", "qwen2")):
        # build in a scratch dir beside the target, then swap it in: never a half-written fixture
        tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir)
        try:
            export_one(name, tmp, args.seed + i)
            final = os.path.join(out_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    total = 0
    for dirpath, _, files in sorted(os.walk(out_dir)):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            size = os.path.getsize(p)
            total += size
            print(f"{size:>9}  {os.path.relpath(p, out_dir)}")
    print(f"{total:>9}  total bytes in {out_dir}")
    if total > 2 * 1024 * 1024:
        log(f"warning: fixtures total {total} bytes, over the 2 MB budget")


if __name__ == "__main__":
    main()
