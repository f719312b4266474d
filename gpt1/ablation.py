"""The paper's fine-tuning analyses, in small, each fine-tuning one pre-trained model many times:

- the ablation (Table 5): the paper's benchmarks with and without pre-training and with and without the
  auxiliary LM loss. Runs go to <out>/<setting>/<task>/; the table of every finished run is written as
  <out>/ablation.csv, ablation.md and ablation.png.
- layer transfer (Figure 2, left): only the embeddings and the first k blocks come from the pre-trained model,
  the rest is initialised afresh, for each k. Runs go to <out>/layers-<k>/<task>/; the results as
  <out>/layer_transfer.csv and layer_transfer.png (dev score against k).

Each run holds its model, metrics.jsonl, results.json and report.json. report.json records the settings that
made the run (the model's absolute path, the data folder, the subset sizes, every fine-tuning setting); a
finished run is reused when this call's settings for it are equal, so an interrupted analysis continues where it
stopped. An --out holding finished runs of other settings is refused before any work (it holds one experiment:
choose another --out); an unreadable report.json is noted and its run redone. Training and scoring sets are
seeded random subsets of the sizes in TASK_PLANS, the same for every setting, so the columns compare like with
like.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .checkpoint import load_config, make_run_folder, required_tokenizer_dir, write_json_atomic, write_text_atomic
from .datasets import load_benchmark
from .errors import Interrupted, UserError
from .finetune import FinetuneConfig, finetune, load_task_model, score_split
from .plots import grouped_bar_plot, line_plot
from .pretrain import autocast_for, pick_device
from .results import model_folder, read_report, settings_difference, weights_stamp, write_csv_atomic
from .tokenizer import load_tokenizer


@dataclass(frozen=True)
class TaskPlan:
    benchmark: str  # a name in gpt1.datasets.BENCHMARKS
    folder: str  # the benchmark's folder under the data root
    max_len: int  # tokens per input sequence; longer inputs follow the truncation policy
    train: int  # labelled examples to fine-tune on (0 = all)
    dev: int  # examples that pick the best epoch and are reported (0 = all)
    test: int = 0  # labelled test examples scored once at the end (Story Cloze, RACE); 0 = none


# Sized for a 2-core CPU and a 4 x 256 model: 1-5 minutes per run. Similarity tasks encode both orders and
# RACE four 256-token sequences per question, so they get fewer examples.
TASK_PLANS = {
    "sst2": TaskPlan("sst2", "glue/SST-2", 64, 2000, 0),
    "cola": TaskPlan("cola", "glue/CoLA", 48, 2000, 0),
    "mrpc": TaskPlan("mrpc", "glue/MRPC", 128, 1000, 0),
    "stsb": TaskPlan("stsb", "glue/STS-B", 96, 1000, 0),
    "rte": TaskPlan("rte", "glue/RTE", 128, 1000, 0),
    "storycloze": TaskPlan("storycloze", "story_cloze", 96, 0, 0, test=1871),
    "race": TaskPlan("race", "race", 256, 200, 200, test=300),
}

SETTINGS = {  # name: (from_scratch, lm_coef)
    "pretrained+aux": (False, 0.5),  # the paper's method
    "pretrained": (False, 0.0),  # Table 5 "w/o aux LM"
    "scratch": (True, 0.0),  # Table 5 "w/o pre-training"
    "scratch+aux": (True, 0.5),
}

REPORT_FILE = "report.json"

# The paper's headline number per task: a test score where one is scored, else these dev metrics.
HEADLINE_METRICS = {"cola": ["mcc"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"]}


def subsample(examples: list, n: int, seed: int) -> list:
    return examples if not n or n >= len(examples) else random.Random(seed).sample(examples, n)


@dataclass(frozen=True)
class Run:
    """One fine-tuning of an analysis: its task, its settings and its folder. `settings` are everything that
    decides its numbers (the model's absolute path and `weights_stamp`, the task's data folder and subset sizes,
    every fine-tuning setting); they are recorded in its report.json, which is reused only by a run with equal
    settings."""

    plan: TaskPlan
    config: FinetuneConfig
    run_dir: Path
    labels: dict  # what sets this run apart from the others of the analysis, e.g. {"setting": "scratch"}
    settings: dict


def make_run(plan: TaskPlan, data_root: Path, model: Path, n_positions: int, config: FinetuneConfig, run_dir: Path,
             labels: dict) -> Run:
    config = replace(config, max_len=min(plan.max_len, n_positions))  # a shorter model context truncates more
    settings = {"model": str(Path(model).resolve()), "weights": weights_stamp(model),
                "data": str((Path(data_root) / plan.folder).resolve()),
                "train_subset": plan.train, "dev_subset": plan.dev, "test_subset": plan.test, **asdict(config)}
    return Run(plan, config, Path(run_dir), labels, settings)


def check_reusable(runs: list[Run], out: Path) -> None:
    """Refuse, before any work, an --out whose finished runs were made with other settings than this call
    would use for them: reusing them would report another model's or setting's numbers, and redoing them
    would mix two experiments in one table. Unreadable report.json files are noted and redone."""
    for run in runs:
        path = run.run_dir / REPORT_FILE
        row = read_finished(path, run.plan.benchmark, run.labels)
        if row is None:
            continue
        difference = settings_difference(row.get("settings"), run.settings)
        if difference:
            raise UserError(f"{path}: made with other settings ({difference}); each --out holds one experiment, "
                            f"so choose another --out for these settings (or delete {run.run_dir} to redo that run)")


def check_data(runs: list[Run], data_root: Path) -> None:
    """Every task's data folder, before any work: a wrong --data is named at once, not after hours of runs."""
    missing = {run.plan.folder: run.plan.benchmark for run in runs
               if not (Path(data_root) / run.plan.folder).exists()}
    if missing:
        shown = ", ".join(f"{folder} (for {task})" for folder, task in missing.items())
        raise UserError(f"--data {data_root}: holds no {shown}; give the folder that holds glue/, race/ and "
                        f"story_cloze/")


