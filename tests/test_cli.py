"""The command line: --help everywhere, and bad input answered by one line naming the file, exit code 2,
with nothing half-written."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt1.checkpoint import save_model
from gpt1.cli import _raise_interrupted, build_parser, main
from gpt1.model import GPT, GPTConfig
from conftest import one_line, require_shared_data, run


def one_line_error(err: str, *fragments: str) -> None:
    line = one_line(err)
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture
def vocab():
    return require_shared_data("gpt1_vocab")


def test_every_subcommand_has_help():
    result = subprocess.run([sys.executable, "-m", "gpt1.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "pretrain" in result.stdout
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"encode", "decode", "train-tokenizer", "prepare", "pretrain", "generate", "convert", "demo"}
    for name, sub in commands.items():
        assert sub.format_help().startswith("usage: gpt1 " + name)


def test_training_settings_are_explained_by_the_comments_on_their_fields():
    commands = build_parser()._subparsers._group_actions[0].choices
    helps = {name: {a.dest: a.help for a in commands[name]._actions} for name in ("pretrain", "finetune")}
    assert helps["pretrain"]["fsdp"] == ("under torchrun: shard weights, gradients and Adam moments across "
                                         "processes, not replicate")
    assert helps["pretrain"]["max_updates"] == "override the recipe's max_updates: 0 derives it from epochs"
    assert helps["finetune"]["lm_coef"] == "lambda of the auxiliary LM loss; 0 turns it off (default 0.5)"
    for name in ("pretrain", "finetune"):
        commands[name].format_help()  # argparse expands %-formatting in every help string here


def test_encode_then_decode_round_trips_documents(vocab, tmp_path, capsys):
    text = tmp_path / "docs.txt"
    text.write_text("Hello, world!\nThe cat sat on the mat.\n\n", encoding="utf-8")
    code, out, _ = run(capsys, "encode", "--tokenizer", vocab, text, "--workers", "1")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 and lines[2] == ""  # one line per document, the empty one included
    ids = tmp_path / "ids.txt"
    ids.write_text(out)
    code, out, _ = run(capsys, "decode", "--tokenizer", vocab, ids)
    assert code == 0
    assert out.splitlines() == ["hello , world !", "the cat sat on the mat .", ""]


def test_encode_reports_the_line_of_non_utf8_input(vocab, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nna\xefve caf\xe9\n")
    code, _, err = run(capsys, "encode", "--tokenizer", vocab, bad)
    assert code == 2
    one_line_error(err, f"{bad}:2", "not UTF-8")


@pytest.mark.parametrize("ids", ["1_0", "+5", "1 \uff12"])
def test_decode_takes_ids_as_encode_writes_them(vocab, tmp_path, capsys, ids):
    """int() reads "1_0" as 10, "+5" as 5 and a full-width digit as 2: a typo decoded as some other token."""
    (tmp_path / "ids.txt").write_text(f"{ids}\n", encoding="utf-8")
    code, out, err = run(capsys, "decode", "--tokenizer", vocab, tmp_path / "ids.txt")
    assert code == 2 and not out
    one_line_error(err, f"{tmp_path / 'ids.txt'}:1: expected space-separated integer ids")


def test_missing_and_malformed_vocabulary_files(vocab, tmp_path, capsys):
    broken = tmp_path / "vocab"
    shutil.copytree(vocab, broken)
    (broken / "vocab_40000.bpe").unlink()
    code, _, err = run(capsys, "encode", "--tokenizer", broken)
    assert code == 2
    one_line_error(err, str(broken))
    shutil.copyfile(vocab / "vocab_40000.bpe", broken / "vocab_40000.bpe")
    (broken / "encoder_bpe_40000.json").write_text('{"a": 1,,}')
    code, _, err = run(capsys, "encode", "--tokenizer", broken)
    assert code == 2
    one_line_error(err, "encoder_bpe_40000.json")


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"\x00\x01\x02binary\x00", "binary"),
                                              (b"caf\xe9 au lait\n", "not UTF-8")])
def test_prepare_refuses_bad_corpus_files_and_writes_nothing(vocab, tmp_path, capsys, content, message):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("A fine paragraph of text.\n", encoding="utf-8")
    (corpus / "bad.txt").write_bytes(content)
    code, _, err = run(capsys, "prepare", corpus, "--tokenizer", vocab, "--out", tmp_path / "data")
    assert code == 2
    one_line_error(err, str(corpus / "bad.txt"), message)
    assert not (tmp_path / "data").exists()
    assert not list(tmp_path.glob(".data*"))  # no temporary leftovers either


def test_prepare_skips_bad_files_when_asked_and_lists_them(vocab, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"doc{i:02d}.txt").write_text(f"Document number {i} says hello.\n\nA second paragraph.\n")
    with gzip.open(corpus / "doc99.txt.gz", "wt", encoding="utf-8") as f:
        f.write("A gzipped document.\n")
    (corpus / "latin1.txt").write_bytes(b"caf\xe9\n")
    code, out, err = run(capsys, "prepare", corpus, "--tokenizer", vocab, "--out", tmp_path / "data",
                         "--on-bad-file", "skip", "--workers", "1")
    assert code == 0, err
    assert "latin1.txt" in err and "skipped 1 bad file" in out
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["documents"] == 13 and meta["val_documents"] == 1
    assert meta["train_tokens"] > 0 and meta["val_tokens"] > 0


def test_files_of_a_folder_without_a_text_suffix_are_named_not_dropped_silently(tmp_path, capsys):
    from gpt1.data import find_text_files

    for name in ("a.txt", "b.md", "README", "notes.rst"):
        (tmp_path / name).write_text("text")
    assert find_text_files([tmp_path]) == [tmp_path / "a.txt", tmp_path / "b.md"]
    err = capsys.readouterr().err
    assert "not read" in err and "README, notes.rst" in err
    assert find_text_files([tmp_path / "README"]) == [tmp_path / "README"]  # named, it is read


def test_links_in_a_corpus_folder_that_are_not_read_are_named(tmp_path, capsys):
    """rglob does not follow a link to a folder, and a link to nothing is no file: both were dropped silently."""
    from gpt1.data import find_text_files

    (tmp_path / "corpus").mkdir()
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "b.txt").write_text("text")
    (tmp_path / "corpus" / "a.txt").write_text("text")
    (tmp_path / "corpus" / "books").symlink_to(tmp_path / "books")
    (tmp_path / "corpus" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    assert find_text_files([tmp_path / "corpus"]) == [tmp_path / "corpus" / "a.txt"]
    err = capsys.readouterr().err
    assert f"{tmp_path / 'corpus'}: not read, links to a folder or to nothing: books, gone.txt" in err
    assert find_text_files([tmp_path / "corpus" / "books"]) == [tmp_path / "corpus" / "books" / "b.txt"]


def test_prepare_strips_gutenberg_header_and_footer(vocab, tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text("The Project Gutenberg eBook of X\nlicence blah\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
                    "Chapter one.\nIt was a dark\nand stormy night.\n\nThe end.\n"
                    "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nmore licence\n", encoding="utf-8")
    code, _, err = run(capsys, "prepare", book, "--tokenizer", vocab, "--out", tmp_path / "data", "--gutenberg",
                       "--val-fraction", "0.25")
    assert code == 0, err
    from gpt1.data import TokenData
    from gpt1.tokenizer import load_tokenizer

    data = TokenData(tmp_path / "data")
    text = load_tokenizer(vocab).decode([int(t) for t in list(data.train) + list(data.val)])
    assert "licence" not in text and "gutenberg" not in text
    assert "it was a dark and stormy night ." in text  # hard-wrapped lines joined


def test_train_tokenizer_reads_gutenberg_books_like_prepare(tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text("zzlicence zzlicence zzlicence\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
                    "the story\nof the story.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nzzlicence\n",
                    encoding="utf-8")
    code, out, err = run(capsys, "train-tokenizer", book, "--gutenberg", "--merges", "20", "--out", tmp_path / "tok",
                         "--workers", "1")
    assert code == 0, err
    vocab = json.loads(next((tmp_path / "tok").glob("encoder_bpe_*.json")).read_text())
    assert "story</w>" in vocab and not any("zz" in token for token in vocab)  # licence text never counted
    code, _, err = run(capsys, "train-tokenizer", tmp_path / "book.txt", tmp_path / "missing", "--out", tmp_path / "t2")
    assert code == 2 and "missing" in err
    code, out, err = run(capsys, "train-tokenizer", book, "--gutenberg", "--merges", "5000", "--out", tmp_path / "tok",
                         "--workers", "1")  # again, into the same folder, with more merges than the text allows
    assert code == 0, err
    learned = len((tmp_path / "tok" / next((tmp_path / "tok").glob("vocab_*.bpe")).name).read_text().splitlines()) - 1
    assert f"({learned} merges of the 5000 asked for" in out and learned < 5000
    assert len(list((tmp_path / "tok").glob("encoder_bpe_*.json"))) == 1  # the old vocabulary replaced, not beside it


def test_generate_refuses_weights_of_another_shape(tmp_path, capsys):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=1, n_head=4)), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["n_layer"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "generate", "--model", tmp_path / "m", "--tokenizer", tmp_path)
    assert code == 2
    one_line_error(err, str(tmp_path / "m" / "model.safetensors"), "missing")


def test_a_prompt_of_only_characters_the_tokenizer_drops_is_named_as_such(vocab, tmp_path, capsys):
    """It was "the prompt is empty", of a prompt that is not."""
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=1, n_head=4)), tmp_path / "m")
    code, out, err = run(capsys, "generate", "--model", tmp_path / "m", "--tokenizer", vocab, "--prompt", "\x01\x02")
    assert code == 2 and not out
    one_line_error(err, "the prompt '\\x01\\x02' encodes to no token")


def test_convert_of_a_missing_folder_and_of_a_foreign_config(tmp_path, capsys):
    code, _, err = run(capsys, "convert", "--from", "hf", "--to", "gpt1", tmp_path / "nope", tmp_path / "out")
    assert code == 2
    one_line_error(err, str(tmp_path / "nope"))
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, _, err = run(capsys, "convert", "--from", "hf", "--to", "gpt1", tmp_path / "gpt2", tmp_path / "out")
    assert code == 2
    one_line_error(err, "config.json", "gpt2")
    assert not (tmp_path / "out").exists()


def _damage_shapes(change):
    def damage(release):
        shapes = json.loads((release / "params_shapes.json").read_text())
        change(shapes)
        (release / "params_shapes.json").write_text(json.dumps(shapes))
    return damage


def _swap_first_block_weight_and_bias(shapes):
    shapes[2], shapes[3] = shapes[3], shapes[2]


@pytest.mark.parametrize("damage, message", [
    # a shard missing in the middle of the numbering shifted every value after it into the wrong tensor
    (lambda r: (r / "params_4.npy").rename(r / "params_11.npy"), "the shards must be params_0.npy .. params_9.npy"),
    (lambda r: (r / "params_3.npy").rename(r / "params_x.npy"), "without a gap, found params_0.npy"),
    (_damage_shapes(lambda s: s.__setitem__(0, [8.0, 64.0])), "shape 0 is [8.0, 64.0], not a list of positive"),
    (_damage_shapes(lambda s: s.__setitem__(0, [8, 64, 1])), "the first two shapes (positions, tokens) must be"),
    (_damage_shapes(_swap_first_block_weight_and_bias), "h0/attn/c_attn/w has shape [192], not [1, in, out]"),
    (lambda release: np.save(release / "params_0.npy", np.load(release / "params_0.npy").astype(np.int64)),
     "params_0.npy: holds int64 values, not floating-point weights"),
])
def test_convert_of_a_damaged_release_is_one_line_and_writes_nothing(tmp_path, capsys, damage, message):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=8, n_embd=64, n_layer=1, n_head=1)), tmp_path / "m")
    _import_damaged_export(capsys, tmp_path, "openai", damage, message)
    assert not (tmp_path / "out").exists()


def _weights_as_integers(path):
    state = load_file(str(path))
    save_file({name: tensor.to(torch.int64) for name, tensor in state.items()}, str(path))


def _import_damaged_export(capsys, tmp_path, layout, damage, message):
    """Exports the model in tmp_path/m to `layout` in tmp_path/<layout>, damages it, and imports it back into
    tmp_path/out: a one-line error naming the export and `message`."""
    exported = tmp_path / layout
    code, _, err = run(capsys, "convert", "--from", "gpt1", "--to", layout, tmp_path / "m", exported)
    assert code == 0, err
    damage(exported)
    code, out, err = run(capsys, "convert", "--from", layout, "--to", "gpt1", exported, tmp_path / "out")
    assert code == 2 and not out
    one_line_error(err, str(exported), message)


@pytest.mark.parametrize("damage, message", [
    (lambda hf: (hf / "config.json").write_text("[1]"), "config.json: expected a JSON object of model settings"),
    # the tokenizer files were copied as they were: a traceback for merges.txt, a model that cannot be used for
    # vocab.json
    (lambda hf: (hf / "merges.txt").write_bytes(b"\xff\xfe"), "merges.txt: not UTF-8"),
    (lambda hf: (hf / "vocab.json").write_text("nope"), "vocab.json: malformed JSON at line 1"),
    (lambda hf: _weights_as_integers(hf / "model.safetensors"), "holds int64 values, not floating-point weights"),
])
def test_convert_of_a_damaged_hugging_face_folder_is_one_line_and_writes_nothing(vocab, tmp_path, capsys, damage,
                                                                                  message):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=8, n_embd=16, n_layer=1, n_head=2)), tmp_path / "m", vocab)
    _import_damaged_export(capsys, tmp_path, "hf", damage, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m"]  # no output, no staged tokenizer


def test_an_output_folder_holding_other_files_is_refused_and_left_alone(tmp_path, capsys):
    """Outputs replace their folder whole (atomically), so a folder with anything they do not write is refused
    before any work: `--out` pointed at the input or at a folder of one's own must not delete it."""
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=64, n_layer=1, n_head=1)), tmp_path / "m")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    for layout in ("hf", "openai", "gpt1"):
        code, _, err = run(capsys, "convert", "--from", "gpt1", "--to", layout, tmp_path / "m", mine)
        assert code == 2, err
        one_line_error(err, str(mine), "thesis.txt", "choose another output folder")
        assert (mine / "thesis.txt").read_text() == "precious"
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run(capsys, "convert", "--from", "gpt1", "--to", "hf", tmp_path / "m", tmp_path / "file")
    assert code == 2 and "is not a folder" in err and (tmp_path / "file").read_text() == "not a folder"
    code, _, err = run(capsys, "prepare", mine, "--tokenizer", tmp_path, "--out", mine)
    assert code == 2 and "thesis.txt" in err and (mine / "thesis.txt").read_text() == "precious"
    code, _, err = run(capsys, "train-tokenizer", mine, "--merges", "5", "--out", mine)
    assert code == 2 and "thesis.txt" in err and (mine / "thesis.txt").read_text() == "precious"
    for _ in range(2):  # a folder this command wrote before is replaced
        code, _, err = run(capsys, "convert", "--from", "gpt1", "--to", "hf", tmp_path / "m", tmp_path / "hf")
        assert code == 0, err
    (tmp_path / "made").mkdir()  # and gets the permissions of any new folder, not the temporary folder's 0700
    (tmp_path / "made" / "file").write_text("")
    assert (tmp_path / "hf").stat().st_mode & 0o777 == (tmp_path / "made").stat().st_mode & 0o777
    for written in (tmp_path / "hf").iterdir():  # and its files those of any new file, not mkstemp's 0600
        assert written.stat().st_mode & 0o777 == (tmp_path / "made" / "file").stat().st_mode & 0o777, written


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_writing_leaves_no_temporary_folder_and_one_line(tmp_path, capsys, monkeypatch, signum, code):
    import importlib

    converter = importlib.import_module("gpt1.convert")  # the package exports a function of the same name
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=64, n_layer=1, n_head=1)), tmp_path / "m")
    write_weights = converter.save_file

    def interrupted_while_writing(*args, **kwargs):
        write_weights(*args, **kwargs)
        os.kill(os.getpid(), signum)  # Ctrl-C, or a scheduler's SIGTERM, half-way through the folder

    monkeypatch.setattr(converter, "save_file", interrupted_while_writing)
    got, _, err = run(capsys, "convert", "--from", "gpt1", "--to", "hf", tmp_path / "m", tmp_path / "hf")
    assert got == code
    one_line_error(err, f"gpt1 convert: interrupted ({signal.Signals(signum).name})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert signal.getsignal(signal.SIGTERM) is not _raise_interrupted  # the caller's handler is back


def test_what_a_kill_left_of_an_earlier_write_is_removed_by_the_next(tmp_path, capsys):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=64, n_layer=1, n_head=1)), tmp_path / "m")
    for left in (".hf.tmp-k9_x2", ".hf.old-4242"):  # as `AtomicDirectory` names them
        (tmp_path / left).mkdir()
        (tmp_path / left / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".hf.notes").write_text("a user's own file")
    code, _, err = run(capsys, "convert", "--from", "gpt1", "--to", "hf", tmp_path / "m", tmp_path / "hf")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf.notes", "hf", "m"]


