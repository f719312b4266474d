"""Generative pre-training: next-token prediction on random contiguous windows of a prepared corpus.

The paper's recipe: Adam (decoupled weight decay 0.01 on every tensor of 2+ dims, as the original code does),
max lr 2.5e-4 with linear warm-up then cosine annealing to 0, global gradient-norm clipping at 1.0, gradient
accumulation up to a tokens-per-update target. Runs the same under `torchrun` (gloo on CPU, nccl on GPU),
every process drawing its own windows: DistributedDataParallel by default, each process holding the whole
model, or with `fsdp` FSDP2's `fully_shard`, each process holding a share of the weights, gradients and Adam
moments. Checkpoints hold whole tensors either way, so a run can resume under the other, or on one process.

Determinism: the windows of a step and the dropout seed of each micro-batch are pure functions of
(seed, step, micro-batch, rank). Together with the saved weights and optimizer moments, that makes a resumed
run repeat an uninterrupted one loss for loss, with no opaque RNG blobs to store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor, distribute_tensor
from tqdm import tqdm

from .checkpoint import (
    CHECKPOINTS_DIR,
    LATEST_FILE,
    append_jsonl,
    make_run_folder,
    MODEL_FILES,
    OPTIMIZER_FILE,
    STATE_FILE,
    TOKENIZER_DIR,
    AtomicDirectory,
    load_weights_into,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_json,
    read_safetensors,
    whole_tensors,
    write_json_atomic,
    write_model_files,
    write_text_atomic,
    WEIGHTS_FILE,
    load_config,
    resolve_model_dir,
    tokenizer_digest,
)
from .data import TokenData, validation_starts, window_starts, windows
from .errors import ReportedElsewhere, UserError, check_settings
from .model import GPT, GPTConfig, PRESETS

RECIPES_DIR = Path(__file__).parent / "recipes"
METRICS_FILE = "metrics.jsonl"
REPLICAS_DIR = "replicas"
RUN_CONFIG_FILE = "run.json"


@dataclass
class PretrainConfig:
    preset: str = "gpt1"  # a name in gpt1.model.PRESETS
    model: dict = field(default_factory=dict)  # GPTConfig fields overriding the preset
    context: int = 0  # tokens per window; 0 means the model's n_positions
    micro_batch: int = 8  # windows per forward/backward on one process
    tokens_per_update: int = 32768  # reached by gradient accumulation over micro-batches and processes
    max_updates: int = 0  # 0 derives it from epochs
    epochs: float = 100.0  # passes over the training tokens (used when max_updates is 0)
    lr: float = 2.5e-4  # peak learning rate, after the linear warm-up
    warmup_updates: int = 2000  # then cosine annealing to 0 at the last update
    weight_decay: float = 0.01  # decoupled, on tensors of 2+ dims
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # global gradient-norm clipping; 0 turns it off
    dtype: str = "fp32"  # "fp32" or "bf16" (autocast)
    compile: bool = False  # torch.compile the loss computation (the first updates pay the compile time)
    activation_checkpointing: bool = False  # recompute each block in the backward pass: less memory, ~1/3 more compute
    fsdp: bool = False  # under torchrun: shard weights, gradients and Adam moments across processes, not replicate
    eval_every: int = 500  # updates
    eval_windows: int = 64  # validation windows per evaluation
    checkpoint_every: int = 1000  # updates
    keep_checkpoints: int = 2  # the newest ones; 0 keeps every checkpoint (for `gpt1 zero-shot` over a run)
    seed: int = 1234  # of the initial weights, the windows and the dropout masks

    def __post_init__(self):
        check_settings(
            self,
            positive=("micro_batch", "tokens_per_update", "epochs", "lr", "eps", "eval_every", "eval_windows",
                      "checkpoint_every"),
            non_negative=("context", "max_updates", "warmup_updates", "weight_decay", "grad_clip",
                          "keep_checkpoints", "seed"),
            choices={"preset": sorted(PRESETS), "dtype": ("fp32", "bf16")},
        )
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2
                and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise UserError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    @classmethod
    def from_recipe(cls, recipe: str | Path, overrides: dict | None = None) -> PretrainConfig:
        path = Path(recipe)
        if not path.suffix:
            path = RECIPES_DIR / f"{recipe}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
            raise UserError(f"{recipe}: no such recipe file (built-in recipes: {names})")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path}: malformed TOML: {e}") from None
        cls.from_dict(values, source=path)  # a bad value of the recipe itself is named with the file
        return cls.from_dict({**values, **(overrides or {})}, source=f"{path}, with the options given")

    @classmethod
    def from_dict(cls, values: dict, source: Path | str = "config") -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
        if isinstance(values.get("betas"), list):  # TOML has arrays, not tuples
            values = {**values, "betas": tuple(values["betas"])}
        try:
            return cls(**values)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None

    def model_config(self, vocab_size: int) -> GPTConfig:
        try:
            return GPTConfig(**{**PRESETS[self.preset], "vocab_size": vocab_size, **self.model})
        except (TypeError, ValueError) as e:
            raise UserError(f"model settings ([model] of the recipe): {e}") from None


def lr_at(step: int, config: PretrainConfig, total: int) -> float:
    """Linear warm-up from 0 over warmup_updates, then cosine annealing to 0 at the last update."""
    if step < config.warmup_updates:
        return config.lr * (step + 1) / config.warmup_updates
    progress = (step - config.warmup_updates) / max(1, total - config.warmup_updates)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: GPT, config: PretrainConfig) -> torch.optim.AdamW:
    return decoupled_adam(model, config.lr, config.weight_decay, config.betas, config.eps)


def decoupled_adam(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8) -> torch.optim.AdamW:
    """Adam with decoupled weight decay on every tensor of 2+ dims (weights and embeddings, as the original
    code), none on biases and LayerNorm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel over all tensors rather than a Python loop of element-wise ops per tensor: for the
    # GPT-1 model on 2 CPU cores, 0.09 s instead of 0.7 s per update.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


