"""Raw text -> token ids on disk -> random contiguous training windows.

`prepare` reads plain or gzipped text files (or folders of them), optionally strips Project Gutenberg headers
and footers, encodes every paragraph with the GPT-1 encoder on all cores, and writes the ids as flat
memory-mappable arrays `train.bin` / `val.bin` with `meta.json`. Paragraphs and documents are separated by the
newline token, which is what the encoder itself emits for a line break. Whole documents are held out for
validation when there are at least 10 of them; otherwise the tail of the token stream is.

Bad files (empty, binary, not UTF-8) stop the run with the file and byte named, or are skipped and listed
when `on_bad_file="skip"`.
"""

from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checkpoint import AtomicDirectory, TOKENIZER_DIR, copy_tokenizer, read_json, write_json_atomic
from .errors import UserError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".text", ".md", ".gz")
META_FILE = "meta.json"
TRAIN_FILE, VAL_FILE = "train.bin", "val.bin"
GROUP_BYTES = 32 << 20  # encode this much text per batch, so the id lists of a huge corpus never coexist

_GUTENBERG_START = re.compile(r"^\s*\*\*\*\s*START OF.*$|^\*END\*?\s*THE SMALL PRINT.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(
    r"^\s*\*\*\*\s*END OF.*$|^\s*End of (the )?Project Gutenberg.*$", re.MULTILINE | re.IGNORECASE
)


def find_text_files(inputs: list[Path]) -> list[Path]:
    """The files named, and in folders those with a text suffix; the others in folders are listed on stderr, so
    that a corpus of README or .rst files is not dropped without a word."""
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            entries = sorted(p for p in path.rglob("*") if not p.name.startswith("."))
            found = [p for p in entries if p.is_file()]
            files += [p for p in found if p.suffix.lower() in TEXT_SUFFIXES]
            other = [p.name for p in found if p.suffix.lower() not in TEXT_SUFFIXES]
            # rglob follows no link to a folder (it could loop) and a link to nothing is no file: name them too
            links = [p.name for p in entries if p.is_symlink() and not p.is_file()]
            reasons = {f"not named {'/'.join(TEXT_SUFFIXES)}": other, "links to a folder or to nothing": links}
            for why, names in reasons.items():
                if names:
                    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                    print(f"note: {path}: not read, {why}: {shown} (name a file or folder to read it whatever its "
                          "name)", file=sys.stderr)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    if not files:
        raise UserError(f"{', '.join(map(str, inputs))}: no text files found (looked for {', '.join(TEXT_SUFFIXES)})")
    return files


def read_text(path: Path) -> str:
    """UTF-8 text of a plain or .gz file; one-line UserError for empty, binary or non-UTF-8 content."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix.lower() == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if not raw.strip():
        raise UserError(f"{path}: empty file")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path}: binary content (NUL byte at offset {nul}), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line})") from None


def strip_gutenberg(text: str, path: Path) -> str:
    """The text between the '*** START OF' and '*** END OF' markers (older files: '*END*' / 'End of ...')."""
    start = _GUTENBERG_START.search(text)
    if start is None:
        raise UserError(f"{path}: no Project Gutenberg '*** START OF' marker found (drop --gutenberg for plain text)")
    end = _GUTENBERG_END.search(text, start.end())
    return text[start.end() : end.start() if end else len(text)]


def paragraphs(text: str, unwrap: bool) -> list[str]:
    """Blank-line separated paragraphs; with unwrap, hard line breaks inside a paragraph become spaces."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        block = block.strip()
        if block:
            out.append(" ".join(block.split("\n")) if unwrap else block)
    return out


