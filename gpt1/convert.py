"""Weights in and out: Hugging Face `OpenAIGPTLMHeadModel` directories, the original OpenAI release, gpt1.

Both foreign layouts store projection weights as [in, out] (`y = x @ W + b`); gpt1 uses torch's nn.Linear
[out, in], so every projection matrix is transposed on the way in and out. Layouts: GPT1.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .checkpoint import (
    TOKENIZER_FILES,
    AtomicDirectory,
    copy_tokenizer,
    load_model,
    load_weights_into,
    read_json,
    read_safetensors,
    save_model,
    tokenizer_dir_of,
)
from .errors import UserError
from .finetune import load_task_model, task_model_dir
from .model import GPT, GPTConfig
from .tokenizer import load_tokenizer

# Per-block tensors in the order of the original release, with their names in its TensorFlow graph; the Linear
# ones are transposed.
BLOCK_TENSORS = [
    ("attn.c_attn.weight", "attn/c_attn/w", True),
    ("attn.c_attn.bias", "attn/c_attn/b", False),
    ("attn.c_proj.weight", "attn/c_proj/w", True),
    ("attn.c_proj.bias", "attn/c_proj/b", False),
    ("ln_1.weight", "ln_1/g", False),
    ("ln_1.bias", "ln_1/b", False),
    ("mlp.c_fc.weight", "mlp/c_fc/w", True),
    ("mlp.c_fc.bias", "mlp/c_fc/b", False),
    ("mlp.c_proj.weight", "mlp/c_proj/w", True),
    ("mlp.c_proj.bias", "mlp/c_proj/b", False),
    ("ln_2.weight", "ln_2/g", False),
    ("ln_2.bias", "ln_2/b", False),
]
HF_TOKENIZER_FILES = ("vocab.json", "merges.txt")
HF_FILES = ("config.json", "model.safetensors", *HF_TOKENIZER_FILES)  # what write_hf makes
RELEASE_FILES = ("params_shapes.json", "parameters_names.json", "params_*.npy", *TOKENIZER_FILES)


# ---------------------------------------------------------------- Hugging Face


def config_from_hf(hf: dict, path: Path) -> GPTConfig:
    if not isinstance(hf, dict):
        raise UserError(f"{path}: expected a JSON object of model settings, found {type(hf).__name__}")
    if hf.get("model_type") not in (None, "openai-gpt"):
        raise UserError(f"{path}: model_type is {hf.get('model_type')!r}, not 'openai-gpt'")
    if hf.get("afn", "gelu") != "gelu":
        raise UserError(f"{path}: activation {hf['afn']!r} is not GPT-1's tanh GELU")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            n_positions=hf["n_positions"],
            n_embd=hf["n_embd"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            embd_pdrop=hf.get("embd_pdrop", 0.1),
            attn_pdrop=hf.get("attn_pdrop", 0.1),
            resid_pdrop=hf.get("resid_pdrop", 0.1),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
            init_std=hf.get("initializer_range", 0.02),
        )
    except KeyError as e:
        raise UserError(f"{path}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None


def config_to_hf(config: GPTConfig) -> dict:
    return {
        "architectures": ["OpenAIGPTLMHeadModel"],
        "model_type": "openai-gpt",
        "afn": "gelu",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
        "resid_pdrop": config.resid_pdrop,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
    }


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    st, pt = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        return read_safetensors(st), st
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True), pt
        except Exception as e:  # weights_only refuses anything but tensors; say so in one line
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"{pt}: not a file of plain tensors, and gpt1 never unpickles other objects "
                            f"({type(e).__name__}: {first_line})") from None
    raise UserError(f"{directory}: neither model.safetensors nor pytorch_model.bin found")


def gpt1_state_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # OpenAIGPTModel saves without the "transformer." prefix, the head models with it.
    state = {k.removeprefix("transformer."): v for k, v in hf_state.items() if not k.startswith("lm_head.")}
    state = {k: v for k, v in state.items() if not k.startswith(("multiple_choice_head.", "score."))}
    out = {}
    for name, tensor in state.items():
        transpose = any(name.endswith(t) for t, _, tr in BLOCK_TENSORS if tr)
        out[name] = tensor.t().contiguous() if transpose else tensor
    return out


def hf_state_from_gpt1(model: GPT) -> dict[str, torch.Tensor]:
    transposed = {t for t, _, tr in BLOCK_TENSORS if tr}
    out = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if any(name.endswith(t) for t in transposed):
            tensor = tensor.t()
        out[f"transformer.{name}"] = tensor.contiguous()
    return out


def from_hf(src: Path) -> GPT:
    config_path = src / "config.json"
    config = config_from_hf(read_json(config_path), config_path)
    hf_state, weights_path = read_hf_weights(src)
    model = GPT(config)
    load_weights_into(model, gpt1_state_from_hf(hf_state), weights_path)
    return model


def write_hf(model: GPT, dst: Path, tokenizer_dir: Path | None, head: tuple[dict, dict] | None = None) -> None:
    """An OpenAIGPTLMHeadModel folder, or with `head` = (config fields, tensors) one of the task-head models."""
    config = config_to_hf(model.config)
    state = hf_state_from_gpt1(model)
    if head is not None:
        config.update(head[0])
        state.update(head[1])
    with AtomicDirectory(dst, HF_FILES) as tmp:
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            encoders = sorted(Path(tokenizer_dir).glob("encoder_bpe_*.json"))
            merges = sorted(Path(tokenizer_dir).glob("vocab_*.bpe"))
            if encoders and merges:
                shutil.copyfile(encoders[0], tmp / "vocab.json")
                shutil.copyfile(merges[0], tmp / "merges.txt")


def hf_task_head(head_weight: torch.Tensor, info: dict, path: Path) -> tuple[dict, dict]:
    """Config fields and tensors of the Hugging Face model that holds a fine-tuned head exactly.

    classification, entailment: OpenAIGPTForSequenceClassification (score [n_labels, C], no bias; it reads
    the last non-padding token, so inputs are padded with id 0 after the extract token, as gpt1 pads).
    multiple-choice: OpenAIGPTDoubleHeadsModel (summary [1, C] with a zero bias, read at mc_token_ids =
    the extract positions). Similarity and regression add the states of both input orders, which no
    Hugging Face head does: those are refused."""
    kind = info["kind"]
    head_weight = head_weight.detach().cpu().contiguous()
    if kind in ("classification", "entailment"):
        names = info["label_names"]
        return (
            {"architectures": ["OpenAIGPTForSequenceClassification"], "num_labels": len(names), "pad_token_id": 0,
             "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}},
            {"score.weight": head_weight},
        )
    if kind == "multiple-choice":
        return (
            {"architectures": ["OpenAIGPTDoubleHeadsModel"], "num_labels": 1, "summary_type": "cls_index",
             "summary_use_proj": True, "summary_proj_to_labels": True, "summary_activation": None,
             "summary_first_dropout": 0.1},
            {"multiple_choice_head.summary.weight": head_weight, "multiple_choice_head.summary.bias": torch.zeros(1)},
        )
    raise UserError(f"{path}: a {kind} model adds the states of both input orders; no Hugging Face head can hold "
                    "that (export the decoder alone with a plain gpt1 model folder)")


def hf_tokenizer_as_gpt1(src: Path, staging: Path) -> Path | None:
    """HF names GPT-1's files vocab.json/merges.txt; gpt1 keeps the original names."""
    vocab, merges = src / "vocab.json", src / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    n_merges = sum(1 for _ in open(merges, "rb")) - 1  # bytes: a file that is not UTF-8 is named by load_tokenizer
    copies = {staging / f"encoder_bpe_{n_merges}.json": vocab, staging / f"vocab_{n_merges}.bpe": merges}
    staging.mkdir(parents=True, exist_ok=True)
    for copy, original in copies.items():
        shutil.copyfile(original, copy)
    try:  # now, not when the converted model is first used, and naming the files the user has
        load_tokenizer(staging)
    except UserError as error:
        message = str(error)
        for copy, original in copies.items():
            message = message.replace(str(copy), str(original)).replace(copy.name, original.name)
        raise UserError(message) from None
    return staging