class LanguageModelLoss(nn.Module):
    """Wraps the model so that DistributedDataParallel (and torch.compile) see the loss computation as its forward."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.model.lm_loss(idx, targets)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: torch.device) -> Distributed:
        if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
            return cls()
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and FSDP's device mesh use the current device, cuda:0 otherwise
        dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, action):
        """`action()` on every process, its UserError raised on all of them: a process that failed alone would
        leave the others waiting in their next collective. The lowest failing process reports the error; the
        others stop with `ReportedElsewhere`, which the CLI does not print again."""
        error, result = None, None
        try:
            result = action()
        except UserError as e:
            error = e
        if self.world_size > 1:
            messages: list[str | None] = [None] * self.world_size
            dist.all_gather_object(messages, None if error is None else str(error))
            failed = [rank for rank, message in enumerate(messages) if message is not None]
            if failed and failed[0] != self.rank:
                raise ReportedElsewhere(f"process {failed[0]}: {messages[failed[0]]}")
            if error is not None and self.rank != 0:
                raise UserError(f"process {self.rank}: {error}") from None
        if error is not None:
            raise error
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class StopRequest:
    """First Ctrl-C or SIGTERM: finish the current update, then `then` (save, say) and exit. A second Ctrl-C
    stops at once. `announce` is False on all processes but one under torchrun, which signals them all."""

    def __init__(self, then: str = "saving a checkpoint", announce: bool = True):
        self.requested = False
        self.signum: int | None = None
        self.then, self.announce = then, announce
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, self.signum or signum
        if self.announce:
            again = " (Ctrl-C again to abort)" if signum == signal.SIGINT else ""
            print(f"\n{signal.Signals(signum).name}: {self.then} after this update{again}", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def shard_model(model: GPT, device: torch.device) -> None:
    """FSDP2 in place, over all processes on `device`'s type: each block one unit, gathered whole just before
    its forward and its backward pass and freed after; the embeddings (with the tied head) and the rest the
    root unit. The parameters become DTensors holding this process's share; make optimizers afterwards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))  # FSDP's default is CUDA whenever present
    for block in model.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "lm_loss")  # training and evaluation call it instead of forward


def _gradient_sync(module: nn.Module, sync: bool):
    """Gradient accumulation across processes: gradients are reduced at the update's last micro-batch only."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else module.no_sync()
    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def pick_device(name: str | None) -> torch.device:
    """`name`, or cuda when there is one, else cpu; a GPU without an index is this process's torchrun slot."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no usable CUDA GPU (torch {torch.__version__})")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: GPU {device.index} does not exist; this machine has "
                            f"{torch.cuda.device_count()}")
    return device


