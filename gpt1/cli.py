"""The `gpt1` command: a thin argparse layer over the package's functions."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import inspect
import json
import os
import re
import signal
import sys
from pathlib import Path

from .errors import Interrupted, ReportedElsewhere, UserError


def _read_lines(path: str | None) -> list[tuple[int, str]]:
    """Lines of a UTF-8 file or stdin, numbered from 1; one-line error naming the line on bad bytes."""
    name = path or "<stdin>"
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror})") from None
    else:
        raw = sys.stdin.buffer.read()
    out = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            out.append((number, line.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise UserError(f"{name}:{number}: not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})") from None
    return out


def cmd_encode(args) -> None:
    from .tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    texts = [text for _, text in _read_lines(args.file)]
    encoded = tokenizer.encode_batch(texts, workers=args.workers, progress=args.progress)
    sys.stdout.writelines(" ".join(map(str, ids)) + "\n" for ids in encoded)


def cmd_decode(args) -> None:
    from .tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    limit = tokenizer.n_vocab_with_specials
    for number, line in _read_lines(args.file):
        # int() would also take "1_0", "+5" and digits of other scripts ("２"): ids are what encode writes
        if not all(re.fullmatch(r"-?[0-9]+", t) for t in line.split()):
            raise UserError(f"{args.file or '<stdin>'}:{number}: expected space-separated integer ids")
        ids = [int(t) for t in line.split()]
        bad = [i for i in ids if not 0 <= i < limit]
        if bad:
            raise UserError(f"{args.file or '<stdin>'}:{number}: id {bad[0]} is outside the vocabulary (0..{limit - 1})")
        sys.stdout.write(tokenizer.decode(ids) + "\n")


def cmd_train_tokenizer(args) -> None:
    from .data import read_documents
    from .tokenizer import train_tokenizer

    documents, _, _ = read_documents(args.inputs, args.gutenberg, args.unwrap, args.on_bad_file)
    texts = [paragraph for document in documents for paragraph in document]
    tokenizer = train_tokenizer(texts, args.merges, args.out, workers=args.workers, progress=True)
    learned = len(tokenizer.merges)
    note = "" if learned == args.merges else f" of the {args.merges} asked for: no pair of symbols is left to merge"
    print(f"wrote a vocabulary of {tokenizer.vocab_size} ids ({learned} merges{note}) to {args.out}")


def cmd_prepare(args) -> None:
    from .data import prepare

    stats = prepare(
        args.inputs, args.out, args.tokenizer, val_fraction=args.val_fraction, gutenberg=args.gutenberg,
        unwrap=args.unwrap, on_bad_file=args.on_bad_file, workers=args.workers,
    )
    print(f"{args.out}: {stats.summary()}")


def cmd_pretrain(args) -> int:
    from .pretrain import PretrainConfig, pretrain

    overrides = {f.name: getattr(args, f.name) for f in _scalar_fields() if getattr(args, f.name) is not None}
    config = PretrainConfig.from_recipe(args.recipe, overrides)
    summary = pretrain(config, args.data, args.out, resume=args.resume, init_from=args.init_from, device=args.device)
    if summary["is_main"]:
        _print_pretrain_summary(summary)
    return 128 + summary["stop_signal"] if summary["interrupted"] else 0  # a script must not go on as if finished


def _print_pretrain_summary(summary: dict) -> None:
    val = summary["val"]
    if len(val) > 1:
        first, last = val[0], val[-1]
        print(f"validation perplexity {first['val_ppl']:.2f} (update {first['update']}) -> "
              f"{last['val_ppl']:.2f} (update {last['update']})")
    state = "interrupted at" if summary["interrupted"] else "finished"
    print(f"{state} update {summary['updates']}: {summary['tokens']:,} tokens seen, "
          f"{summary['tokens_per_s']:.0f} tokens/s, {summary['data_wait']:.2%} of step time waiting for batches; "
          f"checkpoint {summary['checkpoint']}")


def cmd_generate(args) -> None:
    from .checkpoint import load_model, tokenizer_dir_of
    from .generate import generate_text
    from .pretrain import pick_device
    from .tokenizer import load_tokenizer

    model = load_model(args.model, device=pick_device(args.device))
    tokenizer_dir = args.tokenizer or tokenizer_dir_of(args.model)
    if tokenizer_dir is None:
        raise UserError(f"{args.model}: holds no tokenizer/ folder; pass --tokenizer DIR")
    tokenizer = load_tokenizer(tokenizer_dir)
    prompt_tokens = len(tokenizer.encode(args.prompt))
    if prompt_tokens > model.config.n_positions:
        print(f"note: the prompt's {prompt_tokens} tokens exceed the model's {model.config.n_positions} positions; "
              f"it conditions on the last {model.config.n_positions}", file=sys.stderr)
    samples = generate_text(model, tokenizer, args.prompt, args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            num_samples=args.num_samples)
    for i, text in enumerate(samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(text)


def cmd_convert(args) -> None:
    from .convert import convert

    convert(Path(args.src), Path(args.dst), args.src_format, args.dst_format)
    print(f"wrote {args.dst_format} weights to {args.dst}")


def _int_at_least(minimum: int):
    """An argparse type: an integer, refused below `minimum` with the option named."""

    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return integer


def _columns(args, recorded: dict | None = None):
    """The columns the options name, on top of `recorded` (those a fine-tuned model was trained from) or the
    defaults."""
    from .datasets import UserColumns

    if recorded and isinstance(recorded.get("choices"), list):
        recorded = {**recorded, "choices": tuple(recorded["choices"])}  # several columns, one answer each
    base = UserColumns(**recorded) if recorded else UserColumns()
    given = {name: getattr(args, name) for name in ("text", "text_b", "label", "context", "question", "uid")
             if getattr(args, name) is not None}
    for name in ("text_b", "question"):
        if given.get(name) == "":
            given[name] = None  # "--text-b ''": the data has no second text / no question
    if args.choices:
        given["choices"] = args.choices[0] if len(args.choices) == 1 else tuple(args.choices)
    return dataclasses.replace(base, **given)


_TEXT_B_IS_FOR_PAIRS = ("--text-b is for entailment, similarity and regression (join the texts into one column to "
                        "classify them together)")


def _model_columns(args, info: dict):
    """The columns of the user's file for a fine-tuned model: `_columns` on top of those it was trained from,
    refused where they would give it inputs of another form than it learnt (two texts for one, or one for two)."""
    columns = _columns(args, info.get("columns"))
    if info["kind"] == "classification" and args.text_b:
        raise UserError(f"{args.model} is a classification model, which reads one text column; {_TEXT_B_IS_FOR_PAIRS}")
    if info["kind"] == "regression":
        recorded = info.get("columns")
        trained_on_pairs = recorded is None or recorded.get("text_b") is not None  # None: STS-B, pairs
        if trained_on_pairs and columns.text_b is None:
            raise UserError(f"{args.model} was fine-tuned on two texts per input: name the second one's column "
                            f"with --text-b")
        if not trained_on_pairs and columns.text_b is not None:
            raise UserError(f"{args.model} was fine-tuned on one text per input: --text-b {args.text_b} would give "
                            f"it two")
    return columns


def _load_task(args):
    from .datasets import load_benchmark, load_user_task

    if args.benchmark:
        if not args.data:
            raise UserError(f"--benchmark {args.benchmark} needs --data (the folder as its distributors ship it)")
        return load_benchmark(args.benchmark, args.data)
    if not (args.task and args.train):
        raise UserError("give either --benchmark NAME --data PATH, or --task KIND --train FILE [--dev FILE]")
    if args.task == "classification" and args.text_b:
        raise UserError(f"--task classification reads one text column; {_TEXT_B_IS_FOR_PAIRS}")
    return load_user_task(args.name or Path(args.train).stem, args.task, train=args.train, dev=args.dev,
                          test=args.test, columns=_columns(args))


def cmd_finetune(args) -> int:
    from .checkpoint import resolve_model_dir, tokenizer_dir_of, write_json_atomic
    from .finetune import RESULTS_FILE, evaluate_other_splits, finetune
    from .model import PRESETS, preset_config
    from .pretrain import pick_device
    from .tokenizer import load_tokenizer

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each rank would train the whole task into the same --out
        raise UserError("finetune runs in one process; start it without torchrun (only pretrain is distributed)")
    config = _finetune_config(args)
    pick_device(args.device)  # a wrong --device is named now, not after reading and encoding the data
    pretrained = resolve_model_dir(args.model) if args.model else None
    if args.model:  # a folder that holds no model is named as such, not as one without a tokenizer
        from .results import model_folder

        model_folder(args.model)
    tokenizer_dir = args.tokenizer or (tokenizer_dir_of(args.model) if args.model else None)
    if tokenizer_dir is None:
        raise UserError("no tokenizer: pass --tokenizer DIR (the model folder holds no tokenizer/)")
    tokenizer = load_tokenizer(tokenizer_dir)
    base = None
    if pretrained is None:
        if not config.from_scratch:
            raise UserError("--model is required unless --from-scratch (then --preset picks the size)")
        if (args.preset or "gpt1") not in PRESETS:
            raise UserError(f"--preset {args.preset}: not a preset ({', '.join(sorted(PRESETS))})")
        base = preset_config(args.preset or "gpt1", vocab_size=tokenizer.vocab_size)
    task = _load_task(args)
    for note in task.notes:
        print(f"note: {note}", file=sys.stderr)
    results = finetune(task, tokenizer, tokenizer_dir, pretrained, Path(args.out), config, base_config=base,
                       device=args.device)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in (results["dev"] or {}).items())
    summary = (f"best epoch {results['best_epoch']}" + (f", dev {shown}" if shown else "")
               + f"; model in {Path(args.out) / 'model'}")
    if results["interrupted"]:  # the other splits are left unscored: the user asked to stop
        print(f"{task.name}: interrupted at update {results['history'][-1]['update']}; {summary}")
        return 128 + results["stop_signal"]
    results["other_splits"] = evaluate_other_splits(task, tokenizer, Path(args.out), args.device, config.dtype)
    write_json_atomic(Path(args.out) / RESULTS_FILE, results)
    print(f"{task.name}: {summary}")
    return 0


def _task_model_and_tokenizer(args):
    """The fine-tuned model of --model on --device, its task.json, its tokenizer, and the autocast of --dtype."""
    from .checkpoint import required_tokenizer_dir
    from .finetune import load_task_model, task_model_dir
    from .pretrain import autocast_for, pick_device
    from .tokenizer import load_tokenizer

    device = pick_device(args.device)
    model, info = load_task_model(Path(args.model), device)
    tokenizer = load_tokenizer(required_tokenizer_dir(task_model_dir(args.model)))
    return model, info, tokenizer, autocast_for(device, args.dtype)


def _check_model_fits(model_dir, info: dict, task) -> None:
    """A UserError naming both when the fine-tuned model's task.json (kind, outputs, class names) does not fit
    the benchmark's: its class indices would mean other classes, or its head has another number of outputs."""
    n_outputs = 1 if task.kind == "regression" else len(task.label_names or [])
    fits = info["kind"] == task.kind and (task.kind == "multiple-choice" or (
        info["n_outputs"] == n_outputs and (task.label_names is None or info["label_names"] == task.label_names)))
    trained = info.get("name") or "its task"
    if not fits:
        def described(kind, n, names):
            classes = f" {', '.join(map(str, names))}" if names and kind != "multiple-choice" else ""
            return f"{kind}, {n} output{'s' if n != 1 else ''}{classes}"

        model = described(info["kind"], info["n_outputs"], info["label_names"])
        raise UserError(f"{model_dir}: fine-tuned on {trained} ({model}), which does not fit --benchmark {task.name} "
                        f"({described(task.kind, n_outputs, task.label_names)}); evaluate a model fine-tuned on it")
    if info.get("name") not in (None, task.name):
        print(f"note: {model_dir} was fine-tuned on {trained}; scoring it on {task.name}", file=sys.stderr)