def run_task(run: Run, data_root: Path, model: Path, tokenizer, tokenizer_dir: Path, progress: bool = True) -> dict:
    """Fine-tune one task into run.run_dir (or read the finished run there, made with the same settings) and
    return its row: run.labels, the task, the results, then the settings."""
    plan, config, run_dir = run.plan, run.config, run.run_dir
    finished = read_finished(run_dir / REPORT_FILE, plan.benchmark, run.labels, note=False)
    if finished is not None:
        difference = settings_difference(finished.get("settings"), run.settings)
        if not difference:
            return finished
        raise UserError(f"{run_dir / REPORT_FILE}: made with other settings ({difference}) while this call ran; "
                        f"choose another --out")
    task = load_benchmark(plan.benchmark, Path(data_root) / plan.folder)
    for split in ("train", "dev"):
        if not task.splits.get(split):
            raise UserError(f"{Path(data_root) / plan.folder}: {plan.benchmark} has no {split} split")
    task.splits["train"] = subsample(task.splits["train"], plan.train, config.seed)
    task.splits["dev"] = subsample(task.splits["dev"], plan.dev, config.seed)
    started = time.time()
    results = finetune(task, tokenizer, tokenizer_dir, model, run_dir, config, progress=progress)
    if results.get("interrupted"):  # the user asked to stop: no report, so that a rerun redoes this run
        raise Interrupted(results.get("stop_signal") or signal.SIGINT)
    row = {**run.labels, "task": plan.benchmark, "train": results["train_examples"],
           "dev": results["dev_examples"], "best_epoch": results["best_epoch"],
           **{f"dev_{k}": v for k, v in results["dev"].items()}, "truncated_train": results["truncated"]["train"]}
    if plan.test and task.splits.get("test"):
        device = pick_device(None)  # where `finetune` trained it
        task_model, info = load_task_model(run_dir, device)
        test = subsample(task.splits["test"], plan.test, config.seed)
        scores, _, _ = score_split(task_model, info, tokenizer, test, task.metrics, autocast_for(device, config.dtype))
        row.update({"test": len(test), **{f"test_{k}": v for k, v in scores.items()}})
    row["seconds"] = round(time.time() - started, 1)
    row["settings"] = run.settings
    write_json_atomic(run_dir / REPORT_FILE, row)
    return row