def autocast_for(device: torch.device, dtype: str):
    """bf16 autocast on `device` for the setting dtype "bf16"; a context that changes nothing for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def pretrain(
    config: PretrainConfig,
    data_dir: Path,
    out_dir: Path,
    resume: bool = False,
    init_from: Path | None = None,
    device: str | None = None,
    progress: bool = True,
    max_updates_this_run: int | None = None,
) -> dict:
    """Train; returns a summary dict (updates, tokens, losses, validation perplexities, tokens/s)."""
    out_dir = Path(out_dir)
    dev = pick_device(device)
    ddp = Distributed.setup(dev)
    try:
        run = ddp.agree(lambda: _start_run(config, Path(data_dir), out_dir, resume, init_from, ddp))
        if ddp.is_main:
            _claim_run_folder(out_dir, run, config, ddp)
        return _train(config, run, out_dir, dev, ddp, progress, max_updates_this_run)
    finally:
        if ddp.world_size > 1:
            dist.destroy_process_group()


# Settings a resumed run may change: how it is run and watched, and how long it goes on (a new length
# re-stretches the cosine schedule from here). Any other change would make it a different run.
CHANGEABLE_ON_RESUME = ("max_updates", "epochs", "micro_batch", "dtype", "compile", "activation_checkpointing",
                        "fsdp", "eval_every", "eval_windows", "checkpoint_every", "keep_checkpoints")


@dataclass
class RunStart:
    """Everything a run starts from, read and checked on every process before any of them writes a file or
    joins a collective."""

    data: TokenData
    model: GPT  # on the CPU, whole; the checkpoint's or --init-from's weights loaded
    context: int
    accumulation: int  # micro-batches per update on each process
    total_updates: int
    step: int = 0
    tokens_seen: int = 0
    checkpoint: Path | None = None  # the one resumed from
    optimizer_tensors: dict | None = None  # its Adam moments, loaded once the model has its place
    metrics_kept: list[str] | None = None  # the metrics.jsonl lines up to the checkpoint


def _start_run(config, data_dir, out_dir, resume, init_from, ddp) -> RunStart:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: a file is in the way of this output folder; choose another --out")
    data = TokenData(data_dir)
    model_config = config.model_config(data.vocab_size)
    context = config.context or model_config.n_positions
    if context > model_config.n_positions:
        raise UserError(f"--context {context} is longer than the model's {model_config.n_positions} positions")
    data.check_context(context)
    per_micro = config.micro_batch * context * ddp.world_size
    if config.tokens_per_update % per_micro:
        raise UserError(
            f"tokens_per_update={config.tokens_per_update} is not a multiple of micro_batch x context x processes "
            f"= {config.micro_batch} x {context} x {ddp.world_size} = {per_micro}"
        )
    total_updates = config.max_updates or max(1, int(config.epochs * len(data.train) / config.tokens_per_update))
    torch.manual_seed(config.seed)
    run = RunStart(data, GPT(model_config), context, config.tokens_per_update // per_micro, total_updates)
    latest = out_dir / LATEST_FILE
    if resume and latest.exists():
        _check_same_run(out_dir, config, data, ddp)
        run.checkpoint = resolve_model_dir(out_dir)
        run.step, run.tokens_seen, run.optimizer_tensors = _load_checkpoint(run.checkpoint, run.model)
    elif resume:
        raise UserError(f"{out_dir}: nothing to resume (no {LATEST_FILE} file)")
    elif latest.exists():
        raise UserError(f"{out_dir}: holds a run already; pass --resume to continue it or choose another --out")
    elif init_from is not None:
        _load_initial_weights(run.model, Path(init_from), data)
    run.metrics_kept = _metrics_up_to(out_dir / METRICS_FILE, run.step)
    return run


def _load_initial_weights(model: GPT, init_from: Path, data: TokenData) -> None:
    """--init-from: a pre-trained model's weights, which must come from the tokenizer the data was encoded
    with: another vocabulary of the same size would load, its ids meaning other tokens."""
    from .finetune import task_model_dir

    if task_model_dir(init_from) is not None:
        raise UserError(f"{init_from}: a fine-tuned model (it holds task.json); --init-from takes a pre-trained "
                        "model, checkpoint or run folder")
    src = resolve_model_dir(init_from)
    theirs, ours = tokenizer_digest(src / TOKENIZER_DIR), tokenizer_digest(data.tokenizer_dir)
    if theirs and ours and theirs != ours:
        raise UserError(f"{src / TOKENIZER_DIR}: another tokenizer than the one {data.directory} was encoded with; "
                        "the model's ids would mean other tokens")
    load_weights_into(model, read_safetensors(src / WEIGHTS_FILE), src / WEIGHTS_FILE)


def _data_fingerprint(data: TokenData) -> dict:
    return {"train_tokens": len(data.train), "val_tokens": len(data.val), "vocab_size": data.vocab_size}


def _check_same_run(out_dir: Path, config: PretrainConfig, data: TokenData, ddp: Distributed) -> None:
    """A UserError when --resume comes with settings or data that differ from those the run started with."""
    path = out_dir / RUN_CONFIG_FILE
    if not path.exists():
        return
    started = read_json(path)
    before, now = started.get("pretrain", {}), asdict(config)
    changed = [f"{name} {before[name]!r} -> {now[name]!r}" for name in now
               if name in before and name not in CHANGEABLE_ON_RESUME and _json_value(now[name]) != before[name]]
    if changed:
        raise UserError(f"{path}: the run was started with other settings ({'; '.join(changed)}); resuming with "
                        f"them would not continue it. Give the run's own settings, or start a new run in another --out")
    fingerprint = started.get("data_fingerprint")
    if fingerprint is not None and fingerprint != _data_fingerprint(data):
        raise UserError(f"{path}: the run was trained on other data ({started.get('data')}: {fingerprint}); "
                        f"{data.directory} holds {_data_fingerprint(data)}")
    if ddp.is_main:
        was = (started.get("world_size", ddp.world_size), before.get("micro_batch", config.micro_batch))
        if was != (ddp.world_size, config.micro_batch):
            print(f"note: the run went on {was[0]} process(es) x micro-batches of {was[1]}, now {ddp.world_size} x "
                  f"{config.micro_batch}: it continues from the checkpoint, but its windows and dropout masks are no "
                  "longer those of an uninterrupted run", file=sys.stderr)
        if before.get("max_updates", now["max_updates"]) != now["max_updates"] or \
                before.get("epochs", now["epochs"]) != now["epochs"]:
            print("note: a new length: the cosine schedule is stretched to the new last update from here on",
                  file=sys.stderr)


def _json_value(value):
    return json.loads(json.dumps(value))  # tuples as the lists run.json holds


def _claim_run_folder(out_dir: Path, run: RunStart, config: PretrainConfig, ddp: Distributed) -> None:
    """The main process's writes before training: run.json, metrics.jsonl cut back to the checkpoint resumed
    from, and nothing left from a future that the resumed run will write again."""
    make_run_folder(out_dir)
    write_json_atomic(out_dir / RUN_CONFIG_FILE, {
        "pretrain": asdict(config), "model": run.model.config.to_dict(), "data": str(run.data.directory),
        "data_fingerprint": _data_fingerprint(run.data), "world_size": ddp.world_size,
    })
    write_text_atomic(out_dir / METRICS_FILE, "".join(line + "\n" for line in run.metrics_kept))
    shutil.rmtree(out_dir / REPLICAS_DIR, ignore_errors=True)  # this run writes them again, for its processes
    if run.checkpoint is not None:
        for path in sorted((out_dir / CHECKPOINTS_DIR).glob("step-*")):
            if path.name > run.checkpoint.name:  # written after `latest` last moved, by a run that was then killed
                print(f"note: removing {path}, newer than the checkpoint resumed from", file=sys.stderr)
                shutil.rmtree(path)
    if config.fsdp and ddp.world_size == 1:
        print("note: --fsdp shards across processes started by torchrun; one process holds the whole model",
              file=sys.stderr)


def _train(config, run: RunStart, out_dir, dev, ddp, progress, max_updates_this_run) -> dict:
    data, model, context, accumulation, total_updates = run.data, run.model, run.context, run.accumulation, run.total_updates
    step, tokens_seen = run.step, run.tokens_seen
    if run.checkpoint is not None and ddp.is_main:
        print(f"resumed from {run.checkpoint} at update {step}", file=sys.stderr)
    model.to(dev)
    if config.fsdp and ddp.world_size > 1:
        shard_model(model, dev)
    optimizer = make_optimizer(model, config)
    if run.optimizer_tensors is not None:
        _load_optimizer(run.optimizer_tensors, optimizer)

    model.activation_checkpointing = config.activation_checkpointing
    loss_module: nn.Module = LanguageModelLoss(model)
    if ddp.world_size > 1 and not config.fsdp:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[dev.index] if dev.type == "cuda" else None)
    synced = loss_module if isinstance(loss_module, nn.parallel.DistributedDataParallel) else model
    if config.compile:
        loss_module = torch.compile(loss_module)
    autocast = autocast_for(dev, config.dtype)

    val_starts = validation_starts(len(data.val), context, config.eval_windows)
    window_digest = hashlib.sha256()
    summary = {"start_update": step, "val": [], "is_main": ddp.is_main, "stop_signal": None}
    if step == 0:
        summary["val"].append(_evaluate_and_log(model, data, val_starts, context, autocast, ddp, out_dir, step, tokens_seen))
    last_update = total_updates if max_updates_this_run is None else min(total_updates, step + max_updates_this_run)
    bar = tqdm(total=last_update, initial=step, desc="pretrain", unit="upd", disable=not (progress and ddp.is_main), dynamic_ncols=True)
    losses = []
    started = time.perf_counter()
    tokens_this_run = 0
    # Batches are cut from the memory map inside the loop, so the time that takes is all the waiting for data.
    step_seconds = data_seconds = 0.0
    with StopRequest(announce=ddp.is_main) as stop:

        while step < last_update:
            t0 = time.perf_counter()
            lr = lr_at(step, config, total_updates)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = data_s = 0.0
            for micro in range(accumulation):
                t_data = time.perf_counter()
                starts = window_starts(len(data.train), context, config.micro_batch, (config.seed, step, micro, ddp.rank))
                window_digest.update(starts.tobytes())
                x, y = windows(data.train, starts, context)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                data_s += time.perf_counter() - t_data
                torch.manual_seed(_seed(config.seed, step, micro, ddp.rank))  # dropout masks of this micro-batch
                with _gradient_sync(synced, sync=micro == accumulation - 1), autocast:
                    loss = loss_module(x, y)
                (loss / accumulation).backward()
                loss_sum += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += config.tokens_per_update
            tokens_this_run += config.tokens_per_update
            # One collective for the mean loss and for the stop: a signal that reached some processes only
            # stops them all at the same update, so that none waits for the others in a collective.
            loss_total, stop_votes = ddp.all_sum([loss_sum / accumulation, float(stop.requested)])
            train_loss = loss_total / ddp.world_size
            losses.append(train_loss)
            seconds = time.perf_counter() - t0
            step_seconds += seconds
            data_seconds += data_s
            record = {"update": step, "tokens": tokens_seen, "loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_s": config.tokens_per_update / seconds, "data_wait": data_s / seconds}
            if ddp.is_main:
                append_jsonl(out_dir / METRICS_FILE, record)
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
            stopping = stop_votes > 0 or step == last_update
            if step % config.eval_every == 0 or step == last_update:
                summary["val"].append(_evaluate_and_log(model, data, val_starts, context, autocast, ddp, out_dir, step, tokens_seen))
            if step % config.checkpoint_every == 0 or stopping:
                save_checkpoint(out_dir, model, optimizer, step, tokens_seen, data, ddp, config)
            if stop_votes > 0:
                summary["stop_signal"] = stop.signum or signal.SIGTERM  # or the signal reached another process
                break
    bar.close()
    elapsed = time.perf_counter() - started
    _record_replica(out_dir, model, window_digest.hexdigest(), ddp)
    summary.update(
        updates=step, tokens=tokens_seen, train_losses=losses, seconds=elapsed,
        tokens_per_s=tokens_this_run / elapsed if elapsed else 0.0, interrupted=step < last_update,
        data_wait=data_seconds / step_seconds if step_seconds else 0.0,
        checkpoint=str(resolve_model_dir(out_dir)),
    )
    return summary


@torch.no_grad()
def evaluate(model: GPT, data: TokenData, starts: np.ndarray, context: int, autocast, ddp: Distributed, batch: int = 8) -> float:
    """Mean next-token loss over the validation windows, shared out among the processes."""
    was_training = model.training
    model.eval()
    mine = starts[ddp.rank :: ddp.world_size]
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    # The same number of forward passes on every process, a process short of windows repeating one without
    # counting it: under FSDP each forward is a collective that all processes must join.
    forwards = math.ceil(math.ceil(len(starts) / ddp.world_size) / batch)
    for i in range(forwards):
        chunk = mine[i * batch : (i + 1) * batch]
        x, y = windows(data.val, chunk if len(chunk) else starts[:1], context)
        with autocast:
            loss = model.lm_loss(x.to(dev), y.to(dev))
        if len(chunk):
            total += loss.item() * y.numel()
            count += y.numel()
    model.train(was_training)
    total, count = ddp.all_sum([total, count])
    return total / count


def _evaluate_and_log(model, data, starts, context, autocast, ddp, out_dir, step, tokens) -> dict:
    val_loss = evaluate(model, data, starts, context, autocast, ddp)
    record = {"update": step, "tokens": tokens, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}
    if ddp.is_main:
        append_jsonl(out_dir / METRICS_FILE, record)
        tqdm.write(f"update {step}: validation loss {val_loss:.4f}, perplexity {record['val_ppl']:.2f}")
    return record


def save_checkpoint(out_dir: Path, model: GPT, optimizer, step: int, tokens: int, data: TokenData, ddp: Distributed,
                    config: PretrainConfig) -> None:
    weights = whole_tensors(model.state_dict(), keep=ddp.is_main)  # every process: FSDP gathers its shards
    moments, groups = optimizer_to_tensors(optimizer, keep=ddp.is_main)
    if ddp.is_main:
        name = f"step-{step:08d}"
        checkpoints = out_dir / CHECKPOINTS_DIR
        with AtomicDirectory(checkpoints / name, (*MODEL_FILES, OPTIMIZER_FILE, STATE_FILE)) as tmp:
            write_model_files(tmp, model.config, weights, data.tokenizer_dir)
            save_file(moments, str(tmp / OPTIMIZER_FILE))
            write_json_atomic(tmp / STATE_FILE, {
                "update": step, "tokens": tokens, "param_groups": groups, "seed": config.seed,
                "rng": "dropout and window seeds derive from (seed, update, micro-batch, rank); nothing else to store",
            })
        write_text_atomic(out_dir / LATEST_FILE, name + "\n")
        # Among this one and those before it: a later-named one (from a run resumed further back) is not newer.
        kept = sorted(p for p in checkpoints.glob("step-*") if p.is_dir() and p.name <= name)
        for path in kept[: -config.keep_checkpoints] if config.keep_checkpoints else []:
            shutil.rmtree(path, ignore_errors=True)
    ddp.barrier()


def _load_checkpoint(ckpt: Path, model: GPT) -> tuple[int, int, dict]:
    """The checkpoint's weights into the (unsharded) model; returns its update, token count and optimizer
    state (loaded into the optimizer once the model has its place)."""
    saved = load_config(ckpt)
    if saved != model.config:
        raise UserError(f"{ckpt / 'config.json'}: the checkpoint's model {saved} differs from the recipe's {model.config}")
    load_weights_into(model, read_safetensors(ckpt / WEIGHTS_FILE), ckpt / WEIGHTS_FILE)
    state = read_json(ckpt / STATE_FILE)
    optimizer = optimizer_from_tensors(read_safetensors(ckpt / OPTIMIZER_FILE), state["param_groups"])
    return int(state["update"]), int(state["tokens"]), optimizer


def _load_optimizer(state: dict, optimizer) -> None:
    """A checkpoint's Adam moments into an optimizer made on the model as it trains (moved, maybe sharded):
    `load_state_dict` moves each tensor to its parameter's device; under FSDP each is first cut into the same
    shards as its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, slots in state["state"].items():
        param = params[index]
        if isinstance(param, DTensor):
            for slot, value in slots.items():
                if slot != "step":
                    slots[slot] = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    optimizer.load_state_dict(state)