def cmd_evaluate(args) -> None:
    from .checkpoint import check_output_file, write_json_atomic
    from .datasets import load_benchmark, load_user_data
    from .finetune import score_split

    if args.out:  # checked now, not after the work; never the file being read
        check_output_file(args.out, inputs=[args.data])
    model, info, tokenizer, autocast = _task_model_and_tokenizer(args)
    if args.benchmark:
        task = load_benchmark(args.benchmark, args.data)
        _check_model_fits(args.model, info, task)
        split = args.split or "dev"
        if split not in task.splits:
            raise UserError(f"{args.data}: no {split!r} split (found {', '.join(task.splits)})")
        examples, metrics = task.splits[split], task.metrics
        unlabelled = sum(example.label is None for example in examples)
        if unlabelled:
            raise UserError(f"--split {split}: {unlabelled} of the {len(examples)} examples of {args.data} have no "
                            f"labels (GLUE's test labels are not public), so there is nothing to score; "
                            f"`gpt1 predict --model {args.model} FILE` labels a file of inputs")
    else:
        if args.split:
            raise UserError(f"--split {args.split}: only for --benchmark; {args.data} is scored whole")
        data = load_user_data(args.data, info["kind"], _model_columns(args, info),
                              label_names=info["label_names"])
        examples, metrics = data.examples, info["metrics"]
    scores, _, cut = score_split(model, info, tokenizer, examples, metrics, autocast, progress=True)
    report = {"data": str(args.data), "examples": len(examples), "truncated": cut, **scores}
    print(json.dumps(report, indent=2))
    if args.out:
        write_json_atomic(Path(args.out), report)