def ablation_runs(model: Path, data_root: Path, out: Path, n_positions: int, config: FinetuneConfig,
                  settings: list[str], tasks: list[str]) -> list[Run]:
    """The runs of the ablation for `settings` x `tasks`, settings outermost: an interrupted ablation has
    whole rows."""
    runs = []
    for setting in settings:
        from_scratch, lm_coef = SETTINGS[setting]
        for name in tasks:
            runs.append(make_run(TASK_PLANS[name], data_root, model, n_positions,
                                 replace(config, lm_coef=lm_coef, from_scratch=from_scratch),
                                 Path(out) / setting / name, {"setting": setting}))
    return runs


def headline_values(row: dict, split: str | None = None) -> list[float]:
    """The paper's headline number(s) of a row: its test accuracy where one was scored (unless split="dev"),
    else the dev metrics of HEADLINE_METRICS (accuracy by default)."""
    if "test_accuracy" in row and split != "dev":
        return [row["test_accuracy"]]
    return [row["dev_" + m] for m in HEADLINE_METRICS.get(row["task"], ["accuracy"])]


def headline(row: dict) -> str:
    return " / ".join(f"{100 * v:.1f}" for v in headline_values(row))


def _paper_order(name: str) -> int:
    """Position of a setting or task in SETTINGS / TASK_PLANS (the paper's order); unknown names last."""
    order = [*SETTINGS, *TASK_PLANS]
    return order.index(name) if name in order else len(order)


def finished_rows(out: Path) -> list[dict]:
    """The rows of every finished run under `out`, in TASK_PLANS and SETTINGS order, whichever invocation
    made them (several can share one folder, e.g. one per setting in parallel, with equal other settings)."""
    rows = [read_finished(out / setting / task / REPORT_FILE, task, {"setting": setting}, note=False)
            for setting in SETTINGS for task in TASK_PLANS]
    return [row for row in rows if row is not None]


def read_finished(path: Path, task: str, labels: dict, note: bool = True) -> dict | None:
    """The row in a run's report.json, or None when there is none or it is unreadable or damaged (not the
    row of `task` with `labels`, or without its scores): then, with `note`, a line on stderr says it is
    ignored and the run redone."""
    row = read_report(path, note=note)
    if row is None:
        return None
    try:
        values = headline_values(row) + headline_values(row, split="dev")
        damaged = (row.get("task") != task or any(row.get(k) != v for k, v in labels.items())
                   or not all(isinstance(v, (int, float)) for v in values))
    except (KeyError, TypeError):
        damaged = True
    if damaged and note:
        print(f"note: {path}: not the finished {task} run of this folder (its task, labels or scores are "
              f"damaged); ignored, that run is redone", file=sys.stderr)
    return None if damaged else row


def write_table(rows: list[dict], out: Path) -> str:
    """Write every field of every row as CSV and the headline numbers as a Markdown table; return the table."""
    make_run_folder(out)
    write_csv_atomic(out / "ablation.csv", rows, first=("setting", "task"))
    tasks = sorted({row["task"] for row in rows}, key=_paper_order)
    settings = sorted({row["setting"] for row in rows}, key=_paper_order)
    cell = {(row["setting"], row["task"]): headline(row) for row in rows}
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += ["| " + s + " | " + " | ".join(cell.get((s, t), "") for t in tasks) + " |" for s in settings]
    table = "\n".join(lines) + "\n"
    write_text_atomic(out / "ablation.md", table)
    values = {t: {row["setting"]: 100 * headline_values(row)[0] for row in rows if row["task"] == t} for t in tasks}
    grouped_bar_plot(values, out / "ablation.png", title="Ablation: fine-tuning with and without pre-training "
                     "and the auxiliary LM loss", xlabel="task",
                     ylabel="headline metric x 100 (first of the table's)")
    return table


def _load_model_and_tokenizer(model: Path):
    model = model_folder(model)
    tokenizer_dir = required_tokenizer_dir(model)
    return model, load_tokenizer(tokenizer_dir), tokenizer_dir