@pytest.mark.parametrize("break_model, message", [
    (lambda m: m / "model.safetensors", "a file, not a model folder"),
    (lambda m: (m / "config.json").write_text(json.dumps({**json.loads((m / "config.json").read_text()), "n_head": 0})),
     "config.json: not a gpt1 model config: n_head must be a positive integer, got 0"),
    (lambda m: (m / "config.json").write_text(json.dumps({**json.loads((m / "config.json").read_text()),
                                                          "n_layer": "2"})),
     "config.json: not a gpt1 model config: n_layer must be a positive integer, got '2'"),
])
def test_a_model_path_that_is_a_file_or_a_broken_config_is_one_line(tmp_path, capsys, break_model, message):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=1, n_head=4)), tmp_path / "m")
    given = break_model(tmp_path / "m")  # the path to pass, or the count write_text returns
    model = given if isinstance(given, Path) else tmp_path / "m"
    code, _, err = run(capsys, "generate", "--model", model, "--tokenizer", tmp_path)
    assert code == 2
    one_line_error(err, message)


def test_a_worker_count_below_one_is_refused_by_the_parser(tmp_path, capsys):
    for command in (["prepare", tmp_path, "--tokenizer", tmp_path, "--out", tmp_path / "d"],
                    ["train-tokenizer", tmp_path, "--out", tmp_path / "t"]):
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in command] + ["--workers", "0"])
        assert stop.value.code == 2 and "--workers: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # was "n_merges must be >= 0", after reading the whole corpus
        main(["train-tokenizer", str(tmp_path), "--out", str(tmp_path / "t"), "--merges", "-1"])
    assert stop.value.code == 2 and "--merges: must be at least 0, got -1" in capsys.readouterr().err