def cmd_predict(args) -> None:
    import csv
    import io
    import tempfile

    from .checkpoint import check_output_file, write_text_atomic
    from .datasets import load_user_data
    from .finetune import encode_examples, InputTransform, predict_logits

    if args.out:
        check_output_file(args.out, inputs=[args.file])
    model, info, tokenizer, autocast = _task_model_and_tokenizer(args)
    columns = _model_columns(args, info)
    if args.file is not None:
        data = load_user_data(args.file, info["kind"], columns, label_names=info["label_names"], require_label=False)
    else:  # stdin: JSON lines, read through a temporary file that errors call <stdin>
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "stdin.jsonl"
            source.write_bytes(sys.stdin.buffer.read())
            try:
                data = load_user_data(source, info["kind"], columns, label_names=info["label_names"],
                                      require_label=False)
            except UserError as error:
                raise UserError(str(error).replace(str(source), "<stdin>")) from None
    encoded, cut = encode_examples(data.examples, InputTransform(tokenizer, info["kind"], info["max_len"]),
                                   progress=True)
    logits = predict_logits(model, encoded, autocast=autocast, progress=True)
    rows = []
    for example, row in zip(data.examples, logits):
        if info["kind"] == "regression":
            rows.append({"uid": example.uid, "prediction": float(row[0])})
            continue
        probs = row.softmax(-1).tolist()
        names = info["label_names"] or [str(i) for i in range(len(probs))]
        best = max(range(len(probs)), key=probs.__getitem__)
        rows.append({"uid": example.uid, "prediction": names[best] if info["kind"] != "multiple-choice" else best,
                     **{f"p_{names[i] if info['kind'] != 'multiple-choice' else i}": p for i, p in enumerate(probs)}})
    text = io.StringIO(newline="")
    if args.out and args.out.endswith(".csv"):
        writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["uid", "prediction"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        text.writelines(json.dumps(r) + "\n" for r in rows)
    if args.out:  # whole or not at all: a kill while writing leaves no half file
        write_text_atomic(Path(args.out), text.getvalue())
    else:
        sys.stdout.write(text.getvalue())
    if cut:
        print(f"{cut} of {len(rows)} inputs were truncated to {info['max_len']} tokens", file=sys.stderr)


def cmd_glue_score(args) -> None:
    from .checkpoint import check_output_file, read_json, write_json_atomic
    from .metrics import GLUE_TASKS, glue_score

    if args.out:
        check_output_file(args.out)

    results = {}
    for run in args.runs:
        r = read_json(Path(run) / "results.json")
        if r["task"] not in GLUE_TASKS or not r.get("dev"):
            raise UserError(f"{run}: {r['task']!r} has no dev scores of a GLUE task")
        results["mnli-m" if r["task"] == "mnli" else r["task"]] = r["dev"]
        mismatched = r.get("other_splits", {}).get("dev_mismatched")
        if r["task"] == "mnli" and mismatched:
            results["mnli-mm"] = {k: v for k, v in mismatched.items() if k not in ("examples", "truncated")}
    score = glue_score(results)
    for task, scores in results.items():
        print(f"{task:8s} " + ", ".join(f"{k} {100 * v:.1f}" for k, v in scores.items()))
    missing = [t for t in GLUE_TASKS if t not in results and not (t == "mnli" and "mnli-m" in results)]
    print(f"GLUE score {100 * score:.1f} over {len(results)} result(s)" + (f"; missing: {', '.join(missing)}" if missing else ""))
    if args.out:
        write_json_atomic(Path(args.out), {"glue_score": score, "tasks": results, "missing": missing})


def _names(option: str, text: str, allowed) -> list[str]:
    """The comma-separated names of an option, each one of `allowed` (a one-line error naming a bad one)."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        problem = f"unknown {', '.join(map(repr, unknown))}" if unknown else "names nothing"
        raise UserError(f"{option} {text!r}: {problem} (choose from {', '.join(allowed)})")
    return names


_REUSE_HELP = ("; a rerun with the same model and settings reuses the finished runs (an interrupted analysis "
               "continues), and an --out holding runs of another model or other settings is refused: choose another "
               "--out")


def cmd_ablation(args) -> None:
    from .ablation import SETTINGS, TASK_PLANS, run_ablation

    run_ablation(args.model, args.data, args.out, _names("--tasks", args.tasks, TASK_PLANS),
                 _names("--settings", args.settings, SETTINGS), _finetune_config(args))
    print(f"table: {args.out / 'ablation.md'}; every field: {args.out / 'ablation.csv'}")


def cmd_layer_transfer(args) -> None:
    from .ablation import TASK_PLANS, run_layer_transfer

    try:
        layers = [int(k) for k in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise UserError(f"--layers {args.layers!r}: expected comma-separated block counts, e.g. 0,6,12") from None
    run_layer_transfer(args.model, args.data, args.out, _names("--tasks", args.tasks, TASK_PLANS), layers,
                       _finetune_config(args))
    print(f"plot: {args.out / 'layer_transfer.png'}; every field: {args.out / 'layer_transfer.csv'}")


def cmd_zero_shot(args) -> None:
    from .zeroshot import HEURISTICS, run_zero_shot

    run_zero_shot(args.models, _names("--tasks", args.tasks, HEURISTICS), args.out, data_root=args.data,
                  winograd=args.winograd, limit=args.limit, seed=args.seed, device=args.device)
    print(f"plot: {args.out / 'zeroshot.png'}; every field: {args.out / 'zeroshot.csv'}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(Path(args.out))


def _scalar_fields():
    from .pretrain import PretrainConfig

    return [f for f in dataclasses.fields(PretrainConfig) if f.type in ("int", "float", "str", "bool")]


def _field_comments(config_class) -> dict[str, str]:
    """The comment after each field of a settings dataclass, which documents it in one place."""
    source = inspect.getsource(config_class)
    return dict(re.findall(r"^    (\w+): [^#\n]*#\s*(.+)$", source, flags=re.MULTILINE))


def _add_config_options(p, config_class, names: list[str], help_text) -> None:
    """One option per named field of a settings dataclass: a switch for a bool, a typed value otherwise;
    an option left out stays None, so the recipe's or the dataclass's value holds. `help_text(field,
    comment)` words the help from the field's comment in the class ('' if it has none)."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    comments = _field_comments(config_class)
    for name in names:
        f = fields[name]
        flag = f"--{name.replace('_', '-')}"
        help_ = help_text(f, comments.get(name, "")).replace("%", "%%")  # argparse formats help with %
        if f.type == "bool":
            p.add_argument(flag, dest=name, action="store_true", default=None, help=help_)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            p.add_argument(flag, dest=name, type=kind, default=None, help=help_)


def _add_finetune_settings(p, only: tuple[str, ...] | None = None) -> None:
    """Options for FinetuneConfig's fields (or those in `only`); unset ones keep the paper's defaults."""
    from .finetune import FinetuneConfig

    names = [f.name for f in dataclasses.fields(FinetuneConfig) if only is None or f.name in only]
    _add_config_options(p, FinetuneConfig, names,
                        lambda f, comment: f"{comment} (default {f.default})" if comment else f"default {f.default}")


def _finetune_config(args):
    from .finetune import FinetuneConfig

    return FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
                             if getattr(args, f.name, None) is not None})


