"""Discriminative fine-tuning (GPT1.md, "Fine-tuning"): task-aware input transformations, a linear head on the
extract token's final hidden state, and the auxiliary language-modelling loss.

Every task becomes K token sequences per example, batched as (B, K, T):
  classification   K = 1   `s text e`
  entailment       K = 1   `s premise $ hypothesis e`
  similarity       K = 2   `s A $ B e` and `s B $ A e`; the two extract states are added before the head
  regression       K = 2   as similarity, one output (STS-B); with a single text, K = 1
  multiple-choice  K = n   `s context question $ answer_k e` for each answer; one scalar each, softmax over k

Truncation, when a sequence exceeds the context: a single text loses its end; two texts lose tokens from the
end of the longer one until they fit; multiple choice keeps question and answer whole and cuts the end of the
context. Every cut example is counted and reported.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from .checkpoint import (
    CONFIG_FILE,
    MODEL_FILES,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    AtomicDirectory,
    append_jsonl,
    make_run_folder,
    copy_tokenizer,
    load_config,
    load_weights_into,
    read_json,
    read_safetensors,
    refuse_foreign,
    resolve_model_dir,
    write_json_atomic,
)
from .errors import UserError, check_settings
from .model import GPT, Dropout, GPTConfig

KINDS = ("classification", "entailment", "similarity", "regression", "multiple-choice")
IGNORE = -100


@dataclass
class Encoded:
    """One example as token sequences; `label` is a class index, a float (regression) or None."""

    sequences: list[list[int]]
    label: int | float | None
    truncated: bool


class InputTransform:
    """Turns (text_a, text_b, choices) into the token sequences of a task kind, within `max_len` tokens."""

    def __init__(self, tokenizer, kind: str, max_len: int):
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}; choose one of {KINDS}")
        # start and extract, a delimiter between two parts, and one token of each part
        shortest = {"classification": 3, "multiple-choice": 4}.get(kind, 5)
        if max_len < shortest:
            raise UserError(f"max_len (--max-len) {max_len} leaves no room for text: an input of a {kind} "
                            f"task takes at least {shortest} tokens")
        self.tokenizer, self.kind, self.max_len = tokenizer, kind, max_len
        self.s, self.d, self.e = tokenizer.start_id, tokenizer.delimiter_id, tokenizer.extract_id

    def __call__(self, text_a: str, text_b: str | None = None, choices: list[str] | None = None,
                 label=None) -> Encoded:
        enc = self.tokenizer.encode
        a = enc(text_a)
        if self.kind == "multiple-choice":
            question = enc(text_b) if text_b else []
            sequences, cut = [], False
            for choice in choices:
                answer = enc(choice)
                room = self.max_len - 3 - len(question) - len(answer)
                if room < 0:  # question and answer alone overflow: cut them too, answer last
                    room, keep_q = 0, max(0, self.max_len - 3 - len(answer))
                    question_k, answer_k = question[:keep_q], answer[: self.max_len - 3 - min(keep_q, len(question))]
                else:
                    question_k, answer_k = question, answer
                cut |= len(a) > room or question_k != question or answer_k != answer
                sequences.append([self.s, *a[:room], *question_k, self.d, *answer_k, self.e])
            return Encoded(sequences, label, cut)
        if text_b is None:
            kept = a[: self.max_len - 2]
            return Encoded([[self.s, *kept, self.e]], label, len(kept) < len(a))
        b = enc(text_b)
        a_kept, b_kept = _truncate_pair(a, b, self.max_len - 3)
        cut = len(a_kept) < len(a) or len(b_kept) < len(b)
        first = [self.s, *a_kept, self.d, *b_kept, self.e]
        if self.kind in ("similarity", "regression"):  # both orders: similarity has no natural order
            return Encoded([first, [self.s, *b_kept, self.d, *a_kept, self.e]], label, cut)
        return Encoded([first], label, cut)


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer sequence until both fit in `budget`."""
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


