"""The official metrics of GPT-1's benchmarks, computed with scikit-learn and SciPy.

Values are plain fractions in [0, 1] (correlations in [-1, 1]); the paper prints them ×100, which
`format_percent` does for display. Keeping fractions everywhere avoids mixing scales when results
are stored, compared or averaged.

Degenerate inputs: a correlation (MCC, Pearson, Spearman) is undefined when the predictions or the
labels are constant, which happens early in fine-tuning when a model predicts one class. These
functions return 0.0 ("no correlation") in that case instead of NaN, so that best-epoch selection and
averaging keep working; scikit-learn's `matthews_corrcoef` already does this for MCC.
"""

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def _arrays(predictions: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equally long non-empty 1-D sequences, got shapes {predictions.shape} and {labels.shape}")
    return predictions, labels


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    """Fraction of exact matches."""
    predictions, labels = _arrays(predictions, labels)
    return float(skm.accuracy_score(labels, predictions))


def f1(predictions: Sequence, labels: Sequence) -> float:
    """Binary F1 of the positive class 1 (MRPC: paraphrase, QQP: duplicate), as GLUE reports it;
    0.0 when there is no true or predicted positive."""
    predictions, labels = _arrays(predictions, labels)
    return float(skm.f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def mcc(predictions: Sequence, labels: Sequence) -> float:
    """Matthews correlation coefficient (CoLA); 0.0 for constant predictions or labels."""
    predictions, labels = _arrays(predictions, labels)
    return float(skm.matthews_corrcoef(labels, predictions))


def _correlation(function: Callable, predictions: Sequence, labels: Sequence) -> float:
    predictions, labels = _arrays(predictions, labels)
    if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0  # undefined (SciPy would warn and return NaN); see the module docstring
    return float(function(predictions, labels).statistic)


def pearson(predictions: Sequence, labels: Sequence) -> float:
    """Pearson correlation (STS-B); 0.0 when either side is constant."""
    return _correlation(stats.pearsonr, predictions, labels)


def spearman(predictions: Sequence, labels: Sequence) -> float:
    """Spearman rank correlation (STS-B); 0.0 when either side is constant."""
    return _correlation(stats.spearmanr, predictions, labels)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Sequence[str], predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The named metrics (keys of METRICS, e.g. a TaskData's `metrics`) of predictions against labels."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRICS)})")
    return {name: METRICS[name](predictions, labels) for name in names}


def format_percent(value: float) -> str:
    """A metric as the paper prints it: ×100 with one decimal (0.4537 -> '45.4')."""
    return f"{100 * value:.1f}"


GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The GLUE score: the unweighted mean over tasks of each task's score, where a task's score is the
    unweighted mean of the metrics given for it (Wang et al., "GLUE", ICLR 2019, section 4: "for tasks
    with multiple metrics, we use an unweighted average of the metrics as the score for the task when
    computing the overall macro-average").

    Keys are task names as in `gpt1.datasets.BENCHMARKS` (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte,
    wnli); MNLI may instead be given as "mnli-m" and "mnli-mm" (matched and mismatched), which are
    averaged into one MNLI task score, as for any task with two metrics. The diagnostic set (AX) is not
    part of the score.

    Which metrics go in is the caller's choice: all of a task's metrics give the leaderboard's score
    over all nine tasks; the paper's ablation "avg" (GPT1.md) uses one metric per task (MCC, acc, F1,
    Pearson, F1, acc ...) over eight tasks without WNLI. Tasks missing from `results` are not counted.
    """
    tasks: dict[str, list[float]] = {}
    for key, values in results.items():
        task = "mnli" if key in ("mnli-m", "mnli-mm") else key
        if task not in GLUE_TASKS:
            raise ValueError(f"{key!r} is not a GLUE task (known: {', '.join(GLUE_TASKS)}, mnli-m, mnli-mm)")
        if not values:
            raise ValueError(f"no metric values for {key!r}")
        tasks.setdefault(task, []).append(float(np.mean(list(values.values()))))
    if not tasks:
        raise ValueError("no GLUE results to average")
    return float(np.mean([np.mean(entries) for entries in tasks.values()]))
