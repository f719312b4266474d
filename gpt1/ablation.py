"""The paper's ablation (Table 5), in small: fine-tune one pre-trained model on the paper's benchmarks with
and without pre-training and with and without the auxiliary LM loss, and tabulate the official metrics.

Every run goes to <out>/<setting>/<task>/ (model, metrics.jsonl, results.json, report.json); finished runs
are reused, so an interrupted ablation continues where it stopped. The table of every finished run in <out>
is written as <out>/ablation.csv and <out>/ablation.md. Training and scoring sets are seeded random subsets
of the sizes in TASK_PLANS, the same for every setting, so the columns compare like with like.
"""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoint import load_config
from .datasets import load_benchmark
from .errors import UserError
from .finetune import FinetuneConfig, finetune, load_task_model, score_split


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


def run_setting(plan: TaskPlan, setting: str, data_root: Path, model: Path, tokenizer, tokenizer_dir: Path,
                config: FinetuneConfig, out: Path, progress: bool = True) -> dict:
    """Fine-tune one task in one setting (or read the finished run) and return its table row."""
    run_dir = out / setting / plan.benchmark
    if (run_dir / "report.json").exists():
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    task = load_benchmark(plan.benchmark, data_root / plan.folder)
    for split in ("train", "dev"):
        if not task.splits.get(split):
            raise UserError(f"{data_root / plan.folder}: {plan.benchmark} has no {split} split")
    task.splits["train"] = subsample(task.splits["train"], plan.train, config.seed)
    task.splits["dev"] = subsample(task.splits["dev"], plan.dev, config.seed)
    from_scratch, lm_coef = SETTINGS[setting]
    max_len = min(plan.max_len, load_config(model).n_positions)  # a shorter model context truncates more
    config = replace(config, lm_coef=lm_coef, from_scratch=from_scratch, max_len=max_len)
    started = time.time()
    results = finetune(task, tokenizer, tokenizer_dir, model, run_dir, config, progress=progress)
    row = {"setting": setting, "task": plan.benchmark, "train": results["train_examples"],
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


def headline(row: dict) -> str:
    if "test_accuracy" in row:
        return f"{100 * row['test_accuracy']:.1f}"
    metrics = HEADLINE_METRICS.get(row["task"], ["accuracy"])
    return " / ".join(f"{100 * row['dev_' + m]:.1f}" for m in metrics)


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
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k not in ("setting", "task"), k))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ablation.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tasks = sorted({row["task"] for row in rows}, key=_paper_order)
    settings = sorted({row["setting"] for row in rows}, key=_paper_order)
    cell = {(row["setting"], row["task"]): headline(row) for row in rows}
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += ["| " + s + " | " + " | ".join(cell.get((s, t), "") for t in tasks) + " |" for s in settings]
    table = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(table, encoding="utf-8")
    return table


def run_ablation(model: Path, data_root: Path, out: Path, tasks: list[str], settings: list[str],
                 config: FinetuneConfig, progress: bool = True) -> list[dict]:
    from .checkpoint import resolve_model_dir, tokenizer_dir_of
    from .tokenizer import load_tokenizer

    unknown = [t for t in tasks if t not in TASK_PLANS] + [s for s in settings if s not in SETTINGS]
    if unknown:
        raise UserError(f"unknown task or setting {unknown}; tasks: {', '.join(TASK_PLANS)}; "
                        f"settings: {', '.join(SETTINGS)}")
    model = resolve_model_dir(model)
    tokenizer_dir = tokenizer_dir_of(model)
    if tokenizer_dir is None:
        raise UserError(f"{model}: holds no tokenizer/ folder")
    tokenizer = load_tokenizer(tokenizer_dir)
    out = Path(out)
    for setting in settings:  # settings outermost: an interrupted ablation has whole rows
        for name in tasks:
            run_setting(TASK_PLANS[name], setting, Path(data_root), model, tokenizer, tokenizer_dir, config, out,
                        progress)
            print(write_table(finished_rows(out), out), flush=True)
    return finished_rows(out)
