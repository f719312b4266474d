"""gpt1's encoder against Hugging Face's OpenAIGPTTokenizer, text by text, on >= 20,000 real texts.

The texts come from every text source in ../shared/data (GLUE SST-2, CoLA, MRPC, Story Cloze, RACE, Gutenberg)
plus hand-written edge cases. The volume is bounded (about 2.7 MB) because the reference runs in one process.
"""

import csv
import gzip
import json
import re
import tarfile
from pathlib import Path

import pytest

from gpt1.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("ftfy")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = DATA / "gpt1_vocab"

EDGE_CASES = [
    "",
    " ",
    "\n",
    "\t \n \t",
    "   \n\n   ",
    "<unk>",
    "<UNK> and <unk><unk> and <Unk>x",
    "a<unk>b",
    "&lt;unk&gt; &amp; &quot;html&quot; &#8212; &eacute;t&eacute; <b>bold</b> &amp;",
    "dash—em – en ― bar … ellipsis it´s",
    "“curly” ‘quotes’ don’t “Don’t”",
    "naïve café résumé Ångström façade Zoë coöperate",
    "ΣΟΦΟΣ ΟΔΥΣΣΕΥΣ σοφός İstanbul STRASSE straße ﬁne ﬂow",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flags 🇺🇸",
    "中文字符 日本語のテキスト 한국어 텍스트",
    "mojibake: Ã©tÃ© cafÃ© â€œquotedâ€\x9d donâ€™t",
    "line one\nline two\n\nline four\r\nwindows\rold mac",
    "tabs\tbetween\twords\t\tdouble",
    "multiple     spaces    here",
    "U.S. Mr. Smith vs. Dr. Jones e.g. i.e. a.m. p.m. 10a.m. Ph.D. St. Louis",
    "it's can't won't I'm you're they'll we'd y'all o'clock 'em 'cause",
    "(parens) [brackets] {braces} |pipes| _under_ *stars* \\back/slash ~tilde~ +plus+",
    "!!! ??? ;;; ,,, --- ~~~ ::: ... \"\"\"",
    ":) :-( ;-) <3 :D (^_^) o.O",
    "https://example.com/path?q=1&r=2 user@example.org #hashtag @mention",
    "numbers 3.14159 1,000,000 -42 +7 1/2 50% $100 £5 €10 ¥20",
    "\u00a0non-breaking\u00a0space\u2009thin\u200bzero-width\ufeffbom",
    "control\x00chars\x07here\x1b[31mred\x1b[0m\x7f",
    "sup² sub₂ fraction ½ roman Ⅻ fullwidth ＡＢＣ",
    "\u2028line separator\u2029paragraph separator\x85next line",
    "ALL CAPS SHOUTING WITH ÉCLAT",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x\n  \n  y",
    "\n\nleading newlines",
    "trailing newlines\n\n",
    "\u3000ideographic space\u3000",
    "Ｈｅｌｌｏ， ｗｏｒｌｄ！",
    "´´´ ———— …… ――",
    "e\u0301 combining accent vs é",
]


def _sst2(n):
    with gzip.open(DATA / "glue" / "SST-2" / "train.tsv.gz", "rt", encoding="utf-8") as f:
        rows = f.read().split("\n")[1:]
    return [r.split("\t")[0] for r in rows if r][:n]


def _cola(n):
    rows = (DATA / "glue" / "CoLA" / "train.tsv").read_text(encoding="utf-8").split("\n")
    return [r.split("\t")[3] for r in rows if r][:n]


def _mrpc(n_pairs):
    rows = (DATA / "glue" / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").split("\n")[1:]
    out = []
    for r in rows[:n_pairs]:
        if r:
            cols = r.split("\t")
            out += [cols[3], cols[4]]
    return out


def _story_cloze():
    path = DATA / "story_cloze" / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [s for row in rows for s in row[1:7]]


def _race(n_articles):
    out = []
    with tarfile.open(DATA / "race" / "RACE.tar.gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                record = json.load(tar.extractfile(member))
                out.append(record["article"])
                out += record["questions"][:2]
                if len(out) >= 3 * n_articles:
                    break
    return out


def _gutenberg(n_books, per_book):
    """Paragraphs (split on blank lines, inner newlines kept) from the middle of several books."""
    out = []
    for path in sorted((DATA / "corpus" / "gutenberg").glob("*.txt.gz"))[:n_books]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            paragraphs = [p for p in re.split(r"\n[ \t]*\n", f.read()) if p.strip()]
        middle = len(paragraphs) // 2
        out += paragraphs[middle : middle + per_book]
    return out


def parity_texts():
    return (
        EDGE_CASES
        + _sst2(9000)
        + _cola(3000)
        + _mrpc(1000)
        + _story_cloze()
        + _race(300)
        + _gutenberg(n_books=60, per_book=40)
    )


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent (../shared/data next to the checkout)")
def test_ids_equal_hugging_face_on_real_text():
    texts = parity_texts()
    assert len(texts) >= 20_000, len(texts)
    ours = load_tokenizer(VOCAB).encode_batch(texts, workers=2)
    reference = transformers.OpenAIGPTTokenizer(VOCAB / "encoder_bpe_40000.json", VOCAB / "vocab_40000.bpe")
    assert reference.fix_text is not None, "transformers fell back to BasicTokenizer: ftfy/spaCy missing"
    n_tokens = 0
    for i, (text, got) in enumerate(zip(texts, ours)):
        want = reference.convert_tokens_to_ids(reference.tokenize(text))
        assert got == want, f"text {i} of {len(texts)} differs: {text!r}\ngpt1: {got}\nHF:   {want}"
        n_tokens += len(got)
    n_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"\ntokenizer parity: {len(texts)} texts ({n_mb:.2f} MB, {n_tokens} tokens) identical to HF")
