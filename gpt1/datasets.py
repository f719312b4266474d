"""Fine-tuning data: every benchmark of the GPT-1 paper read from its files exactly as distributed, and
a user's own CSV/TSV/JSONL files, all turned into one in-memory form (`TaskData` of `Example`s) that the
four task-aware input transformations consume (GPT1.md, "Fine-tuning").

Readers are strict: a malformed row is a `UserError` naming "file:line" rather than a silently skipped
example, because a skipped or misparsed row changes a benchmark number without anyone noticing. The only
rows dropped on purpose are documented ones (SNLI pairs whose gold label is "-"), and the count is
reported in `TaskData.notes`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import operator
import re
import string
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from gpt1.checkpoint import write_text_atomic
from gpt1.errors import UserError
from gpt1.metrics import METRICS

TASK_KINDS = ("classification", "entailment", "similarity", "regression", "multiple-choice")


@dataclass
class Example:
    """One example. Which fields are set depends on the task kind (see TASK_KINDS)."""

    text_a: str  # the text / premise / first sentence / multiple-choice context (article, story)
    text_b: str | None = None  # hypothesis / second sentence / multiple-choice question ("" when none)
    choices: list[str] | None = None  # multiple-choice answers
    label: int | float | None = None  # index into TaskData.label_names, float for regression, None if unlabelled
    uid: str = ""  # the id to write in submission files, else the row number within its file
    source: str = ""  # where it came from, "path:line", for error messages


@dataclass
class TaskData:
    """A task ready for fine-tuning: its examples per split and how to score it."""

    name: str
    kind: str  # one of TASK_KINDS
    label_names: list[str] | None  # class names in index order; None for regression
    metrics: list[str]  # keys of gpt1.metrics.METRICS; the first selects the best epoch
    splits: dict[str, list[Example]]  # "train", "dev", "test", and e.g. "dev_mismatched", "test_middle"
    notes: list[str] = field(default_factory=list)  # remarks to show the user
    columns: UserColumns | None = None  # the user's own data: which columns it was read from; None for a benchmark


# ---------------------------------------------------------------------------------------------------
# Reading files: bytes -> checked text -> rows of named fields, each row knowing its "path:line".


def _decode(raw: bytes, where: str) -> str:
    """UTF-8 text without a BOM; a decoding error names the line, so the user can find the bad bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise UserError(f"{where}:{line}: not valid UTF-8 (byte 0x{raw[error.start]:02x}); save the file as UTF-8") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise UserError(f"{where}: empty file")
    return text


def _read_text(path: Path) -> str:
    """The whole file (gzip-compressed when its name ends in .gz) as checked text."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read: {error}") from None
    # gzip's magic number: "not valid UTF-8 ... save the file as UTF-8" would send the user the wrong way
    if raw.startswith(b"\x1f\x8b") and not path.name.endswith(".gz"):
        raise UserError(f"{path}: gzip-compressed, but its name does not end in .gz; rename it {path.name}.gz")
    return _decode(raw, str(path))


@dataclass
class _Row:
    fields: dict[str, Any]
    source: str  # "path:line"


@dataclass
class _Table:
    path: Path
    header: list[str] | None  # None for JSONL, where every row has its own keys
    rows: list[_Row]


_SEPARATOR_NAMES = {"\t": "tab-separated", ",": "comma-separated"}


def _read_delimited(path: Path, delimiter: str, header: Sequence[str] | None = None) -> _Table:
    """A delimited file whose first line is its header, or which has none and gets `header`.

    Tab-separated files are read without quote processing (csv.QUOTE_NONE): TSV has no quoting, and GLUE's
    files contain stray quotes that a quoting reader would treat as multi-line fields. Other delimiters
    follow the usual CSV quoting. Blank lines are skipped; every other row must have the header's width.
    Fields may be of any length (over-long texts are cut later, by the documented policy).
    """
    csv.field_size_limit(2**31 - 1)  # the module's default, 131,072 characters, would refuse a long article
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # strict: a quote that does not close where the field ends is an error, not the start of a field that
    # swallows the rows after it (Python's reader is lenient by default).
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    columns = list(header) if header is not None else None
    separated = _SEPARATOR_NAMES.get(delimiter, f"{delimiter!r}-separated")
    rows: list[_Row] = []
    line = 1
    try:
        for record in reader:
            start, line = line, reader.line_num + 1  # a quoted field may span lines: report the first
            if not record:
                continue
            if columns is None:
                duplicates = sorted({name for name in record if record.count(name) > 1})
                if duplicates:
                    raise UserError(f"{path}:{start}: duplicate column name(s) {', '.join(map(repr, duplicates))} in the header")
                columns = record
            elif len(record) != len(columns):
                raise UserError(f"{path}:{start}: expected {len(columns)} {separated} fields, found {len(record)}")
            else:
                rows.append(_Row(dict(zip(columns, record)), f"{path}:{start}"))
    except csv.Error as error:
        raise UserError(f"{path}:{line}: {error}") from None
    if not rows:
        raise UserError(f"{path}: no data rows" + (" after the header" if header is None else ""))
    return _Table(path, columns, rows)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are distinct: json.loads would keep the last of "text": ..., "text": ... silently."""
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, duplicates))} in one object")
    return dict(pairs)