def collate(batch: list[Encoded], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pad to (B, K, T) ids and (B, K) lengths; labels (B,) or None. Padding sits after the extract token,
    where causal attention keeps it from influencing any real position."""
    k = max(len(ex.sequences) for ex in batch)
    t = max(len(seq) for ex in batch for seq in ex.sequences)
    ids = torch.full((len(batch), k, t), pad_id, dtype=torch.long)
    lengths = torch.ones((len(batch), k), dtype=torch.long)
    for i, ex in enumerate(batch):
        if len(ex.sequences) != k:
            raise ValueError(f"examples with {len(ex.sequences)} and {k} sequences cannot share a batch")
        for j, seq in enumerate(ex.sequences):
            ids[i, j, : len(seq)] = torch.tensor(seq)
            lengths[i, j] = len(seq)
    labels = None
    if all(ex.label is not None for ex in batch):
        dtype = torch.float32 if isinstance(batch[0].label, float) else torch.long
        labels = torch.tensor([ex.label for ex in batch], dtype=dtype)
    return ids, lengths, labels


def lm_targets(examples: list[Encoded]) -> int:
    """How many next-token targets the auxiliary LM loss has in `examples`: each sequence's length minus one."""
    return sum(max(len(seq) - 1, 0) for example in examples for seq in example.sequences)


def group_overhead_tokens(device: torch.device) -> int:
    """What one more forward and backward pass costs on top of its tokens, in tokens: on CPU (GPT-1 preset,
    2 threads) 0.25-0.33 s against 4.5 ms a token, from shapes 1x16 to 32x38. A GPU runs a fine-tuning group's
    few hundred tokens in about the time its kernel launches take, so there a group costs far more."""
    return 64 if device.type == "cpu" else 8192


def length_groups(batch: list[Encoded], max_size: int, overhead_tokens: int) -> list[list[Encoded]]:
    """The examples of one update split into forward/backward groups of at most `max_size` examples of similar
    length: sorted longest first, then cut where it minimises the tokens computed (each group is padded to its
    longest example) plus `overhead_tokens` per group. Fine-tuning batches are mostly padding otherwise (random
    batches of 32 fill 34% of their (B, T) positions on SST-2, 40% on RTE). The update's gradient does not depend
    on the grouping, but for dropout's random draws (`accumulate_gradients` weights each group's losses by its
    share of the batch)."""
    ordered = sorted(batch, key=lambda ex: -max(map(len, ex.sequences)))
    size = [len(ex.sequences) * max(map(len, ex.sequences)) for ex in ordered]  # tokens when padded to itself
    n = len(ordered)
    cost, cut = [0.0] + [math.inf] * n, [0] * (n + 1)  # best cost of the first i examples; where its last group starts
    for end in range(1, n + 1):
        for start in range(max(0, end - max_size), end):
            candidate = cost[start] + (end - start) * size[start] + overhead_tokens  # size[start]: the group's longest
            if candidate < cost[end]:
                cost[end], cut[end] = candidate, start
    groups, end = [], n
    while end:
        groups.append(ordered[cut[end] : end])
        end = cut[end]
    return groups[::-1]


class TaskModel(nn.Module):
    """The pre-trained decoder plus one linear layer on the extract token's state (dropout 0.1 before it).

    The layer is the paper's softmax(h W_y), without a bias: a bias would be a constant under the softmax over
    answers, and for classes the final LayerNorm's learned shift already provides one. This is also exactly
    what Hugging Face's OpenAIGPTForSequenceClassification (score, no bias) can hold."""

    def __init__(self, config: GPTConfig, kind: str, n_outputs: int, clf_pdrop: float = 0.1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}")
        self.kind = kind
        self.transformer = GPT(config)
        self.clf_dropout = Dropout(clf_pdrop)
        self.head = nn.Linear(config.n_embd, 1 if kind == "multiple-choice" else n_outputs, bias=False)
        nn.init.normal_(self.head.weight, std=config.init_std)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, lm_loss: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, K, T), lengths (B, K) -> task logits (B, n_outputs) [(B, K) for multiple choice] and, with
        lm_loss, the auxiliary next-token loss on the same inputs, padding masked (the original code predicts
        the special tokens too), else None."""
        B, K, T = ids.shape
        flat = ids.view(B * K, T)
        if lm_loss:
            targets = flat.roll(-1, dims=1)  # (B*K, T): position t predicts token t + 1 of the same input
            targets[torch.arange(T, device=ids.device) >= lengths.view(-1, 1) - 1] = IGNORE  # none after the last
            h, lm = self.transformer.hidden_states_and_lm_loss(flat, targets, ignore_index=IGNORE)  # (B*K, T, C)
        else:
            h, lm = self.transformer.hidden_states(flat), None  # (B*K, T, C)
        extract = h[torch.arange(B * K, device=ids.device), lengths.view(-1) - 1].view(B, K, -1)  # (B, K, C)
        if self.kind == "multiple-choice":
            logits = self.head(self.clf_dropout(extract)).squeeze(-1)  # (B, K)
        else:
            logits = self.head(self.clf_dropout(extract.sum(dim=1)))  # (B, n_outputs); K = 2 adds both orders
        return logits, lm

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels)
        return F.cross_entropy(logits.float(), labels)


def extend_vocabulary(state: dict[str, torch.Tensor], n_new: int, std: float, generator=None) -> dict[str, torch.Tensor]:
    """Append `n_new` rows drawn from N(0, std) to the token embedding (start, delimiter, extract)."""
    emb = state["tokens_embed.weight"]
    new_rows = torch.randn(n_new, emb.size(1), generator=generator, dtype=emb.dtype) * std
    return {**state, "tokens_embed.weight": torch.cat([emb, new_rows], dim=0)}


# ---------------------------------------------------------------- training


@dataclass
class FinetuneConfig:
    lr: float = 6.25e-5  # peak learning rate
    batch_size: int = 32  # examples per update
    micro_batch: int = 8  # at most this many examples per forward/backward, grouped by length (`length_groups`)
    epochs: int = 3  # the epoch with the best dev score is kept
    warmup_fraction: float = 0.002  # of all updates; then linear decay to 0
    weight_decay: float = 0.01  # decoupled, on tensors of 2+ dims
    grad_clip: float = 1.0  # global gradient-norm clipping; 0 turns it off
    lm_coef: float = 0.5  # lambda of the auxiliary LM loss; 0 turns it off
    clf_pdrop: float = 0.1  # dropout on the extract state before the task head
    max_len: int = 0  # tokens per sequence; 0 = the model's context
    transfer_layers: int = -1  # blocks taken from the pre-trained model; -1 = all
    from_scratch: bool = False  # random initialisation instead of pre-trained weights
    max_train_examples: int = 0  # 0 = all
    dtype: str = "fp32"  # "fp32" or "bf16" (autocast)
    seed: int = 0  # of the new weights, the batch order and the dropout masks

    def __post_init__(self):
        check_settings(
            self,
            positive=("lr", "batch_size", "micro_batch", "epochs"),
            non_negative=("weight_decay", "grad_clip", "lm_coef", "max_len", "max_train_examples", "seed"),
            below_one=("warmup_fraction", "clf_pdrop"),
            choices={"dtype": ("fp32", "bf16")},
        )
        if self.transfer_layers < -1:
            raise UserError(f"transfer_layers (--transfer-layers) must be -1 (all) or a number of blocks, "
                            f"got {self.transfer_layers}")


def finetune_lr(update: int, total: int, config: FinetuneConfig) -> float:
    """The original code's `warmup_linear`: x = update/total; x/w during warm-up, then 1 - x."""
    x = update / max(1, total)
    w = config.warmup_fraction
    return config.lr * (x / w if x < w else max(0.0, 1.0 - x))