def _metrics_up_to(path: Path, step: int) -> list[str]:
    """The lines of metrics.jsonl that a run resumed at `step` keeps: not those written after the checkpoint,
    which the resumed run writes again, nor a last line that a kill cut short (it has no newline yet)."""
    if not path.exists() or step == 0:  # from update 0 everything is written again
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]  # the piece after the last newline
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            update = json.loads(line)["update"] if line else None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a metrics record; the file was changed by hand") from None
        if update is not None and update <= step:
            kept.append(line)
    return kept


def _record_replica(out_dir: Path, model: GPT, windows_sha: str, ddp: Distributed) -> None:
    """Each process writes a digest of its final weights (whole: under FSDP the shards gathered), of the
    windows it drew, and how many parameter values it holds: replicas must agree on the first and differ on
    the second; under FSDP each holds a share of the model."""
    if ddp.world_size == 1:
        return
    h = hashlib.sha256()
    for name, p in sorted(whole_tensors(model.state_dict()).items()):
        h.update(name.encode())
        h.update(p.float().numpy().tobytes())
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
    replica_dir = out_dir / REPLICAS_DIR
    replica_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(replica_dir / f"rank{ddp.rank}.json", {
        "rank": ddp.rank, "weights_sha256": h.hexdigest(), "windows_sha256": windows_sha,
        "parameters_held": held,
    })
