"""Fine-tuning: the input transformations, the heads, the auxiliary loss, layer transfer, the training loop."""

import contextlib
import json
import random
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gpt1.checkpoint import save_model
from gpt1.datasets import TaskData
from gpt1.finetune import (
    FinetuneConfig, InputTransform, TaskModel, accumulate_gradients, build_task_model, collate, finetune, finetune_lr,
    length_groups, lm_targets, load_task_model, predict_logits,
)
from gpt1.model import GPT, GPTConfig
from conftest import require_shared_data


@pytest.fixture(scope="module")
def tokenizer():
    from gpt1.tokenizer import load_tokenizer

    return load_tokenizer(require_shared_data("gpt1_vocab"))


def small_config(**kw):
    return GPTConfig(**{**dict(vocab_size=40478, n_positions=48, n_embd=32, n_layer=2, n_head=4), **kw})


@pytest.fixture
def pretrained(tmp_path):
    torch.manual_seed(0)
    return save_model(GPT(small_config()), tmp_path / "pretrained")


def ex(a, b=None, choices=None, label=None):
    return SimpleNamespace(text_a=a, text_b=b, choices=choices, label=label)


def test_transformations_follow_the_paper(tokenizer):
    s, d, e = tokenizer.start_id, tokenizer.delimiter_id, tokenizer.extract_id
    assert (s, d, e) == (40478, 40479, 40480)
    enc = tokenizer.encode
    one = InputTransform(tokenizer, "classification", 64)("A fine film.")
    assert one.sequences == [[s, *enc("A fine film."), e]] and not one.truncated
    nli = InputTransform(tokenizer, "entailment", 64)("A man sleeps.", "Nobody sleeps.")
    assert nli.sequences == [[s, *enc("A man sleeps."), d, *enc("Nobody sleeps."), e]]
    sim = InputTransform(tokenizer, "similarity", 64)("One text.", "Another one.")
    assert sim.sequences == [[s, *enc("One text."), d, *enc("Another one."), e],
                             [s, *enc("Another one."), d, *enc("One text."), e]]
    mc = InputTransform(tokenizer, "multiple-choice", 64)("The story.", "Why?", ["Yes.", "No."])
    assert mc.sequences == [[s, *enc("The story."), *enc("Why?"), d, *enc(answer), e] for answer in ("Yes.", "No.")]


def test_truncation_keeps_question_and_answer_and_cuts_the_context(tokenizer):
    article = " ".join(["word"] * 100)
    mc = InputTransform(tokenizer, "multiple-choice", 20)(article, "What is it?", ["A long answer here.", "B."])
    assert mc.truncated
    q = tokenizer.encode("What is it?")
    for seq, answer in zip(mc.sequences, ["A long answer here.", "B."]):
        a = tokenizer.encode(answer)
        assert len(seq) == 20
        assert seq[-1 - len(a) : -1] == a and seq[-2 - len(a) - len(q) : -2 - len(a)] == q  # both whole
    pair = InputTransform(tokenizer, "entailment", 16)(" ".join(["cat"] * 30), "a dog .")
    assert pair.truncated and len(pair.sequences[0]) == 16
    assert pair.sequences[0][-5:-1] == [tokenizer.delimiter_id, *tokenizer.encode("a dog .")]  # short one whole
    single = InputTransform(tokenizer, "classification", 8)(" ".join(["cat"] * 30))
    assert single.truncated and len(single.sequences[0]) == 8 and single.sequences[0][-1] == tokenizer.extract_id