def test_a_negative_zero_shot_limit_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["zero-shot", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "z"), "--limit", "-5"])
    assert stop.value.code == 2 and "--limit: must be at least 0, got -5" in capsys.readouterr().err


def test_finetune_under_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it for each rank
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\na,0\n")
    code = main(["finetune", "--model", str(tmp_path), "--task", "classification", "--train", str(csv),
                 "--out", str(tmp_path / "ft")])
    assert code == 2 and "without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_a_training_commands_out_that_is_a_file_is_refused(token_data, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for out in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "run"):
        code, _, err = run(capsys, "pretrain", "--data", token_data, "--out", out, "--recipe", "demo", "--preset", "test",
                           "--context", "32", "--max-updates", "1")
        assert code == 2
        one_line_error(err, "a file is in the way")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    code, _, err = run(capsys, "pretrain", "--data", token_data, "--out", tmp_path / "run", "--recipe", "demo",
                       "--micro-batch", "0")
    assert code == 2
    one_line_error(err, "demo.toml, with the options given: micro_batch (--micro-batch) must be > 0")


def test_pretrain_refuses_a_context_longer_than_the_model(token_data, tmp_path, capsys):
    code, _, err = run(capsys, "pretrain", "--data", token_data, "--out", tmp_path / "run", "--recipe", "demo",
                       "--preset", "test", "--context", "128")
    assert code == 2
    one_line_error(err, "--context 128", "64 positions")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pretrain_then_generate_from_the_command_line(vocab, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"the cat number {i} sat on the mat ." for i in range(300)), encoding="utf-8")
    assert run(capsys, "prepare", corpus, "--tokenizer", vocab, "--out", tmp_path / "data", "--val-fraction", "0.1")[0] == 0
    code, out, err = run(capsys, "pretrain", "--data", tmp_path / "data", "--out", tmp_path / "run", "--recipe", "demo",
                         "--preset", "test", "--context", "32", "--micro-batch", "4", "--tokens-per-update", "128",
                         "--max-updates", "6", "--eval-every", "3", "--checkpoint-every", "3")
    assert code == 0, err
    assert "validation perplexity" in out
    code, out, err = run(capsys, "generate", "--model", tmp_path / "run", "--prompt", "the cat", "--seed", "1",
                         "--max-new-tokens", "5")
    assert code == 0, err
    assert out.startswith("the cat")
    code, out, err = run(capsys, "generate", "--model", tmp_path / "run", "--prompt", "the cat sat " * 30, "--seed", "1",
                         "--max-new-tokens", "3")  # 90 tokens; the test preset has 64 positions
    assert code == 0 and "note: the prompt's 90 tokens exceed the model's 64 positions" in err, err