# ---------------------------------------------------------------- original OpenAI release


def from_openai(src: Path) -> GPT:
    """params_shapes.json + params_0..9.npy: one float32 vector cut at the cumulative sizes of the shapes."""
    shapes_path = src / "params_shapes.json"
    shapes = read_json(shapes_path)
    if not isinstance(shapes, list) or len(shapes) < 2 or (len(shapes) - 2) % len(BLOCK_TENSORS):
        raise UserError(f"{shapes_path}: expected 2 embedding shapes and 12 per block, got {len(shapes)} shapes")
    for number, shape in enumerate(shapes):
        if not (isinstance(shape, list) and shape and all(type(n) is int and n > 0 for n in shape)):
            raise UserError(f"{shapes_path}: shape {number} is {json.dumps(shape)}, not a list of positive integers")
    if len(shapes[0]) != 2 or len(shapes[1]) != 2:
        raise UserError(f"{shapes_path}: the first two shapes (positions, tokens) must be [rows, width], got "
                        f"{shapes[0]} and {shapes[1]}")
    # the shards are cut from one vector in order: a missing or extra one would shift every value after it
    shards = sorted(src.glob("params_*.npy"), key=lambda p: (len(p.name), p.name))  # params_2 before params_10
    if not shards:
        raise UserError(f"{src}: no params_*.npy shards found")
    if [shard.name for shard in shards] != [f"params_{i}.npy" for i in range(len(shards))]:
        raise UserError(f"{src}: the shards must be params_0.npy .. params_{len(shards) - 1}.npy without a gap, "
                        f"found {', '.join(shard.name for shard in shards)}")
    parts = []
    for shard in shards:
        try:
            parts.append(np.load(shard, allow_pickle=False).reshape(-1))
        except (ValueError, OSError) as e:
            raise UserError(f"{shard}: not a numpy array file ({e})") from None
        if parts[-1].dtype.kind != "f":  # concatenated with float shards, integers would become floats silently
            raise UserError(f"{shard}: holds {parts[-1].dtype} values, not floating-point weights")
    flat = np.concatenate(parts)
    sizes = [int(np.prod(s)) for s in shapes]
    if flat.size != sum(sizes):
        raise UserError(
            f"{src}: shards hold {flat.size} values but params_shapes.json needs {sum(sizes)} "
            f"({len(shards)} shards found)"
        )
    arrays = [a.reshape(s) for a, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    n_positions, n_embd = shapes[0]
    vocab_size = shapes[1][0]
    n_layer = (len(shapes) - 2) // len(BLOCK_TENSORS)
    n_inner = shapes[2 + 6][-1]  # mlp/c_fc/w [1, n_embd, n_inner]
    if n_embd % 64:
        raise UserError(f"{shapes_path}: width {n_embd} is not a multiple of GPT-1's 64-wide heads")
    n_head = n_embd // 64  # the release does not store it
    config = GPTConfig(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_inner=n_inner
    )
    state = {
        "positions_embed.weight": torch.from_numpy(arrays[0].copy()),
        "tokens_embed.weight": torch.from_numpy(arrays[1].copy()),
    }
    for i in range(n_layer):
        block = arrays[2 + i * len(BLOCK_TENSORS) : 2 + (i + 1) * len(BLOCK_TENSORS)]
        for (name, original_name, transpose), array in zip(BLOCK_TENSORS, block):
            t = torch.from_numpy(array.copy())
            if transpose:
                if t.dim() < 2 or t.numel() != t.shape[-2] * t.shape[-1]:
                    raise UserError(f"{shapes_path}: h{i}/{original_name} has shape {list(t.shape)}, not [1, in, out]")
                t = t.reshape(t.shape[-2], t.shape[-1]).t().contiguous()  # [1, in, out] -> [out, in]
            state[f"h.{i}.{name}"] = t
    model = GPT(config)
    load_weights_into(model, state, src)
    return model


def write_openai(model: GPT, dst: Path, tokenizer_dir: Path | None, n_shards: int = 10) -> None:
    """The release's layout, which the original finetune-transformer-lm code and `from_openai` read: the arrays
    of params_shapes.json flattened into one float32 vector and cut into `n_shards` params_N.npy files.

    The layout stores shapes only, so a model whose other settings a reader could not recover is refused."""
    config = model.config
    if config.n_head * 64 != config.n_embd:
        raise UserError(f"the original layout does not store the number of heads and readers take n_embd / 64; "
                        f"this model has {config.n_head} heads of {config.n_embd // config.n_head}")
    if config.layer_norm_epsilon != GPTConfig.layer_norm_epsilon:
        raise UserError(f"the original layout does not store LayerNorm's epsilon and readers take "
                        f"{GPTConfig.layer_norm_epsilon}; this model uses {config.layer_norm_epsilon}")
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    arrays = [state["positions_embed.weight"], state["tokens_embed.weight"]]
    names = ["model/we:0"]  # the graph's one embedding matrix, positions and tokens together
    for i in range(config.n_layer):
        for name, original_name, transpose in BLOCK_TENSORS:
            t = state[f"h.{i}.{name}"]
            arrays.append(t.t().unsqueeze(0) if transpose else t)  # [out, in] -> [1, in, out]
            names.append(f"model/h{i}/{original_name}:0")
    flat = torch.cat([a.reshape(-1) for a in arrays]).numpy()
    with AtomicDirectory(dst, RELEASE_FILES) as tmp:
        with open(tmp / "params_shapes.json", "w", encoding="utf-8") as f:
            json.dump([list(a.shape) for a in arrays], f)
        with open(tmp / "parameters_names.json", "w", encoding="utf-8") as f:  # what transformers' loader reads
            json.dump(names, f)
        for i, shard in enumerate(np.array_split(flat, n_shards)):
            np.save(tmp / f"params_{i}.npy", shard)
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)