def test_similarity_is_symmetric_and_multiple_choice_is_permutation_equivariant():
    torch.manual_seed(0)
    config = small_config(vocab_size=100)
    sim = TaskModel(config, "similarity", 2).eval()
    a, b = [1, 5, 6, 2, 7, 8, 9, 3], [1, 7, 8, 9, 2, 5, 6, 3]
    ids, lengths, _ = collate([SimpleNamespace(sequences=[a, b], label=0)])
    swapped, _, _ = collate([SimpleNamespace(sequences=[b, a], label=0)])
    torch.testing.assert_close(sim(ids, lengths)[0], sim(swapped, lengths)[0])
    mc = TaskModel(config, "multiple-choice", 1).eval()
    seqs = [[1, 5, 2, 10, 3], [1, 5, 2, 11, 12, 3], [1, 5, 2, 13, 3]]
    ids, lengths, _ = collate([SimpleNamespace(sequences=seqs, label=0)])
    perm = [2, 0, 1]
    ids_p, lengths_p, _ = collate([SimpleNamespace(sequences=[seqs[i] for i in perm], label=0)])
    logits = mc(ids, lengths)[0]
    assert logits.shape == (1, 3)
    torch.testing.assert_close(mc(ids_p, lengths_p)[0], logits[:, perm])


def test_padding_changes_neither_the_task_logits_nor_the_lm_loss():
    torch.manual_seed(0)
    model = TaskModel(small_config(vocab_size=100), "classification", 3).eval()
    short, long = [1, 5, 6, 3], [1, 7, 8, 9, 10, 11, 3]
    batch = [SimpleNamespace(sequences=[short], label=0), SimpleNamespace(sequences=[long], label=1)]
    ids, lengths, _ = collate(batch)
    logits, lm_loss = model(ids, lengths, lm_loss=True)
    assert model(ids, lengths)[1] is None
    torch.testing.assert_close(model(ids, lengths)[0], logits)
    alone_ids, alone_len, _ = collate(batch[:1])
    alone_logits, alone_lm_loss = model(alone_ids, alone_len, lm_loss=True)
    torch.testing.assert_close(logits[:1], alone_logits)
    long_ids, long_len, _ = collate(batch[1:])
    per_token = (alone_lm_loss * 3 + model(long_ids, long_len, lm_loss=True)[1] * 6) / 9  # 3 and 6 predicted tokens
    torch.testing.assert_close(lm_loss, per_token)


class _CountWeightCasts(TorchDispatchMode):
    """Counts the copies made of the given tensors with another dtype (autocast's casts of the weights)."""

    def __init__(self, tensors):
        super().__init__()
        self.addresses, self.casts = {t.data_ptr() for t in tensors}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.addresses:
            self.casts += 1
        return func(*args, **(kwargs or {}))


