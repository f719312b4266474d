"""The benchmark scripts run end to end on a tiny model and write what they print (speed is not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_train_measures_every_mode_against_the_peer(tmp_path):
    out = tmp_path / "train.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--preset", "test", "--steps", "1",
           "--warmup", "1", "--threads", "1", "--device", "cpu", "--dtypes", "fp32", "--shapes", "2x16",
           "--new-tokens", "4", "--repeats", "2", "--out", str(out), "--profile", str(tmp_path / "profiles"),
           "--command-settings"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {(r["mode"], r["batch"], r["context"]): r for r in report["rows"]}
    expected = {("train", 2, 16), ("infer", 2, 16), ("finetune", 2, 16), ("generate", 1, 16),
                ("generate", 8, 16)}  # generation prompts are a quarter of the test preset's 64
    with_sst2 = (SHARED_DATA / "glue" / "SST-2").is_dir()  # real batches of 32 sentences, up to the context of 64
    assert set(rows) == expected | ({("finetune-sst2", 32, 64)} if with_sst2 else set())
    assert ("skipping finetune-sst2" in result.stdout) != with_sst2
    assert report["new_tokens"] == 4 and report["command_settings"] is True
    for row in rows.values():
        for impl in ("gpt1", "hf"):
            assert row[impl]["tokens_per_s"] > 0 and row[impl]["peak_mib"] > 0
            runs = row[impl]["tokens_per_s_runs"]
            assert len(runs) == 2 and row[impl]["tokens_per_s"] == min(runs)  # the slower of two
        assert row["ratio"] == pytest.approx(row["gpt1"]["tokens_per_s"] / row["hf"]["tokens_per_s"])
    assert "failed" not in result.stdout
    profiles = {p.name: p.read_text() for p in (tmp_path / "profiles").iterdir()}
    assert set(profiles) == {"train-fp32-2x16.txt", "infer-fp32-2x16.txt", "finetune-fp32-2x16.txt",
                             "generate-fp32-1x16.txt", "generate-fp32-8x16.txt"} | (
        {"finetune-sst2-fp32-32x64.txt"} if with_sst2 else set())
    assert all("aten::" in table for table in profiles.values())