def build_task_model(
    pretrained: Path | None, tokenizer, kind: str, n_outputs: int, config: FinetuneConfig, base_config: GPTConfig | None = None
) -> TaskModel:
    """A TaskModel whose decoder starts from `pretrained` (its embeddings and first `transfer_layers` blocks;
    all by default) or, with from_scratch, from N(0, 0.02) everywhere. The start/delimiter/extract embeddings
    are new rows drawn from N(0, 0.02)."""
    torch.manual_seed(config.seed)
    source = load_config(pretrained) if pretrained is not None else base_config
    if source is None:
        raise UserError("fine-tuning needs a pre-trained model folder, or a model config with --from-scratch")
    n_vocab = tokenizer.n_vocab_with_specials
    if source.vocab_size not in (tokenizer.vocab_size, n_vocab):
        raise UserError(
            f"{pretrained}: the model has {source.vocab_size} token embeddings but the tokenizer "
            f"{tokenizer.vocab_size} ids (+3 fine-tuning tokens); they were not trained together"
        )
    model_config = GPTConfig(**{**source.to_dict(), "vocab_size": n_vocab})
    model = TaskModel(model_config, kind, n_outputs, config.clf_pdrop)
    if config.from_scratch:
        return model
    weights_path = resolve_model_dir(pretrained) / WEIGHTS_FILE
    state = read_safetensors(weights_path)
    if source.vocab_size == tokenizer.vocab_size:
        state = extend_vocabulary(state, 3, model_config.init_std)
    n_layer = model_config.n_layer
    k = n_layer if config.transfer_layers < 0 else config.transfer_layers
    if not 0 <= k <= n_layer:
        raise UserError(f"--transfer-layers {k}: the model has {n_layer} blocks (choose 0..{n_layer})")
    transferred = {
        name: tensor for name, tensor in state.items()
        if not name.startswith("h.") or int(name.split(".")[1]) < k
    }
    fresh = model.transformer.state_dict()
    for name, tensor in transferred.items():
        if name not in fresh or fresh[name].shape != tensor.shape:
            raise UserError(f"{weights_path}: {name} does not fit the model ({list(tensor.shape)})")
    fresh.update(transferred)
    model.transformer.load_state_dict(fresh)
    return model


