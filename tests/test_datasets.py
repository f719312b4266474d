import gzip
import io
import json
import tarfile
from collections import Counter

import pytest
from conftest import require_shared_data

from gpt1.datasets import (
    BENCHMARKS,
    STORYCLOZE_SEED,
    TASK_KINDS,
    UserColumns,
    glue_submission_filename,
    load_benchmark,
    load_user_data,
    load_user_task,
    write_glue_submission,
)
from gpt1.errors import UserError

# ------------------------------------------------------------------ real data (MANIFEST.md's counts)

NLI3 = ("entailment", "neutral", "contradiction")
REAL = [  # name, folder, {split: rows}, {split: {label name: count}} where MANIFEST gives them
    ("cola", "glue/CoLA", {"train": 8551, "dev": 1043, "test": 1063}, {}),
    ("sst2", "glue/SST-2", {"train": 67349, "dev": 872, "test": 1821}, {}),
    ("mrpc", "glue/MRPC", {"train": 3668, "dev": 408, "test": 1725}, {}),
    ("stsb", "glue/STS-B", {"train": 5749, "dev": 1500, "test": 1379}, {}),
    ("qnli", "glue/QNLI", {"dev": 5463, "test": 5463}, {}),
    ("rte", "glue/RTE", {"train": 2490, "dev": 277, "test": 3000}, {}),
    ("wnli", "glue/WNLI", {"train": 635, "dev": 71, "test": 146}, {}),
    ("mnli", "glue/MNLI", {"dev": 9815}, {"dev": dict(zip(NLI3, (3479, 3123, 3213)))}),
    ("snli", "snli/SentEval", {"dev": 9842, "test": 9824},
     {"dev": dict(zip(NLI3, (3329, 3235, 3278))), "test": dict(zip(NLI3, (3368, 3219, 3237)))}),
    ("snli", "snli", {"dev": 9842}, {"dev": dict(zip(NLI3, (3329, 3235, 3278)))}),
]


def label_counts(task, split):
    return dict(Counter(task.label_names[example.label] for example in task.splits[split]))


@pytest.mark.parametrize("name, folder, sizes, labels", REAL, ids=[f"{r[0]}:{r[1]}" for r in REAL])
def test_real_benchmark_counts(name, folder, sizes, labels):
    task = load_benchmark(name, require_shared_data(*folder.split("/")))
    assert {split: len(examples) for split, examples in task.splits.items()} == sizes
    for split, counts in labels.items():
        assert label_counts(task, split) == counts
    for split, examples in task.splits.items():
        labelled = not (split.startswith("test") and folder.startswith("glue"))
        assert all((example.label is not None) == labelled for example in examples)
        assert all(example.text_a for example in examples)


def test_real_glue_quirks():
    cola = load_benchmark("cola", require_shared_data("glue", "CoLA"))
    first = cola.splits["train"][0]
    assert first.text_a == "Our friends won't buy this analysis, let alone the next one we propose."
    assert first.label == 1 and first.source.endswith("CoLA/train.tsv:1")  # no header line
    assert cola.splits["test"][5].uid == "5"
    mrpc = load_benchmark("mrpc", require_shared_data("glue", "MRPC"))  # the BOM must not hide "Quality"
    assert (mrpc.kind, mrpc.metrics) == ("similarity", ["f1", "accuracy"])
    assert mrpc.splits["dev"][0].text_b and mrpc.splits["test"][0].uid == "0"
    stsb = load_benchmark("stsb", require_shared_data("glue", "STS-B"))
    assert stsb.label_names is None and stsb.splits["train"][0].label == 5.0
    assert all(0.0 <= example.label <= 5.0 for example in stsb.splits["dev"])
    rte = load_benchmark("rte", require_shared_data("glue", "RTE"))
    assert rte.label_names == ["entailment", "not_entailment"] and rte.splits["train"][0].label == 1
    # stray quotes stay text: QUOTE_NONE keeps MRPC's " the witness " within one field
    assert '" the witness "' in mrpc.splits["train"][0].text_a


