import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from gpt1.metrics import accuracy, compute_metrics, f1, format_percent, glue_score, mcc, pearson, spearman


def test_hand_computed():
    predictions, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert accuracy(predictions, labels) == pytest.approx(3 / 5)
    # TP 2, FP 1, FN 1 -> precision = recall = 2/3
    assert f1(predictions, labels) == pytest.approx(2 / 3)
    # TN 1: (2*1 - 1*1) / sqrt(3*3*2*2)
    assert mcc(predictions, labels) == pytest.approx(1 / 6)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)


def test_against_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert f1(predictions, labels) == pytest.approx(skm.f1_score(labels, predictions))
    assert mcc(predictions, labels) == pytest.approx(skm.matthews_corrcoef(labels, predictions))
    classes, guesses = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert accuracy(guesses, classes) == pytest.approx(np.mean(guesses == classes))
    scores, outputs = rng.uniform(0, 5, 100), rng.uniform(0, 5, 100)
    assert pearson(outputs, scores) == pytest.approx(stats.pearsonr(outputs, scores)[0])
    assert spearman(outputs, scores) == pytest.approx(stats.spearmanr(outputs, scores)[0])


def test_degenerate_inputs_give_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mcc([1, 1, 1], [0, 1, 1]) == 0.0
        assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
        assert spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
        assert pearson([1.0], [2.0]) == 0.0
        assert f1([0, 0], [0, 0]) == 0.0


def test_compute_metrics_and_format():
    result = compute_metrics(["f1", "accuracy"], [1, 0, 1], [1, 1, 1])
    assert list(result) == ["f1", "accuracy"] and result["accuracy"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], [1], [1])
    with pytest.raises(ValueError, match="equally long"):
        accuracy([1, 0], [1])
    assert format_percent(0.4537) == "45.4" and format_percent(-0.05) == "-5.0"


def test_glue_score():
    # the paper's ablation row "full (aux LM)": one metric per task, eight tasks, average 74.7
    paper = {"cola": 45.4, "sst2": 91.3, "mrpc": 82.3, "stsb": 82.0, "qqp": 70.3, "mnli": 81.8, "qnli": 88.1, "rte": 56.0}
    # 74.65 from the rounded per-task numbers; the paper rounded its unrounded mean to 74.7
    assert glue_score({task: {"main": value / 100} for task, value in paper.items()}) == pytest.approx(0.7465)
    # a leaderboard row: two-metric tasks averaged, MNLI m/mm averaged into one task
    bert_large = {"cola": {"mcc": 60.5}, "sst2": {"accuracy": 94.9}, "mrpc": {"f1": 89.3, "accuracy": 85.4},
                  "stsb": {"pearson": 87.6, "spearman": 86.5}, "qqp": {"f1": 72.1, "accuracy": 89.3},
                  "mnli-m": {"accuracy": 86.7}, "mnli-mm": {"accuracy": 85.9}, "qnli": {"accuracy": 92.7},
                  "rte": {"accuracy": 70.1}, "wnli": {"accuracy": 65.1}}
    score = glue_score({task: {m: v / 100 for m, v in values.items()} for task, values in bert_large.items()})
    assert math.isclose(score, (60.5 + 94.9 + 87.35 + 87.05 + 80.7 + 86.3 + 92.7 + 70.1 + 65.1) / 900)
    assert format_percent(score) == "80.5"
    with pytest.raises(ValueError, match="not a GLUE task"):
        glue_score({"snli": {"accuracy": 0.9}})
