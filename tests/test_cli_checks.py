"""The command line's checks of what a user names: a fine-tuned model against the benchmark it is scored on,
unlabelled splits, and the allowed names of options, listed in their help."""

import json

import pytest

from gpt1.checkpoint import copy_tokenizer
from gpt1.cli import build_parser
from gpt1.model import GPTConfig
from conftest import one_line, require_shared_data, run


def saved_task_model(folder, info: dict):
    """An untrained model with the GPT-1 vocabulary, saved as `gpt1 finetune` saves one with this task.json."""
    import torch

    from gpt1.finetune import TaskModel, save_task_model

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40478 + 3, n_positions=48, n_embd=16, n_layer=1, n_head=2)
    info = {"metrics": ["accuracy"], "max_len": 48, "columns": None, **info}
    save_task_model(TaskModel(config, info["kind"], info["n_outputs"]), info, None, folder / "model")
    copy_tokenizer(require_shared_data("gpt1_vocab"), folder / "model" / "tokenizer")
    return folder


@pytest.fixture
def sst2_model(tmp_path):
    """A model saved as one fine-tuned on SST-2: 2 classes, "0" and "1"."""
    return saved_task_model(tmp_path / "ft", {"name": "sst2", "kind": "classification", "label_names": ["0", "1"],
                                              "n_outputs": 2})


