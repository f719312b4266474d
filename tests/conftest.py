import json
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_token_data(directory: Path, vocab_size: int = 64, n_train: int = 20000, n_val: int = 2000, seed: int = 0):
    """A prepared-data folder (as `gpt1 prepare` writes) holding a learnable synthetic token stream:
    short random phrases repeated, so a language model's loss falls quickly."""
    rng = np.random.default_rng(seed)
    phrases = [rng.integers(1, vocab_size, size=rng.integers(3, 9)) for _ in range(40)]

    def stream(n):
        out = []
        while sum(map(len, out)) < n:
            out.append(phrases[rng.integers(len(phrases))])
        return np.concatenate(out)[:n].astype(np.uint16)

    directory.mkdir(parents=True)
    stream(n_train).tofile(directory / "train.bin")
    stream(n_val).tofile(directory / "val.bin")
    (directory / "tokenizer").mkdir()
    meta = {"dtype": "uint16", "vocab_size": vocab_size, "train_tokens": n_train, "val_tokens": n_val}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture
def token_data(tmp_path):
    return write_token_data(tmp_path / "data")


def require_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the project's ../shared/data is not next to this checkout)")
    return path


def run(capsys, *argv):
    """`gpt1 ARGV` in this process: exit code, stdout, stderr."""
    from gpt1.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The one line of an error message, which must come without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