def _add_task_arguments(p, with_task: bool) -> None:
    if with_task:
        g = p.add_argument_group("data", "a benchmark (--benchmark NAME --data PATH) or your own CSV/TSV/JSONL files")
    else:
        g = p.add_argument_group("columns", "the columns of your own CSV/TSV/JSONL file (default: those the model "
                                            "was fine-tuned from)")
    if with_task:
        from .datasets import BENCHMARKS, TASK_KINDS

        g.add_argument("--benchmark", choices=sorted(BENCHMARKS), help="one of the paper's benchmarks")
        g.add_argument("--data", type=Path, help="the benchmark's folder (or file) as distributed")
        g.add_argument("--task", choices=TASK_KINDS, help="your own data: the kind of task")
        g.add_argument("--train", type=Path, help="your own data: the training file")
        g.add_argument("--dev", type=Path, help="your own data: the file to pick the best epoch on")
        g.add_argument("--test", type=Path, help="your own data: scored (if labelled) after training")
        g.add_argument("--name", help="task name in reports (default: the train file's name)")
    g.add_argument("--text", help="column of the text / premise / first sentence (default 'text')")
    g.add_argument("--text-b", dest="text_b", help="column of the hypothesis / second sentence (default 'text_b'; '' for none)")
    g.add_argument("--label", help="column of the label (default 'label')")
    g.add_argument("--context", help="multiple choice: column of the context (default 'context')")
    g.add_argument("--question", help="multiple choice: column of the question (default 'question'; '' for none)")
    g.add_argument("--choices", nargs="+", help="multiple choice: one column holding a list, or several columns")
    g.add_argument("--uid", help="column of an id to carry into predictions (default: row numbers)")