def encode_examples(examples, transform: InputTransform, progress: bool = False) -> tuple[list[Encoded], int]:
    """Encode every example up front (a malformed one fails before training starts); returns them and the
    number that had to be truncated."""
    encoded = [
        transform(ex.text_a, ex.text_b, ex.choices, ex.label)
        for ex in tqdm(examples, desc="encode", unit="ex", disable=not progress, leave=False)
    ]
    return encoded, sum(e.truncated for e in encoded)


@torch.no_grad()
def predict_logits(model: TaskModel, encoded: list[Encoded], batch_size: int = 32, autocast=None,
                   progress: bool = False) -> torch.Tensor:
    """The model's outputs (n_examples, n_outputs) for encoded examples, on the model's device, under `autocast`
    when given; `progress` shows a bar counting the examples' tokens (padding not counted)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    order = sorted(range(len(encoded)), key=lambda i: -max(map(len, encoded[i].sequences)))  # less padding
    bar = tqdm(total=sum(len(seq) for example in encoded for seq in example.sequences), desc="predict", unit="tok",
               unit_scale=True, disable=not progress, leave=False, dynamic_ncols=True)
    # One autocast region for all batches: autocast casts each weight to bf16 once per region, which took 30% of
    # a 512-token bf16 forward pass on CPU when done for every batch.
    with autocast or contextlib.nullcontext():
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start : start + batch_size]]
            ids, lengths, _ = collate(chunk)
            logits, _ = model(ids.to(device), lengths.to(device))
            outputs.append(logits.float().cpu())
            bar.update(sum(len(seq) for example in chunk for seq in example.sequences))
    bar.close()
    logits = torch.cat(outputs)
    result = torch.empty_like(logits)
    result[torch.tensor(order)] = logits
    return result


def logits_to_predictions(logits: torch.Tensor, kind: str) -> list:
    if kind == "regression":
        return logits.squeeze(-1).tolist()
    return logits.argmax(-1).tolist()


def accumulate_gradients(
    model: TaskModel, groups: list[list[Encoded]], lm_coef: float, device: torch.device, autocast
) -> tuple[float, float, float]:
    """Backward pass of one update's loss, the batch's task mean + lm_coef x its LM token mean, one group of
    examples at a time: each group's means are weighted by its share of the batch's examples and of its LM
    targets, so the gradient does not depend on the grouping. Returns the task loss, the LM loss, and the
    seconds spent making batches."""
    n_examples = sum(map(len, groups))
    n_lm_targets = max(sum(map(lm_targets, groups)), 1)
    task_sum = lm_sum = data_seconds = 0.0
    for group in groups:
        t_data = time.perf_counter()
        ids, lengths, labels = collate(group)
        ids, lengths, labels = ids.to(device), lengths.to(device), labels.to(device)
        data_seconds += time.perf_counter() - t_data
        with autocast:
            logits, lm_loss = model(ids, lengths, lm_loss=lm_coef != 0)
            task_loss = model.task_loss(logits, labels)
            if lm_loss is None:
                lm_loss = torch.zeros((), device=device)
        task_share, lm_share = len(group) / n_examples, lm_targets(group) / n_lm_targets
        (task_loss * task_share + lm_coef * lm_loss * lm_share).backward()
        task_sum += task_loss.item() * task_share
        lm_sum += lm_loss.item() * lm_share
    return task_sum, lm_sum, data_seconds


def finetune(
    task,
    tokenizer,
    tokenizer_dir: Path,
    pretrained: Path | None,
    out_dir: Path,
    config: FinetuneConfig,
    base_config: GPTConfig | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune on task.splits["train"], pick the best epoch on task.splits["dev"] (by the task's first
    metric), save that model to out_dir with task.json and results.json, and return the results."""
    from .metrics import compute_metrics
    from .pretrain import StopRequest, autocast_for, decoupled_adam, pick_device

    out_dir = Path(out_dir)
    if "train" not in task.splits or not task.splits["train"]:
        raise UserError(f"{task.name}: no labelled training examples")
    n_outputs = 1 if task.kind == "regression" else len(task.label_names or [])
    model = build_task_model(pretrained, tokenizer, task.kind, n_outputs, config, base_config)
    max_len = config.max_len or model.transformer.config.n_positions
    if max_len > model.transformer.config.n_positions:
        raise UserError(f"--max-len {max_len} is longer than the model's {model.transformer.config.n_positions} positions")
    transform = InputTransform(tokenizer, task.kind, max_len)

    train_examples = task.splits["train"]
    if config.max_train_examples:
        rng = random.Random(config.seed)
        train_examples = rng.sample(train_examples, min(config.max_train_examples, len(train_examples)))
    train, train_cut = encode_examples(train_examples, transform, progress)
    dev_examples = task.splits.get("dev") or []
    dev, dev_cut = encode_examples(dev_examples, transform, progress)
    truncated = {"train": train_cut, "dev": dev_cut}
    for split, n in truncated.items():
        if n:
            print(f"{task.name} {split}: {n} of {len(train if split == 'train' else dev)} examples truncated "
                  f"to {max_len} tokens", file=sys.stderr)

    dev_ = pick_device(device)
    model.to(dev_)
    optimizer = decoupled_adam(model, config.lr, config.weight_decay)
    autocast = autocast_for(dev_, config.dtype)
    micro = min(config.micro_batch, config.batch_size)
    updates_per_epoch = math.ceil(len(train) / config.batch_size)
    total = updates_per_epoch * config.epochs

    make_run_folder(out_dir)
    _clear_earlier_results(out_dir)
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.write_text("", encoding="utf-8")
    rng = random.Random(config.seed)
    update, best, history, best_state = 0, None, [], None
    train_seconds = data_seconds = 0.0  # batches are padded from pre-encoded examples in the loop
    bar = tqdm(total=total, desc=f"finetune {task.name}", unit="upd", disable=not progress, dynamic_ncols=True)
    with StopRequest(then="scoring the model as it stands and saving the best so far") as stop:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = list(range(len(train)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                batch = [train[i] for i in order[start : start + config.batch_size]]
                lr = finetune_lr(update, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                t_update = time.perf_counter()
                task_sum, lm_sum, data_time = accumulate_gradients(
                    model, length_groups(batch, micro, group_overhead_tokens(dev_)), config.lm_coef, dev_, autocast)
                data_seconds += data_time
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                train_seconds += time.perf_counter() - t_update
                update += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{task_sum:.3f}", lm=f"{lm_sum:.3f}", lr=f"{lr:.2e}")
                append_jsonl(metrics_path, {"update": update, "epoch": epoch, "task_loss": task_sum,
                                            "lm_loss": lm_sum, "lr": lr})
                if stop.requested:
                    break
            # An interrupted epoch is scored as it stands: it may be the best model so far.
            record = {"epoch": epoch, "update": update, "partial": update < epoch * updates_per_epoch}
            if dev:
                preds = logits_to_predictions(predict_logits(model, dev, autocast=autocast), task.kind)
                record["dev"] = compute_metrics(task.metrics, preds, [e.label for e in dev])
                tqdm.write(f"{task.name} epoch {epoch}{' (part)' if record['partial'] else ''}: "
                           + ", ".join(f"{k} {v:.4f}" for k, v in record["dev"].items()))
            history.append(record)
            append_jsonl(metrics_path, record)
            score = record["dev"][task.metrics[0]] if dev else epoch
            if best is None or score > best["score"]:
                best = {"epoch": epoch, "score": score, "dev": record.get("dev")}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if stop.requested:
                break
    bar.close()
    model.load_state_dict(best_state)
    info = {"name": task.name, "kind": task.kind, "label_names": task.label_names, "metrics": task.metrics,
            "n_outputs": n_outputs, "max_len": max_len,
            "columns": asdict(task.columns) if task.columns is not None else None}
    save_task_model(model, info, tokenizer_dir, out_dir / "model")
    results = {"task": task.name, "kind": task.kind, "best_epoch": best["epoch"], "dev": best["dev"],
               "history": history, "truncated": truncated, "train_examples": len(train), "dev_examples": len(dev),
               "config": asdict(config), "pretrained": None if config.from_scratch else str(pretrained),
               "train_seconds": train_seconds, "data_wait": data_seconds / train_seconds if train_seconds else 0.0,
               "interrupted": stop.requested, "stop_signal": stop.signum,
               "notes": list(getattr(task, "notes", []))}
    write_json_atomic(out_dir / RESULTS_FILE, results)
    return results


def _clear_earlier_results(out_dir: Path) -> None:
    """A fine-tuning run into a folder that holds an earlier one replaces it whole from the start, so that the
    folder never shows the earlier results beside the new run's metrics."""
    earlier = [out_dir / RESULTS_FILE, out_dir / "model"]
    if any(p.exists() for p in earlier):
        refuse_foreign(out_dir / "model", (*MODEL_FILES, TASK_FILE))
        print(f"note: replacing the earlier fine-tuning in {out_dir}", file=sys.stderr)
        for path in earlier:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


TASK_FILE = "task.json"
RESULTS_FILE = "results.json"


def save_task_model(model: TaskModel, info: dict, tokenizer_dir: Path | None, directory: Path) -> None:
    with AtomicDirectory(directory, (*MODEL_FILES, TASK_FILE)) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(model.transformer.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / WEIGHTS_FILE), metadata={"format": "gpt1-task"})
        (tmp / TASK_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp / TOKENIZER_DIR)


def task_model_dir(directory: Path) -> Path | None:
    """The folder holding a fine-tuned model: `directory` itself or the `model/` that `finetune` wrote."""
    for candidate in (Path(directory), Path(directory) / "model"):
        if (candidate / TASK_FILE).is_file():
            return candidate
    return None


def load_task_model(directory: Path, device: str = "cpu") -> tuple[TaskModel, dict]:
    found = task_model_dir(directory)
    if found is None:
        raise UserError(f"{directory}: not a fine-tuned model (no {TASK_FILE}; run `gpt1 finetune`)")
    directory = found
    info = read_json(directory / TASK_FILE)
    missing = [key for key in ("kind", "n_outputs", "label_names", "metrics", "max_len") if key not in info]
    if missing:
        raise UserError(f"{directory / TASK_FILE}: lacks {', '.join(missing)}; it was not written by `gpt1 finetune`")
    if info["kind"] not in KINDS or not isinstance(info["n_outputs"], int) or isinstance(info["n_outputs"], bool):
        raise UserError(f"{directory / TASK_FILE}: kind {info['kind']!r} / n_outputs {info['n_outputs']!r} are not "
                        f"what `gpt1 finetune` writes (one of {', '.join(KINDS)} / an integer)")
    model = TaskModel(load_config(directory), info["kind"], info["n_outputs"])
    load_weights_into(model, read_safetensors(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
    return model.to(device).eval(), info


def score_split(model: TaskModel, info: dict, tokenizer, examples, metrics: list[str], autocast=None,
                progress: bool = False) -> tuple[dict, list, int]:
    """Metrics (when every example is labelled), predictions and the truncation count of one split."""
    from .metrics import compute_metrics

    encoded, cut = encode_examples(examples, InputTransform(tokenizer, info["kind"], info["max_len"]), progress=progress)
    logits = predict_logits(model, encoded, autocast=autocast, progress=progress)
    predictions = logits_to_predictions(logits, info["kind"])
    labels = [ex.label for ex in examples]
    scores = compute_metrics(metrics, predictions, labels) if all(l is not None for l in labels) else {}
    return scores, predictions, cut


def evaluate_other_splits(task, tokenizer, out_dir: Path, device: str | None = None, dtype: str = "fp32",
                          progress: bool = True) -> dict:
    """After training: score every labelled split besides train/dev (MNLI mismatched, RACE middle/high, test
    sets with labels) and write GLUE submission files for unlabelled GLUE test sets; on `device` (default: cuda
    when available) in `dtype`, as the model was fine-tuned."""
    from .datasets import glue_submission_filename, write_glue_submission
    from .pretrain import autocast_for, pick_device

    device = pick_device(device)
    model, info = load_task_model(out_dir, device)
    results = {}
    for split, examples in task.splits.items():
        if split in ("train", "dev") or not examples:
            continue
        scores, predictions, cut = score_split(model, info, tokenizer, examples, task.metrics,
                                               autocast_for(device, dtype), progress)
        if scores:
            results[split] = {**scores, "examples": len(examples), "truncated": cut}
            tqdm.write(f"{task.name} {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        elif task.columns is None:  # a benchmark; the user's own task named like one has other labels
            try:
                glue_submission_filename(task.name, split)
            except (KeyError, UserError):
                continue  # not a GLUE task: nothing to submit
            path = write_glue_submission(task.name, [ex.uid for ex in examples], predictions, out_dir / "submission", split)
            results[split] = {"submission": str(path), "examples": len(examples), "truncated": cut}
            tqdm.write(f"{task.name} {split}: predictions written to {path}")
    return results
