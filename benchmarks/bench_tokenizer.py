"""Throughput of gpt1's GPT-1 encoder against Hugging Face's OpenAIGPTTokenizer on the same texts.

Corpora: GLUE SST-2 sentences (short) and Gutenberg paragraphs (long), `--mb` megabytes each. The main runs
start from a fresh tokenizer (cold caches), `--repeats` times each in turn, and keep the median run; the
`_warmed` runs (once) first encode the next `--mb` megabytes of the same source (untimed), as deep inside a
corpus. The ids of all runs are checked to be identical, and MB/s,
texts/s, tokens/s and the ratio to Hugging Face (cold to cold, warmed to warmed) are printed and written as
JSON. Timings are wall-clock: other processes on the machine slow them (the load average is recorded).

    python benchmarks/bench_tokenizer.py --mb 2 --out benchmarks/results/tokenizer.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def take(texts, n_bytes):
    """The next texts of the iterator `texts` up to `n_bytes` UTF-8 bytes."""
    out, total = [], 0
    for text in texts:
        out.append(text)
        total += len(text.encode("utf-8"))
        if total >= n_bytes:
            break
    return out


def sst2_sentences(data: Path):
    with gzip.open(data / "glue" / "SST-2" / "train.tsv.gz", "rt", encoding="utf-8") as f:
        for row in f.read().split("\n")[1:]:
            if row:
                yield row.split("\t")[0]


def gutenberg_paragraphs(data: Path):
    """Paragraphs from the middle half of each book in turn (skips the licence text at both ends)."""
    for path in sorted((data / "corpus" / "gutenberg").glob("*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            paragraphs = [p for p in re.split(r"\n[ \t]*\n", f.read()) if p.strip()]
        yield from paragraphs[len(paragraphs) // 4 : len(paragraphs) // 4 + 200]


def measure(name, encode_all, texts, n_bytes):
    started, cpu_started = time.perf_counter(), time.process_time()
    ids = encode_all(texts)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # this process only: workers are not counted
    n_tokens = sum(map(len, ids))
    result = {
        "seconds": round(seconds, 3),
        "cpu_seconds_this_process": round(cpu_seconds, 3),
        "mb_per_s": round(n_bytes / 1e6 / seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1),
        "tokens_per_s": round(n_tokens / seconds, 1),
    }
    print(f"  {name:<22} {result['mb_per_s']:8.3f} MB/s {result['texts_per_s']:10.1f} texts/s "
          f"{result['tokens_per_s']:11.1f} tokens/s  ({seconds:.2f} s wall, {cpu_seconds:.2f} s CPU here)",
          flush=True)
    return ids, result


def check_same(name, ids, reference, texts):
    if len(ids) != len(reference):
        sys.exit(f"{name}: {len(ids)} texts encoded, Hugging Face {len(reference)}")
    mismatch = next((i for i, (a, b) in enumerate(zip(ids, reference)) if a != b), None)
    if mismatch is not None:
        sys.exit(f"{name}: ids differ from Hugging Face at text {mismatch}: {texts[mismatch]!r}")


def median_run(runs):
    """The run of median time (the slower middle one of an even number), with every run's MB/s."""
    kept = dict(sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2])
    kept["mb_per_s_runs"] = [run["mb_per_s"] for run in runs]
    return kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--mb", type=float, default=2.0, help="megabytes of text per corpus (default: %(default)s)")
    parser.add_argument("--corpora", nargs="+", choices=["sst2", "gutenberg"], default=["sst2", "gutenberg"],
                        help="(default: both; SST-2 holds 3.6 MB in all, so above --mb 1.8 its warm-up set is short)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for the parallel run "
                        "(default: all cores, %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="cold runs of each side, taken in turn; the median "
                        "run is kept (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tokenizer.json",
                        help="JSON results file (default: %(default)s)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import transformers

    from gpt1.tokenizer import load_tokenizer

    vocab = args.data / "gpt1_vocab"
    if not vocab.is_dir():
        parser.error(f"{vocab} not found; pass --data")
    corpora = {}
    sources = {"sst2": sst2_sentences, "gutenberg": gutenberg_paragraphs}
    for name in args.corpora:
        source = sources[name](args.data)
        corpora[name] = take(source, args.mb * 1e6), take(source, args.mb * 1e6)

    def new_hf():
        return transformers.OpenAIGPTTokenizer(vocab / "encoder_bpe_40000.json", vocab / "vocab_40000.bpe")

    def hf_encode(texts, hf=None):
        hf = hf or new_hf()
        return [hf.convert_tokens_to_ids(hf.tokenize(t)) for t in texts]

    def gpt1_single(texts, tok=None):
        tok = tok or load_tokenizer(vocab)
        return [tok.encode(t) for t in texts]

    def gpt1_parallel(texts):
        return load_tokenizer(vocab).encode_batch(texts, workers=args.workers)

    load_before = round(os.getloadavg()[0], 2)  # other processes on the machine skew the timings
    results = {}
    for corpus, (texts, warmup) in corpora.items():
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        print(f"{corpus}: {len(texts)} texts, {n_bytes / 1e6:.2f} MB")
        cold = [("huggingface", hf_encode), ("gpt1_1_process", gpt1_single),
                (f"gpt1_{args.workers}_processes", gpt1_parallel)]
        cold_runs: dict[str, list[dict]] = {name: [] for name, _ in cold}
        reference = None
        for r in range(args.repeats):  # in turn, reversed every other time: a drifting machine favours no one
            for name, encode_all in cold if r % 2 == 0 else cold[::-1]:
                ids, result = measure(name, encode_all, texts, n_bytes)
                reference = reference or ids  # the first run is Hugging Face's
                check_same(name, ids, reference, texts)
                cold_runs[name].append(result)
        runs = {name: median_run(results_) for name, results_ in cold_runs.items()}
        hf_warmed, tok_warmed = new_hf(), load_tokenizer(vocab)
        hf_encode(warmup, hf_warmed)
        gpt1_single(warmup, tok_warmed)
        _, runs["huggingface_warmed"] = measure("huggingface_warmed", partial(hf_encode, hf=hf_warmed), texts, n_bytes)
        ids, runs["gpt1_1_process_warmed"] = measure("gpt1_1_process_warmed", partial(gpt1_single, tok=tok_warmed),
                                                     texts, n_bytes)
        check_same("gpt1_1_process_warmed", ids, reference, texts)
        print("  ratios (median runs):" if args.repeats > 1 else "  ratios:")
        for name, run in runs.items():
            if name.startswith("gpt1"):
                baseline = runs["huggingface_warmed" if name.endswith("warmed") else "huggingface"]
                run["ratio_vs_hf"] = round(run["mb_per_s"] / baseline["mb_per_s"], 2)
                print(f"  {name:<22} {run['ratio_vs_hf']:.2f}x Hugging Face, ids identical")
        results[corpus] = {"texts": len(texts), "mb": round(n_bytes / 1e6, 3), "runs": runs}

    report = {
        "benchmark": "GPT-1 text encoder: gpt1 vs transformers.OpenAIGPTTokenizer (wall clock; cold and warmed caches; "
                     "ids checked equal)",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "transformers": transformers.__version__,
                    "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)]},
        "workers": args.workers,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
