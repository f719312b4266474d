"""The analyses' result files: reused only for the settings that made them, written atomically, read back
without tracebacks, and plotted legibly."""

import csv
import json
import os

import pytest
import torch

from gpt1.checkpoint import copy_tokenizer, save_model
from gpt1.model import GPT, GPTConfig
from conftest import one_line, require_shared_data, run


def tiny_model(path, seed=0, vocab=True):
    torch.manual_seed(seed)
    model = save_model(GPT(GPTConfig(vocab_size=40478, n_positions=48, n_embd=16, n_layer=2, n_head=2)), path)
    if vocab:
        copy_tokenizer(require_shared_data("gpt1_vocab"), model / "tokenizer")
    return model


def write_glue(data_root, folder="SST-2", **sizes):
    """A separable binary task in GLUE's SST-2 layout under data_root/glue/<folder>, `sizes` examples a split."""
    glue = data_root / "glue" / folder
    glue.mkdir(parents=True)
    for name, n in sizes.items():
        rows = [f"the film was {['awful', 'superb'][i % 2]} indeed\t{i % 2}" for i in range(n)]
        (glue / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return glue


# ---------------------------------------------------------------------------------------------------
# Ablation and layer transfer.


def test_ablation_reuses_a_run_only_for_the_same_model_and_settings(tmp_path, capsys, monkeypatch):
    model = tiny_model(tmp_path / "pretrained")
    write_glue(tmp_path / "data", train=24, dev=8)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ab"
    args = ["ablation", "--model", "pretrained", "--data", "data", "--out", out, "--tasks", "sst2",
            "--settings", "pretrained", "--epochs", "1", "--batch-size", "8"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    report = out / "pretrained" / "sst2" / "report.json"
    row = json.loads(report.read_text())
    settings = row["settings"]
    assert settings["model"] == str(model.resolve())
    assert settings["data"] == str((tmp_path / "data/glue/SST-2").resolve())
    assert (settings["lr"], settings["epochs"], settings["seed"], settings["lm_coef"]) == (6.25e-5, 1, 0, 0.0)
    assert (settings["train_subset"], settings["max_len"]) == (2000, 48)  # the plan's 64 tokens cut to the model's 48
    assert next(csv.DictReader(open(out / "ablation.csv")))["settings.model"] == str(model.resolve())
    finished = report.read_bytes(), report.stat().st_mtime_ns

    # the same model named from another folder: the same run, reused
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run(capsys, *["../pretrained" if a == "pretrained" and i == 2 else "../data" if a == "data" else a
                                  for i, a in enumerate(args)])
    assert code == 0, err
    assert (report.read_bytes(), report.stat().st_mtime_ns) == finished
    monkeypatch.chdir(tmp_path)

    # another setting, another model, another set of examples: refused before any work, nothing changed
    tiny_model(tmp_path / "other", seed=1)
    for changed, expected in ((["--lr", "1e-4"], "lr 6.25e-05 -> 0.0001"), (["--seed", "3"], "seed 0 -> 3"),
                              (["--model", "other"], f"model {model.resolve()} -> {(tmp_path / 'other').resolve()}")):
        code, _, err = run(capsys, *args, *changed)
        line = one_line(err)
        assert code == 2 and f"{report}: made with other settings" in line and expected in line, line
        assert "choose another --out" in line
        assert (report.read_bytes(), report.stat().st_mtime_ns) == finished
    # the other settings of the folder's experiment must match too: they share its table
    code, _, err = run(capsys, *args[:-6], "--settings", "scratch", "--epochs", "2", "--batch-size", "8")
    assert code == 2 and "epochs 1 -> 2" in one_line(err)

    # a damaged report.json: noted, and that run is redone; no traceback
    report.write_text('{"setting": "pretrained", "task": "sst2", "dev_acc')
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert f"note: {report}: malformed JSON at line 1" in err and "Traceback" not in err
    assert json.loads(report.read_text())["settings"] == settings

    # other weights at the same path (pre-trained again into the same folder): refused, not reused
    tiny_model(tmp_path / "pretrained", seed=2)
    code, _, err = run(capsys, *args)
    line = one_line(err)
    assert code == 2 and f"{report}: made with other settings (weights {settings['weights']} -> " in line, line


def test_layer_transfer_refuses_runs_of_other_settings_and_plots_whole_numbers_of_blocks(tmp_path, capsys):
    model = tiny_model(tmp_path / "pretrained")
    write_glue(tmp_path / "data", train=16, dev=8)
    out = tmp_path / "lt"
    args = ["layer-transfer", "--model", model, "--data", tmp_path / "data", "--out", out, "--tasks", "sst2",
            "--layers", "1", "--epochs", "1", "--batch-size", "8"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    report = out / "layers-01" / "sst2" / "report.json"
    assert json.loads(report.read_text())["settings"]["transfer_layers"] == 1
    code, _, err = run(capsys, *args, "--lm-coef", "0")
    assert code == 2 and "lm_coef 0.5 -> 0.0" in one_line(err)
    # the runs of other k share the folder's table: another --lm-coef is refused for them too
    code, _, err = run(capsys, *args[:-6], "--layers", "0", "--epochs", "1", "--batch-size", "8", "--lm-coef", "0")
    assert code == 2 and f"{report}: made with other settings (lm_coef 0.5 -> 0.0)" in one_line(err)
    assert not (out / "layers-00").exists()


def plotted(monkeypatch):
    """Capture the figures that gpt1.plots would write, instead of writing and closing them."""
    import gpt1.plots

    figures = []

    def capture(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(gpt1.plots, "save_figure", capture)
    monkeypatch.setattr("gpt1.zeroshot.save_figure", capture)
    return figures


def inside(inner, outer):
    return inner.x0 >= outer.x0 - 0.5 and inner.x1 <= outer.x1 + 0.5 and inner.y0 >= outer.y0 - 0.5 \
        and inner.y1 <= outer.y1 + 0.5


def test_the_ablation_plot_shows_its_whole_title_an_x_label_and_a_legend_clear_of_the_bars(tmp_path, monkeypatch):
    from gpt1.ablation import SETTINGS, write_table

    figures = plotted(monkeypatch)
    rows = [{"setting": s, "task": t, "dev_accuracy": 0.5 + 0.1 * i, **({"dev_mcc": 0.2} if t == "cola" else {})}
            for i, s in enumerate(SETTINGS) for t in ("sst2", "cola")]
    write_table(rows, tmp_path)
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    assert inside(fig._suptitle.get_window_extent(renderer), fig.bbox)
    assert "auxiliary LM" in fig._suptitle.get_text() and ax.get_xlabel() == "task"
    for text in (ax.xaxis.label, ax.yaxis.label):
        assert inside(text.get_window_extent(renderer), fig.bbox)
    legend = ax.get_legend().get_window_extent(renderer)
    assert inside(legend, fig.bbox)
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    assert len(bars) == 8 and not any(legend.overlaps(bar) for bar in bars)


def test_the_layer_transfer_plot_has_whole_numbers_of_blocks_on_its_x_axis(tmp_path, monkeypatch):
    from gpt1.ablation import write_layer_transfer

    figures = plotted(monkeypatch)
    rows = [{"task": "rte", "transfer_layers": k, "dev_accuracy": 0.5 + 0.01 * k} for k in (0, 2, 3)]
    write_layer_transfer(rows, tmp_path)
    (fig,) = figures
    fig.canvas.draw()
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    assert ax.get_xlabel() == "blocks transferred (k)"


def test_result_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failure while writing (a full disk; a kill) leaves the earlier table, not half a file."""
    from gpt1.ablation import write_table

    rows = [{"setting": "pretrained", "task": "sst2", "dev_accuracy": 0.75}]
    write_table(rows, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"ablation.csv", "ablation.md", "ablation.png"}

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write_table(rows + [{"setting": "scratch", "task": "sst2", "dev_accuracy": 0.5}], tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left either


# ---------------------------------------------------------------------------------------------------
# Zero-shot.


def test_zero_shot_reuses_rows_only_for_the_same_settings_and_keys_models_by_absolute_path(tmp_path, capsys,
                                                                                          monkeypatch):
    model = tiny_model(tmp_path / "model")  # a model folder: no run, no update number
    write_glue(tmp_path / "data", train=4, dev=12)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "zs"
    args = ["zero-shot", "model", "--data", "data", "--tasks", "sst2", "--out", out, "--limit", "8", "--device", "cpu"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    results = out / "zeroshot.jsonl"
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["model"] == str(model.resolve()) and row["update"] is None and row["examples"] == 8
    assert row["settings"] == {"limit": 8, "seed": 0, "data": str((tmp_path / "data/glue/SST-2").resolve())}
    before = results.read_bytes()

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run(capsys, *[{"model": "../model", "data": "../data"}.get(a, a) for a in args])
    assert code == 0, err
    assert results.read_bytes() == before  # the same model: not scored again, no second row

    for changed, expected in ((["--limit", "4"], "limit 8 -> 4"), (["--seed", "1"], "seed 0 -> 1")):
        code, _, err = run(capsys, *[{"model": "../model", "data": "../data"}.get(a, a) for a in args], *changed)
        line = one_line(err)
        assert code == 2 and f"{results}:1: sst2 was scored with other settings ({expected})" in line, line
        assert "choose another --out" in line
        assert results.read_bytes() == before

    # a damaged line other than the last (which a kill may cut) is named, not a traceback
    results.write_text("[1, 2]\n" + before.decode())
    code, _, err = run(capsys, *[{"model": "../model", "data": "../data"}.get(a, a) for a in args])
    assert code == 2 and f"{results}:1: not a zero-shot result" in one_line(err)
    results.write_bytes(before)

    # other weights written to the same folder: its row is not taken for theirs
    tiny_model(tmp_path / "model", seed=1)
    code, _, err = run(capsys, *[{"model": "../model", "data": "../data"}.get(a, a) for a in args])
    line = one_line(err)
    assert code == 2 and f"{results}:1: {model.resolve()} was scored from other weights (weights {row['weights']} -> " \
        in line and "choose another --out" in line, line
    assert results.read_bytes() == before


def test_zero_shot_checks_its_inputs_before_creating_its_output(tmp_path, capsys):
    model = tiny_model(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "zs"
    for arguments, message in (
        ([model, "--tasks", "sst2,colla", "--data", tmp_path], "--tasks 'sst2,colla': unknown 'colla'"),
        ([model, "--tasks", "sst2", "--data", tmp_path / "nowhere"], "holds no glue/SST-2 (for sst2)"),
        ([model, "--tasks", "winograd"], "needs --winograd"),
        ([tmp_path / "empty", "--tasks", "winograd", "--winograd", tmp_path / "w.jsonl"], ""),
    ):
        if "--winograd" in arguments:
            (tmp_path / "w.jsonl").write_text(json.dumps({"sentence": "a _ b", "choices": ["x", "y"], "label": 0}))
            message = f"{tmp_path / 'empty'}: holds no config.json or model.safetensors"
        code, _, err = run(capsys, "zero-shot", *arguments, "--out", out, "--device", "cpu")
        assert code == 2 and message in one_line(err)
        assert not out.exists()


def test_the_zero_shot_plot_shows_models_without_an_update_number(tmp_path, monkeypatch):
    from gpt1.zeroshot import write_outputs

    figures = plotted(monkeypatch)
    row = {"metric": "accuracy", "score": 0.6}
    rows = [{**row, "run": "release", "model": "/m/release", "update": None, "task": "sst2", "normalised": 0.25},
            {**row, "run": "release", "model": "/m/release", "update": None, "task": "cola", "normalised": -0.1}]
    write_outputs(rows, tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    assert sorted(round(p.get_height(), 6) for p in ax.patches) == [-0.1, 0.25]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["release"]

    # beside the checkpoints of a run: a line over the updates, and bars for the model without one
    rows += [{**row, "run": "books", "model": f"/r/books/step-{u}", "update": u, "task": "sst2", "normalised": u / 100}
             for u in (10, 40)]
    write_outputs(rows, tmp_path)
    lines, bars = figures[1].axes
    assert [list(line.get_xdata()) for line in lines.get_lines() if line.get_label() == "sst2 (books)"] == [[10, 40]]
    assert len(bars.patches) == 2
    assert (tmp_path / "zeroshot.csv").read_text().startswith("run,model,update,task,metric,score,normalised")


def test_finetune_names_a_folder_that_holds_no_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    code, _, err = run(capsys, "finetune", "--model", tmp_path / "empty", "--task", "classification", "--train",
                       tmp_path / "train.csv", "--out", tmp_path / "ft")
    line = one_line(err)
    assert code == 2 and f"{tmp_path / 'empty'}: holds no config.json or model.safetensors" in line
    assert "not a model, run or checkpoint folder" in line and "tokenizer" not in line
    assert not (tmp_path / "ft").exists()


def test_an_ablation_with_a_wrong_data_folder_names_every_missing_task_before_any_work(tmp_path, capsys):
    model = tiny_model(tmp_path / "model")
    write_glue(tmp_path / "data", train=4, dev=4)
    code, _, err = run(capsys, "ablation", "--model", model, "--data", tmp_path / "data" / "glue", "--out",
                       tmp_path / "ab", "--tasks", "sst2,rte")
    line = one_line(err)
    assert code == 2
    assert f"--data {tmp_path / 'data' / 'glue'}: holds no glue/SST-2 (for sst2), glue/RTE (for rte)" in line
    code, _, err = run(capsys, "ablation", "--model", model, "--data", tmp_path / "data", "--out", tmp_path / "ab",
                       "--tasks", "sst2,rte")
    assert code == 2 and "holds no glue/RTE (for rte)" in one_line(err)  # not after fine-tuning sst2
    assert not (tmp_path / "ab").exists()


def test_an_interrupted_ablation_run_is_not_reported_as_finished(tmp_path, capsys, monkeypatch):
    """Ctrl-C stops fine-tuning cleanly (the model so far is saved), but that run is not finished: the ablation
    stops with the signal's exit code and writes no report.json, so that a rerun redoes the run."""
    import signal

    import gpt1.finetune

    model = tiny_model(tmp_path / "pretrained")
    write_glue(tmp_path / "data", train=24, dev=8)
    out = tmp_path / "ab"
    args = ["ablation", "--model", model, "--data", tmp_path / "data", "--out", out, "--tasks", "sst2",
            "--settings", "pretrained,scratch", "--epochs", "2", "--batch-size", "8"]
    train_step = gpt1.finetune.accumulate_gradients

    def ctrl_c_in_the_first_update(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return train_step(*a, **kw)

    monkeypatch.setattr(gpt1.finetune, "accumulate_gradients", ctrl_c_in_the_first_update)
    code, _, err = run(capsys, *args)
    assert code == 130, err
    assert (out / "pretrained" / "sst2" / "results.json").exists()  # what fine-tuning kept
    assert not (out / "pretrained" / "sst2" / "report.json").exists() and not (out / "scratch").exists()
    monkeypatch.setattr(gpt1.finetune, "accumulate_gradients", train_step)
    code, _, err = run(capsys, *args)
    assert code == 0, err
    for setting in ("pretrained", "scratch"):
        assert json.loads((out / setting / "sst2" / "report.json").read_text())["best_epoch"] in (1, 2)