def test_glue_score_averages_the_dev_results_of_finetune_runs(tmp_path, capsys):
    runs = {"cola": {"mcc": 0.40}, "mrpc": {"f1": 0.80, "accuracy": 0.70}, "mnli": {"accuracy": 0.60}}
    for task, dev in runs.items():
        (tmp_path / task).mkdir()
        other = {"dev_mismatched": {"accuracy": 0.70, "examples": 9, "truncated": 0}} if task == "mnli" else {}
        (tmp_path / task / "results.json").write_text(json.dumps({"task": task, "dev": dev, "other_splits": other}))
    code, out, err = run(capsys, "glue-score", *(tmp_path / t for t in runs), "--out", tmp_path / "new" / "glue.json")
    assert code == 0, err
    expected = (0.40 + 0.75 + 0.65) / 3  # MRPC: mean of F1 and accuracy; MNLI: mean of matched and mismatched
    assert json.loads((tmp_path / "new" / "glue.json").read_text())["glue_score"] == pytest.approx(expected)
    assert f"GLUE score {100 * expected:.1f}" in out
    code, out, err = run(capsys, "glue-score", *(tmp_path / t for t in runs), "--out", tmp_path / "cola")
    assert code == 2 and not out and "a folder; --out takes a file name" in err  # checked before any work


