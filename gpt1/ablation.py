"""The paper's fine-tuning analyses, in small, each fine-tuning one pre-trained model many times:

- the ablation (Table 5): the paper's benchmarks with and without pre-training and with and without the
  auxiliary LM loss. Runs go to <out>/<setting>/<task>/; the table of every finished run is written as
  <out>/ablation.csv, ablation.md and ablation.png.
- layer transfer (Figure 2, left): only the embeddings and the first k blocks come from the pre-trained model,
  the rest is initialised afresh, for each k. Runs go to <out>/layers-<k>/<task>/; the results as
  <out>/layer_transfer.csv and layer_transfer.png (dev score against k).

Each run holds its model, metrics.jsonl, results.json and report.json; finished runs are reused, so an
interrupted analysis continues where it stopped. Training and scoring sets are seeded random subsets of the
sizes in TASK_PLANS, the same for every setting, so the columns compare like with like.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoint import load_config, required_tokenizer_dir, resolve_model_dir, write_csv
from .datasets import load_benchmark
from .errors import UserError
from .finetune import FinetuneConfig, finetune, load_task_model, score_split
from .plots import grouped_bar_plot, line_plot
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

# The paper's headline number per task: a test score where one is scored, else these dev metrics.
HEADLINE_METRICS = {"cola": ["mcc"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"]}


def subsample(examples: list, n: int, seed: int) -> list:
    return examples if not n or n >= len(examples) else random.Random(seed).sample(examples, n)


def run_task(plan: TaskPlan, data_root: Path, model: Path, tokenizer, tokenizer_dir: Path, config: FinetuneConfig,
             run_dir: Path, labels: dict, progress: bool = True) -> dict:
    """Fine-tune one task with `config` into run_dir (or read the finished run there) and return its row:
    `labels` (what sets this run apart, e.g. its setting), the task, then the results."""
    if (run_dir / "report.json").exists():
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    task = load_benchmark(plan.benchmark, data_root / plan.folder)
    for split in ("train", "dev"):
        if not task.splits.get(split):
            raise UserError(f"{data_root / plan.folder}: {plan.benchmark} has no {split} split")
    task.splits["train"] = subsample(task.splits["train"], plan.train, config.seed)
    task.splits["dev"] = subsample(task.splits["dev"], plan.dev, config.seed)
    max_len = min(plan.max_len, load_config(model).n_positions)  # a shorter model context truncates more
    config = replace(config, max_len=max_len)
    started = time.time()
    results = finetune(task, tokenizer, tokenizer_dir, model, run_dir, config, progress=progress)
    row = {**labels, "task": plan.benchmark, "train": results["train_examples"],
           "dev": results["dev_examples"], "best_epoch": results["best_epoch"],
           **{f"dev_{k}": v for k, v in results["dev"].items()}, "truncated_train": results["truncated"]["train"]}
    if plan.test and task.splits.get("test"):
        task_model, info = load_task_model(run_dir)
        test = subsample(task.splits["test"], plan.test, config.seed)
        scores, _, _ = score_split(task_model, info, tokenizer, test, task.metrics)
        row.update({"test": len(test), **{f"test_{k}": v for k, v in scores.items()}})
    row["seconds"] = round(time.time() - started, 1)
    (run_dir / "report.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return row


def run_setting(plan: TaskPlan, setting: str, data_root: Path, model: Path, tokenizer, tokenizer_dir: Path,
                config: FinetuneConfig, out: Path, progress: bool = True) -> dict:
    """Fine-tune one task in one setting of the ablation (or read the finished run) and return its row."""
    from_scratch, lm_coef = SETTINGS[setting]
    return run_task(plan, data_root, model, tokenizer, tokenizer_dir,
                    replace(config, lm_coef=lm_coef, from_scratch=from_scratch), out / setting / plan.benchmark,
                    {"setting": setting}, progress)


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
    made them (several can share one folder, e.g. one per setting in parallel)."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*/*/report.json")]
    return sorted(rows, key=lambda r: (_paper_order(r["setting"]), _paper_order(r["task"])))


def write_table(rows: list[dict], out: Path) -> str:
    """Write every field of every row as CSV and the headline numbers as a Markdown table; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "ablation.csv", rows, first=("setting", "task"))
    tasks = sorted({row["task"] for row in rows}, key=_paper_order)
    settings = sorted({row["setting"] for row in rows}, key=_paper_order)
    cell = {(row["setting"], row["task"]): headline(row) for row in rows}
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += ["| " + s + " | " + " | ".join(cell.get((s, t), "") for t in tasks) + " |" for s in settings]
    table = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(table, encoding="utf-8")
    values = {t: {row["setting"]: 100 * headline_values(row)[0] for row in rows if row["task"] == t} for t in tasks}
    grouped_bar_plot(values, out / "ablation.png", title="Ablation: fine-tuning with and without pre-training "
                     "and the auxiliary LM loss", ylabel="headline metric x 100 (first of the table's)")
    return table