def read_documents(
    inputs: list[Path], gutenberg: bool = False, unwrap: bool = False, on_bad_file: str = "error"
) -> tuple[list[list[str]], list[Path], list[str]]:
    """The paragraphs of each text file under `inputs`, the files found, and those skipped (with
    on_bad_file="skip") as one-line reasons. Project Gutenberg files lose their licence header and footer and are unwrapped."""
    files = find_text_files(inputs)
    documents: list[list[str]] = []
    skipped: list[str] = []
    for path in files:
        try:
            text = read_text(path)
            if gutenberg:
                text = strip_gutenberg(text, path)
        except UserError as e:
            if on_bad_file != "skip":
                raise
            skipped.append(str(e))
            print(f"skipping {e}", file=sys.stderr)
            continue
        documents.append(paragraphs(text, unwrap or gutenberg))
    documents = [d for d in documents if d]
    if not documents:
        raise UserError(f"{inputs[0]}: no text left after reading {len(files)} file(s)")
    return documents, files, skipped


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class PrepareStats:
    documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    skipped: list[str]

    def summary(self) -> str:
        s = (
            f"{self.documents} documents ({self.val_documents} held out): "
            f"{self.train_tokens:,} training tokens, {self.val_tokens:,} validation tokens"
        )
        return s + (f"; skipped {len(self.skipped)} bad file(s)" if self.skipped else "")


def prepare(
    inputs: list[Path],
    out_dir: Path,
    tokenizer_dir: Path,
    val_fraction: float = 0.01,
    gutenberg: bool = False,
    unwrap: bool = False,
    on_bad_file: str = "error",
    workers: int | None = None,
    progress: bool = True,
) -> PrepareStats:
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    from .tokenizer import load_tokenizer  # spaCy takes a second to import; only prepare needs it

    output = AtomicDirectory(out_dir, (TRAIN_FILE, VAL_FILE, META_FILE, TOKENIZER_DIR))  # refuses foreign files now

    tokenizer = load_tokenizer(tokenizer_dir)
    documents, files, skipped = read_documents(inputs, gutenberg, unwrap, on_bad_file)

    n_docs = len(documents)
    if n_docs >= 10:
        n_val = max(1, round(n_docs * val_fraction))
        val_docs = set(np.linspace(0, n_docs - 1, n_val + 2)[1:-1].round().astype(int).tolist())
    else:
        val_docs = set()
    dtype = token_dtype(tokenizer.n_vocab_with_specials)

    with output as tmp:
        counts = {"train": 0, "val": 0}
        with open(tmp / TRAIN_FILE, "wb") as train_f, open(tmp / VAL_FILE, "wb") as val_f:
            for group_start, group in _groups(documents):
                ids = _encode_group(tokenizer, group, workers, progress, desc=f"encode {group_start + len(group)}/{n_docs} docs")
                for offset, doc_ids in enumerate(ids):
                    split = "val" if group_start + offset in val_docs else "train"
                    doc_ids.tofile(val_f if split == "val" else train_f)
                    counts[split] += doc_ids.size
        if not val_docs:  # few documents: hold out the tail of the stream instead
            counts = _split_tail(tmp, dtype, counts["train"], val_fraction)
        if counts["train"] == 0 or counts["val"] == 0:
            raise UserError(f"{inputs[0]}: too little text to split into training and validation data")
        copy_tokenizer(tokenizer_dir, tmp / TOKENIZER_DIR)
        stats = PrepareStats(n_docs, len(val_docs), counts["train"], counts["val"], skipped)
        write_json_atomic(
            tmp / META_FILE,
            {
                "dtype": dtype.name,
                "vocab_size": tokenizer.vocab_size,
                "documents": n_docs,
                "val_documents": len(val_docs),
                "train_tokens": counts["train"],
                "val_tokens": counts["val"],
                "separator_id": tokenizer.newline_id,
                "sources": [str(p) for p in files],
                "skipped": skipped,
                "gutenberg": gutenberg,
                "unwrap": unwrap or gutenberg,
            },
        )
    return stats


def _groups(documents: list[list[str]]):
    """Consecutive runs of documents of about GROUP_BYTES of text each."""
    start, size = 0, 0
    for i, doc in enumerate(documents):
        size += sum(len(p) for p in doc)
        if size >= GROUP_BYTES:
            yield start, documents[start : i + 1]
            start, size = i + 1, 0
    if start < len(documents):
        yield start, documents[start:]