def test_a_second_text_is_refused_for_a_model_that_learnt_one_and_required_for_one_that_learnt_two(
        sst2_model, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("text,text_b,label\na cat sat .,a dog ran .,1\n")
    for command in (["evaluate", "--data", pairs], ["predict", pairs]):
        code, out, err = run(capsys, command[0], "--model", sst2_model, *command[1:], "--text-b", "text_b")
        assert code == 2 and not out
        assert f"{sst2_model} is a classification model, which reads one text column; --text-b is for" in one_line(err)

    regression = {"kind": "regression", "label_names": None, "n_outputs": 1, "metrics": ["pearson"]}
    one_text = saved_task_model(tmp_path / "one", {**regression, "name": "scores",
                                                   "columns": {"text": "text", "text_b": None, "label": "label"}})
    code, out, err = run(capsys, "evaluate", "--model", one_text, "--data", pairs, "--text-b", "text_b")
    assert code == 2 and f"{one_text} was fine-tuned on one text per input: --text-b text_b would give it two" \
        in one_line(err)
    code, out, err = run(capsys, "predict", "--model", one_text, pairs)  # its own columns: one text, scored
    assert code == 0 and out.count("prediction") == 1, err

    stsb = saved_task_model(tmp_path / "stsb", {**regression, "name": "stsb"})  # a benchmark's: pairs
    code, out, err = run(capsys, "predict", "--model", stsb, pairs, "--text-b", "")
    assert code == 2 and f"{stsb} was fine-tuned on two texts per input: name the second one's column with " \
        "--text-b" in one_line(err)


def test_evaluate_refuses_a_benchmark_of_another_kind_or_other_classes_than_the_models(sst2_model, tmp_path, capsys):
    race = tmp_path / "race" / "RACE" / "dev" / "middle"
    race.mkdir(parents=True)
    (race / "1.txt").write_text(json.dumps({"article": "the cat sat .", "questions": ["who sat ?"],
                                            "options": [["the cat", "a dog", "a cow", "no one"]], "answers": ["A"],
                                            "id": "1.txt"}))
    code, out, err = run(capsys, "evaluate", "--model", sst2_model, "--benchmark", "race", "--data", tmp_path / "race")
    line = one_line(err)
    assert code == 2 and not out
    assert f"{sst2_model}: fine-tuned on sst2 (classification, 2 outputs 0, 1), which does not fit --benchmark " \
           f"race (multiple-choice, 4 outputs)" in line, line

    rte = tmp_path / "RTE"
    rte.mkdir()
    (rte / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta cat sat .\ta cat sat .\tentailment\n")
    code, _, err = run(capsys, "evaluate", "--model", sst2_model, "--benchmark", "rte", "--data", rte)
    assert code == 2 and "which does not fit --benchmark rte (entailment, 2 outputs entailment, not_entailment)" \
        in one_line(err)

    # the same kind and classes: scored, with a note that the model was fine-tuned on another task
    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "dev.tsv").write_text("src\t1\t\tthe cat sat .\nsrc\t0\t*\tcat the sat .\n")
    code, out, err = run(capsys, "evaluate", "--model", sst2_model, "--benchmark", "cola", "--data", cola)
    assert code == 0, err
    assert json.loads(out)["examples"] == 2 and "mcc" in json.loads(out)
    assert f"note: {sst2_model} was fine-tuned on sst2; scoring it on cola" in err


def test_evaluate_on_a_split_without_labels_says_so_and_points_to_predict(sst2_model, tmp_path, capsys):
    sst2 = tmp_path / "SST-2"
    sst2.mkdir()
    (sst2 / "dev.tsv").write_text("sentence\tlabel\na fine film .\t1\na dull film .\t0\n")
    (sst2 / "test.tsv").write_text("index\tsentence\n0\ta fine film .\n1\ta dull film .\n")
    code, out, err = run(capsys, "evaluate", "--model", sst2_model, "--benchmark", "sst2", "--data", sst2,
                         "--split", "test", "--out", tmp_path / "scores.json")
    line = one_line(err)
    assert code == 2 and not out and not (tmp_path / "scores.json").exists()
    assert "--split test: 2 of the 2 examples" in line and "have no labels" in line and "gpt1 predict" in line
    code, out, err = run(capsys, "evaluate", "--model", sst2_model, "--benchmark", "sst2", "--data", sst2,
                         "--out", tmp_path / "scores.json")
    assert code == 0, err
    assert json.loads((tmp_path / "scores.json").read_text()) == json.loads(out) and "accuracy" in json.loads(out)


def test_every_option_of_the_analyses_and_evaluate_is_explained_with_its_allowed_names():
    from gpt1.ablation import SETTINGS, TASK_PLANS
    from gpt1.datasets import BENCHMARKS
    from gpt1.zeroshot import HEURISTICS

    commands = build_parser()._subparsers._group_actions[0].choices
    options = {name: {a.dest: a for a in commands[name]._actions}
               for name in ("zero-shot", "evaluate", "ablation", "layer-transfer", "predict")}
    for name, actions in options.items():
        for dest, action in actions.items():
            assert action.help, f"{name} {dest} has no help"
    assert "seed" in options["zero-shot"] and "device" in options["zero-shot"]
    assert sorted(options["evaluate"]["benchmark"].choices) == sorted(BENCHMARKS)
    for name in BENCHMARKS:
        assert name in options["evaluate"]["benchmark"].help
    for option, names in (("tasks", TASK_PLANS), ("settings", SETTINGS)):
        assert all(n in options["ablation"][option].help for n in names), options["ablation"][option].help
    assert all(n in options["zero-shot"]["tasks"].help for n in HEURISTICS)
    for name in ("ablation", "layer-transfer", "zero-shot"):
        assert "choose another --out" in options[name]["out"].help
    # predict reads a file, not a benchmark: its help does not offer one, and it refuses one
    assert "benchmark" not in commands["predict"].format_help()
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["predict", "--model", "m", "--benchmark", "sst2"])
    assert stop.value.code == 2


@pytest.mark.parametrize("argv, message", [
    (["ablation", "--settings", "pretrained,bogus"], "--settings 'pretrained,bogus': unknown 'bogus' (choose from "
                                                     "pretrained+aux, pretrained, scratch, scratch+aux)"),
    (["ablation", "--tasks", "sst2,mnli"], "--tasks 'sst2,mnli': unknown 'mnli' (choose from sst2, cola,"),
    (["ablation", "--tasks", ","], "--tasks ',': names nothing"),
    (["layer-transfer", "--tasks", "race,rtee"], "--tasks 'race,rtee': unknown 'rtee'"),
])
def test_a_wrong_name_in_a_list_option_is_one_line_naming_it(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, argv[0], "--model", tmp_path, "--data", tmp_path, "--out", tmp_path / "out", *argv[1:])
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "out").exists()