def test_prediction_under_bf16_casts_each_weight_once_for_all_batches():
    torch.manual_seed(0)
    model = TaskModel(small_config(vocab_size=100), "classification", 3)
    examples = [SimpleNamespace(sequences=[[1] + list(range(5, 5 + n)) + [3]], label=0) for n in range(10)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    with _CountWeightCasts(model.parameters()) as counted:
        logits = predict_logits(model, examples, batch_size=4, autocast=autocast)
    longest_first = examples[::-1]
    expected, casts_per_batch = [], []
    for start in range(0, 10, 4):  # the same batches, each in an autocast region of its own
        ids, lengths, _ = collate(longest_first[start : start + 4])
        with _CountWeightCasts(model.parameters()) as batch_counted, torch.no_grad(), autocast:
            expected.append(model(ids, lengths)[0].float())
        casts_per_batch.append(batch_counted.casts)
    torch.testing.assert_close(logits, torch.cat(expected).flip(0), rtol=0, atol=0)
    assert counted.casts == casts_per_batch[0] > 0 and sum(casts_per_batch) == 3 * counted.casts


class _MatrixProductDtypes(TorchDispatchMode):
    """The dtypes of the matrix products that run (bf16 under autocast, fp32 without)."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
            self.dtypes.add(args[-1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype, product_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_other_splits_are_scored_in_the_dtype_of_fine_tuning(tokenizer, tmp_path, capsys, dtype, product_dtype):
    from gpt1.finetune import evaluate_other_splits, save_task_model

    torch.manual_seed(0)
    info = {"name": "mine", "kind": "classification", "label_names": ["bad", "good"], "n_outputs": 2,
            "metrics": ["accuracy"], "max_len": 48, "columns": None}
    save_task_model(TaskModel(small_config(vocab_size=40478 + 3), "classification", 2), info, None, tmp_path / "model")
    test = [SimpleNamespace(text_a=f"a {word} film", text_b=None, choices=None, label=i % 2)
            for i, word in enumerate(["fine", "dull", "good", "bad"] * 3)]
    task = TaskData("mine", "classification", ["bad", "good"], ["accuracy"], {"train": [], "dev": [], "test": test})
    with _MatrixProductDtypes() as products:
        results = evaluate_other_splits(task, tokenizer, tmp_path, device="cpu", dtype=dtype)
    assert results["test"]["examples"] == 12 and 0 <= results["test"]["accuracy"] <= 1
    assert products.dtypes == {product_dtype}
    assert "predict" in capsys.readouterr().err  # the progress bar, counting tokens


def _padded_tokens(groups):
    return sum(len(g) * max(len(ex.sequences) * max(map(len, ex.sequences)) for ex in g) for g in groups)


def test_length_groups_cover_the_batch_once_in_the_cheapest_contiguous_split():
    rng = random.Random(0)
    for trial in range(30):
        k = rng.choice([1, 2])
        batch = [SimpleNamespace(sequences=[[1] * rng.randint(2, 40)] * k, label=i) for i in range(rng.randint(1, 9))]
        max_size, overhead = rng.randint(1, 4), rng.choice([0, 16, 64, 10_000])
        groups = length_groups(batch, max_size, overhead)
        assert sorted(id(ex) for g in groups for ex in g) == sorted(map(id, batch))
        assert all(1 <= len(g) <= max_size for g in groups)
        flat = [len(ex.sequences[0]) for g in groups for ex in g]
        assert flat == sorted(flat, reverse=True)
        # brute force over every way to cut the length-sorted batch into groups of at most max_size
        n, best = len(batch), None
        for mask in range(2 ** (n - 1)):
            cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
            parts = [list(range(a, b)) for a, b in zip(cuts, cuts[1:])]
            if any(len(part) > max_size for part in parts):
                continue
            ordered = [[flat[i] for i in part] for part in parts]
            cost = sum(len(part) * max(part) * k + overhead for part in ordered)
            best = cost if best is None else min(best, cost)
        assert _padded_tokens(groups) + overhead * len(groups) == best, trial
    # a large overhead keeps the fewest groups; none keeps examples of different lengths apart
    batch = [SimpleNamespace(sequences=[[1] * n], label=0) for n in (30, 3, 29, 4, 5, 31)]
    assert [len(g) for g in length_groups(batch, 3, 10_000)] == [3, 3]
    assert [[len(ex.sequences[0]) for ex in g] for g in length_groups(batch, 6, 0)] == [[31], [30], [29], [5], [4], [3]]


def test_the_update_gradient_does_not_depend_on_how_the_batch_is_grouped():
    """accumulate_gradients weights each group by its share of examples and LM targets: one padded batch, groups
    of one example and the length groups give the same gradient (dropout off) and the same reported losses."""
    torch.manual_seed(0)
    model = TaskModel(small_config(vocab_size=100), "similarity", 3).eval()
    rng = random.Random(1)
    batch = [SimpleNamespace(sequences=[[rng.randrange(100) for _ in range(n)]] * 2, label=rng.randrange(3))
             for n in (3, 17, 5, 9, 30, 4)]
    assert lm_targets(batch) == 2 * (2 + 16 + 4 + 8 + 29 + 3)
    results = []
    for groups in ([batch], [[ex] for ex in batch], length_groups(batch, 2, 0)):
        model.zero_grad()
        task, lm, _ = accumulate_gradients(model, groups, 0.5, torch.device("cpu"), contextlib.nullcontext())
        results.append((task, lm, {n: p.grad.clone() for n, p in model.named_parameters()}))
    ids, lengths, labels = collate(batch)
    logits, lm_loss = model(ids, lengths, lm_loss=True)
    assert results[0][:2] == pytest.approx((model.task_loss(logits, labels).item(), lm_loss.item()), rel=1e-5)
    for task, lm, grads in results[1:]:
        assert (task, lm) == pytest.approx(results[0][:2], rel=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, results[0][2][name], rtol=1e-4, atol=1e-6, msg=name)


def test_layer_transfer_takes_embeddings_and_the_first_k_blocks(tokenizer, pretrained):
    from gpt1.checkpoint import load_model

    base = load_model(pretrained).state_dict()
    model = build_task_model(pretrained, tokenizer, "classification", 2, FinetuneConfig(transfer_layers=1))
    got = model.transformer.state_dict()
    assert got["tokens_embed.weight"].shape == (40481, 32)
    torch.testing.assert_close(got["tokens_embed.weight"][:40478], base["tokens_embed.weight"])
    assert abs(got["tokens_embed.weight"][40478:].std().item() - 0.02) < 0.01  # new rows ~ N(0, 0.02)
    torch.testing.assert_close(got["h.0.attn.c_attn.weight"], base["h.0.attn.c_attn.weight"])
    assert not torch.equal(got["h.1.attn.c_attn.weight"], base["h.1.attn.c_attn.weight"])
    scratch = build_task_model(pretrained, tokenizer, "classification", 2, FinetuneConfig(from_scratch=True))
    assert not torch.equal(scratch.transformer.state_dict()["h.0.attn.c_attn.weight"], base["h.0.attn.c_attn.weight"])


def test_schedule_is_the_original_warmup_linear():
    config = FinetuneConfig(lr=1.0, warmup_fraction=0.1)
    assert finetune_lr(0, 100, config) == 0.0
    assert finetune_lr(5, 100, config) == pytest.approx(0.5)
    assert finetune_lr(10, 100, config) == pytest.approx(0.9)
    assert finetune_lr(100, 100, config) == 0.0


def test_finetuning_learns_a_separable_task_and_keeps_the_best_epoch(tokenizer, pretrained, tmp_path):
    rng = random.Random(0)
    words = ["cat", "dog", "bird", "house", "tree", "river", "stone", "cloud"]

    def sample(label):
        cue = ["awful", "superb"][label]
        text = " ".join(rng.choice(words) for _ in range(4)) + f" {cue} " + " ".join(rng.choice(words) for _ in range(3))
        return ex(text, label=label)

    splits = {"train": [sample(i % 2) for i in range(96)], "dev": [sample(i % 2) for i in range(40)]}
    task = TaskData("toy", "classification", ["neg", "pos"], ["accuracy"], splits)
    # A randomly initialised "pre-trained" model's LM loss (~10.6) would swamp this tiny task: lambda = 0 here.
    config = FinetuneConfig(lr=3e-3, batch_size=16, micro_batch=8, epochs=4, warmup_fraction=0.05, lm_coef=0.0)
    results = finetune(task, tokenizer, require_shared_data("gpt1_vocab"), pretrained, tmp_path / "out", config,
                       progress=False)
    assert results["dev"]["accuracy"] >= 0.9
    assert results["best_epoch"] == max(range(4), key=lambda i: results["history"][i]["dev"]["accuracy"]) + 1
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["best_epoch"] == results["best_epoch"] and saved["truncated"] == {"train": 0, "dev": 0}
    assert 0 < saved["data_wait"] < 1 and saved["train_seconds"] > 0
    model, info = load_task_model(tmp_path / "out")  # the best epoch's weights, scoring as they did
    assert info["label_names"] == ["neg", "pos"] and info["kind"] == "classification"
    transform = InputTransform(tokenizer, "classification", info["max_len"])
    ids, lengths, labels = collate([transform(e.text_a, label=e.label) for e in splits["dev"]])
    with torch.no_grad():
        accuracy = (model(ids, lengths)[0].argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(results["dev"]["accuracy"])


def test_the_auxiliary_lm_loss_is_trained_when_lambda_is_positive(tokenizer, pretrained, tmp_path):
    examples = [ex("the cat sat on the mat", label=i % 2) for i in range(32)]
    task = TaskData("toy", "classification", ["a", "b"], ["accuracy"], {"train": examples})
    for coef in (0.5, 0.0):
        config = FinetuneConfig(lr=1e-2, batch_size=8, micro_batch=4, epochs=2, lm_coef=coef)
        finetune(task, tokenizer, None, pretrained, tmp_path / str(coef), config, progress=False)
        records = [json.loads(l) for l in (tmp_path / str(coef) / "metrics.jsonl").read_text().splitlines()]
        lm = [r["lm_loss"] for r in records if "lm_loss" in r]
        if coef:
            assert lm[-1] < lm[0] - 1.0  # the repeated sentence becomes predictable
        else:
            assert set(lm) == {0.0}


def test_finetune_evaluate_predict_on_user_csv_from_the_command_line(tokenizer, pretrained, tmp_path, capsys,
                                                                   monkeypatch):
    import csv
    import io

    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    rng = random.Random(1)
    for name, n in (("train", 96), ("dev", 24)):
        with open(tmp_path / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "sentiment"])
            for i in range(n):
                label = ["bad", "good"][i % 2]
                writer.writerow([f"{rng.choice(['the', 'a'])} film was {['awful', 'superb'][i % 2]} indeed", label])
    code = main(["finetune", "--model", str(pretrained), "--out", str(tmp_path / "ft"), "--task", "classification",
                 "--train", str(tmp_path / "train.csv"), "--dev", str(tmp_path / "dev.csv"), "--text", "review",
                 "--label", "sentiment", "--lr", "3e-3", "--batch-size", "16", "--epochs", "5", "--lm-coef", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "best epoch" in out
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["dev"]["accuracy"] >= 0.9

    code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "dev.csv"), "--text", "review",
                 "--label", "sentiment"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["accuracy"] == results["dev"]["accuracy"]
    # the model remembers the columns it was trained from: no options needed to read a file like the training file
    code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "dev.csv"),
                 "--out", str(tmp_path / "new" / "folder" / "scores.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads((tmp_path / "new" / "folder" / "scores.json").read_text())["accuracy"] == results["dev"]["accuracy"]

    (tmp_path / "new.jsonl").write_text('{"review": "the film was superb indeed"}\n{"review": "a film was awful indeed"}\n')
    code = main(["predict", "--model", str(tmp_path / "ft"), str(tmp_path / "new.jsonl"), "--text", "review",
                 "--out", str(tmp_path / "pred.csv")])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "pred.csv", encoding="utf-8")))
    assert [r["prediction"] for r in rows] == ["good", "bad"]
    assert abs(float(rows[0]["p_bad"]) + float(rows[0]["p_good"]) - 1) < 1e-6

    # bf16 autocast: the same labels, probabilities within bf16's rounding of fp32's (and not all equal to them)
    code = main(["predict", "--model", str(tmp_path / "ft"), str(tmp_path / "dev.csv"), "--dtype", "bf16",
                 "--device", "cpu", "--out", str(tmp_path / "pred_bf16.csv")])
    assert code == 0, capsys.readouterr().err
    code = main(["predict", "--model", str(tmp_path / "ft"), str(tmp_path / "dev.csv"), "--out",
                 str(tmp_path / "pred_fp32.csv")])
    assert code == 0, capsys.readouterr().err
    fp32, bf16 = ([(r["prediction"], float(r["p_good"])) for r in csv.DictReader(open(tmp_path / name, encoding="utf-8"))]
                  for name in ("pred_fp32.csv", "pred_bf16.csv"))
    assert [label for label, _ in bf16] == [label for label, _ in fp32]
    assert all(abs(p - q) < 2e-2 for (_, p), (_, q) in zip(fp32, bf16)) and fp32 != bf16
    if not torch.cuda.is_available():
        code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "dev.csv"), "--device", "cuda"])
        assert code == 2 and "--device cuda: this machine has no usable CUDA GPU" in capsys.readouterr().err

    code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "dev.csv"), "--split", "test"])
    assert code == 2 and "--split test: only for --benchmark" in capsys.readouterr().err
    before = (tmp_path / "dev.csv").read_bytes()
    for out, message in ((tmp_path / "dev.csv", "is the input file"), (tmp_path / "ft", "a folder")):
        code = main(["predict", "--model", str(tmp_path / "ft"), str(tmp_path / "dev.csv"), "--out", str(out)])
        assert code == 2 and message in capsys.readouterr().err
        code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "dev.csv"), "--out", str(out)])
        assert code == 2 and message in capsys.readouterr().err
    assert (tmp_path / "dev.csv").read_bytes() == before

    info = json.loads((tmp_path / "ft" / "model" / "task.json").read_text())
    (tmp_path / "ft" / "model" / "task.json").write_text(json.dumps({**info, "n_outputs": "2"}))
    code = main(["predict", "--model", str(tmp_path / "ft"), str(tmp_path / "dev.csv")])
    assert code == 2 and "task.json: kind 'classification' / n_outputs '2'" in capsys.readouterr().err
    (tmp_path / "ft" / "model" / "task.json").write_text(json.dumps(info))

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"review": "ok"}\n{"text": "no review"}\n')))
    code = main(["predict", "--model", str(tmp_path / "ft")])
    err = capsys.readouterr().err
    assert code == 2 and "error: <stdin>:2: missing column 'review'" in err and "tmp" not in err, err

    (tmp_path / "bad_dev.csv").write_text("review,sentiment\nfine film,neutral\n", encoding="utf-8")
    code = main(["evaluate", "--model", str(tmp_path / "ft"), "--data", str(tmp_path / "bad_dev.csv"), "--text",
                 "review", "--label", "sentiment"])
    err = capsys.readouterr().err
    assert code == 2 and "bad_dev.csv:2" in err and "neutral" in err


def test_a_users_task_named_like_a_glue_task_gets_no_glue_submission(pretrained, tmp_path, capsys):
    """GLUE's RTE.tsv maps class indices to RTE's labels; the user's "rte" has labels of its own."""
    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"text {i},{['mid', 'neg', 'pos'][i % 3]}\n"
                                                                  for i in range(12)))
    (tmp_path / "test.csv").write_text("text\nnew text\nother text\n")
    code = main(["finetune", "--model", str(pretrained), "--out", str(tmp_path / "ft"), "--task", "classification",
                 "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"), "--name", "rte",
                 "--epochs", "1", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "ft" / "submission").exists()
    code = main(["finetune", "--model", str(pretrained), "--out", str(tmp_path / "ft2"), "--task", "classification",
                 "--train", str(tmp_path / "train.csv"), "--text-b", "text"])
    assert code == 2 and "--text-b is for entailment" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--batch-size", "0"], "batch_size (--batch-size) must be > 0, got 0"),
    (["--epochs", "0"], "epochs (--epochs) must be > 0"),
    (["--max-len", "-1"], "max_len (--max-len) must be >= 0"),
    (["--clf-pdrop", "2"], "clf_pdrop (--clf-pdrop) must be in [0, 1)"),
    (["--dtype", "fp16"], "dtype (--dtype) must be one of 'fp32', 'bf16'"),
    (["--max-train-examples", "-1"], "max_train_examples (--max-train-examples) must be >= 0"),
    (["--max-len", "4", "--task", "entailment", "--text-b", "text"], "--max-len) 4 leaves no room for text"),
    (["--device", "nonsense"], "--device nonsense: not a device name"),
])
def test_fine_tuning_options_out_of_range_are_one_line_errors(pretrained, tmp_path, capsys, option, message):
    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    (tmp_path / "train.csv").write_text("text,label\na b c,x\nd e f,y\n")
    arguments = ["finetune", "--model", str(pretrained), "--out", str(tmp_path / "ft"), "--train",
                 str(tmp_path / "train.csv"), *option]
    code = main(arguments + ([] if "--task" in option else ["--task", "classification"]))
    err = capsys.readouterr().err
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err


