"""GPT-1's text encoder (Radford et al., 2018): ftfy, standardisation, spaCy, lowercasing and BPE with `</w>`.

The ids are those of Hugging Face's `OpenAIGPTTokenizer(vocab_file, merges_file)` (transformers 4.57 with ftfy
and spaCy installed), which is how GPT-1 checkpoints are used today. That tokenizer differs from OpenAI's
original `text_utils.py` in one place: it lowercases the whole text *before* ftfy, standardisation and spaCy
(and treats a literal `<unk>` in the text as the unknown token), whereas the original lowercased each spaCy
token afterwards. The order changes ids: spaCy's special cases are case-sensitive ("Mr." and "U.S." stay whole,
"mr." and "u.s." are split) and ftfy no longer recognises lowercased mojibake ("cafÃ©" is repaired, "cafã©"
is not). Measured on texts without `<unk>`: 522 of the 28,567 texts of tests/test_tokenizer_parity.py differ;
0 of 67,349 SST-2 sentences (already lowercase), 12 of 8,551 CoLA, 691 of 7,336 MRPC, 321 of 3,000 RACE
articles and questions, 753 of 7,976 Gutenberg paragraphs. `lowercase_first=True` (the default, saved in
tokenizer.json) follows Hugging Face; `False` gives the original order and no `<unk>` splitting.

Per text, each step matching the reference exactly:
1. lowercase character by character (as the reference's regex does: no final-sigma rule), split on `<unk>`;
2. per piece: `ftfy.fix_text`, `standardize`, spaCy's rule-based English tokenizer (blank pipeline);
3. per spaCy token: `str.lower`, then BPE: merge the adjacent pair of lowest rank until none is in the table.
   The reference joins the symbols with spaces and splits them again, which matters only for spaCy's
   whitespace token `"\\n "` (after standardisation the only token holding a space): its special case maps
   it to `"\\n</w>"`.
Pieces missing from the encoder become `<unk>` (id 0). A merges file's last line is ignored, as by the
reference (it is empty when the file ends with a newline, as the release and `save` do).

Speed, all exact: ftfy runs only on lines holding a character outside `_FTFY_PLAIN` or mojibake by ftfy's own
test (`_fix_line`); standardisation splits once instead of running four substitutions; spaCy runs once per
distinct space-separated span, not per text (`Tokenizer._add_spans` says why that is exact and when it falls
back to the whole text), and not at all for spans of ASCII letters, with its lexical attributes switched off;
BPE is the Rust implementation of `tokenizers`; the ids of every distinct span and token are cached.
`encode_batch` adds processes and hands spaCy the new spans of ~100k characters of texts in one call.
"""

from __future__ import annotations

import gc
import heapq
import json
import multiprocessing
import os
import re
import signal
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from itertools import accumulate, chain
from pathlib import Path

import ftfy
from ftfy.badness import is_bad
from ftfy.fixes import uncurl_quotes
from spacy.attrs import IDX, ORTH
from spacy.lang.en import English
from tokenizers.models import BPE
from tqdm import tqdm

from .errors import UserError

__all__ = ["Tokenizer", "load_tokenizer", "standardize", "train_tokenizer"]

UNK = "<unk>"
EOW = "</w>"
NEWLINE = "\n" + EOW
SPECIAL_NAMES = ("<start>", "<delim>", "<extract>")
SETTINGS_FILE = "tokenizer.json"
MERGES_HEADER = "#version: 0.2"

_DASHES = str.maketrans({"\u2014": "-", "\u2013": "-", "\u2015": "-", "\u2026": "...", "\u00b4": "'"})
# A run of one of these characters; splitting with it yields [text, run, its character, text, ...]. (The
# reference's alternation of 18 runs matches the same strings but is 20 times slower.)
_PUNCT_RUNS = re.compile(r'(([-~!";?+,)(\\/*\[\]}{|_])\2*)')