def _load_model_and_tokenizer(model: Path):
    model = resolve_model_dir(model)
    tokenizer_dir = required_tokenizer_dir(model)
    return model, load_tokenizer(tokenizer_dir), tokenizer_dir


def run_ablation(model: Path, data_root: Path, out: Path, tasks: list[str], settings: list[str],
                 config: FinetuneConfig, progress: bool = True) -> list[dict]:
    unknown = [t for t in tasks if t not in TASK_PLANS] + [s for s in settings if s not in SETTINGS]
    if unknown:
        raise UserError(f"unknown task or setting {unknown}; tasks: {', '.join(TASK_PLANS)}; "
                        f"settings: {', '.join(SETTINGS)}")
    model, tokenizer, tokenizer_dir = _load_model_and_tokenizer(model)
    out = Path(out)
    for setting in settings:  # settings outermost: an interrupted ablation has whole rows
        for name in tasks:
            run_setting(TASK_PLANS[name], setting, Path(data_root), model, tokenizer, tokenizer_dir, config, out,
                        progress)
            print(write_table(finished_rows(out), out), flush=True)
    return finished_rows(out)


def layer_transfer_rows(out: Path) -> list[dict]:
    """The rows of every finished layer-transfer run under `out`, by task (TASK_PLANS order) and k."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in out.glob("layers-*/*/report.json")]
    return sorted(rows, key=lambda r: (_paper_order(r["task"]), r["transfer_layers"]))


def write_layer_transfer(rows: list[dict], out: Path) -> str:
    """layer_transfer.csv (every field) and layer_transfer.png (dev score against k); returns a text table."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "layer_transfer.csv", rows, first=("task", "transfer_layers"))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        metric = HEADLINE_METRICS.get(row["task"], ["accuracy"])[0]
        series.setdefault(f"{row['task']} dev {metric}", []).append(
            (row["transfer_layers"], 100 * headline_values(row, split="dev")[0]))
    line_plot(series, out / "layer_transfer.png", title="Transferring the first k pre-trained blocks",
              xlabel="blocks transferred (k)", ylabel="dev score x 100")
    return "\n".join(f"{name}: " + ", ".join(f"k={k:g} {v:.1f}" for k, v in sorted(points))
                     for name, points in series.items()) + "\n"


def run_layer_transfer(model: Path, data_root: Path, out: Path, tasks: list[str], layers: list[int] | None,
                       config: FinetuneConfig, progress: bool = True) -> list[dict]:
    """Fine-tune each task once per k in `layers` (default 0 .. n_layer) with only the embeddings and the
    first k blocks from `model`, the auxiliary LM loss as configured."""
    unknown = [t for t in tasks if t not in TASK_PLANS]
    if unknown:
        raise UserError(f"unknown task {unknown}; tasks: {', '.join(TASK_PLANS)}")
    model, tokenizer, tokenizer_dir = _load_model_and_tokenizer(model)
    n_layer = load_config(model).n_layer
    layers = list(range(n_layer + 1)) if layers is None else layers
    wrong = [k for k in layers if not 0 <= k <= n_layer]
    if wrong:
        raise UserError(f"--layers {wrong}: the model has {n_layer} blocks (choose 0..{n_layer})")
    out = Path(out)
    for name in tasks:
        for k in layers:
            run_task(TASK_PLANS[name], Path(data_root), model, tokenizer, tokenizer_dir,
                     replace(config, transfer_layers=k, from_scratch=False), out / f"layers-{k:02d}" / name,
                     {"transfer_layers": k}, progress)
            print(write_layer_transfer(layer_transfer_rows(out), out), flush=True)
    return layer_transfer_rows(out)