@pytest.mark.parametrize("kind", ["classification", "multiple-choice"])
def test_fine_tuned_heads_export_to_hugging_face_with_equal_logits(kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    from gpt1.convert import convert
    from gpt1.finetune import save_task_model

    torch.manual_seed(0)
    config = small_config(vocab_size=103)  # 100 BPE ids + start, delimiter, extract
    model = TaskModel(config, kind, 3).eval()
    info = {"kind": kind, "label_names": ["a", "b", "c"] if kind == "classification" else None, "n_outputs": 3,
            "metrics": ["accuracy"], "max_len": 48}
    save_task_model(model, info, None, tmp_path / "ft")
    convert(tmp_path / "ft", tmp_path / "hf", "gpt1", "hf")
    rng = random.Random(0)
    seqs = [[100, *[rng.randrange(1, 100) for _ in range(n)], 101, rng.randrange(1, 100), 102] for n in (3, 9, 6)]
    if kind == "classification":
        hf = transformers.OpenAIGPTForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
        ids, lengths, _ = collate([SimpleNamespace(sequences=[s], label=0) for s in seqs])
        expected = hf(ids[:, 0]).logits
        assert hf.config.id2label == {0: "a", 1: "b", 2: "c"}
    else:
        hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "hf").eval()
        ids, lengths, _ = collate([SimpleNamespace(sequences=seqs, label=0)])
        expected = hf(ids, mc_token_ids=lengths - 1).mc_logits
    with torch.no_grad():
        torch.testing.assert_close(model(ids, lengths)[0], expected, rtol=1e-5, atol=1e-5)