def run_ablation(model: Path, data_root: Path, out: Path, tasks: list[str], settings: list[str],
                 config: FinetuneConfig, progress: bool = True) -> list[dict]:
    unknown = [t for t in tasks if t not in TASK_PLANS] + [s for s in settings if s not in SETTINGS]
    if unknown:
        raise UserError(f"unknown task or setting {unknown}; tasks: {', '.join(TASK_PLANS)}; "
                        f"settings: {', '.join(SETTINGS)}")
    model, tokenizer, tokenizer_dir = _load_model_and_tokenizer(model)
    out, data_root = Path(out), Path(data_root)
    n_positions = load_config(model).n_positions
    runs = ablation_runs(model, data_root, out, n_positions, config, settings, tasks)
    check_data(runs, data_root)
    check_reusable(ablation_runs(model, data_root, out, n_positions, config, list(SETTINGS), list(TASK_PLANS)), out)
    for run in runs:
        run_task(run, data_root, model, tokenizer, tokenizer_dir, progress)
        print(write_table(finished_rows(out), out), flush=True)
    return finished_rows(out)


def layer_transfer_rows(out: Path) -> list[dict]:
    """The rows of every finished layer-transfer run under `out`, by task (TASK_PLANS order) and k."""
    rows = [read_finished(out / f"layers-{k:02d}" / task / REPORT_FILE, task, {"transfer_layers": k}, note=False)
            for task in TASK_PLANS for k in _layer_folders(out)]
    return [row for row in rows if row is not None]


def _layer_folders(out: Path) -> list[int]:
    """The k of every layers-<k> folder under `out`, in order."""
    return sorted({int(p.name[len("layers-"):]) for p in Path(out).glob("layers-*")
                   if p.is_dir() and p.name[len("layers-"):].isdigit()})


def write_layer_transfer(rows: list[dict], out: Path) -> str:
    """layer_transfer.csv (every field) and layer_transfer.png (dev score against k); returns a text table."""
    make_run_folder(out)
    write_csv_atomic(out / "layer_transfer.csv", rows, first=("task", "transfer_layers"))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        metric = HEADLINE_METRICS.get(row["task"], ["accuracy"])[0]
        series.setdefault(f"{row['task']} dev {metric}", []).append(
            (row["transfer_layers"], 100 * headline_values(row, split="dev")[0]))
    line_plot(series, out / "layer_transfer.png", title="Transferring the first k pre-trained blocks",
              xlabel="blocks transferred (k)", ylabel="dev score x 100", integer_x=True)
    return "\n".join(f"{name}: " + ", ".join(f"k={k:g} {v:.1f}" for k, v in sorted(points))
                     for name, points in series.items()) + "\n"


def layer_transfer_runs(model: Path, data_root: Path, out: Path, n_positions: int, config: FinetuneConfig,
                        tasks: list[str], layers: list[int]) -> list[Run]:
    return [make_run(TASK_PLANS[name], data_root, model, n_positions,
                     replace(config, transfer_layers=k, from_scratch=False), Path(out) / f"layers-{k:02d}" / name,
                     {"transfer_layers": k})
            for name in tasks for k in layers]


def run_layer_transfer(model: Path, data_root: Path, out: Path, tasks: list[str], layers: list[int] | None,
                       config: FinetuneConfig, progress: bool = True) -> list[dict]:
    """Fine-tune each task once per k in `layers` (default 0 .. n_layer) with only the embeddings and the
    first k blocks from `model`, the auxiliary LM loss as configured."""
    unknown = [t for t in tasks if t not in TASK_PLANS]
    if unknown:
        raise UserError(f"unknown task {unknown}; tasks: {', '.join(TASK_PLANS)}")
    model, tokenizer, tokenizer_dir = _load_model_and_tokenizer(model)
    model_config = load_config(model)
    n_layer = model_config.n_layer
    layers = list(range(n_layer + 1)) if layers is None else layers
    wrong = [k for k in layers if not 0 <= k <= n_layer]
    if wrong:
        raise UserError(f"--layers {wrong}: the model has {n_layer} blocks (choose 0..{n_layer})")
    out, data_root = Path(out), Path(data_root)
    runs = layer_transfer_runs(model, data_root, out, model_config.n_positions, config, tasks, layers)
    check_data(runs, data_root)
    check_reusable(layer_transfer_runs(model, data_root, out, model_config.n_positions, config, list(TASK_PLANS),
                                       _layer_folders(out)), out)
    for run in runs:
        run_task(run, data_root, model, tokenizer, tokenizer_dir, progress)
        print(write_layer_transfer(layer_transfer_rows(out), out), flush=True)
    return layer_transfer_rows(out)
