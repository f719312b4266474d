"""Zero-shot heuristics: LM scoring of continuations, the four heuristics, tracking over checkpoints."""

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt1.checkpoint import copy_tokenizer, save_model
from gpt1.datasets import Example
from gpt1.errors import UserError
from gpt1.metrics import mcc
from gpt1.model import GPT, GPTConfig
from gpt1.zeroshot import (
    best_threshold, continuation_logprobs, evaluate_heuristic, load_winograd, predict_sst2, winograd_pairs,
)
from conftest import require_shared_data


class WordTokenizer:
    """Whitespace words -> ids in order of first sight (ids < 50), enough to test the heuristics' plumbing."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.ids.setdefault(word, len(self.ids) % 50) for word in text.split()]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4)).eval()


def reference_logprob(model, context, continuation):
    """Sum of log p(continuation tokens) from the full logits of one unbatched, unpadded sequence."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = F.log_softmax(model(ids)[0].double(), dim=-1)  # (T, V)
    return sum(logprobs[len(context) + i - 1, token].item() for i, token in enumerate(continuation))


def test_continuation_logprobs_equal_full_forward_passes_whatever_the_batching(model):
    rng = random.Random(0)
    pairs = [([rng.randrange(50) for _ in range(rng.randint(1, 9))], [rng.randrange(50) for _ in range(rng.randint(1, 6))])
             for _ in range(23)]
    expected = [reference_logprob(model, c, t) for c, t in pairs]
    for batch_tokens in (16, 64, 10_000):  # one sequence per batch .. all in one batch
        sums, counts, truncated = continuation_logprobs(model, pairs, batch_tokens=batch_tokens)
        np.testing.assert_allclose(sums, expected, rtol=1e-5)
        assert counts.tolist() == [len(t) for _, t in pairs] and truncated == 0


def test_an_empty_context_makes_the_first_token_context_and_long_pairs_lose_context_on_the_left(model):
    sums, counts, truncated = continuation_logprobs(model, [([], [5, 6, 7]), ([], [9]), (list(range(14)), [1, 2, 3])])
    assert counts.tolist() == [2, 0, 3] and truncated == 1
    assert sums[0] == pytest.approx(reference_logprob(model, [5], [6, 7]), rel=1e-5)
    assert sums[1] == 0.0
    # 14 + 3 tokens > 16 positions: the context's first token goes, the continuation stays whole
    assert sums[2] == pytest.approx(reference_logprob(model, list(range(1, 14)), [1, 2, 3]), rel=1e-5)


def test_best_threshold_maximises_mcc_over_all_cuts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(labels * 0.7, 1.0).round(1)  # ties included
    t = best_threshold(scores, labels)
    best = max(mcc((scores > c).astype(int), labels) for c in np.concatenate([scores, [scores.min() - 1]]))
    assert mcc((scores > t).astype(int), labels) == pytest.approx(best)
    assert best_threshold([-3.0, -2.0, -1.0, 0.0], [0, 0, 1, 1]) == -1.5


def test_sst2_compares_the_next_word_probabilities_after_very(model):
    tokenizer = WordTokenizer()
    texts = ["a fine film", "dull and long", "it was", "great acting , weak plot"]
    predictions, _ = predict_sst2(model, tokenizer, [Example(text, label=0) for text in texts])
    expected = [int(reference_logprob(model, tokenizer.encode(t + " very"), tokenizer.encode("positive"))
                    > reference_logprob(model, tokenizer.encode(t + " very"), tokenizer.encode("negative")))
                for t in texts]
    assert predictions == expected


def test_winograd_scores_only_the_words_after_the_substituted_pronoun(tmp_path, model):
    tokenizer = WordTokenizer()
    ex = Example("the cup did not fit in the bag because _ was too big", choices=["the cup", "the bag"], label=0)
    pairs = winograd_pairs(tokenizer, ex)
    rest = tokenizer.encode("was too big")
    assert pairs == [(tokenizer.encode("the cup did not fit in the bag because the cup"), rest),
                     (tokenizer.encode("the cup did not fit in the bag because the bag"), rest)]
    row = evaluate_heuristic(model, tokenizer, "winograd", [ex, Example(ex.text_a, choices=ex.choices, label=1)])
    assert row["score"] == 0.5 and row["normalised"] == 0.0  # whichever it picks, one of the two is right

    path = tmp_path / "wsc.jsonl"
    path.write_text(json.dumps({"sentence": ex.text_a, "choices": ex.choices, "label": 1}) + "\n"
                    + json.dumps({"sentence": "no pronoun here", "choices": ["a", "b"], "label": 0}) + "\n")
    with pytest.raises(UserError, match=r"wsc.jsonl:2: .*exactly one '_', found 0"):
        load_winograd(path)


