"""The README's main job, end to end on the built-in BBC News corpus (slow: about 10-15 minutes on 2 cores)."""

import json

import pytest

from gpt1.demo import bbc_news_dir, bbc_topic_task


def test_bbc_topic_task_is_balanced_and_reports_the_unreadable_article():
    task = bbc_topic_task(bbc_news_dir(), per_class=10, dev_per_class=20)
    assert task.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert [sum(e.label == k for e in task.splits["train"]) for k in range(5)] == [10] * 5
    assert len(task.splits["dev"]) == 100
    train_ids = {e.source for e in task.splits["train"]}
    assert not train_ids & {e.source for e in task.splits["dev"]}
    assert any("not UTF-8" in note for note in task.notes)  # one article of the corpus is Latin-1


@pytest.mark.slow
def test_main_job_pretrains_shows_perplexity_falling_and_fine_tunes_twice(tmp_path, capsys):
    from gpt1.demo import run_demo

    result = run_demo(tmp_path / "demo")
    val = result["val"]
    # GPT-1's post-LN decoder first learns the token frequencies (the unigram model's perplexity, ~1,140
    # here), then context: it must end well below the unigram model (~620 on the development machine).
    assert val[0]["update"] == 0 and val[-1]["val_ppl"] < 0.75 * result["unigram_ppl"] < val[0]["val_ppl"] / 5
    assert result["sample"].startswith("the government said") and len(result["sample"].split()) > 20
    scores = result["finetune_accuracy"]
    assert set(scores) == {"pre-trained", "from scratch"} and all(0 <= s <= 1 for s in scores.values())
    # 5 balanced topics, chance 0.2; on the development machine 0.48 pre-trained against 0.31 from scratch.
    assert scores["pre-trained"] > max(0.35, scores["from scratch"])
    out = capsys.readouterr().out
    assert "pre-trained" in out and "from scratch" in out
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["finetune_accuracy"] == scores


def test_an_interrupted_pretraining_ends_the_demo_with_the_signals_code(tmp_path, capsys, monkeypatch):
    import gpt1.finetune
    import gpt1.pretrain
    from conftest import write_token_data
    from gpt1.cli import main

    (tmp_path / "demo" / "tokenizer").mkdir(parents=True)
    (tmp_path / "demo" / "tokenizer" / "tokenizer.json").write_text("{}")  # steps 1 and 2 done before
    write_token_data(tmp_path / "demo" / "data")
    checkpoint = str(tmp_path / "demo" / "run" / "checkpoints" / "step-00000042")
    monkeypatch.setattr(gpt1.pretrain, "pretrain", lambda *a, **kw: {
        "interrupted": True, "updates": 42, "checkpoint": checkpoint, "stop_signal": 2})  # Ctrl-C at update 42

    def must_not_run(*a, **kw):
        raise AssertionError("fine-tuning started after the user stopped the demo")

    monkeypatch.setattr(gpt1.finetune, "finetune", must_not_run)
    code = main(["demo", "--out", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert code == 130
    assert f"stopped at update 42, saved in {checkpoint}; running again resumes" in out
    assert err.strip() == "gpt1 demo: interrupted (SIGINT)"