def _add_text_options(p) -> None:
    """How corpus files are read, shared by train-tokenizer and prepare so that both see the same text."""
    p.add_argument("--gutenberg", action="store_true", help="strip Project Gutenberg headers/footers, unwrap lines")
    p.add_argument("--unwrap", action="store_true", help="join hard-wrapped lines within a paragraph")
    p.add_argument("--on-bad-file", choices=["error", "skip"], default="error",
                   help="empty, binary or non-UTF-8 files: stop (default) or skip and list them")
    p.add_argument("--workers", type=_int_at_least(1), default=None, help="encoding processes (default: one per core)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt1", description="GPT-1: tokenizer, pre-training, generation, fine-tuning, the paper's analyses, weight conversion.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="text -> ids, one document per line")
    p.add_argument("--tokenizer", required=True, type=Path, help="folder with encoder_bpe_*.json and vocab_*.bpe")
    p.add_argument("file", nargs="?", help="UTF-8 text, one document per line (default: stdin)")
    p.add_argument("--workers", type=_int_at_least(1), default=None, help="processes (default: all cores)")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="ids -> text, one document per line (reverses encode)")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("file", nargs="?", help="lines of space-separated ids (default: stdin)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("train-tokenizer", help="learn a new BPE vocabulary with GPT-1's pre-processing")
    p.add_argument("inputs", nargs="+", type=Path, help="text files or folders (.txt, .gz)")
    p.add_argument("--merges", type=_int_at_least(0), default=40000, help="number of merges (GPT-1: 40000)")
    p.add_argument("--out", required=True, type=Path)
    _add_text_options(p)
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser("prepare", help="raw text -> token ids for pre-training (train/val memory-mapped files)")
    p.add_argument("inputs", nargs="+", type=Path, help="text files or folders (.txt, .gz)")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents held out (default 0.01)")
    _add_text_options(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="generative pre-training on prepared data")
    p.add_argument("--data", required=True, type=Path, help="folder written by `gpt1 prepare`")
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, metrics.jsonl")
    p.add_argument("--recipe", default="gpt1", help="built-in recipe name (gpt1, cpu-small, ...) or a .toml file")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--init-from", type=Path, help="start from these pre-trained weights (a model, checkpoint or run folder) with fresh "
                        "optimizer state and schedule; the model must use the tokenizer --data was prepared with")
    _add_device_option(p)
    from .pretrain import PretrainConfig

    _add_config_options(p, PretrainConfig, [f.name for f in _scalar_fields()],
                        lambda f, comment: (comment or f"turn on {f.name}") if f.type == "bool"
                        else f"override the recipe's {f.name}" + (f": {comment}" if comment else ""))
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("generate", help="sample text from a model")
    p.add_argument("--model", required=True, type=Path, help="model, checkpoint or run folder")
    p.add_argument("--tokenizer", type=Path, help="default: the model folder's tokenizer/")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a paragraph)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1.0 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    _add_device_option(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("convert", help="convert weights between layouts")
    layouts = ("hf: a transformers OpenAIGPT* folder (config.json + safetensors or pytorch_model.bin); openai: "
               "the original release (params_shapes.json + params_N.npy); gpt1: a model, checkpoint or run folder")
    p.add_argument("--from", dest="src_format", required=True, choices=["hf", "openai", "gpt1"], help=layouts)
    p.add_argument("--to", dest="dst_format", required=True, choices=["gpt1", "hf", "openai"],
                   help="one of the layouts above; a fine-tuned gpt1 model goes to hf only")
    p.add_argument("src", help="source folder")
    p.add_argument("dst", help="destination folder (written atomically)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("finetune", help="fine-tune on a benchmark of the paper or on your own labelled data")
    p.add_argument("--model", type=Path, help="pre-trained model, checkpoint or run folder")
    p.add_argument("--out", required=True, type=Path, help="folder for the fine-tuned model, results.json, metrics")
    p.add_argument("--tokenizer", type=Path, help="default: the model folder's tokenizer/")
    p.add_argument("--preset", help="model size with --from-scratch and no --model (default gpt1)")
    _add_device_option(p)
    _add_task_arguments(p, with_task=True)
    _add_finetune_settings(p)
    p.set_defaults(func=cmd_finetune)

    from .ablation import SETTINGS, TASK_PLANS

    p = sub.add_parser("ablation", help="the paper's Table 5 in small: each task with and without pre-training "
                                        "and the auxiliary LM loss")
    p.add_argument("--model", required=True, type=Path, help="pre-trained model, checkpoint or run folder")
    p.add_argument("--data", required=True, type=Path, help="folder holding glue/, race/ and story_cloze/")
    p.add_argument("--out", required=True, type=Path,
                   help="runs, ablation.csv, ablation.md and ablation.png" + _REUSE_HELP)
    p.add_argument("--tasks", default=",".join(TASK_PLANS),
                   help="comma-separated, of: " + ", ".join(TASK_PLANS) + " (default: all)")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help="comma-separated, of: " + ", ".join(SETTINGS) + " (default: all)")
    _add_finetune_settings(p, only=("lr", "batch_size", "micro_batch", "epochs", "warmup_fraction", "dtype", "seed"))
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("layer-transfer", help="the paper's Figure 2 (left) in small: fine-tune with only the "
                                              "embeddings and the first k pre-trained blocks, for each k")
    p.add_argument("--model", required=True, type=Path, help="pre-trained model, checkpoint or run folder")
    p.add_argument("--data", required=True, type=Path, help="folder holding glue/, race/ and story_cloze/")
    p.add_argument("--out", required=True, type=Path,
                   help="runs, layer_transfer.csv and layer_transfer.png" + _REUSE_HELP)
    p.add_argument("--tasks", default="race,rte",
                   help="comma-separated, of: " + ", ".join(TASK_PLANS) + " (default %(default)s; the paper's "
                        "MNLI has no training set in the project's data, RTE is the entailment task that has one)")
    p.add_argument("--layers", help="comma-separated k (default: 0 to the model's number of blocks)")
    _add_finetune_settings(p, only=("lr", "batch_size", "micro_batch", "epochs", "warmup_fraction", "lm_coef",
                                    "dtype", "seed"))
    p.set_defaults(func=cmd_layer_transfer)

    from .zeroshot import HEURISTICS

    p = sub.add_parser("zero-shot", help="the paper's zero-shot heuristics (Figure 2, right) on each checkpoint "
                                         "of pre-training runs")
    p.add_argument("models", nargs="+", type=Path,
                   help="pre-training run folders (every checkpoint is scored) or model/checkpoint folders")
    p.add_argument("--out", required=True, type=Path,
                   help="zeroshot.jsonl, zeroshot.csv and zeroshot.png; a rerun scores only the (model, task) pairs "
                        "not there yet (models by absolute path), and refuses an --out whose rows of a task were "
                        "scored with another --limit, --seed or data: choose another --out")
    p.add_argument("--data", type=Path, help="folder holding glue/ and race/ (for cola, sst2, race)")
    p.add_argument("--tasks", default="cola,sst2,race",
                   help="comma-separated, of: " + ", ".join(HEURISTICS) + " (default %(default)s)")
    p.add_argument("--winograd", type=Path,
                   help="Winograd schemas for the winograd task: JSONL/CSV/TSV with `sentence` (the pronoun "
                        "written as one _), `choices` (list of candidates) and `label` (0-based index)")
    p.add_argument("--limit", type=_int_at_least(0), default=500,
                   help="score a seeded sample of this many examples per task; 0 = all (default %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="of the --limit sample (and of cola's threshold sample) (default %(default)s)")
    _add_device_option(p)
    p.set_defaults(func=cmd_zero_shot)

    from .datasets import BENCHMARKS

    p = sub.add_parser("evaluate", help="score a fine-tuned model on a labelled file or a benchmark split")
    p.add_argument("--model", required=True, type=Path, help="folder written by `gpt1 finetune`")
    p.add_argument("--data", required=True, type=Path, help="labelled CSV/TSV/JSONL, or a benchmark folder")
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), metavar="NAME",
                   help="read --data as this benchmark, one of: " + ", ".join(sorted(BENCHMARKS))
                        + "; the model must have been fine-tuned on a task of its kind and classes")
    p.add_argument("--split", help="labelled benchmark split (default dev); your own file is one split already")
    p.add_argument("--out", help="also write the scores to this JSON file")
    _add_inference_options(p)
    _add_task_arguments(p, with_task=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label new inputs; writes JSONL (default) or CSV with probabilities")
    p.add_argument("--model", required=True, type=Path, help="folder written by `gpt1 finetune`")
    p.add_argument("file", nargs="?", help="CSV/TSV/JSONL with the model's input columns (default: JSONL on stdin)")
    p.add_argument("--out", help="output file, .csv or .jsonl (default: JSONL on stdout)")
    _add_inference_options(p)
    _add_task_arguments(p, with_task=False)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("glue-score", help="the GLUE score (mean over tasks of each task's mean metric) of finetune runs")
    p.add_argument("runs", nargs="+", type=Path, help="folders written by `gpt1 finetune` on GLUE benchmarks")
    p.add_argument("--out", help="also write the table as JSON")
    p.set_defaults(func=cmd_glue_score)

    p = sub.add_parser("demo", help="the main job: pre-train a small model on the built-in BBC News corpus")
    p.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    _add_device_option(p)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default), or bf16 autocast: faster on GPUs and on CPUs with AMX or AVX512-BF16 "
                        "(others emulate it slowly); scores can differ from fp32's in the last digits")


