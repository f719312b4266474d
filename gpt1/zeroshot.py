"""The paper's zero-shot heuristics (Section 5, Figure 2 right): what a pre-trained language model does on a
task with no fine-tuning at all, tracked over the updates of pre-training.

Each heuristic scores text with the LM's average log-probability per token (GPT1.md, "Analyses in the paper"):

- cola: a sentence's average token log-probability, thresholded: acceptable above the threshold. The paper does
  not say how the threshold was set; here it is the one that maximises MCC on a seeded sample of the training
  set, and the dev set is scored with it.
- sst2: the sentence followed by the word "very"; positive if the LM gives the word "positive" a higher
  probability than "negative" as the next word.
- race: the answer with the highest average token log-probability given the article and the question.
- winograd (DPRD-style, from the user's file; see `load_winograd`): the pronoun, written "_", is replaced by each
  candidate and the candidate under which the rest of the sentence has the highest average token
  log-probability wins.

GPT-1 was pre-trained without any start token, so the first token of a text is never scored (it is only
context). A text longer than the model's context loses tokens from the left of its context, never of the
scored part (counted in `truncated`).

`normalised` maps chance to 0 and a reference to 1, as the paper's plot does. The paper's reference was the
state of the art at the time with a single model; here it is GPT-1's own fine-tuned result from the paper
(GPT1.md: CoLA 45.4 MCC, SST-2 91.3, RACE 59.0), and for winograd, which has none, all correct.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import (
    STATE_FILE, load_model, make_run_folder, read_json, required_tokenizer_dir, write_text_atomic,
)
from .datasets import Example, UserColumns, load_benchmark, load_user_data
from .errors import UserError
from .metrics import accuracy, mcc
from .model import GPT, linear
from .plots import lines_and_bars_figure, save_figure
from .results import model_folder, settings_difference, weights_stamp, write_csv_atomic
from .tokenizer import load_tokenizer


@dataclass(frozen=True)
class Heuristic:
    folder: str  # the benchmark's folder under the data root ("" for a file the user names)
    split: str  # the split that is scored
    metric: str
    chance: float
    reference: float  # the score normalised to 1


HEURISTICS = {
    "cola": Heuristic("glue/CoLA", "dev", "mcc", 0.0, 0.454),
    "sst2": Heuristic("glue/SST-2", "dev", "accuracy", 0.5, 0.913),
    "race": Heuristic("race", "dev", "accuracy", 0.25, 0.590),
    "winograd": Heuristic("", "all", "accuracy", 0.5, 1.0),
}
COLA_THRESHOLD_EXAMPLES = 2000  # training sentences that set CoLA's threshold


# ---------------------------------------------------------------------------------------------------
# Scoring text with the language model.


@torch.no_grad()
def continuation_logprobs(model: GPT, pairs: Sequence[tuple[list[int], list[int]]],
                          batch_tokens: int = 16384) -> tuple[np.ndarray, np.ndarray, int]:
    """For each (context, continuation) of token ids: the summed log-probability of the continuation's tokens
    given everything before them, and how many tokens that sums. An empty context makes the continuation's
    first token context. A pair longer than the model's context loses context tokens from the left (and, if
    the continuation alone is too long, the continuation's last tokens). Returns (sums, counts, number of
    pairs that were cut)."""
    n_positions = model.config.n_positions
    sequences, starts, truncated = [], [], 0
    for context, continuation in pairs:
        if not context:
            context, continuation = continuation[:1], continuation[1:]
        truncated += len(context) + len(continuation) > n_positions
        continuation = continuation[: n_positions - 1]
        context = context[max(0, len(context) + len(continuation) - n_positions) :]
        sequences.append(context + continuation)
        starts.append(len(context))
    sums = np.zeros(len(sequences))
    counts = np.array([len(s) - start for s, start in zip(sequences, starts)])
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batch: list[int] = []

    def score(batch: list[int]) -> None:
        width = len(sequences[batch[-1]])  # the longest: `order` is by length
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
        hidden = model.hidden_states(ids.to(device))  # (B, T, C); padding on the right is never attended to
        rows = torch.cat([torch.full((counts[i],), row) for row, i in enumerate(batch)])
        cols = torch.cat([torch.arange(starts[i] - 1, len(sequences[i]) - 1) for i in batch])  # predicting positions
        targets = ids[rows, cols + 1].to(device)
        logits = linear(hidden[rows.to(device), cols.to(device)], model.tokens_embed.weight)  # (n, V)
        token_logprobs = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)  # (n,)
        per_text = torch.zeros(len(batch), dtype=torch.float64, device=device)
        per_text.index_add_(0, rows.to(device), token_logprobs.double())
        sums[batch] = per_text.cpu().numpy()

    for i in order:
        if batch and (len(batch) + 1) * len(sequences[i]) > batch_tokens:
            score(batch)
            batch = []
        if counts[i] > 0:
            batch.append(i)
    if batch:
        score(batch)
    return sums, counts, truncated


def average_logprobs(model: GPT, pairs: Sequence[tuple[list[int], list[int]]]) -> tuple[np.ndarray, int]:
    """Average log-probability per continuation token; -inf for a continuation with no token to score."""
    sums, counts, truncated = continuation_logprobs(model, pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf), truncated


# ---------------------------------------------------------------------------------------------------
# The heuristics: examples in, predictions out.


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold t that maximises the MCC of "label 1 iff score > t" over these examples: the midpoint
    between two neighbouring distinct scores (or below all of them)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    candidates = np.unique(scores)
    if len(candidates) == 0:
        raise UserError("no examples to choose a threshold on")
    thresholds = np.concatenate([[candidates[0] - 1.0], (candidates[:-1] + candidates[1:]) / 2])
    thresholds = thresholds[np.isfinite(thresholds)]
    return float(max(thresholds, key=lambda t: mcc((scores > t).astype(int), labels)))


def _cola_scores(model: GPT, tokenizer, examples: Sequence[Example]) -> tuple[np.ndarray, int]:
    return average_logprobs(model, [([], tokenizer.encode(ex.text_a)) for ex in examples])


def predict_sst2(model: GPT, tokenizer, examples: Sequence[Example]) -> tuple[list[int], int]:
    positive, negative = tokenizer.encode("positive"), tokenizer.encode("negative")
    pairs = []
    for ex in examples:
        context = tokenizer.encode(ex.text_a + " very")
        pairs += [(context, positive), (context, negative)]
    sums, _, truncated = continuation_logprobs(model, pairs)
    return [int(p > n) for p, n in zip(sums[0::2], sums[1::2])], truncated // 2


def predict_choices(model: GPT, pairs_per_example: Sequence[Sequence[tuple[list[int], list[int]]]]) -> tuple[list[int], int]:
    """Index of the (context, continuation) pair with the highest average log-probability, per example."""
    flat = [pair for pairs in pairs_per_example for pair in pairs]
    scores, truncated = average_logprobs(model, flat)
    predictions, start = [], 0
    for pairs in pairs_per_example:
        predictions.append(int(np.argmax(scores[start : start + len(pairs)])))
        start += len(pairs)
    return predictions, truncated


def race_pairs(tokenizer, ex: Example) -> list[tuple[list[int], list[int]]]:
    context = tokenizer.encode(ex.text_a) + tokenizer.encode(ex.text_b or "")
    return [(context, tokenizer.encode(choice)) for choice in ex.choices]


def winograd_pairs(tokenizer, ex: Example) -> list[tuple[list[int], list[int]]]:
    """Partial scoring: only the words after the substituted pronoun are scored."""
    before, after = ex.text_a.split("_")
    rest = tokenizer.encode(after)
    return [(tokenizer.encode(before + candidate), rest) for candidate in ex.choices]


def load_winograd(path: Path) -> list[Example]:
    """Winograd schemas from a JSONL, CSV or TSV file: `sentence` with the pronoun to resolve written as one "_",
    `choices` the candidates (a list; a JSON list in CSV/TSV) and `label` the right one (0-based index, letter or
    the candidate's text). WinoGrande's files become this with choices = [option1, option2] and label =
    answer - 1."""
    data = load_user_data(path, "multiple-choice", UserColumns(context="sentence", question=None, choices="choices"))
    for ex in data.examples:
        if ex.text_a.count("_") != 1:
            raise UserError(f"{ex.source}: the sentence must mark the pronoun with exactly one '_', "
                            f"found {ex.text_a.count('_')}")
    if not data.examples:
        raise UserError(f"{path}: no schemas")
    return data.examples


def evaluate_heuristic(model: GPT, tokenizer, name: str, examples: Sequence[Example],
                       threshold_examples: Sequence[Example] = ()) -> dict:
    """Score one heuristic on labelled examples; returns score, normalised score and what produced them."""
    heuristic = HEURISTICS[name]
    started = time.time()
    extra = {}
    if name == "cola":
        train_scores, _ = _cola_scores(model, tokenizer, threshold_examples)
        threshold = best_threshold(train_scores, [ex.label for ex in threshold_examples])
        scores, truncated = _cola_scores(model, tokenizer, examples)
        predictions = (scores > threshold).astype(int).tolist()
        extra = {"threshold": threshold, "threshold_examples": len(threshold_examples)}
    elif name == "sst2":
        predictions, truncated = predict_sst2(model, tokenizer, examples)
    else:
        make_pairs = race_pairs if name == "race" else winograd_pairs
        predictions, truncated = predict_choices(model, [make_pairs(tokenizer, ex) for ex in examples])
    labels = [ex.label for ex in examples]
    score = mcc(predictions, labels) if heuristic.metric == "mcc" else accuracy(predictions, labels)
    normalised = (score - heuristic.chance) / (heuristic.reference - heuristic.chance)
    return {"task": name, "metric": heuristic.metric, "score": score, "normalised": normalised,
            "examples": len(examples), "truncated": truncated, **extra,
            "seconds": round(time.time() - started, 1)}


# ---------------------------------------------------------------------------------------------------
# Over the checkpoints of a pre-training run.


def checkpoints_of(paths: Sequence[Path]) -> list[tuple[Path, int | None, str]]:
    """Every model to evaluate (its absolute path) with its pre-training update and the name of its run: a run
    folder gives all of its checkpoints, a model or checkpoint folder itself (its update from state.json when
    it has one). Each must hold a model and a tokenizer."""
    models = []
    for path in map(Path, paths):
        if (path / "checkpoints").is_dir():
            found = sorted(p for p in (path / "checkpoints").glob("step-*") if p.is_dir())
            if not found:
                raise UserError(f"{path}: a run folder without checkpoints")
            models += [(model_folder(p), _update_of(p), path.resolve().name) for p in found]
        else:
            model_dir = model_folder(path)
            models.append((model_dir, _update_of(model_dir), path.resolve().name))
    for model_dir, _, _ in models:
        required_tokenizer_dir(model_dir)
    return models


def _update_of(model_dir: Path) -> int | None:
    state = model_dir / STATE_FILE
    if not state.is_file():
        return None
    recorded = read_json(state)
    update = recorded.get("update") if isinstance(recorded, dict) else None
    if not isinstance(update, int) or isinstance(update, bool) or update < 0:
        raise UserError(f"{state}: update {update!r} is not what `gpt1 pretrain` writes (a count of updates)")
    return update


def task_settings(name: str, data_root: Path | None, winograd: Path | None, limit: int, seed: int) -> dict:
    """What decides a heuristic's score besides the model: its data (absolute path), the sample's size and seed."""
    settings = {"limit": limit, "seed": seed}
    if name == "winograd":
        settings["winograd"] = str(Path(winograd).resolve())
    else:
        settings["data"] = str((Path(data_root) / HEURISTICS[name].folder).resolve())
    if name == "cola":
        settings["threshold_examples"] = COLA_THRESHOLD_EXAMPLES
    return settings


def load_examples(name: str, data_root: Path | None, winograd: Path | None, limit: int,
                  seed: int) -> tuple[list[Example], list[Example]]:
    """The examples a heuristic scores (a seeded sample of `limit` of them, 0 = all) and, for cola, those that
    set its threshold."""
    if name not in HEURISTICS:
        raise UserError(f"unknown zero-shot task {name!r} (known: {', '.join(HEURISTICS)})")
    if name == "winograd":
        if winograd is None:
            raise UserError("the winograd task needs --winograd FILE (see `gpt1 zero-shot --help`)")
        examples, threshold_examples = load_winograd(winograd), []
    else:
        if data_root is None:
            raise UserError(f"the {name} task needs --data (the folder that holds {HEURISTICS[name].folder})")
        if not (Path(data_root) / HEURISTICS[name].folder).exists():
            raise UserError(f"--data {data_root}: holds no {HEURISTICS[name].folder} (for {name}); give the folder "
                            f"that holds glue/ and race/")
        task = load_benchmark(name, Path(data_root) / HEURISTICS[name].folder)
        split = HEURISTICS[name].split
        if not task.splits.get(split):
            raise UserError(f"{Path(data_root) / HEURISTICS[name].folder}: {name} has no {split} split")
        examples = task.splits[split]
        threshold_examples = _sample(task.splits.get("train", []), COLA_THRESHOLD_EXAMPLES, seed) if name == "cola" else []
        if name == "cola" and not threshold_examples:
            raise UserError(f"{Path(data_root) / HEURISTICS[name].folder}: cola needs its train split for the threshold")
    return _sample(examples, limit, seed), threshold_examples


def _sample(examples: list, n: int, seed: int) -> list:
    return examples if not n or n >= len(examples) else random.Random(seed).sample(examples, n)


def run_zero_shot(paths: Sequence[Path], tasks: Sequence[str], out: Path, *, data_root: Path | None = None,
                  winograd: Path | None = None, limit: int = 500, seed: int = 0, device: str | None = None,
                  progress: bool = True) -> list[dict]:
    """Evaluate each heuristic on each model; rows go to <out>/zeroshot.jsonl as they finish, then zeroshot.csv
    and zeroshot.png are written from all rows. Each row records its model's absolute path and `weights_stamp`
    and the settings of its task (`task_settings`); a rerun skips the (model, task) pairs already there, and
    refuses an --out whose rows of these tasks were scored with other settings or of these models from other
    weights. Every input is checked before --out is touched.
    `device`: default cuda when available."""
    unknown = [name for name in tasks if name not in HEURISTICS]
    if unknown:
        raise UserError(f"--tasks: unknown zero-shot task {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(HEURISTICS)})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out)
    examples = {name: load_examples(name, data_root, winograd, limit, seed) for name in tasks}  # fail early
    settings = {name: task_settings(name, data_root, winograd, limit, seed) for name in tasks}
    models = checkpoints_of(paths)
    results_path = out / "zeroshot.jsonl"
    numbered = _numbered_rows(results_path)
    for number, row in numbered:
        if row["task"] in settings:
            difference = settings_difference(row.get("settings"), settings[row["task"]])
            if difference:
                raise UserError(f"{results_path}:{number}: {row['task']} was scored with other settings "
                                f"({difference}); one --out holds one setting per task, so choose another --out")
    stamps = {str(model_dir): weights_stamp(model_dir) for model_dir, _, _ in models}
    for number, row in numbered:
        if row["model"] in stamps and row.get("weights") != stamps[row["model"]]:
            raise UserError(f"{results_path}:{number}: {row['model']} was scored from other weights (weights "
                            f"{row.get('weights', '<none>')} -> {stamps[row['model']]}); one --out holds one set of "
                            f"weights per model folder, so choose another --out")
    rows = [row for _, row in numbered]
    make_run_folder(out)
    if results_path.exists():
        write_text_atomic(results_path, "".join(json.dumps(row) + "\n" for row in rows))  # drops a line cut by a kill
    done = {(row["model"], row["task"]) for row in rows}
    todo = [(m, u, r, t) for m, u, r in models for t in tasks if (str(m), t) not in done]
    loaded = None  # (folder, model, tokenizer): `todo` holds each model's tasks in a row, so load it once
    for model_dir, update, run, task in tqdm(todo, desc="zero-shot", unit="eval", disable=not progress):
        if loaded is None or loaded[0] != model_dir:
            loaded = (model_dir, load_model(model_dir, device), load_tokenizer(required_tokenizer_dir(model_dir)))
        model, tokenizer = loaded[1:]
        row = {"run": run, "model": str(model_dir), "weights": stamps[str(model_dir)], "update": update,
               **evaluate_heuristic(model, tokenizer, task, *examples[task]), "settings": settings[task]}
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        tqdm.write(f"{model_dir} (update {update}): {task} {row['metric']} {row['score']:.3f}, "
                   f"normalised {row['normalised']:.3f}")
    rows = read_rows(results_path)
    write_outputs(rows, out)
    return rows


ROW_KEYS = ("run", "model", "update", "task", "metric", "score", "normalised")


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file; a last line cut short by a kill is left out (that evaluation is redone)."""
    return [row for _, row in _numbered_rows(path)]


def _numbered_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a results file; any other damaged line is a UserError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(lines):
                continue  # cut by a kill in the middle of writing it
            raise UserError(f"{path}:{number}: not a JSON line; delete that line to redo its evaluation") from None
        missing = [key for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
        wrong = not missing and not (isinstance(row["model"], str) and isinstance(row["task"], str)
                                     and (row["update"] is None or isinstance(row["update"], int))
                                     and isinstance(row["normalised"], (int, float)))
        if missing or wrong:
            what = f"lacks {', '.join(missing)}" if missing else "has a field of the wrong type"
            raise UserError(f"{path}:{number}: not a zero-shot result ({what}); delete that line to redo its "
                            f"evaluation")
        rows.append((number, row))
    return rows


def write_outputs(rows: list[dict], out: Path) -> None:
    """zeroshot.csv (every field) and zeroshot.png: each task's normalised score against the pre-training
    updates (log axis) for the checkpoints of runs, and bars by model name for models without an update
    number (a model folder without state.json) or at update 0, which a log axis cannot show."""
    write_csv_atomic(out / "zeroshot.csv", rows, first=ROW_KEYS)
    several_runs = len({row["run"] for row in rows}) > 1
    series: dict[str, list[tuple[float, float]]] = {}
    bars: dict[str, dict[str, float]] = {}
    names = _bar_names([row for row in rows if not row["update"]])
    for row in rows:
        if row["update"]:
            name = f"{row['task']} ({row['run']})" if several_runs else row["task"]
            series.setdefault(name, []).append((row["update"], row["normalised"]))
        else:
            bars.setdefault(row["task"], {})[names[row["model"], row["update"]]] = row["normalised"]
    fig = lines_and_bars_figure(
        series, bars, title="Zero-shot heuristics over pre-training", xlabel="pre-training updates",
        bar_xlabel="task (models without an update number)", ylabel="normalised score (0 = chance, 1 = reference)",
        log_x=True, reference_lines=(0.0,))
    save_figure(fig, out / "zeroshot.png")


def _bar_names(rows: list[dict]) -> dict[tuple[str, int | None], str]:
    """A legend name per (model, update) of rows without an update number: the run's name (its folder's),
    with ' update 0' at update 0; models of equal names are told apart by their last two path parts."""
    def base(row):
        return row["run"] if row["update"] is None else f"{row['run']} update {row['update']}"

    models_of: dict[str, set[str]] = {}
    for row in rows:
        models_of.setdefault(base(row), set()).add(row["model"])
    names = {}
    for row in rows:
        name = base(row)
        if len(models_of[name]) > 1:
            name = f"{name} ({'/'.join(Path(row['model']).parts[-2:])})"
        names[row["model"], row["update"]] = name
    return names