def test_similarity_models_are_not_exported_because_no_hf_head_adds_two_orders(tmp_path):
    from gpt1.convert import convert
    from gpt1.errors import UserError
    from gpt1.finetune import save_task_model

    info = {"kind": "similarity", "label_names": ["0", "1"], "n_outputs": 2, "metrics": ["f1"], "max_len": 48}
    save_task_model(TaskModel(small_config(vocab_size=103), "similarity", 2), info, None, tmp_path / "ft")
    with pytest.raises(UserError, match="both input orders"):
        convert(tmp_path / "ft", tmp_path / "hf", "gpt1", "hf")
    assert not (tmp_path / "hf").exists()


def write_sst2(data_root, **sizes):
    """A separable SST-2 in GLUE's layout under data_root/glue/SST-2, `sizes` examples per split."""
    glue = data_root / "glue" / "SST-2"
    glue.mkdir(parents=True)
    for name, n in sizes.items():
        rows = [f"the film was {['awful', 'superb'][i % 2]} indeed\t{i % 2}" for i in range(n)]
        (glue / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")


def test_ablation_runs_every_setting_on_the_same_subsets_and_resumes(tokenizer, pretrained, tmp_path, capsys):
    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    write_sst2(tmp_path / "data", train=40, dev=12)
    args = ["ablation", "--model", str(pretrained), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ab"),
            "--tasks", "sst2", "--settings", "pretrained+aux,scratch", "--epochs", "1", "--batch-size", "8"]
    assert main(args) == 0, capsys.readouterr().err
    table = (tmp_path / "ab" / "ablation.md").read_text()
    assert "| pretrained+aux |" in table and "| scratch |" in table
    assert (tmp_path / "ab" / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import csv

    rows = list(csv.DictReader(open(tmp_path / "ab" / "ablation.csv", encoding="utf-8")))
    assert [(r["setting"], r["train"], r["dev"]) for r in rows] == [("pretrained+aux", "40", "12"), ("scratch", "40", "12")]
    runs = {s: json.loads((tmp_path / "ab" / s / "sst2" / "results.json").read_text()) for s in ("pretrained+aux", "scratch")}
    assert runs["pretrained+aux"]["config"]["lm_coef"] == 0.5 and runs["pretrained+aux"]["pretrained"] is not None
    assert runs["scratch"]["config"]["lm_coef"] == 0.0 and runs["scratch"]["pretrained"] is None

    finished = (tmp_path / "ab" / "scratch" / "sst2" / "results.json").stat().st_mtime_ns
    assert main(args) == 0  # a second call reuses the finished runs
    assert (tmp_path / "ab" / "scratch" / "sst2" / "results.json").stat().st_mtime_ns == finished
    assert main(args[:-6] + ["--tasks", "mnli9"]) == 2 and "mnli9" in capsys.readouterr().err


def test_layer_transfer_fine_tunes_once_per_k_and_plots_dev_score_against_k(tokenizer, pretrained, tmp_path, capsys):
    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    write_sst2(tmp_path / "data", train=24, dev=8)
    out = tmp_path / "lt"
    args = ["layer-transfer", "--model", str(pretrained), "--data", str(tmp_path / "data"), "--out", str(out),
            "--tasks", "sst2", "--layers", "0,2", "--epochs", "1", "--batch-size", "8"]
    assert main(args) == 0, capsys.readouterr().err
    import csv

    rows = list(csv.DictReader(open(out / "layer_transfer.csv", encoding="utf-8")))
    assert [(r["task"], r["transfer_layers"], r["train"], r["dev"]) for r in rows] == [
        ("sst2", "0", "24", "8"), ("sst2", "2", "24", "8")]
    for k in (0, 2):
        results = json.loads((out / f"layers-{k:02d}" / "sst2" / "results.json").read_text())
        assert results["config"]["transfer_layers"] == k and results["config"]["from_scratch"] is False
    assert (out / "layer_transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sst2 dev accuracy: k=0 " in capsys.readouterr().out
    assert main(args[:-6] + ["--layers", "3"]) == 2 and "the model has 2 blocks" in capsys.readouterr().err
    assert main(args[:-6] + ["--layers", "0,two"]) == 2 and "comma-separated block counts" in capsys.readouterr().err


def test_an_interrupted_finetune_keeps_the_best_so_far_and_replaces_the_earlier_run(tokenizer, pretrained, tmp_path,
                                                                                     capsys, monkeypatch):
    import os
    import signal

    import gpt1.finetune
    from gpt1.checkpoint import copy_tokenizer
    from gpt1.cli import main

    copy_tokenizer(require_shared_data("gpt1_vocab"), pretrained / "tokenizer")
    for name, n in (("train", 48), ("dev", 8)):
        rows = [f"the film was {['awful', 'superb'][i % 2]},{['bad', 'good'][i % 2]}" for i in range(n)]
        (tmp_path / f"{name}.csv").write_text("review,sentiment\n" + "\n".join(rows) + "\n", encoding="utf-8")
    args = ["finetune", "--model", str(pretrained), "--out", str(tmp_path / "ft"), "--task", "classification",
            "--train", str(tmp_path / "train.csv"), "--dev", str(tmp_path / "dev.csv"), "--text", "review",
            "--label", "sentiment", "--batch-size", "16", "--lm-coef", "0"]
    assert main([*args, "--epochs", "1"]) == 0  # an earlier, finished run in the same folder
    capsys.readouterr()

    calls = []
    train_step = gpt1.finetune.accumulate_gradients

    def ctrl_c_in_the_fourth_update(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # the first update of epoch 2 (3 updates of 16 per epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return train_step(*a, **kw)

    monkeypatch.setattr(gpt1.finetune, "accumulate_gradients", ctrl_c_in_the_fourth_update)
    code = main([*args, "--epochs", "3"])
    out, err = capsys.readouterr()
    assert code == 130, err
    assert "replacing the earlier fine-tuning" in err and "interrupted at update 4" in out
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["interrupted"] and [r["update"] for r in results["history"]] == [3, 4]
    assert results["history"][-1]["partial"] and not results["history"][0]["partial"]
    assert results["config"]["epochs"] == 3 and "other_splits" not in results
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if "lr" in r] == [1, 2, 3, 4]  # this run's only
    model, info = load_task_model(tmp_path / "ft")  # the best of the epochs scored, saved whole
    assert info["label_names"] == ["bad", "good"]