def test_cola_threshold_comes_from_the_training_sample_and_scores_dev(model):
    tokenizer = WordTokenizer()
    train = [Example(" ".join(random.Random(i).choices("abcdefgh", k=5)), label=i % 2) for i in range(40)]
    dev = train[:10]
    row = evaluate_heuristic(model, tokenizer, "cola", dev, threshold_examples=train)
    from gpt1.zeroshot import average_logprobs

    train_scores, _ = average_logprobs(model, [([], tokenizer.encode(ex.text_a)) for ex in train])
    assert row["threshold"] == best_threshold(train_scores, [ex.label for ex in train])
    dev_predictions = (train_scores[:10] > row["threshold"]).astype(int)
    assert row["score"] == pytest.approx(mcc(dev_predictions, [ex.label for ex in dev]))
    assert row["normalised"] == pytest.approx(row["score"] / 0.454)


def test_zero_shot_command_scores_every_checkpoint_plots_and_resumes(tmp_path, capsys):
    from gpt1.cli import main

    vocab = require_shared_data("gpt1_vocab")
    run = tmp_path / "run"
    for update in (10, 40):
        torch.manual_seed(update)
        step = save_model(GPT(GPTConfig(vocab_size=40478, n_positions=32, n_embd=16, n_layer=1, n_head=2)),
                          run / "checkpoints" / f"step-{update:08d}")
        copy_tokenizer(vocab, step / "tokenizer")
        (step / "state.json").write_text(json.dumps({"update": update}))
    cola, sst2 = tmp_path / "data" / "glue" / "CoLA", tmp_path / "data" / "glue" / "SST-2"
    cola.mkdir(parents=True)
    sst2.mkdir(parents=True)
    for split, n in (("train", 30), ("dev", 12)):
        (cola / f"{split}.tsv").write_text("".join(f"src\t{i % 2}\t\tthe dog {'barks' if i % 2 else 'bark the'} .\n"
                                                   for i in range(n)))
        (sst2 / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"a {['bad', 'good'][i % 2]} film\t{i % 2}\n"
                                                                         for i in range(n)))
    wsc = tmp_path / "wsc.jsonl"
    wsc.write_text(json.dumps({"sentence": "the ball broke the window because _ was hard", "choices": ["the ball", "the window"],
                               "label": 0}) + "\n")
    out = tmp_path / "zs"
    args = ["zero-shot", str(run), "--data", str(tmp_path / "data"), "--tasks", "cola,sst2,winograd",
            "--winograd", str(wsc), "--out", str(out), "--limit", "8", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    import csv

    rows = list(csv.DictReader(open(out / "zeroshot.csv", encoding="utf-8")))
    assert sorted((int(r["update"]), r["task"]) for r in rows) == [
        (u, t) for u in (10, 40) for t in ("cola", "sst2", "winograd")]
    assert {r["examples"] for r in rows if r["task"] != "winograd"} == {"8"} and {r["run"] for r in rows} == {"run"}
    assert (out / "zeroshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a kill that cut the last line: that evaluation alone is redone; the finished ones are kept
    lines = (out / "zeroshot.jsonl").read_text().splitlines()
    (out / "zeroshot.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert main(args) == 0
    again = [json.loads(line) for line in (out / "zeroshot.jsonl").read_text().splitlines()]
    assert again[:-1] == [json.loads(line) for line in lines[:-1]]
    assert {(r["update"], r["task"]) for r in again} == {(int(r["update"]), r["task"]) for r in rows}

    assert main(args[:4] + ["--tasks", "winograd", "--out", str(out)]) == 2
    assert "needs --winograd" in capsys.readouterr().err