FREE_AND_MEASURE = """
import sys
from gpt1.cli import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
block = bytearray(256 * 2**20)  # touched: bytearray zero-fills it
before = rss_mib()
del block
print(applied, before - rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_training_commands_keep_freed_memory_for_the_next_step():
    """With keep_freed_memory, a freed 256 MiB block stays with the process for the next step to reuse; by default
    glibc hands it back to the OS (and the next step page-faults it in again)."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", FREE_AND_MEASURE, mode], capture_output=True, text=True, check=True)
        applied, released = out.stdout.split()
        return applied == "True", float(released)

    applied, released_kept = run("keep")
    if not applied:
        pytest.skip("not glibc")
    _, released_default = run("default")
    assert released_default > 200 and released_kept < 10


def test_only_training_commands_change_the_allocator_and_the_kernel_cache(tmp_path, monkeypatch, capsys):
    import gpt1.cli

    calls = []
    monkeypatch.setattr(gpt1.cli, "keep_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(gpt1.cli, "bound_kernel_cache", lambda: calls.append("kernels"))
    assert main(["finetune", "--out", str(tmp_path / "run")]) == 2  # no data given: a UserError, after the setting
    assert main(["glue-score", str(tmp_path / "absent")]) == 2
    assert calls == ["allocator", "kernels"]


def test_the_kernel_cache_bound_keeps_a_capacity_the_user_set(monkeypatch):
    from gpt1.cli import bound_kernel_cache

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "128"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "2048")
    bound_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "2048"