# ---------------------------------------------------------------- the command


def convert(src: Path, dst: Path, src_format: str, dst_format: str) -> Path:
    """Convert weights between layouts; returns dst. The tokenizer travels along where the source has one."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise UserError(f"{src}: no such directory")
    tokenizer_dir = None
    staging = None
    if src_format == "hf":
        model = from_hf(src)
        staging = dst.with_name(f".{dst.name}.tokenizer-staging")
    elif src_format == "openai":
        model = from_openai(src)
        if list(src.glob("encoder_bpe_*.json")) and list(src.glob("vocab_*.bpe")):
            tokenizer_dir = src
    elif src_format == "gpt1" and task_model_dir(src) is not None:  # a fine-tuned model: decoder + head
        task_model, info = load_task_model(src)
        if dst_format != "hf":
            raise UserError(f"{src}: a fine-tuned model converts to --to hf only (the original layout has no task "
                            "head, and it is a gpt1 folder already)")
        write_hf(task_model.transformer, dst, tokenizer_dir_of(task_model_dir(src)),
                 head=hf_task_head(task_model.head.weight, info, src))
        return dst
    elif src_format == "gpt1":
        model = load_model(src)
        tokenizer_dir = tokenizer_dir_of(src)
    else:
        raise UserError(f"unknown source format {src_format!r}")
    try:
        if staging is not None:
            tokenizer_dir = hf_tokenizer_as_gpt1(src, staging)
        if dst_format == "gpt1":
            save_model(model, dst, tokenizer_dir)
        elif dst_format == "hf":
            write_hf(model, dst, tokenizer_dir)
        elif dst_format == "openai":
            write_openai(model, dst, tokenizer_dir)
        else:
            raise UserError(f"unknown target format {dst_format!r}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return dst