# ftfy.fix_text returns its input unchanged when the text holds only these characters: HTML unescaping needs
# '&', mojibake repair needs non-ASCII text, line-break fixing needs '\r' or U+0085/2028/2029, control-character
# and terminal-escape removal need characters below 0x20 other than tab/newline or 0x7F, and the remaining
# fixers (C1 controls, ligatures, width, quotes, surrogates, NFC) only touch non-ASCII characters.
_FTFY_NOOP = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")
# The same plus Latin letters and general punctuation that, of all ftfy's fixers, only two can change: quote
# uncurling (U+2018-201F) and mojibake repair, which acts only where ftfy's own `is_bad` finds mojibake.
# Excluded: the soft hyphen and bidi controls (format characters), U+2028/2029 (line breaks) and the Latin
# ligatures (Ĳ ĳ ŉ Ǆ-ǌ Ǳ-ǳ). Every character here is NFC-stable and combines with nothing.
_FTFY_PLAIN = re.compile(
    "[\t\n\x20-\x25\x27-\x7e\u00a0-\u00ac\u00ae-\u0131\u0134-\u0148\u014a-\u01c3\u01cd-\u01f0"
    "\u01f4-\u024f\u2010-\u2027\u2030-\u205e]*"
)
# The subset of `_FTFY_PLAIN` outside ASCII that ftfy's mojibake test `is_bad` cannot match alone: no-break
# space, dashes, ellipsis and curly quotes (its categories "common", "start_punctuation", "end_punctuation"). Each
# alternative of its pattern needs another non-ASCII character, so a line of these is never bad, and fix_text
# only uncurls its quotes (tests/test_tokenizer.py checks every 3-character string of them and ASCII).
_FTFY_QUOTES = re.compile("[\t\n\x20-\x25\x27-\x7e\u00a0\u2013-\u2015\u2018-\u201a\u201c-\u201e\u2026]*")
# fix_text fixes lines longer than this in several segments.
_FTFY_SEGMENT = ftfy.TextFixerConfig().max_decode_length

# encode_batch hands the forked workers the tokenizer and the texts through these globals (no pickling).
_WORKER_TOKENIZER: Tokenizer | None = None
_WORKER_TEXTS: Sequence[str] = ()
# Below this many characters a batch is encoded in-process: starting workers costs more than it saves.
_MIN_PARALLEL_CHARS = 200_000
_CHUNK_CHARS = 100_000
# Stands for `<unk>` in a text's list of spans: no span holds a space.
_UNK_SPAN = " "


def standardize(text: str) -> str:
    """GPT-1's `text_standardize`: dashes, ellipsis and acute accent unified, each run of one punctuation
    character spaced out, each whitespace run holding a newline made ` \\n `, other runs one space, stripped."""
    return " ".join(_standard_spans(text))


def _standard_spans(text: str) -> list[str]:
    """`standardize(text).split(" ")` (or [] for an empty result), computed without building the string.

    The reference applies four regex substitutions; the same result follows from one split at punctuation
    runs (each becomes a span of its own) and `str.split` of the rest (`str.split` and the regex `\\s` agree
    on every code point), with a `"\\n"` span wherever the whitespace between two spans contains a newline."""
    if not text.isascii():
        text = text.translate(_DASHES)
    spans: list[str] = []
    newline = False
    parts = _PUNCT_RUNS.split(text)
    runs = parts[1::3]
    for k, part in enumerate(parts[::3]):
        if k:
            if newline and spans:
                spans.append("\n")
            newline = False
            spans.append(runs[k - 1])
        for j, line in enumerate(part.split("\n")):
            if j:
                newline = True
            words = line.split()
            if words:
                if newline and spans:
                    spans.append("\n")
                newline = False
                spans += words
    return spans


def _fix_text(text: str) -> str:
    """`ftfy.fix_text(text)`, line by line with `_fix_line`.

    fix_text fixes each line (with its newline) on its own; the only state carried from line to line is that
    a line containing '<' turns HTML unescaping off for the rest, so texts with '<' go to ftfy whole."""
    if _FTFY_NOOP.fullmatch(text):
        return text
    if "<" in text:
        return ftfy.fix_text(text)
    if "\n" not in text:
        return _fix_line(text)
    lines = text.split("\n")
    last = lines.pop()
    out = [_fix_line(line + "\n") for line in lines]
    out.append(_fix_line(last))
    return "".join(out)