TRAINING_COMMANDS = ("pretrain", "finetune", "ablation", "layer-transfer", "demo")


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS. A training step frees and
    allocates the same large blocks over and over (activations, logits chunks, gradients); glibc maps each block
    over 32 MiB afresh and unmaps it when freed, so every step page-faults it in again (100,000-160,000 faults a
    GPT-1 step on CPU). Measured in benchmarks/README.md: updates 4-6% faster, the same peak RSS. It is
    process-wide, so only the `gpt1` command's training commands do it, not the library. Returns whether it
    applied (glibc only)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from <malloc.h>
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def bound_kernel_cache(capacity: int = 128) -> None:
    """Let oneDNN keep at most `capacity` compiled matrix kernels instead of its default 1,024. It compiles one
    per shape, and fine-tuning's batches come in many lengths: on a CPU with AMX, bf16 fine-tuning on SST-2
    batches reached 4,071 MiB peak RSS with the default and 3,263 MiB with 128, at the same speed (0 halves it:
    every product compiles its kernel again). Process-wide, like keep_freed_memory; oneDNN reads it when it
    compiles its first kernel. A capacity the user set in the environment is kept."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in TRAINING_COMMANDS:
        keep_freed_memory()
        bound_kernel_cache()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return args.func(args) or 0
    except ReportedElsewhere:
        return 2
    except UserError as e:
        print(f"gpt1 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `gpt1 encode ... | head`
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, outside the loops that stop cleanly on them
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"\ngpt1 {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


if __name__ == "__main__":
    sys.exit(main())