def test_real_storycloze_split():
    folder = require_shared_data("story_cloze")
    task = load_benchmark("storycloze", folder)
    assert {split: len(examples) for split, examples in task.splits.items()} == {"train": 1497, "dev": 374, "test": 1871}
    val = Counter(task.label_names[e.label] for split in ("train", "dev") for e in task.splits[split])
    assert val == {"1": 962, "2": 909} and label_counts(task, "test") == {"1": 960, "2": 911}
    assert {e.uid for e in task.splits["train"]}.isdisjoint(e.uid for e in task.splits["dev"])
    example = task.splits["test"][0]
    assert example.text_b == "" and len(example.choices) == 2 and example.label == 1
    assert example.text_a.startswith("My friends all love to go to the club to dance. They think")
    assert "1,497" in " ".join(task.notes) and str(STORYCLOZE_SEED) in " ".join(task.notes)
    again, other = load_benchmark("storycloze", folder), load_benchmark("storycloze", folder, seed=0)
    assert [e.uid for e in again.splits["dev"]] == [e.uid for e in task.splits["dev"]]
    assert [e.uid for e in other.splits["dev"]] != [e.uid for e in task.splits["dev"]]


@pytest.fixture(scope="module")
def race():
    """RACE.tar.gz is 25 MB: read it once for the module."""
    return load_benchmark("race", require_shared_data("race"))


def test_real_race_counts(race):
    sizes = {split: len(examples) for split, examples in race.splits.items()}
    assert sizes == {"train": 62445 + 25421, "dev": 4887, "test": 4934, "dev_middle": 1436, "dev_high": 3451,
                     "test_middle": 1436, "test_high": 3498}
    assert len({e.text_a for e in race.splits["test"]}) == 362 + 1045  # passages
    example = race.splits["dev_high"][0]
    assert example.uid == "high/10024.txt#1" and example.text_b == "The Sherman Antitrust Act  _  ."
    assert example.choices[1] == "sought to eliminate monopolies in favor of competition in the market-place"
    assert len(example.choices) == 4 and example.label == 1  # answer "B"
    assert race.label_names == ["A", "B", "C", "D"] and race.kind == "multiple-choice"


# ------------------------------------------------------------------ forms not in the shared data