def _fix_line(line: str) -> str:
    """`ftfy.fix_text(line)` for a line without '<', calling ftfy only where more than quotes can change.

    For a line of `_FTFY_PLAIN` characters, fix_text's loop reduces to: leave the text alone if `is_bad`
    finds no mojibake, uncurl the quotes, and stop once a pass changes nothing (decided by `is_bad` again,
    except for ASCII, which mojibake repair leaves alone)."""
    if _FTFY_NOOP.fullmatch(line):
        return line
    if len(line) <= _FTFY_SEGMENT:
        if _FTFY_QUOTES.fullmatch(line):  # `is_bad` cannot match: see `_FTFY_QUOTES`
            return uncurl_quotes(line)
        if _FTFY_PLAIN.fullmatch(line) and not is_bad(line):
            uncurled = uncurl_quotes(line)
            if uncurled == line or uncurled.isascii() or not is_bad(uncurled):
                return uncurled
    return ftfy.fix_text(line)


@contextmanager
def _gc_paused():
    """Python's cyclic garbage collector off for the block. Encoding allocates many lists (ids, tokens, cache
    entries) and creates no cycles; with the collector on, the full collections that these allocations
    trigger re-scan every cached list, which took a fifth of the time of encoding a new corpus."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lower_each_char(text: str) -> str:
    """Lowercase as the reference does, one character at a time: `str.lower` on a whole string applies the
    final-sigma rule (the only context-dependent mapping), so strings containing Σ are lowered per character."""
    if "\u03a3" in text:
        return "".join([c.lower() for c in text])
    return text.lower()


class Tokenizer:
    """A BPE vocabulary with GPT-1's pre-processing; ids of the three fine-tuning tokens follow the vocabulary."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], lowercase_first: bool = True):
        self.encoder = dict(encoder)
        self.merges = [tuple(m) for m in merges]
        # The reference's BPE (merge the adjacent pair of lowest rank everywhere, until none is left; a repeated
        # merge keeps its last rank) in Rust, with the same ids on every word tested (tests/test_tokenizer.py).
        self._bpe = BPE(vocab=self.encoder, merges=self.merges, unk_token=UNK, end_of_word_suffix=EOW)
        self.lowercase_first = lowercase_first
        self.vocab_size = len(self.encoder)
        self.start_id = self.vocab_size
        self.delimiter_id = self.vocab_size + 1
        self.extract_id = self.vocab_size + 2
        self.n_vocab_with_specials = self.vocab_size + 3
        self.unk_id = self.encoder[UNK]
        self.newline_id = self.encoder[NEWLINE]
        self.decoder = {i: t for t, i in self.encoder.items()}
        for offset, name in enumerate(SPECIAL_NAMES):
            self.decoder[self.vocab_size + offset] = name + EOW
        self._spacy = English().tokenizer
        # spaCy computes ~20 lexical attributes (shape, like_num, ...) for every new word; tokenizing reads
        # only ORTH, so skip them. Splitting does not depend on them (prefix/suffix/infix rules are regexes).
        self._spacy.vocab.lex_attr_getters = {}
        self._strings = self._spacy.vocab.strings
        self._special_cases = set(self._spacy.rules)
        self._unmatched, self._cross_pairs, self._may_match = _special_case_tools(self._spacy)
        self._token_cache: dict[str, list[int]] = {}
        # Per distinct span (see `_add_spans`): its ids; its first/last token before special-case matching where
        # that could join a multi-token special case across a space; whether the matching pass re-splits it.
        self._span_ids: dict[str, list[int]] = {_UNK_SPAN: [self.unk_id]}
        self._span_edges: dict[str, tuple[str | None, str | None]] = {}
        self._resplit: set[str] = set()

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        """Ids of `text` (no fine-tuning tokens added)."""
        return self._encode_texts([text])[0]

    def _encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text: ftfy and standardisation per text, then the spans new to the cache, of all texts
        together, through spaCy and BPE (`_add_spans`), then each text's ids from the cache."""
        with _gc_paused():
            texts_spans = [self._spans(text) for text in texts]
            try:
                return [self._cached_ids(spans) for spans in texts_spans]
            except KeyError:  # some span is new
                span_ids = self._span_ids
                self._add_spans([s for s in dict.fromkeys(chain.from_iterable(texts_spans)) if s not in span_ids])
                return [self._cached_ids(spans) for spans in texts_spans]

    def _cached_ids(self, spans: list[str]) -> list[int]:
        """Ids of a text's spans from the cache (KeyError for a span not in it), or from the whole text where
        two spans could join across a space."""
        if not self._resplit.isdisjoint(spans) and self._joins_across_space(spans):
            return self._encode_whole(spans)
        return list(chain.from_iterable(map(self._span_ids.__getitem__, spans)))

    def _spans(self, text: str) -> list[str]:
        """The space-free spans of the standardised text, `_UNK_SPAN` where the reference splits at `<unk>`."""
        if not self.lowercase_first:
            return _standard_spans(_fix_text(text))
        spans: list[str] = []
        for k, piece in enumerate(_lower_each_char(text).split(UNK)):
            if k:
                spans.append(_UNK_SPAN)
            if piece:
                spans += _standard_spans(_fix_text(piece))
        return spans

    def _joins_across_space(self, spans: list[str]) -> bool:
        """Whether two neighbouring spans, one of them re-split by spaCy's matching pass, end and start with
        tokens that are adjacent in some special case (see `_add_spans`)."""
        resplit, edges, cross_pairs = self._resplit, self._span_edges, self._cross_pairs
        no_edges = (None, None)
        return any((left in resplit or right in resplit)
                   and (edges.get(left, no_edges)[1], edges.get(right, no_edges)[0]) in cross_pairs
                   for left, right in zip(spans, spans[1:]))

    def _encode_whole(self, spans: list[str]) -> list[int]:
        """The reference's way: spaCy on each `<unk>`-free piece whole."""
        ids: list[int] = []
        ends = [k for k, span in enumerate(spans) if span == _UNK_SPAN] + [len(spans)]
        start = 0
        for end in ends:
            if end > start:
                ids += self._encode_doc(" ".join(spans[start:end]))
            if end < len(spans):
                ids.append(self.unk_id)
            start = end + 1
        return ids

    def _add_spans(self, new: list[str]) -> None:
        """Cache, for each new space-free span (distinct, not `_UNK_SPAN`), its ids as spaCy tokenizes it alone;
        its first/last token before special-case matching when those could join a multi-token special case
        across a space; and whether the matching pass re-splits it.

        spaCy splits a text at spaces and tokenizes each span on its own (its cache is keyed by span), so
        a text's tokens are its spans' tokens, except for one pass: a phrase matcher over the whole text that
        re-splits multi-token special cases ("10a.m." -> "10", "a.m."). A match across a space never re-splits
        (the matched text contains a space, which no special case does), but it can win over an overlapping
        match inside a span, which then stays as it was before matching. That changes a span's tokens only if
        the pass re-splits it. `_encode_texts` therefore falls back to the whole text when two neighbouring
        spans end and start with tokens that are adjacent in some special case and one of them is re-split
        ("it 's" stays cached: neither is); otherwise the two agree."""
        if "\n" in new:  # in a text, spaCy's whitespace token "\n ", which no special case contains
            new = [s for s in new if s != "\n"]
            self._span_ids["\n"] = self._word_ids("\n ")
        strings = self._strings
        parsed = []
        for span in new:
            tokens = self._letter_tokens(span)
            if tokens is None:
                parsed.append(span)
                continue
            self._span_ids[span] = [i for token in tokens for i in self._word_ids(token)]
            self._add_edges(span, tokens[0], tokens[-1])
        # Tokens before the matching pass differ from the final ones only where a special case is inside.
        matchable = [s for s in parsed if self._may_match(s)]
        before = dict(zip(matchable, _tokenize_apart(self._unmatched, matchable)))
        for span, orths in zip(parsed, _tokenize_apart(self._spacy, parsed)):
            unmatched = before.get(span, orths)
            self._span_ids[span] = self._orths_to_ids(orths)
            self._add_edges(span, strings[unmatched[0]], strings[unmatched[-1]])
            if unmatched != orths:
                self._resplit.add(span)

    def _add_edges(self, span: str, first: str, last: str) -> None:
        head, tail = self._cross_pairs.heads, self._cross_pairs.tails
        if first in head or last in tail:
            self._span_edges[span] = (first if first in head else None, last if last in tail else None)

    def _letter_tokens(self, span: str) -> list[str] | None:
        """spaCy's tokens for the commonest spans, found without spaCy: ASCII letters, optionally followed by
        a period after a lowercase letter ("odd."), when neither the span nor its letters are a special case
        ("cannot", "Mr."). None for any other span.

        No prefix, suffix or infix rule of spaCy's English tokenizer matches an ASCII letter, and the one
        suffix rule matching such a span splits the period off after a lowercase letter. The matching pass
        re-splits only the token sequences that spell a special case (here: the span or its letters)."""
        letters = span[:-1] if span[-1] == "." and len(span) > 1 and span[-2].islower() else span
        if not (letters.isalpha() and letters.isascii()) or span in self._special_cases:
            return None
        if letters is span:
            return [span]
        return None if letters in self._special_cases else [letters, "."]

    def _encode_doc(self, standardized: str) -> list[int]:
        return self._orths_to_ids(self._spacy(standardized).to_array(ORTH).tolist())

    def _orths_to_ids(self, orths: list[int]) -> list[int]:
        strings = self._strings
        ids: list[int] = []
        for orth in orths:
            ids += self._word_ids(strings[orth])
        return ids

    def _word_ids(self, token: str) -> list[int]:
        ids = self._token_cache.get(token)
        if ids is None:
            ids = self._token_cache[token] = self._token_ids(token)
        return ids

    def _token_ids(self, token: str) -> list[int]:
        if token == "\n ":  # spaCy's whitespace token, the only token holding a space: the reference's fix
            return [self.newline_id]
        return [piece.id for piece in self._bpe.tokenize(token.lower())]

    def encode_batch(
        self, texts: Sequence[str], workers: int | None = None, progress: bool = False, desc: str = "encode"
    ) -> list[list[int]]:
        """Encode many texts, in order, on `workers` forked processes (default: all cores).

        Workers get contiguous chunks of about 100k characters; small batches stay in this process. Each chunk's
        new spans go through spaCy and BPE together (`_encode_texts`)."""
        global _WORKER_TOKENIZER, _WORKER_TEXTS
        workers = (os.cpu_count() or 1) if workers is None else workers
        sizes = [len(t) for t in texts]
        bar = tqdm(total=len(texts), unit="text", desc=desc, disable=not progress, smoothing=0.1)
        started = time.perf_counter()
        done_chars = 0

        def advance(n_texts: int, n_chars: int) -> None:
            nonlocal done_chars
            done_chars += n_chars
            bar.update(n_texts)
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{done_chars / elapsed / 1e6:.2f} MB/s", refresh=False)

        out: list[list[int]] = []
        ranges = _chunk_ranges(sizes, _CHUNK_CHARS)
        in_process = workers <= 1 or len(texts) < 2 or sum(sizes) < _MIN_PARALLEL_CHARS
        with bar:
            # The first chunk is encoded here (all of them for a small batch): forked workers inherit its caches.
            for lo, hi in ranges if in_process else ranges[:1]:
                out += self._encode_texts(texts[lo:hi])
                advance(hi - lo, sum(sizes[lo:hi]))
            if in_process:
                return out
            ranges = ranges[1:]
            _WORKER_TOKENIZER, _WORKER_TEXTS = self, texts
            try:
                with _worker_pool(workers) as pool:
                    for (lo, hi), ids in zip(ranges, pool.imap(_encode_range, ranges)):
                        out.extend(ids)
                        advance(hi - lo, sum(sizes[lo:hi]))
            finally:
                _WORKER_TOKENIZER, _WORKER_TEXTS = None, ()
        return out

    def _words(self, text: str) -> Iterable[str]:
        """The lowercased spaCy tokens that BPE sees, without whitespace tokens and `<unk>`: training input."""
        pieces = _lower_each_char(text).split(UNK) if self.lowercase_first else [text]
        for piece in pieces:
            for token in self._spacy(standardize(_fix_text(piece))):
                word = token.text.lower()
                if not any(c.isspace() for c in word):
                    yield word

    # ---------------------------------------------------------------- decoding
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`: word ends become spaces; fine-tuning tokens read `<start>`, `<delim>`, `<extract>`."""
        try:
            pieces = [self.decoder[i] for i in ids]
        except KeyError as e:
            raise ValueError(f"id {e.args[0]} is outside 0..{self.n_vocab_with_specials - 1}") from None
        return "".join(pieces).replace(EOW, " ").strip()

    # ---------------------------------------------------------------- files
    def save(self, directory: str | os.PathLike) -> None:
        """Write `encoder_bpe_{n}.json` and `vocab_{n}.bpe` in the byte layout of OpenAI's release, and the
        settings in `tokenizer.json`."""
        from .checkpoint import TOKENIZER_FILES, AtomicDirectory  # torch: not for encoding's start-up

        n = len(self.merges)
        by_id = sorted(self.encoder.items(), key=lambda kv: kv[1])
        # The release lists ids 1.. in order and "<unk>": 0 last; json.dumps' defaults reproduce it byte for byte.
        ordered = dict([kv for kv in by_id if kv[0] != UNK] + [(UNK, self.unk_id)])
        lines = [MERGES_HEADER] + [f"{a} {b}" for a, b in self.merges]
        settings = {"lowercase_first": self.lowercase_first}
        with AtomicDirectory(Path(directory), TOKENIZER_FILES) as tmp:  # a folder of one vocabulary only
            (tmp / f"encoder_bpe_{n}.json").write_text(json.dumps(ordered), encoding="utf-8")
            (tmp / f"vocab_{n}.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


class _CrossPairs(set):
    """Pairs of tokens that are adjacent in some multi-token special case, with the tokens that can start
    (`tails`: left of a space) or end (`heads`: right of a space) such a pair."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        super().__init__(pairs)
        self.tails = {a for a, _ in self}
        self.heads = {b for _, b in self}


class _Gate:
    """An affix function that reports no match while closed (used to build `_special_case_tools`)."""

    def __init__(self, function, empty):
        self.function, self.empty, self.open = function, empty, False

    def __call__(self, text):
        return self.function(text) if self.open else self.empty


def _special_case_tools(tokenizer):
    """For spaCy `tokenizer`: a twin that does everything but the final special-case matching pass, the
    token pairs adjacent in the patterns of that pass, and a search for the strings those patterns spell.

    spaCy adds a special case to its matcher when the case's string contains a prefix, suffix or infix; the
    twin is built with those functions closed, so it gets no patterns, then opened. The patterns are the
    special cases split by the affix rules alone, which a twin without special cases gives."""
    from spacy.tokenizer import Tokenizer as SpacyTokenizer

    gates = [_Gate(tokenizer.prefix_search, None), _Gate(tokenizer.suffix_search, None),
             _Gate(tokenizer.infix_finditer, ())]
    unmatched = SpacyTokenizer(tokenizer.vocab, tokenizer.rules, *gates, tokenizer.token_match, tokenizer.url_match)
    for gate in gates:
        gate.open = True
    affixes_only = SpacyTokenizer(tokenizer.vocab, {}, tokenizer.prefix_search, tokenizer.suffix_search,
                                  tokenizer.infix_finditer, tokenizer.token_match, tokenizer.url_match)
    pairs, cases = set(), []
    for case in tokenizer.rules:
        if (not tokenizer.faster_heuristics or " " in case or tokenizer.find_prefix(case)
                or tokenizer.find_suffix(case) or tokenizer.find_infix(case)):
            pattern = [t.text for t in affixes_only(case)]
            pairs.update(zip(pattern, pattern[1:]))
            cases.append(case)
    search = re.compile("|".join(re.escape(c) for c in sorted(cases, key=len, reverse=True))).search
    if any(case.isalnum() for case in cases):
        return unmatched, _CrossPairs(pairs), search
    # No such special case is purely alphanumeric (true for English), so neither is any span containing one.
    return unmatched, _CrossPairs(pairs), lambda span: not span.isalnum() and search(span) is not None


def _tokenize_apart(tokenizer, spans: list[str]) -> list[list[int]]:
    """The ORTH ids of each span (non-empty, space-free) as `tokenizer` splits it on its own, from one call
    on the spans joined by " \\n ": no special case contains the whitespace token between them."""
    if not spans:
        return []
    starts = list(accumulate((len(s) + 3 for s in spans[:-1]), initial=0))
    groups: list[list[int]] = [[] for _ in spans]
    for orth, idx in tokenizer(" \n ".join(spans)).to_array([ORTH, IDX]).tolist():
        k = bisect_right(starts, idx) - 1
        if idx < starts[k] + len(spans[k]):  # else the whitespace token between spans
            groups[k].append(orth)
    return groups


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of `pair` in `symbols`, left to right, by the joined symbol."""
    first, second = pair
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _worker_pool(workers: int):
    """Forked workers that leave Ctrl-C and SIGTERM to the parent, which stops them on the way out: without
    this, each worker of an interrupted run prints its own traceback."""
    return multiprocessing.get_context("fork").Pool(workers, initializer=_leave_signals_to_parent)


def _leave_signals_to_parent() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _chunk_ranges(sizes: Sequence[int], chunk_chars: int) -> list[tuple[int, int]]:
    ranges, lo, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= chunk_chars:
            ranges.append((lo, i + 1))
            lo, acc = i + 1, 0
    if lo < len(sizes):
        ranges.append((lo, len(sizes)))
    return ranges


def _encode_range(bounds: tuple[int, int]) -> list[list[int]]:
    lo, hi = bounds
    return _WORKER_TOKENIZER._encode_texts(_WORKER_TEXTS[lo:hi])


def _count_range(bounds: tuple[int, int]) -> Counter:
    lo, hi = bounds
    counts: Counter = Counter()
    for text in _WORKER_TEXTS[lo:hi]:
        counts.update(_WORKER_TOKENIZER._words(text))
    return counts


# -------------------------------------------------------------------- loading
def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (invalid byte at offset {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _find_one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if not found:
        raise UserError(f"{directory}: no {pattern} file in the tokenizer directory")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{directory}: several {pattern} files ({names}); keep exactly one")
    return found[0]


def _parse_merges(path: Path) -> list[tuple[str, str]]:
    lines = _read_text(path).split("\n")
    if not lines[0].startswith("#version"):
        raise UserError(f"{path}: line 1 must be the '#version: 0.2' header, found {lines[0][:40]!r}")
    # The reference drops the last line: empty when the file ends with a newline, else the last merge.
    merges = [tuple(line.split()) for line in lines[1:-1]]
    for number, pair in enumerate(merges, start=2):
        if len(pair) != 2:
            line = lines[number - 1]
            raise UserError(f"{path}: line {number} is not two symbols separated by a space: {line[:60]!r}")
    return merges


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load `encoder_bpe_*.json` + `vocab_*.bpe` (+ optional `tokenizer.json`) from `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: tokenizer directory does not exist")
    encoder_path = _find_one(directory, "encoder_bpe_*.json")
    merges_path = _find_one(directory, "vocab_*.bpe")

    encoder = _read_json(encoder_path)
    if not isinstance(encoder, dict):
        raise UserError(f"{encoder_path}: expected a JSON object mapping token strings to ids")
    for token, index in encoder.items():
        if type(index) is not int:
            raise UserError(f"{encoder_path}: token {token!r} maps to {index!r}, not an integer id")
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise UserError(f"{encoder_path}: ids must be 0..{len(encoder) - 1}, each used once")
    for required in (UNK, NEWLINE):
        if required not in encoder:
            raise UserError(f"{encoder_path}: the vocabulary lacks the token {required!r}")

    merges = _parse_merges(merges_path)
    symbols = {symbol for a, b in merges for symbol in (a, b, a + b)}
    if not symbols <= encoder.keys():
        number, symbol = next((n, s) for n, (a, b) in enumerate(merges, 2) for s in (a, b, a + b) if s not in encoder)
        raise UserError(f"{merges_path}: line {number}: {symbol!r} is not in {encoder_path.name}")

    lowercase_first = True
    settings_path = directory / SETTINGS_FILE
    if settings_path.exists():
        settings = _read_json(settings_path)
        if not isinstance(settings, dict):
            raise UserError(f"{settings_path}: expected a JSON object")
        unknown = sorted(set(settings) - {"lowercase_first"})
        if unknown:
            raise UserError(f"{settings_path}: unknown setting(s) {', '.join(unknown)}")
        lowercase_first = settings.get("lowercase_first", True)
        if not isinstance(lowercase_first, bool):
            raise UserError(f"{settings_path}: 'lowercase_first' must be true or false")
    return Tokenizer(encoder, merges, lowercase_first=lowercase_first)