def _encode_group(tokenizer: Tokenizer, docs: list[list[str]], workers, progress, desc) -> list[np.ndarray]:
    flat = [p for doc in docs for p in doc]
    encoded = tokenizer.encode_batch(flat, workers=workers, progress=progress, desc=desc)
    dtype = token_dtype(tokenizer.n_vocab_with_specials)
    out, i = [], 0
    for doc in docs:
        pieces = []
        for ids in encoded[i : i + len(doc)]:
            pieces.extend(ids)
            pieces.append(tokenizer.newline_id)  # paragraph and document separator
        i += len(doc)
        out.append(np.asarray(pieces, dtype=dtype))
    return out


def _split_tail(directory: Path, dtype: np.dtype, n_tokens: int, val_fraction: float) -> dict:
    ids = np.fromfile(directory / TRAIN_FILE, dtype=dtype)
    n_val = int(n_tokens * val_fraction)
    ids[n_tokens - n_val :].tofile(directory / VAL_FILE)
    ids[: n_tokens - n_val].tofile(directory / TRAIN_FILE)
    return {"train": n_tokens - n_val, "val": n_val}


class TokenData:
    """A prepared data directory: memory-mapped train/val ids and the tokenizer they were made with."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{self.directory}: not a prepared data directory (no {META_FILE}; run `gpt1 prepare`)")
        self.meta = read_json(meta_path)
        try:
            dtype = np.dtype(self.meta["dtype"])
            self.vocab_size = int(self.meta["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{meta_path}: not the metadata `gpt1 prepare` writes ({type(e).__name__}: {e})") from None
        if dtype not in (np.uint16, np.uint32) or self.vocab_size < 1:
            raise UserError(f"{meta_path}: dtype {dtype} / vocab_size {self.vocab_size} are not what `gpt1 prepare` "
                            "writes (uint16 or uint32, a positive size)")
        splits = []
        for name in (TRAIN_FILE, VAL_FILE):
            path = self.directory / name
            size = path.stat().st_size if path.is_file() else None
            if not size or size % dtype.itemsize:
                state = "missing" if size is None else "empty" if size == 0 else "cut short (not whole ids)"
                raise UserError(f"{path}: {state}; run `gpt1 prepare` again")
            ids = np.memmap(path, dtype=dtype, mode="r")
            top = int(ids.max())  # one pass (about a second per GB): an id beyond the vocabulary fails far later
            if top >= self.vocab_size:
                raise UserError(f"{path}: holds token id {top}, beyond the {self.vocab_size} ids of {meta_path}")
            splits.append(ids)
        self.train, self.val = splits
        self.tokenizer_dir = self.directory / TOKENIZER_DIR

    def check_context(self, context: int) -> None:
        for name, split in (("train", self.train), ("val", self.val)):
            if len(split) < context + 1:
                raise UserError(
                    f"{self.directory / (name + '.bin')}: {len(split)} tokens, fewer than one window of "
                    f"{context + 1}; use a shorter --context or more text"
                )


def unigram_perplexity(data: TokenData) -> float:
    """Perplexity on the validation ids of a model that ignores context, each token's frequency in the training
    ids (add-one smoothed): a language model below it uses context, one at it has learned only frequencies."""
    counts = np.bincount(np.asarray(data.train), minlength=data.vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[np.asarray(data.val)].mean()))


def window_starts(n_tokens: int, context: int, count: int, seed: tuple[int, ...]) -> np.ndarray:
    """`count` random window starts, a pure function of the seed tuple (run seed, step, micro-batch, rank),
    so that a resumed or re-run job sees exactly the same windows."""
    rng = np.random.default_rng(list(seed))
    return rng.integers(0, n_tokens - context, size=count)


def windows(ids: np.ndarray, starts: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, both (B, context)."""
    batch = np.stack([ids[s : s + context + 1] for s in starts]).astype(np.int64)  # (B, T+1)
    batch = torch.from_numpy(batch)
    return batch[:, :-1], batch[:, 1:]


def validation_starts(n_tokens: int, context: int, max_windows: int) -> np.ndarray:
    """Evenly spaced, non-overlapping windows covering the validation split (or `max_windows` of them)."""
    n = max(1, min(max_windows, (n_tokens - 1) // context))
    return np.linspace(0, n_tokens - context - 1, n).round().astype(np.int64)