def write(path, text, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_glue_gz_variants_and_missing_splits(tmp_path):
    write(tmp_path / "train.tsv.gz", "src\t1\t\tA sentence .\nsrc\t0\t*\tBad sentence the .\n", compress=True)
    write(tmp_path / "test.tsv.gz", "index\tsentence\n7\tAnother one .\n", compress=True)
    task = load_benchmark("cola", tmp_path)
    assert [e.label for e in task.splits["train"]] == [1, 0]
    assert task.splits["test"][0].uid == "7" and task.splits["test"][0].label is None
    assert "dev" not in task.splits and any("no dev split" in note for note in task.notes)


def test_mnli_tsv_layout(tmp_path):
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    write(tmp_path / "train.tsv", header + "0\t1\t1e\tfiction\tP .\tH .\tneutral\tneutral\n")
    write(tmp_path / "dev_mismatched.tsv", header + "0\t1\t1e\tletters\tP .\tH .\tcontradiction\tcontradiction\n")
    write(tmp_path / "test_matched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\n3\t1\t1\tx\tP .\tH .\n")
    task = load_benchmark("mnli", tmp_path)
    assert set(task.splits) == {"train", "dev_mismatched", "test"}
    assert task.splits["dev_mismatched"][0].label == 2 and task.splits["test"][0].uid == "3"


def test_snli_official_jsonl_and_txt(tmp_path):
    rows = [{"gold_label": "neutral", "sentence1": "A man .", "sentence2": "A person .", "pairID": "p1"},
            {"gold_label": "-", "sentence1": "A dog .", "sentence2": "An animal .", "pairID": "p2"},
            {"gold_label": "entailment", "sentence1": "A cat .", "sentence2": "An animal .", "pairID": "p3"}]
    write(tmp_path / "snli_1.0_dev.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    columns = ["gold_label", "sentence1_binary_parse", "sentence1", "sentence2", "captionID", "pairID", "label1"]
    lines = ["\t".join(columns)] + ["\t".join([r["gold_label"], "( x )", r["sentence1"], r["sentence2"], "c", r["pairID"], ""]) for r in rows]
    write(tmp_path / "snli_1.0_test.txt", "\n".join(lines) + "\n")
    task = load_benchmark("snli", tmp_path)
    for split in ("dev", "test"):
        assert [(e.uid, e.label) for e in task.splits[split]] == [("p1", 1), ("p3", 0)]
    assert any("1 pairs without a gold label" in note for note in task.notes)


def test_scitail_tsv_and_jsonl_forms(tmp_path):
    write(tmp_path / "tsv_format" / "scitail_1.0_train.tsv", "Plants grow .\tPlants get bigger .\tentails\nRocks .\tCats .\tneutral\n")
    write(tmp_path / "snli_format" / "scitail_1.0_dev.txt",
          json.dumps({"sentence1": "P .", "sentence2": "H .", "gold_label": "entailment"}) + "\n")
    task = load_benchmark("scitail", tmp_path)  # the SciTailV1.1 root
    assert [e.label for e in task.splits["train"]] == [0, 1] and task.splits["dev"][0].label == 0
    assert task.label_names == ["entailment", "neutral"]
    assert load_benchmark("scitail", tmp_path / "tsv_format").splits["train"][1].text_b == "Cats ."


def race_passage(answers="AB"):
    return json.dumps({"article": "An article .", "questions": [f"Q{i} ?" for i in range(len(answers))],
                       "options": [["a", "b", "c", "d"]] * len(answers), "answers": list(answers), "id": "x"})


@pytest.mark.parametrize("packed", [False, True])
def test_race_folder_and_tar_layouts(tmp_path, packed):
    files = {"RACE/train/middle/1.txt": race_passage("AB"), "RACE/train/high/1.txt": race_passage("C"),
             "RACE/test/middle/2.txt": race_passage("D"), "RACE/test/high/3.txt": race_passage("BA")}
    if packed:
        with tarfile.open(tmp_path / "RACE.tar.gz", "w:gz") as archive:
            for name, text in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                archive.addfile(info, io.BytesIO(text.encode()))
    else:
        for name, text in files.items():
            write(tmp_path / name, text)
    every, middle, high = (load_benchmark(name, tmp_path) for name in ("race", "race-middle", "race-high"))
    assert {s: len(e) for s, e in every.splits.items()} == {"train": 3, "test": 3, "test_middle": 1, "test_high": 2}
    assert {s: len(e) for s, e in middle.splits.items()} == {"train": 2, "test": 1}
    assert [e.label for e in high.splits["test"]] == [1, 0] and high.splits["test"][1].uid == "high/3.txt#2"


def test_race_errors(tmp_path):
    write(tmp_path / "RACE/dev/high/5.txt", race_passage("E"))
    with pytest.raises(UserError, match=r"RACE/dev/high/5.txt: question 1: answer 'E'"):
        load_benchmark("race", tmp_path)
    with pytest.raises(UserError, match="no RACE passages"):
        load_benchmark("race-middle", tmp_path)


@pytest.mark.parametrize("passage, message", [
    ({"article": 5, "questions": ["Q ?"], "options": [list("abcd")], "answers": ["A"]},
     r"1.txt: expected the article as text and questions, options and answers as lists"),
    ({"article": "A .", "questions": 1, "options": 1, "answers": 1}, r"1.txt: expected the article as text"),
    ({"article": "A .", "questions": ["Q ?"], "options": [5], "answers": ["A"]},
     r"1.txt: question 1: expected the question as text and its options as a list of texts"),
    ({"article": "A .", "questions": ["Q ?"], "options": [[1, 2, 3, 4]], "answers": ["A"]}, r"1.txt: question 1: "),
    ({"article": "A .", "questions": [None], "options": [list("abcd")], "answers": ["A"]}, r"1.txt: question 1: "),
])
def test_race_passages_of_the_wrong_types_are_named(tmp_path, passage, message):
    """These were tracebacks (TypeError) or, for a null question, a question read as None."""
    write(tmp_path / "RACE/dev/middle/1.txt", json.dumps(passage))
    with pytest.raises(UserError, match=message):
        load_benchmark("race-middle", tmp_path)


def test_race_folder_entry_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "RACE/dev/middle/1.txt").mkdir(parents=True)
    with pytest.raises(UserError, match=r"RACE/dev/middle/1.txt: cannot read: Is a directory"):
        load_benchmark("race-middle", tmp_path)


# ------------------------------------------------------------------ benchmark errors


@pytest.mark.parametrize("name, text, message", [
    ("cola", b"src\t1\tA sentence .\n", r"train.tsv:1: expected 4 tab-separated fields, found 3"),
    ("cola", b"src\t1\t\tOk .\nsrc\t2\t\tBad label .\n", r"train.tsv:2: unknown label '2' \(known labels: 0, 1\)"),
    ("stsb", b"index\tsentence1\tsentence2\tscore\n0\tA\tB\tfive\n", r"train.tsv:2: unparsable score 'five'"),
    ("sst2", b"sentence\tlabel\nfine\t1\n\xff\t0\n", r"train.tsv:3: not valid UTF-8"),
    ("sst2", b"", r"train.tsv: empty file"),
    ("sst2", b"sentence\tlabel\n", r"train.tsv: no data rows"),
    ("sst2", b"text\tlabel\nfine\t1\n", r"train.tsv:1: missing column 'sentence' \(columns present: text, label\)"),
])
def test_benchmark_row_errors(tmp_path, name, text, message):
    (tmp_path / "train.tsv").write_bytes(text)
    with pytest.raises(UserError, match=message):
        load_benchmark(name, tmp_path)


def test_benchmark_folder_errors(tmp_path):
    with pytest.raises(UserError, match=r"none of the rte files found \(looked for dev.tsv\[.gz\], test.tsv\[.gz\], train.tsv\[.gz\]\)"):
        load_benchmark("rte", tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        load_benchmark("rte", tmp_path / "absent")
    with pytest.raises(UserError, match="unknown benchmark 'glue'"):
        load_benchmark("glue", tmp_path)
    with pytest.raises(UserError, match="none of the Story Cloze files"):
        load_benchmark("storycloze", tmp_path)


def test_benchmark_table():
    assert set(BENCHMARKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "snli",
                               "scitail", "race", "race-middle", "race-high", "storycloze"}


# ------------------------------------------------------------------ user data


def test_user_classification_csv_tsv_jsonl(tmp_path):
    csv_file = write(tmp_path / "train.csv", 'text,label\n"Good, really",pos\nBad,neg\n"Say ""hi""",pos\n')
    data = load_user_data(csv_file, "classification")
    assert data.label_names == ["neg", "pos"] and [e.label for e in data.examples] == [1, 0, 1]
    assert data.examples[2].text_a == 'Say "hi"' and data.examples[1].source.endswith("train.csv:3")
    tsv_file = write(tmp_path / "dev.tsv.gz", 'review\tstars\n"quoted\t10\nok\t9\nmeh\t2\n', compress=True)
    data = load_user_data(tsv_file, "classification", UserColumns(text="review", label="stars"))
    assert data.label_names == ["2", "9", "10"] and data.examples[0].text_a == '"quoted'  # TSV: no quoting
    jsonl_file = write(tmp_path / "test.jsonl", '{"text": "a", "label": 1, "id": "x7"}\n\n{"text": "b", "label": 0, "id": 8}\n')
    data = load_user_data(jsonl_file, "classification", UserColumns(uid="id"), label_names=["0", "1"])
    assert [(e.label, e.uid) for e in data.examples] == [(1, "x7"), (0, "8")]


def test_user_pair_kinds(tmp_path):
    file = write(tmp_path / "pairs.jsonl", '{"a": "P", "b": "H", "y": "yes"}\n{"a": "P2", "b": "H2", "y": "no"}\n')
    for kind in ("entailment", "similarity"):
        data = load_user_data(file, kind, UserColumns(text="a", text_b="b", label="y"))
        assert data.label_names == ["no", "yes"] and data.examples[0].text_b == "H"
    scores = write(tmp_path / "scores.csv", "text,text_b,label\nA,B,4.5\nC,D,1\n")
    data = load_user_data(scores, "regression")
    assert data.label_names is None and [e.label for e in data.examples] == [4.5, 1.0]
    single = load_user_data(scores, "regression", UserColumns(text_b=None))
    assert single.examples[0].text_b is None


def test_user_multiple_choice(tmp_path):
    one_column = write(tmp_path / "mc.csv", 'context,question,choices,label\nStory .,Why ?,"[""x"", ""y"", ""z""]",B\n'
                                            'Story .,How ?,"[""x"", ""y"", ""z""]",z\nStory .,What ?,"[""x"", ""y"", ""z""]",0\n')
    data = load_user_data(one_column, "multiple-choice")
    assert data.label_names == ["A", "B", "C"] and [e.label for e in data.examples] == [1, 2, 0]
    assert data.examples[0].choices == ["x", "y", "z"] and data.examples[0].text_b == "Why ?"
    columns = UserColumns(context="story", question=None, choices=("end1", "end2"), label="right")
    several = write(tmp_path / "mc.jsonl", '{"story": "S .", "end1": "e1", "end2": "e2", "right": 1}\n')
    example = load_user_data(several, "multiple-choice", columns).examples[0]
    assert (example.text_b, example.choices, example.label) == ("", ["e1", "e2"], 1)
    listed = write(tmp_path / "list.jsonl", '{"context": "C", "question": "Q", "choices": ["p", "q"], "label": "q"}\n')
    assert load_user_data(listed, "multiple-choice").examples[0].label == 1


def test_user_task_uses_train_labels(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    write(tmp_path / "dev.csv", "text,label\nc,y\n")
    write(tmp_path / "test.csv", "text\nd\n")
    task = load_user_task("my-data", "classification", train=tmp_path / "train.csv", dev=tmp_path / "dev.csv",
                          test=tmp_path / "test.csv")
    assert task.label_names == ["x", "y"] and task.metrics == ["accuracy"]
    assert task.splits["dev"][0].label == 1 and task.splits["test"][0].label is None
    write(tmp_path / "bad_dev.csv", "text,label\nc,z\n")
    with pytest.raises(UserError, match=r"bad_dev.csv:2: unknown label 'z' \(known labels: x, y\)"):
        load_user_task("my-data", "classification", train=tmp_path / "train.csv", dev=tmp_path / "bad_dev.csv")
    with pytest.raises(UserError, match="unknown metric"):
        load_user_task("my-data", "classification", train=tmp_path / "train.csv", metrics=["bleu"])


@pytest.mark.parametrize("name, text, kind, columns, message", [
    ("a.csv", "text,label\nx,1\n", "entailment", UserColumns(),
     r"a.csv:1: missing column 'text_b' \(columns present: text, label\)"),
    ("a.jsonl", '{"text": "x"}\n', "classification", UserColumns(), r"a.jsonl:1: missing column 'label' \(columns present: text\)"),
    ("a.csv", "", "classification", UserColumns(), r"a.csv: empty file"),
    ("a.csv", "text,label\nx,1\ny,0,extra\n", "classification", UserColumns(), r"a.csv:3: expected 2 comma-separated fields, found 3"),
    ("a.tsv", "text\tlabel\n \t1\n", "classification", UserColumns(), r"a.tsv:2: empty text in column 'text'"),
    ("a.csv", "text,label\nx,\n", "classification", UserColumns(), r"a.csv:2: empty label"),
    ("a.jsonl", '{"text": "x", "label": 1}\n{"text": "y", label: 0}\n', "classification", UserColumns(), r"a.jsonl:2: invalid JSON"),
    ("a.jsonl", '[1, 2]\n', "classification", UserColumns(), r"a.jsonl:1: expected a JSON object"),
    ("a.jsonl", '{"text": 5, "label": 1}\n', "classification", UserColumns(), r"a.jsonl:1: column 'text' must be text"),
    ("a.csv", "text,text_b,label\nx,y,high\n", "regression", UserColumns(), r"a.csv:2: unparsable score 'high'"),
    ("a.csv", 'context,question,choices,label\nC,Q,"[""a"", ""b""]",E\n', "multiple-choice", UserColumns(),
     r"a.csv:2: label 'E' is neither a choice index"),
    ("a.csv", 'context,question,choices,label\nC,Q,"[""1"", ""0""]",1\n', "multiple-choice", UserColumns(),
     r"a.csv:2: label '1' is ambiguous"),
    ("a.csv", 'context,question,choices,label\nC,Q,a b,0\n', "multiple-choice", UserColumns(),
     r"a.csv:2: column 'choices' must hold a JSON list"),
    ("a.jsonl", '{"context": "C", "question": "Q", "choices": ["a", "b"], "label": 0}\n'
                '{"context": "C", "question": "Q", "choices": ["a", "b", "c"], "label": 0}\n', "multiple-choice", UserColumns(),
     r"a.jsonl:2: expected 2 choices"),
    ("a.txt", "text,label\nx,1\n", "classification", UserColumns(), r"a.txt: unknown file type"),
    ("a.csv", 'text,label\n"x,1\n', "classification", UserColumns(), r"a.csv:2: "),
    # a quote left open would swallow the rows after it into one field: Python's lenient reader gave 2 rows of 4
    ("a.csv", 'text,label\n"Great film,pos\nbad,neg\nshe said "wow" loudly,neg\ngood,pos\n', "classification",
     UserColumns(), r"a.csv:2: ',' expected after '\"'"),
    ("a.csv", 'text,label\nx,"pos"x\n', "classification", UserColumns(), r"a.csv:2: ',' expected after '\"'"),
    ("a.jsonl", '{"context": "C", "question": "Q", "choices": ["a", "b"], "label": "\u00b2"}\n', "multiple-choice",
     UserColumns(), r"a.jsonl:1: label '\u00b2' is neither a choice index"),
    # no answers was an IndexError; one answer trained a head that is always right
    ("a.jsonl", '{"context": "C", "question": "Q", "choices": [], "label": 0}\n', "multiple-choice", UserColumns(),
     r"a.jsonl:1: a multiple-choice row needs at least 2 answers, found 0"),
    ("a.csv", 'context,question,choices,label\nC,Q,"[""a""]",0\n', "multiple-choice", UserColumns(),
     r"a.csv:2: a multiple-choice row needs at least 2 answers, found 1"),
    # json.loads keeps the last of two equal keys without a word; the others were tracebacks
    ("a.jsonl", '{"text": "x", "label": "pos", "text": "y"}\n', "classification", UserColumns(),
     r"a.jsonl:1: duplicate key\(s\) 'text' in one object"),
    ("a.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 1}\n', "classification", UserColumns(),
     r"a.jsonl:1: JSON nested too deeply to read$"),
    # Python's own message ended "use sys.set_int_max_str_digits() to increase the limit"
    ("a.jsonl", '{"text": "x", "label": -1' + "0" * 5000 + "}\n", "classification", UserColumns(),
     r"a.jsonl:1: an integer of 5,001 digits; at most 4,300 are read$"),
    ("a.csv", "text,label,text\nx,1,y\n", "classification", UserColumns(),
     r"a.csv:1: duplicate column name\(s\) 'text' in the header"),
    ("a.csv", ",\nx,y\n", "classification", UserColumns(), r"a.csv:1: duplicate column name\(s\) '' in the header"),
])
def test_user_data_errors(tmp_path, name, text, kind, columns, message):
    path = write(tmp_path / name, text)
    with pytest.raises(UserError, match=message):
        load_user_data(path, kind, columns)


def test_user_data_long_fields_and_many_choices(tmp_path):
    """The policy for over-long text is to cut it at encoding time, so reading must not refuse it (the csv
    module's default limit is 131,072 characters); more than 26 choices are named by index."""
    article = "word " * 40_000
    data = load_user_data(write(tmp_path / "a.csv", f'text,label\n"{article}",x\nshort,y\n'), "classification")
    assert data.examples[0].text_a == article
    choices = [f"answer {i}" for i in range(30)]
    row = json.dumps({"context": "C", "question": "Q", "choices": choices, "label": 28})
    data = load_user_data(write(tmp_path / "mc.jsonl", row + "\n"), "multiple-choice")
    assert data.label_names == [str(i) for i in range(30)] and data.examples[0].label == 28


def test_user_data_non_utf8_and_options(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"text,label\nok,1\ncaf\xe9,0\n")
    with pytest.raises(UserError, match=r"a.csv:3: not valid UTF-8 \(byte 0xe9\)"):
        load_user_data(path, "classification")
    with pytest.raises(UserError, match="unknown task kind"):
        load_user_data(path, "ranking")
    assert set(TASK_KINDS) == {"classification", "entailment", "similarity", "regression", "multiple-choice"}
    semicolons = write(tmp_path / "a.txt", "text;label\nx;1\n")
    assert load_user_data(semicolons, "classification", delimiter=";").examples[0].text_a == "x"
    unlabelled = write(tmp_path / "b.csv", "text\nx\n")
    with pytest.raises(UserError, match=r"b.csv:1: missing column 'label'"):
        load_user_data(unlabelled, "classification")
    assert load_user_data(unlabelled, "classification", require_label=False).examples[0].label is None


def test_a_gzip_file_without_the_gz_suffix_is_named_as_such(tmp_path):
    """It was "not valid UTF-8 (byte 0x8b); save the file as UTF-8", which sends the user the wrong way."""
    write(tmp_path / "a.csv", "text,label\nx,1\n", compress=True)
    with pytest.raises(UserError, match=r"a.csv: gzip-compressed, but its name does not end in .gz; rename it a.csv.gz"):
        load_user_data(tmp_path / "a.csv", "classification")
    (tmp_path / "a.csv").rename(tmp_path / "a.csv.gz")
    assert load_user_data(tmp_path / "a.csv.gz", "classification").examples[0].text_a == "x"


# ------------------------------------------------------------------ GLUE submissions


def test_glue_submission(tmp_path):
    assert [glue_submission_filename(t) for t in ("cola", "sst2", "stsb", "qqp", "ax")] == ["CoLA.tsv", "SST-2.tsv", "STS-B.tsv", "QQP.tsv", "AX.tsv"]
    assert glue_submission_filename("mnli", "test_mismatched") == "MNLI-mm.tsv"
    path = write_glue_submission("mnli", ["0", "1", "2"], [0, 2, 1], tmp_path)
    assert path.name == "MNLI-m.tsv"
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tcontradiction\n2\tneutral\n"
    assert write_glue_submission("cola", ["0", "1"], [1, 0], tmp_path).read_text() == "index\tprediction\n0\t1\n1\t0\n"
    assert write_glue_submission("rte", ["5"], [1], tmp_path).read_text().endswith("5\tnot_entailment\n")
    assert write_glue_submission("stsb", ["0", "1"], [4.25, 0.5], tmp_path).read_text() == "index\tprediction\n0\t4.250\n1\t0.500\n"
    with pytest.raises(ValueError, match="class indices"):
        write_glue_submission("sst2", ["0"], [2], tmp_path)
    with pytest.raises(UserError, match="no GLUE submission file for snli/test"):
        glue_submission_filename("snli")