def _json_int(digits: str) -> int:
    """An integer of JSON, refused in the user's terms past the length Python converts (4,300 digits by default)."""
    limit = sys.get_int_max_str_digits()
    if limit and len(digits.lstrip("-")) > limit:
        raise ValueError(f"an integer of {len(digits.lstrip('-')):,} digits; at most {limit:,} are read")
    return int(digits)


def _read_jsonl(path: Path) -> _Table:
    """JSON Lines: one object per non-blank line."""
    rows = []
    for number, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_unique_keys, parse_int=_json_int)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: invalid JSON: {error.msg} (column {error.colno})") from None
        except ValueError as error:  # duplicate keys, an integer too long to read
            raise UserError(f"{path}:{number}: {error}") from None
        except RecursionError:
            raise UserError(f"{path}:{number}: JSON nested too deeply to read") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, found {type(value).__name__}")
        rows.append(_Row(value, f"{path}:{number}"))
    return _Table(path, None, rows)


def _read_senteval(s1_path: Path) -> _Table:
    """SentEval/InferSent's NLI layout: s1.<split>, s2.<split>, labels.<split>, one item per line, in step."""
    split = s1_path.name.removeprefix("s1.")
    paths = {"s1": s1_path, "s2": s1_path.with_name(f"s2.{split}"), "label": s1_path.with_name(f"labels.{split}")}
    columns = {}
    for column, path in paths.items():
        lines = _read_text(path).split("\n")
        columns[column] = lines[:-1] if lines[-1] == "" else lines
    counts = {len(lines) for lines in columns.values()}
    if len(counts) > 1:
        found = ", ".join(f"{paths[c].name}: {len(lines)}" for c, lines in columns.items())
        raise UserError(f"{s1_path.parent}: the SentEval files have different line counts ({found})")
    # the labels file is what can be wrong, so rows point there
    rows = [_Row({c: columns[c][i] for c in columns}, f"{paths['label']}:{i + 1}") for i in range(counts.pop())]
    return _Table(s1_path, list(columns), rows)


def _tsv(header: Sequence[str] | None = None) -> Callable[[Path], _Table]:
    return partial(_read_delimited, delimiter="\t", header=header)