# -------------------------------------------------------------------- training
def train_tokenizer(
    texts: Iterable[str],
    n_merges: int,
    directory: str | os.PathLike,
    workers: int | None = None,
    progress: bool = False,
) -> Tokenizer:
    """Learn `n_merges` BPE merges on `texts` with GPT-1's pre-processing, save them to `directory`, return it.

    Layout as in the release: 0 `<unk>`, the characters (most frequent first), the same with `</w>`, one id per
    new merge result in merge order, `\\n</w>` last."""
    global _WORKER_TOKENIZER, _WORKER_TEXTS
    from .checkpoint import TOKENIZER_FILES, refuse_foreign

    if n_merges < 0:
        raise UserError(f"n_merges must be >= 0, got {n_merges}")
    refuse_foreign(Path(directory), TOKENIZER_FILES)  # before the work, not after
    texts = list(texts)
    workers = (os.cpu_count() or 1) if workers is None else workers
    pre = Tokenizer({UNK: 0, NEWLINE: 1}, [])
    sizes = [len(t) for t in texts]
    ranges = _chunk_ranges(sizes, _CHUNK_CHARS)
    counts: Counter = Counter()
    bar = tqdm(total=len(ranges), unit="chunk", desc="count words", disable=not progress)
    _WORKER_TOKENIZER, _WORKER_TEXTS = pre, texts
    try:
        if workers <= 1 or sum(sizes) < _MIN_PARALLEL_CHARS:
            parts = map(_count_range, ranges)
            for part in parts:
                counts.update(part)
                bar.update()
        else:
            with _worker_pool(workers) as pool:
                for part in pool.imap_unordered(_count_range, ranges):
                    counts.update(part)
                    bar.update()
    finally:
        _WORKER_TOKENIZER, _WORKER_TEXTS = None, ()
        bar.close()

    char_counts: Counter = Counter()
    for word, count in counts.items():
        for c in word:
            char_counts[c] += count
    chars = sorted(char_counts, key=lambda c: (-char_counts[c], c))
    tokens = [UNK, *chars, *(c + EOW for c in chars)]
    merges = _learn_merges(counts, n_merges, progress)
    tokens += [a + b for a, b in merges]
    tokens.append(NEWLINE)
    encoder: dict[str, int] = {}
    for token in tokens:
        encoder.setdefault(token, len(encoder))
    tokenizer = Tokenizer(encoder, merges)
    tokenizer.save(directory)
    return tokenizer


def _learn_merges(word_counts: dict[str, int], n_merges: int, progress: bool = False) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair), updating only the
    words that contain it. A lazy max-heap keeps the pair counts; stale entries are skipped when popped."""
    words = [list(w[:-1]) + [w[-1] + EOW] for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, (symbols, freq) in enumerate(zip(words, freqs)):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freq
            where.setdefault(pair, set()).add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    bar = tqdm(total=n_merges, unit="merge", desc="learn merges", disable=not progress)
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue
        if neg_count >= 0:
            break
        merges.append(pair)
        bar.update()
        changed = set()
        for i in where.pop(pair, ()):
            symbols, freq = words[i], freqs[i]
            old_pairs = list(zip(symbols, symbols[1:]))
            if pair not in old_pairs:
                continue
            new = _merge(symbols, pair)
            words[i] = new
            for old in old_pairs:
                pair_counts[old] -= freq
                changed.add(old)
            for fresh in zip(new, new[1:]):
                pair_counts[fresh] += freq
                where.setdefault(fresh, set()).add(i)
                changed.add(fresh)
        del pair_counts[pair]
        changed.discard(pair)
        for p in changed:
            heapq.heappush(heap, (-pair_counts[p], p))
    bar.close()
    return merges
