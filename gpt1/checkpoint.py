"""Model directories and training checkpoints: safetensors for tensors, JSON for everything else.

A model directory holds `config.json` (GPTConfig) and `model.safetensors`, plus the tokenizer files when known.
A training run directory holds `checkpoints/step-XXXXXXXX/` model directories with `optimizer.safetensors` and
`state.json` besides, and a `latest` file naming the newest one. Every directory is written under a temporary
name and renamed into place, and `latest` is replaced atomically, so a kill at any moment leaves the previous
checkpoint whole. Nothing is ever unpickled.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from .errors import UserError
from .model import GPT, GPTConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TOKENIZER_DIR = "tokenizer"
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR)
TOKENIZER_FILES = ("encoder_bpe_*.json", "vocab_*.bpe", "tokenizer.json")  # the release's two, and settings


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace the file at `path` with `data` so that a kill leaves either the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: no half-written file left beside the whole one
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def make_run_folder(path: Path) -> Path:
    """Create the folder a training command writes into (it may exist); a file in the way is a UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path}: a file is in the way of this output folder; choose another --out") from None
    return path


def check_output_file(path: Path, inputs=()) -> Path:
    """An output file's path, its folder created: not a folder, not under a file, not one of the `inputs`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder; --out takes a file name")
    if any(path.resolve() == Path(source).resolve() for source in inputs if source is not None):
        raise UserError(f"{path}: is the input file; writing there would overwrite it")
    make_run_folder(path.parent)
    return path


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    """One JSON object per line: a metrics log that a crash can cut only after a complete line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None


def refuse_foreign(final: Path, owned: Sequence[str]) -> None:
    """A UserError unless `final` is absent or a folder holding only entries named like `owned` (glob
    patterns of what the writer makes): replacing a folder must never delete a user's own files."""
    final = Path(final)
    if not final.exists():
        return
    if not final.is_dir():
        raise UserError(f"{final}: exists and is not a folder; choose another output path")
    foreign = sorted(entry.name for entry in final.iterdir() if not any(fnmatch(entry.name, p) for p in owned))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"{final}: already holds {shown}, which this command does not write; it would replace the "
                        f"whole folder, so choose another output folder or empty this one")


class AtomicDirectory:
    """Build a directory under a temporary name; on success, rename it to `final`, replacing an old one that
    holds only what this writer makes (`owned`, glob patterns; anything else is refused at once)."""

    def __init__(self, final: Path, owned: Sequence[str]):
        self.final = Path(final)
        refuse_foreign(self.final, owned)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # What a kill (SIGKILL, power) left from an earlier write of the same folder: one writer per folder.
        for stale in self.final.parent.glob(f".{glob.escape(self.final.name)}.*-*"):
            if stale.is_dir() and re.fullmatch(r"(tmp-\w+|old-\d+)", stale.name[len(self.final.name) + 2:]):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.tmp-"))
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the finished folder private
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        for f in self.tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, 0o666 & ~_umask())  # files some writers made private (mkstemp)
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
        return False


def whole_tensors(tensors: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of `tensors`, with the shards of FSDP's DTensors gathered first. Gathering is a
    collective, so under FSDP every process calls this; those with `keep=False` drop each whole tensor as soon
    as it is made, so that only the process that writes ever holds the whole state."""
    whole = {}
    for name, value in tensors.items():
        value = value.detach()
        if isinstance(value, DTensor):
            value = value.full_tensor()
        if keep:
            whole[name] = value.contiguous().cpu()
    return whole


def state_dict_for_saving(model: GPT) -> dict[str, torch.Tensor]:
    return whole_tensors(model.state_dict())


def write_model_files(directory: Path, config: GPTConfig, weights: dict[str, torch.Tensor],
                      tokenizer_dir: Path | None = None) -> None:
    """Write config.json, model.safetensors and the tokenizer into an (already private) directory."""
    directory = Path(directory)
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2)
        f.write("\n")
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "gpt1"})
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, directory / TOKENIZER_DIR)


def save_model(model: GPT, directory: Path, tokenizer_dir: Path | None = None) -> Path:
    with AtomicDirectory(directory, MODEL_FILES) as tmp:
        write_model_files(tmp, model.config, state_dict_for_saving(model), tokenizer_dir)
    return Path(directory)


def copy_tokenizer(src: Path, dst: Path) -> None:
    src = Path(src)
    dst.mkdir(parents=True, exist_ok=True)
    for pattern in TOKENIZER_FILES:
        for f in src.glob(pattern):
            shutil.copyfile(f, dst / f.name)


def tokenizer_digest(directory: Path) -> dict[str, str]:
    """SHA-256 of each tokenizer file in `directory`: equal digests encode text to the same ids."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for pattern in TOKENIZER_FILES for f in sorted(Path(directory).glob(pattern))}


def resolve_model_dir(path: Path) -> Path:
    """Accept a model directory, a checkpoint directory or a training run directory (its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model directory")
    if not path.is_dir():
        raise UserError(f"{path}: a file, not a model folder; give the folder that holds {CONFIG_FILE} and "
                        f"{WEIGHTS_FILE} (or a run folder)")
    if (path / LATEST_FILE).exists():
        name = (path / LATEST_FILE).read_text(encoding="utf-8").strip()
        path = path / CHECKPOINTS_DIR / name
    return path


def tokenizer_dir_of(model_dir: Path) -> Path | None:
    d = resolve_model_dir(model_dir) / TOKENIZER_DIR
    return d if d.is_dir() else None


def required_tokenizer_dir(model_dir: Path) -> Path:
    """The tokenizer/ folder of a model directory; a UserError naming the directory when it has none."""
    d = tokenizer_dir_of(model_dir)
    if d is None:
        raise UserError(f"{model_dir}: holds no tokenizer/ folder")
    return d


def load_config(model_dir: Path) -> GPTConfig:
    path = resolve_model_dir(model_dir) / CONFIG_FILE
    try:
        return GPTConfig.from_dict(read_json(path))
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: not a gpt1 model config: {e}") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy weights into `model`, with a one-line error naming the file on any missing key or shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        if not tensor.is_floating_point():  # load_state_dict would cast integers to the weights' floats silently
            raise UserError(f"{path}: {name} holds {str(tensor.dtype).removeprefix('torch.')} values, not "
                            "floating-point weights")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{path}: {name} has shape {list(tensor.shape)} but the model expects {list(expected[name].shape)}"
            )
    model.load_state_dict(state)


def load_model(directory, device: str | torch.device = "cpu") -> GPT:
    """Load a gpt1 model (model, checkpoint or run directory) in eval mode."""
    model_dir = resolve_model_dir(Path(directory))
    model = GPT(load_config(model_dir))
    weights = model_dir / WEIGHTS_FILE
    load_weights_into(model, read_safetensors(weights), weights)
    return model.to(device).eval()


def optimizer_to_tensors(optimizer: torch.optim.Optimizer,
                         keep: bool = True) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict into flat tensors (safetensors) and JSON-able param groups; FSDP's
    shards gathered as in `whole_tensors`."""
    sd = optimizer.state_dict()
    tensors = {f"{index}.{slot}": torch.as_tensor(value)
               for index, slots in sd["state"].items() for slot, value in slots.items()}
    return whole_tensors(tensors, keep), sd["param_groups"]


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    return {"state": state, "param_groups": param_groups}