def _find(folder: Path, name: str) -> Path | None:
    """`name` in `folder`, or its gzip-compressed `name.gz`."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------
# Rows -> examples, shared by the benchmarks and the user's files.


@dataclass(frozen=True)
class UserColumns:
    """Which columns (CSV/TSV header names, or JSONL keys) hold what.

    The defaults are the natural names, so a file that uses them needs no options. A column set to None is
    not read: `text_b=None` for one-text regression, `question=None` for multiple choice without a question
    (like Story Cloze), `uid=None` to number the rows instead of reading an id.

    - classification: text.  entailment, similarity: text, text_b.  regression: text (and text_b).
    - multiple-choice: context, question, choices. `choices` is ONE column holding a list of answers
      (a JSON list, e.g. ["yes", "no"], in CSV/TSV; a list in JSONL) or a tuple of SEVERAL columns, one answer
      each. Every row of a file must have the same number of choices.
    - label: a class name (string, or integer written as its decimal string) for the class kinds, a number for
      regression; for multiple choice the right answer as a 0-based index, a letter A-Z, or exactly the text of
      one choice (a label that reads as two different choices, e.g. "1" when choice 0 is "1", is an error).
    """

    text: str = "text"
    text_b: str | None = "text_b"
    label: str = "label"
    context: str = "context"
    question: str | None = "question"
    choices: str | tuple[str, ...] = "choices"
    uid: str | None = None


def _missing(where: str, name: str, present: Sequence[str]) -> UserError:
    return UserError(f"{where}: missing column {name!r} (columns present: {', '.join(map(str, present)) or 'none'})")


def _check_header(table: _Table, required: Sequence[str]) -> None:
    """Missing columns of a delimited file are reported once, at its header line."""
    if table.header is not None:
        for name in required:
            if name not in table.header:
                raise _missing(f"{table.path}:1", name, table.header)


def _get(row: _Row, name: str) -> Any:
    if name not in row.fields:
        raise _missing(row.source, name, list(row.fields))
    return row.fields[name]


def _text(row: _Row, name: str, nonempty: bool) -> str:
    value = _get(row, name)
    if not isinstance(value, str):
        raise UserError(f"{row.source}: column {name!r} must be text, found {json.dumps(value)}")
    if nonempty and not value.strip():
        raise UserError(f"{row.source}: empty text in column {name!r}")
    return value


def _label_key(value: Any, source: str) -> str:
    """A class label as its name: JSON integers become their decimal string, so 1 and "1" are one class."""
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"{source}: empty label")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"{source}: a label must be a string or an integer, found {json.dumps(value)}")


LabelParser = Callable[[Any, str], "int | float | None"]  # (value, source) -> label, None = drop the row


def _class_label(names: Sequence[str], aliases: dict[str, str | None] | None = None) -> LabelParser:
    """Class name -> index. `aliases` maps other spellings to a name, or to None for rows to drop."""
    index: dict[str, int | None] = {name: i for i, name in enumerate(names)}
    index.update({alias: None if name is None else names.index(name) for alias, name in (aliases or {}).items()})

    def parse(value: Any, source: str) -> int | None:
        key = _label_key(value, source)
        if key not in index:
            raise UserError(f"{source}: unknown label {key!r} (known labels: {', '.join(names)})")
        return index[key]

    return parse


def _score(value: Any, source: str) -> float:
    """A regression target (STS-B's 0-5 similarity)."""
    try:
        score = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise UserError(f"{source}: unparsable score {value!r} (expected a number)")
    return score


def _pair_examples(table: _Table, columns: UserColumns, pair: bool, parse_label: LabelParser, *,
                   optional: Sequence[str] = (), nonempty: bool = False) -> list[Example]:
    """One- or two-text examples (classification, entailment, similarity, regression). Columns named in
    `optional` may be absent (an unlabelled test file, a file without ids); others are required."""
    wanted = [columns.text] + ([columns.text_b] if pair else []) + [columns.label] + ([columns.uid] if columns.uid else [])
    _check_header(table, [name for name in wanted if name not in optional])
    examples = []
    for number, row in enumerate(table.rows):
        label = None
        if columns.label in row.fields or columns.label not in optional:
            label = parse_label(_get(row, columns.label), row.source)
            if label is None:
                continue
        examples.append(Example(
            text_a=_text(row, columns.text, nonempty),
            text_b=_text(row, columns.text_b, nonempty) if pair else None,
            label=label,
            uid=_uid(row, columns, optional, number),
            source=row.source,
        ))
    return examples


def _uid(row: _Row, columns: UserColumns, optional: Sequence[str], number: int) -> str:
    if columns.uid and (columns.uid in row.fields or columns.uid not in optional):
        return str(_get(row, columns.uid))
    return str(number)


# ---------------------------------------------------------------------------------------------------
# Benchmarks shipped as tables (GLUE, SNLI, SciTail): which files, which columns, which labels.


@dataclass(frozen=True)
class _Form:
    """One way a split is distributed: a file name in the task folder, how to read it, its columns."""

    file: str
    read: Callable[[Path], _Table]
    columns: UserColumns
    note: str = ""  # what the user should know about this form


@dataclass(frozen=True)
class _TableTask:
    kind: str
    label_names: list[str] | None
    metrics: list[str]
    forms: dict[str, list[_Form]]  # split -> its forms, first found wins
    aliases: dict[str, str | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _glue(kind: str, label_names: list[str] | None, metrics: list[str], columns: UserColumns, *,
          stems: dict[str, str] | None = None, headerless: dict[str, Sequence[str]] | None = None,
          extra: dict[str, list[_Form]] | None = None, aliases: dict[str, str | None] | None = None) -> _TableTask:
    """A GLUE task in download_glue_data.py's layout: <stem>.tsv per split (train, dev, test)."""
    stems = stems or {"train": "train", "dev": "dev", "test": "test"}
    headerless = headerless or {}
    forms = {split: [_Form(f"{stem}.tsv", _tsv(headerless.get(split)), columns)] + (extra or {}).get(split, [])
             for split, stem in stems.items()}
    notes = ("GLUE test labels are not public: write test predictions with write_glue_submission and "
             "upload them to gluebenchmark.com.",)
    return _TableTask(kind, label_names, metrics, forms, aliases or {}, notes)


_BINARY = ["0", "1"]
_NLI3 = ["entailment", "neutral", "contradiction"]
_NLI2 = ["entailment", "not_entailment"]
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_NLI_JSON_REDUCED = UserColumns(text="premise", text_b="hypothesis", label="label")  # generative-nli's reduced form
_REDUCED_NOTE = "the .reduced.jsonl form keeps only premise, hypothesis and label: uids are row numbers"
_NO_GOLD = {"-": None}  # SNLI/MultiNLI 1.0 pairs without a majority label, left out by everyone
_NLI_JSON = UserColumns(text="sentence1", text_b="sentence2", label="gold_label", uid="pairID")  # SNLI/MultiNLI 1.0


def _mnli_forms(split: str) -> list[_Form]:
    return [_Form(f"{split}.reduced.jsonl", _read_jsonl, _NLI_JSON_REDUCED, _REDUCED_NOTE),
            _Form(f"multinli_1.0_{split}.jsonl", _read_jsonl, _NLI_JSON)]


def _snli_forms(split: str) -> list[_Form]:
    return [_Form(f"snli_1.0_{split}.jsonl", _read_jsonl, _NLI_JSON),
            _Form(f"snli_1.0_{split}.txt", _tsv(), _NLI_JSON),
            _Form(f"{split}.reduced.jsonl", _read_jsonl, _NLI_JSON_REDUCED, _REDUCED_NOTE),
            _Form(f"s1.{split}", _read_senteval, UserColumns(text="s1", text_b="s2", label="label"),
                  "SentEval's files are tokenised (spaces around punctuation), unlike SNLI's original text; "
                  "uids are row numbers")]


def _scitail_forms(split: str) -> list[_Form]:
    tsv = _Form(f"scitail_1.0_{split}.tsv", _tsv(("premise", "hypothesis", "label")),
                UserColumns(text="premise", text_b="hypothesis", label="label"))
    jsonl = _Form(f"scitail_1.0_{split}.txt", _read_jsonl,
                  UserColumns(text="sentence1", text_b="sentence2", label="gold_label"))
    # the folder itself, or the SciTailV1.1 root with its two format folders
    return [tsv, jsonl, _Form(f"tsv_format/{tsv.file}", tsv.read, tsv.columns),
            _Form(f"snli_format/{jsonl.file}", jsonl.read, jsonl.columns)]


_SPLITS = ("train", "dev", "test")
_SENTENCES = UserColumns(text="sentence1", text_b="sentence2", label="label", uid="index")
_TABLE_TASKS: dict[str, _TableTask] = {
    "cola": _glue("classification", _BINARY, ["mcc"], UserColumns(text="sentence", label="label", uid="index"),
                  headerless={"train": _COLA_COLUMNS, "dev": _COLA_COLUMNS}),
    "sst2": _glue("classification", _BINARY, ["accuracy"], UserColumns(text="sentence", label="label", uid="index")),
    "mrpc": _glue("similarity", _BINARY, ["f1", "accuracy"],
                  UserColumns(text="#1 String", text_b="#2 String", label="Quality", uid="index")),
    "stsb": _glue("regression", None, ["pearson", "spearman"],
                  UserColumns(text="sentence1", text_b="sentence2", label="score", uid="index")),
    "qqp": _glue("similarity", _BINARY, ["f1", "accuracy"],
                 UserColumns(text="question1", text_b="question2", label="is_duplicate", uid="id")),
    "mnli": _glue("entailment", _NLI3, ["accuracy"],
                  UserColumns(text="sentence1", text_b="sentence2", label="gold_label", uid="index"),
                  stems={"train": "train", "dev": "dev_matched", "dev_mismatched": "dev_mismatched",
                         "test": "test_matched", "test_mismatched": "test_mismatched"},
                  extra={"train": _mnli_forms("train"), "dev": _mnli_forms("dev_matched"),
                         "dev_mismatched": _mnli_forms("dev_mismatched")}, aliases=_NO_GOLD),
    "qnli": _glue("entailment", _NLI2, ["accuracy"],
                  UserColumns(text="question", text_b="sentence", label="label", uid="index")),
    "rte": _glue("entailment", _NLI2, ["accuracy"], _SENTENCES),
    "wnli": _glue("entailment", _BINARY, ["accuracy"], _SENTENCES),
    "snli": _TableTask("entailment", _NLI3, ["accuracy"], {split: _snli_forms(split) for split in _SPLITS},
                       aliases=_NO_GOLD),
    "scitail": _TableTask("entailment", ["entailment", "neutral"], ["accuracy"],
                          {split: _scitail_forms(split) for split in _SPLITS}, aliases={"entails": "entailment"}),
}


def _load_table_task(name: str, folder: Path, seed: int) -> TaskData:
    """`seed` is unused: every loader in BENCHMARKS takes (path, seed)."""
    task = _TABLE_TASKS[name]
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give the {name} folder as distributed)")
    parse = _score if task.label_names is None else _class_label(task.label_names, task.aliases)
    splits, notes = {}, list(task.notes)
    for split, forms in task.forms.items():
        found = next(((form, path) for form in forms if (path := _find(folder, form.file))), None)
        if found is None:
            notes.append(f"no {split} split (looked for {' / '.join(f'{form.file}[.gz]' for form in forms)})")
            continue
        form, path = found
        table = form.read(path)
        optional = [form.columns.uid] + ([form.columns.label] if split.startswith("test") else [])
        splits[split] = _pair_examples(table, form.columns, task.kind != "classification", parse, optional=optional)
        dropped = len(table.rows) - len(splits[split])
        notes.append(f"{split}: {len(splits[split]):,} examples from {path.name}"
                     + (f" ({dropped:,} pairs without a gold label ('-') left out, as is standard)" if dropped else "")
                     + (f"; {form.note}" if form.note else ""))
    if not splits:
        looked = sorted({f"{form.file}[.gz]" for forms in task.forms.values() for form in forms})
        raise UserError(f"{folder}: none of the {name} files found (looked for {', '.join(looked)})")
    return TaskData(name, task.kind, task.label_names, list(task.metrics), splits, notes)


# ---------------------------------------------------------------------------------------------------
# Multiple choice: RACE (JSON per passage) and Story Cloze (CSV).

_RACE_LETTERS = ["A", "B", "C", "D"]
_RACE_LEVELS = {"race": ("middle", "high"), "race-middle": ("middle",), "race-high": ("high",)}


def _race_files(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, level, where, bytes) of every passage file, from RACE.tar.gz (read in place, not extracted)
    or from the extracted RACE/{train,dev,test}/{high,middle}/*.txt folders."""
    if path.is_dir() and (path / "RACE.tar.gz").is_file():
        path = path / "RACE.tar.gz"
    elif path.is_dir() and (path / "RACE").is_dir():
        path = path / "RACE"
    if path.is_file():
        try:
            with tarfile.open(path) as archive:
                for member in archive:
                    parts = member.name.split("/")
                    if member.isfile() and len(parts) >= 3 and member.name.endswith(".txt"):
                        yield parts[-3], parts[-2], f"{path}/{member.name}", archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            raise UserError(f"{path}: cannot read the archive: {error}") from None
    elif path.is_dir():
        for file in sorted(path.glob("*/*/*.txt")):
            try:
                raw = file.read_bytes()
            except OSError as error:  # a folder named *.txt, a file without read permission
                raise UserError(f"{file}: cannot read: {error.strerror}") from None
            yield file.parent.parent.name, file.parent.name, str(file), raw
    else:
        raise UserError(f"{path}: no such file or folder (give RACE.tar.gz or the RACE folder)")


def _race_examples(where: str, level: str, text: str) -> list[Example]:
    """The questions of one RACE passage file: {"article", "questions", "options", "answers", "id"}."""
    try:
        passage = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}:{error.lineno}: invalid JSON: {error.msg}") from None
    except (ValueError, RecursionError) as error:  # an integer of 4,300+ digits, deep nesting
        raise UserError(f"{where}: {error}") from None
    if not isinstance(passage, dict) or any(key not in passage for key in ("article", "questions", "options", "answers")):
        raise UserError(f"{where}: expected a JSON object with article, questions, options and answers")
    questions, options, answers = passage["questions"], passage["options"], passage["answers"]
    if not isinstance(passage["article"], str) or not all(isinstance(v, list) for v in (questions, options, answers)):
        raise UserError(f"{where}: expected the article as text and questions, options and answers as lists")
    if not len(questions) == len(options) == len(answers):
        raise UserError(f"{where}: {len(questions)} questions, {len(options)} option lists and {len(answers)} answers")
    examples = []
    for number, (question, choices, answer) in enumerate(zip(questions, options, answers), 1):
        if not (isinstance(question, str) and isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
            raise UserError(f"{where}: question {number}: expected the question as text and its options as a list "
                            "of texts")
        if len(choices) != len(_RACE_LETTERS):
            raise UserError(f"{where}: question {number}: expected {len(_RACE_LETTERS)} options, found {len(choices)}")
        if answer not in _RACE_LETTERS:
            raise UserError(f"{where}: question {number}: answer {answer!r} is not one of {', '.join(_RACE_LETTERS)}")
        examples.append(Example(text_a=passage["article"], text_b=question, choices=list(choices),
                                label=_RACE_LETTERS.index(answer), uid=f"{level}/{where.rsplit('/', 1)[-1]}#{number}",
                                source=f"{where}#{number}"))
    return examples


def _load_race(name: str, path: Path, seed: int) -> TaskData:
    """`seed` is unused: every loader in BENCHMARKS takes (path, seed)."""
    levels = _RACE_LEVELS[name]
    by_level: dict[tuple[str, str], list[Example]] = {}
    for split, level, where, raw in _race_files(path):
        if split in _SPLITS and level in levels:
            by_level.setdefault((split, level), []).extend(_race_examples(where, level, _decode(raw, where)))
    if not by_level:
        raise UserError(f"{path}: no RACE passages found (looked for RACE.tar.gz or "
                        f"RACE/{{train,dev,test}}/{{{','.join(levels)}}}/*.txt)")
    splits = {split: [example for level in levels for example in by_level.get((split, level), [])] for split in _SPLITS}
    splits = {split: examples for split, examples in splits.items() if examples}
    notes = [f"{split}: {len(examples):,} questions ({' + '.join(levels)})" for split, examples in splits.items()]
    if len(levels) > 1:  # the paper reports RACE-m and RACE-h too: keep them apart for evaluation
        for (split, level), examples in by_level.items():
            if split != "train":
                splits[f"{split}_{level}"] = examples
        notes.append("dev_middle/dev_high and test_middle/test_high hold the same questions by school level "
                     "(RACE-m, RACE-h)")
    return TaskData(name, "multiple-choice", list(_RACE_LETTERS), ["accuracy"], splits, notes)


STORYCLOZE_SEED = 3535999445  # the seed of openai/finetune-transformer-lm's datasets.py
_STORYCLOZE_FILES = {"val": "cloze_test_val__spring2016 - cloze_test_ALL_val.csv",
                     "test": "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"}
_STORYCLOZE_DEV, _STORYCLOZE_VAL = 374, 1871  # the original code's dev size out of the full val file


def _storycloze_examples(path: Path) -> list[Example]:
    table = _read_delimited(path, ",")
    sentences = [f"InputSentence{i}" for i in range(1, 5)]
    endings = ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"]
    _check_header(table, ["InputStoryid", *sentences, *endings, "AnswerRightEnding"])
    parse = _class_label(["1", "2"])
    return [Example(text_a=" ".join(row.fields[s] for s in sentences), text_b="",
                    choices=[row.fields[e] for e in endings], label=parse(row.fields["AnswerRightEnding"], row.source),
                    uid=row.fields["InputStoryid"], source=row.source) for row in table.rows]


def _load_storycloze(folder: Path, seed: int) -> TaskData:
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give the folder with the Story Cloze CSV files)")
    paths = {split: _find(folder, name) for split, name in _STORYCLOZE_FILES.items()}
    if not any(paths.values()):
        looked = " and ".join(map(repr, _STORYCLOZE_FILES.values()))
        raise UserError(f"{folder}: none of the Story Cloze files found (looked for {looked})")
    splits, notes = {}, []
    if paths["val"]:
        val = _storycloze_examples(paths["val"])
        dev_size = max(1, round(len(val) * _STORYCLOZE_DEV / _STORYCLOZE_VAL))
        splits["train"], splits["dev"] = train_test_split(val, test_size=dev_size, random_state=seed)
        original = " (the split of openai/finetune-transformer-lm)" if seed == STORYCLOZE_SEED else ""
        notes.append(f"Story Cloze has no labelled training set: train = {len(splits['train']):,} stories of the "
                     f"validation file, dev = the other {len(splits['dev']):,} (sklearn train_test_split, seed {seed}){original}")
    if paths["test"]:
        splits["test"] = _storycloze_examples(paths["test"])
        notes.append(f"test: {len(splits['test']):,} stories of the labelled spring 2016 test file")
    return TaskData("storycloze", "multiple-choice", ["1", "2"], ["accuracy"], splits, notes)


# ---------------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[Path, int], TaskData]] = {
    **{name: partial(_load_table_task, name) for name in _TABLE_TASKS},
    **{name: partial(_load_race, name) for name in _RACE_LEVELS},
    "storycloze": _load_storycloze,
}


def load_benchmark(name: str, path: str | Path, *, seed: int = STORYCLOZE_SEED) -> TaskData:
    """A benchmark of the paper read from its files as distributed.

    `path` is the task's folder: GLUE's <TASK> folder (train.tsv, dev.tsv, test.tsv; MNLI dev_matched.tsv ...;
    any file may be .gz, and MNLI's dev may be the .reduced.jsonl or multinli_1.0_*.jsonl form); SNLI's
    snli_1.0 folder (.jsonl or .txt), a SentEval folder (s1/s2/labels.<split>) or dev.reduced.jsonl; SciTail's
    tsv_format or snli_format folder or the SciTailV1.1 root; for RACE, RACE.tar.gz, a folder holding it or the
    extracted RACE folder; for Story Cloze, the folder with the two spring 2016 CSV files. Splits whose
    files are absent are absent from `splits` (and named in `notes`).

    `seed` only matters for Story Cloze, which has no training set: train and dev are a seeded split of its
    validation file, by default the split the original GPT-1 code made.
    """
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name](Path(path), seed)


# ---------------------------------------------------------------------------------------------------
# The user's own data.


@dataclass
class UserData:
    """The examples of one user file, and the class names their labels index."""

    examples: list[Example]
    label_names: list[str] | None  # class names in index order (given, or inferred from this file); None for regression


def _format_of(path: Path, delimiter: str | None) -> str | None:
    """The delimiter of a CSV/TSV file, or None for JSONL, from the name (.csv, .tsv, .jsonl, each maybe .gz)."""
    if delimiter is not None:
        return delimiter
    suffix = path.name.lower().removesuffix(".gz").rpartition(".")[2]
    formats = {"csv": ",", "tsv": "\t", "jsonl": None}
    if suffix in formats:
        return formats[suffix]
    raise UserError(f"{path}: unknown file type (expected .csv, .tsv or .jsonl, optionally .gz, or give a delimiter)")


def _sorted_names(keys: set[str]) -> list[str]:
    """Class names in a stable order: numerically if all are integers (so "10" follows "9"), else by text."""
    if all(re.fullmatch(r"-?\d+", key) for key in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def _choice_label(value: Any, choices: list[str], source: str) -> int:
    """The index a multiple-choice label designates (see UserColumns); it must designate exactly one."""
    text = _label_key(value, source)
    meanings = {i for i, choice in enumerate(choices) if choice == text}
    if text.isascii() and text.isdigit() and int(text) < len(choices):
        meanings.add(int(text))
    letters = string.ascii_uppercase[:len(choices)]
    if len(text) == 1 and text in letters:
        meanings.add(letters.index(text))
    if not meanings:
        raise UserError(f"{source}: label {text!r} is neither a choice index (0-{len(choices) - 1}), a letter "
                        f"(A-{letters[-1]}) nor the text of a choice")
    if len(meanings) > 1:
        raise UserError(f"{source}: label {text!r} is ambiguous: it designates choices {sorted(meanings)}")
    return meanings.pop()


def _choices(row: _Row, columns: UserColumns, delimited: bool) -> list[str]:
    if isinstance(columns.choices, str):
        value = _get(row, columns.choices)
        if delimited:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise UserError(f"{row.source}: column {columns.choices!r} must hold a JSON list of answers, "
                                f"found {value!r}") from None
        if not isinstance(value, list) or not all(isinstance(choice, str) for choice in value):
            raise UserError(f"{row.source}: column {columns.choices!r} must hold a list of answer texts, "
                            f"found {json.dumps(value)}")
        choices = value
    else:
        choices = [_text(row, name, False) for name in columns.choices]
    if len(choices) < 2:  # a softmax over one answer is always right: nothing would be learned or scored
        raise UserError(f"{row.source}: a multiple-choice row needs at least 2 answers, found {len(choices)} in "
                        f"column(s) {columns.choices!r}")
    if any(not choice.strip() for choice in choices):
        raise UserError(f"{row.source}: empty answer in column(s) {columns.choices!r}")
    return choices


def _choice_examples(table: _Table, columns: UserColumns, label_names: list[str] | None,
                     optional: Sequence[str]) -> UserData:
    choice_columns = [columns.choices] if isinstance(columns.choices, str) else list(columns.choices)
    wanted = [columns.context] + ([columns.question] if columns.question else []) + choice_columns + [columns.label]
    _check_header(table, [name for name in wanted + ([columns.uid] if columns.uid else []) if name not in optional])
    examples = []
    for number, row in enumerate(table.rows):
        choices = _choices(row, columns, table.header is not None)
        if label_names is None:  # letters, as RACE names its answers; indices beyond Z
            letters = string.ascii_uppercase
            label_names = list(letters[:len(choices)]) if len(choices) <= len(letters) else [
                str(i) for i in range(len(choices))]
        if len(choices) != len(label_names):
            raise UserError(f"{row.source}: expected {len(label_names)} choices like the rows before "
                            f"(or the train file), found {len(choices)}")
        has_label = columns.label in row.fields or columns.label not in optional
        examples.append(Example(
            text_a=_text(row, columns.context, True),
            text_b=_text(row, columns.question, True) if columns.question else "",
            choices=choices,
            label=_choice_label(_get(row, columns.label), choices, row.source) if has_label else None,
            uid=_uid(row, columns, optional, number),
            source=row.source,
        ))
    return UserData(examples, label_names)


def load_user_data(path: str | Path, kind: str, columns: UserColumns = UserColumns(), *,
                   label_names: Sequence[str] | None = None, require_label: bool = True,
                   delimiter: str | None = None) -> UserData:
    """Examples of one of the user's files: CSV or TSV with a header row, or JSONL (one object per line),
    chosen by the extension (.csv, .tsv, .jsonl, optionally .gz); `delimiter` reads any other name as a
    delimited file with a header. `columns` says which columns hold what (see UserColumns).

    Class labels: pass the `label_names` of the train file when reading dev or test, so that every file
    indexes the classes alike and a label the train file lacks is an error; without them they are inferred
    from this file (sorted). `require_label=False` accepts a file without the label column (a test set).

    Every problem is a UserError "file:line: ...": missing column (with the columns present), wrong number of
    fields, empty text, unknown or unparsable label, invalid JSON, non-UTF-8 bytes, empty file.
    """
    path = Path(path)
    if kind not in TASK_KINDS:
        raise UserError(f"unknown task kind {kind!r} (known: {', '.join(TASK_KINDS)})")
    if kind in ("entailment", "similarity") and not columns.text_b:
        raise UserError(f"an input of a {kind} task has two texts: name the second column (--text-b)")
    separator = _format_of(path, delimiter)
    table = _read_jsonl(path) if separator is None else _read_delimited(path, separator)
    optional = [] if require_label else [columns.label]
    if kind == "multiple-choice":
        return _choice_examples(table, columns, list(label_names) if label_names else None, optional)
    if kind == "regression":
        parse_label: LabelParser = _score
    else:
        if label_names is None:
            keys = {_label_key(row.fields[columns.label], row.source) for row in table.rows if columns.label in row.fields}
            label_names = _sorted_names(keys) if keys else None
        parse_label = _class_label(list(label_names or []))
    examples = _pair_examples(table, columns, kind != "classification" and bool(columns.text_b), parse_label,
                              optional=optional, nonempty=True)
    return UserData(examples, None if kind == "regression" else list(label_names or []) or None)


_DEFAULT_METRICS = {"regression": ["pearson", "spearman"]}


def load_user_task(name: str, kind: str, *, train: str | Path, dev: str | Path | None = None,
                   test: str | Path | None = None, columns: UserColumns = UserColumns(),
                   metrics: Sequence[str] | None = None, delimiter: str | None = None) -> TaskData:
    """A task from the user's files, like a benchmark: the train file fixes the class names, dev and test are
    read with them; train and dev must be labelled, test may be. `metrics` defaults to accuracy
    (Pearson/Spearman for regression); F1 needs the positive class to be index 1 of the sorted names."""
    metrics = list(metrics or _DEFAULT_METRICS.get(kind, ["accuracy"]))
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRICS)})")
    first = load_user_data(train, kind, columns, delimiter=delimiter)
    splits = {"train": first.examples}
    for split, path in (("dev", dev), ("test", test)):
        if path is not None:
            data = load_user_data(path, kind, columns, label_names=first.label_names,
                                  require_label=split != "test", delimiter=delimiter)
            splits[split] = data.examples
    notes = [f"{split}: {len(examples):,} examples" for split, examples in splits.items()]
    if first.label_names:
        notes.append(f"labels (from the train file): {', '.join(first.label_names)}")
    return TaskData(name, kind, first.label_names, metrics, splits, notes, columns)


# ---------------------------------------------------------------------------------------------------
# GLUE test-server submissions.

_SUBMISSION_FILES = {
    ("cola", "test"): "CoLA.tsv", ("sst2", "test"): "SST-2.tsv", ("mrpc", "test"): "MRPC.tsv",
    ("stsb", "test"): "STS-B.tsv", ("qqp", "test"): "QQP.tsv", ("mnli", "test"): "MNLI-m.tsv",
    ("mnli", "test_mismatched"): "MNLI-mm.tsv", ("qnli", "test"): "QNLI.tsv", ("rte", "test"): "RTE.tsv",
    ("wnli", "test"): "WNLI.tsv", ("ax", "test"): "AX.tsv",
}


def glue_submission_filename(task_name: str, split: str = "test") -> str:
    """The file name gluebenchmark.com expects for a task's test predictions ("ax": the diagnostic set,
    predicted by the MNLI model; MNLI's "test_mismatched" split goes to MNLI-mm.tsv)."""
    if (task_name, split) not in _SUBMISSION_FILES:
        known = ", ".join(f"{task}/{split}" for task, split in _SUBMISSION_FILES)
        raise UserError(f"no GLUE submission file for {task_name}/{split} (known: {known})")
    return _SUBMISSION_FILES[task_name, split]


def write_glue_submission(task_name: str, uids: Sequence[str], predictions: Sequence, path: str | Path,
                          split: str = "test") -> Path:
    """Write predictions in the GLUE server's format into the folder `path`; returns the file written.

    `predictions` are class indices into the task's label names (STS-B: scores), as the model produces
    them; the file holds the names the server wants ("entailment" ... for MNLI/QNLI/RTE/AX, 0/1 for CoLA,
    SST-2, MRPC, QQP and WNLI), one "index<TAB>prediction" line per test example after that header.
    """
    file = Path(path) / glue_submission_filename(task_name, split)
    if len(uids) != len(predictions):
        raise ValueError(f"{len(uids)} ids but {len(predictions)} predictions")
    label_names = _TABLE_TASKS["mnli" if task_name == "ax" else task_name].label_names
    if label_names is None:
        values = [f"{float(prediction):.3f}" for prediction in predictions]
    else:
        try:
            indices = [operator.index(prediction) for prediction in predictions]
        except TypeError:
            indices = [-1]
        if not all(0 <= index < len(label_names) for index in indices):
            raise ValueError(f"predictions must be class indices 0..{len(label_names) - 1}")
        values = [label_names[index] for index in indices]
    file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(file, "index\tprediction\n" + "".join(f"{uid}\t{value}\n" for uid, value in zip(uids, values)))
    return file
