"""Pre-training: schedule, optimizer groups, resume that repeats an uninterrupted run, atomic checkpoints, DDP."""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_token_data
from gpt1.checkpoint import load_model
from gpt1.data import TokenData, unigram_perplexity, validation_starts, windows
from gpt1.errors import UserError
from gpt1.model import GPT, GPTConfig
from gpt1.pretrain import PretrainConfig, lr_at, make_optimizer, pick_device, pretrain

TINY = dict(preset="test", context=32, micro_batch=4, tokens_per_update=256, max_updates=8, lr=3e-3,
            warmup_updates=2, eval_every=4, eval_windows=8, checkpoint_every=3, keep_checkpoints=2)


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["update"]: r["loss"] for r in records if "loss" in r}


def test_schedule_warms_up_linearly_then_anneals_to_zero():
    config = PretrainConfig(lr=2.5e-4, warmup_updates=2000)
    assert lr_at(0, config, 10000) == pytest.approx(2.5e-4 / 2000)
    assert lr_at(999, config, 10000) == pytest.approx(2.5e-4 * 1000 / 2000)
    assert lr_at(2000, config, 10000) == pytest.approx(2.5e-4)
    assert lr_at(6000, config, 10000) == pytest.approx(2.5e-4 * 0.5)
    assert lr_at(10000, config, 10000) == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_applies_to_tensors_of_two_or_more_dims_only():
    model = GPT(GPTConfig(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    optimizer = make_optimizer(model, PretrainConfig())
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert id(model.tokens_embed.weight) in decayed  # the original code decays the embeddings too


def test_training_lowers_validation_loss_and_writes_metrics(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 30, "eval_every": 10})
    summary = pretrain(config, token_data, tmp_path / "run", progress=False)
    first, last = summary["val"][0], summary["val"][-1]
    assert first["update"] == 0 and last["update"] == 30
    assert last["val_loss"] < first["val_loss"] - 0.5
    assert last["val_ppl"] < unigram_perplexity(TokenData(token_data))  # it uses context, not only frequencies
    assert math.isclose(last["val_ppl"], math.exp(last["val_loss"]), rel_tol=1e-9)
    assert set(losses(tmp_path / "run")) == set(range(1, 31))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] for r in records if "data_wait" in r]
    assert len(waits) == 30 and all(0 < w < 1 for w in waits)  # measured each update, a share of its time
    assert 0 < summary["data_wait"] < 1
    model = load_model(tmp_path / "run")  # the run folder resolves to its latest checkpoint
    assert model.config.n_layer == 2 and model.config.vocab_size == 64


@pytest.mark.parametrize("keep, kept", [(2, ["step-00000006", "step-00000008"]),
                                        (0, ["step-00000003", "step-00000006", "step-00000008"])])
def test_only_the_newest_checkpoints_are_kept_and_zero_keeps_all(token_data, tmp_path, keep, kept):
    pretrain(PretrainConfig.from_dict({**TINY, "keep_checkpoints": keep}), token_data, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == kept


def test_resumed_run_repeats_the_uninterrupted_run_loss_for_loss(token_data, tmp_path):
    config = PretrainConfig.from_dict(TINY)
    pretrain(config, token_data, tmp_path / "straight", progress=False)
    pretrain(config, token_data, tmp_path / "resumed", progress=False, max_updates_this_run=3)
    assert max(losses(tmp_path / "resumed")) == 3
    summary = pretrain(config, token_data, tmp_path / "resumed", resume=True, progress=False)
    assert summary["start_update"] == 3
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")  # exact float equality, step for step
    a, b = load_model(tmp_path / "straight").state_dict(), load_model(tmp_path / "resumed").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_resume_after_a_kill_that_cut_the_last_metrics_line(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 6})
    pretrain(config, token_data, tmp_path / "run", progress=False, max_updates_this_run=4)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"update": 5, "lo')  # a kill in the middle of appending a record
    pretrain(config, token_data, tmp_path / "run", resume=True, progress=False)
    assert set(losses(tmp_path / "run")) == set(range(1, 7))  # every line parses; updates 4-6 written again
    metrics.write_text(metrics.read_text() + "hand-written note\n")
    with pytest.raises(UserError, match=r"metrics.jsonl:\d+: not a metrics record"):
        pretrain(PretrainConfig.from_dict({**TINY, "max_updates": 9}), token_data, tmp_path / "run", resume=True,
                 progress=False)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "train.bin").unlink(), r"train.bin: missing; run `gpt1 prepare` again"),
    (lambda d: (d / "val.bin").write_bytes(b""), r"val.bin: empty"),
    (lambda d: (d / "train.bin").write_bytes(b"\x01\x00\x02"), r"train.bin: cut short"),
    (lambda d: (d / "meta.json").write_text('{"dtype": "uint16"}'), r"meta.json: not the metadata .*vocab_size"),
    (lambda d: (d / "meta.json").write_text('{"dtype": "float7", "vocab_size": 64}'), r"meta.json: not the metadata"),
    (lambda d: (d / "meta.json").write_text('{"dtype": "uint16", "vocab_size": 10}'),
     r"train.bin: holds token id \d+, beyond the 10 ids of .*meta.json"),
])
def test_a_damaged_data_folder_is_named_before_training(token_data, damage, message):
    damage(token_data)
    with pytest.raises(UserError, match=message):
        TokenData(token_data)


@pytest.mark.parametrize("setting, message", [
    ({"micro_batch": 0}, r"recipe.toml: micro_batch \(--micro-batch\) must be > 0, got 0"),
    ({"micro_batch": "eight"}, r"micro_batch \(--micro-batch\) must be an integer, got 'eight'"),
    ({"tokens_per_update": 0}, r"tokens_per_update .* must be > 0"),
    ({"max_updates": -1}, r"max_updates .* must be >= 0"),
    ({"context": -1}, r"context .* must be >= 0"),
    ({"eval_every": 0}, r"eval_every .* must be > 0"),
    ({"lr": float("nan")}, r"lr .* must be a finite number"),
    ({"betas": [0.9, 1.5]}, r"betas must be two numbers in \[0, 1\)"),
    ({"dtype": "fp16"}, r"dtype .* must be one of 'fp32', 'bf16'"),
    ({"preset": "huge"}, r"preset .* must be one of"),
    ({"compile": 1}, r"compile .* must be true or false"),
])
def test_settings_out_of_range_or_of_the_wrong_type_are_named(setting, message):
    with pytest.raises(UserError, match=message):
        PretrainConfig.from_dict({**TINY, **setting}, source="recipe.toml")


def test_grad_clip_zero_turns_clipping_off(token_data, tmp_path):
    """clip_grad_norm_ with a maximum of 0 would zero every gradient: 0 must mean no clipping instead."""
    for name, clip in (("off", 0.0), ("huge", 1e9)):
        pretrain(PretrainConfig.from_dict({**TINY, "max_updates": 3, "grad_clip": clip}), token_data, tmp_path / name,
                 progress=False)
    assert losses(tmp_path / "off") == losses(tmp_path / "huge")
    off, huge = load_model(tmp_path / "off").state_dict(), load_model(tmp_path / "huge").state_dict()
    for name in off:
        torch.testing.assert_close(off[name], huge[name], rtol=0, atol=0)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(token_data, tmp_path, monkeypatch):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 6})
    pretrain(config, token_data, tmp_path / "run", progress=False, max_updates_this_run=3)
    before = (tmp_path / "run" / "latest").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the optimizer state")

    monkeypatch.setattr("gpt1.pretrain.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, token_data, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "latest").read_text() == before
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000003"]
    monkeypatch.undo()
    summary = pretrain(config, token_data, tmp_path / "run", resume=True, progress=False)
    assert summary["start_update"] == 3 and summary["updates"] == 6


def test_old_checkpoints_are_pruned(token_data, tmp_path):
    pretrain(PretrainConfig.from_dict(TINY), token_data, tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-00000006", "step-00000008"]
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-00000008"


def test_refuses_a_context_longer_than_the_model(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "context": 65})  # the test preset has 64 positions
    with pytest.raises(UserError, match="longer than the model's 64 positions"):
        pretrain(config, token_data, tmp_path / "run", progress=False)


def test_refuses_a_batch_that_does_not_divide_the_update(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "tokens_per_update": 300})
    with pytest.raises(UserError, match="not a multiple of micro_batch x context"):
        pretrain(config, token_data, tmp_path / "run", progress=False)


def test_refuses_to_overwrite_a_run_without_resume(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 3})
    pretrain(config, token_data, tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="pass --resume"):
        pretrain(config, token_data, tmp_path / "run", progress=False)


def test_resuming_with_another_model_shape_is_refused(token_data, tmp_path):
    pretrain(PretrainConfig.from_dict({**TINY, "max_updates": 3}), token_data, tmp_path / "run", progress=False)
    other = PretrainConfig.from_dict({**TINY, "model": {"n_embd": 32}})
    with pytest.raises(UserError, match=r"run.json: the run was started with other settings \(model \{\} -> "):
        pretrain(other, token_data, tmp_path / "run", resume=True, progress=False)
    (tmp_path / "run" / "run.json").unlink()  # the checkpoint's own config.json still tells
    with pytest.raises(UserError, match="differs from the recipe"):
        pretrain(other, token_data, tmp_path / "run", resume=True, progress=False)


def test_resume_refuses_settings_or_data_that_make_another_run_and_takes_a_new_length(token_data, tmp_path, capsys):
    pretrain(PretrainConfig.from_dict({**TINY, "max_updates": 3}), token_data, tmp_path / "run", progress=False)
    run_json = (tmp_path / "run" / "run.json").read_text()
    for change, named in (({"seed": 7}, "seed 1234 -> 7"), ({"lr": 1e-3}, "lr 0.003 -> 0.001"),
                          ({"tokens_per_update": 512}, "tokens_per_update 256 -> 512")):
        with pytest.raises(UserError, match=f"other settings \\({named}\\)"):
            pretrain(PretrainConfig.from_dict({**TINY, **change}), token_data, tmp_path / "run", resume=True,
                     progress=False)
    assert (tmp_path / "run" / "run.json").read_text() == run_json  # a refused resume leaves the run as it was
    other_data = write_token_data(tmp_path / "other-data", n_train=15000)
    with pytest.raises(UserError, match=r"run.json: the run was trained on other data"):
        pretrain(PretrainConfig.from_dict(TINY), other_data, tmp_path / "run", resume=True, progress=False)
    capsys.readouterr()
    longer = PretrainConfig.from_dict({**TINY, "max_updates": 5, "eval_every": 5, "keep_checkpoints": 0,
                                       "micro_batch": 2})
    summary = pretrain(longer, token_data, tmp_path / "run", resume=True, progress=False)
    assert (summary["start_update"], summary["updates"]) == (3, 5)
    err = capsys.readouterr().err
    assert "the cosine schedule is stretched" in err and "micro-batches of 4, now 1 x 2" in err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["pretrain"]["max_updates"] == 5


def test_resuming_behind_a_newer_checkpoint_removes_it_and_pruning_keeps_the_one_just_written(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 8, "keep_checkpoints": 0})
    pretrain(config, token_data, tmp_path / "run", progress=False, max_updates_this_run=6)
    checkpoints = tmp_path / "run" / "checkpoints"
    (tmp_path / "run" / "latest").write_text("step-00000003\n")  # as if killed before `latest` moved to 6
    keep_one = PretrainConfig.from_dict({**TINY, "max_updates": 8, "keep_checkpoints": 1})
    pretrain(keep_one, token_data, tmp_path / "run", resume=True, progress=False, max_updates_this_run=1)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000004"]
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-00000004"
    assert max(losses(tmp_path / "run")) == 4  # the records of updates 5 and 6 went with their checkpoint


def test_init_from_starts_from_a_models_weights_of_the_datas_tokenizer_only(token_data, tmp_path):
    config = PretrainConfig.from_dict({**TINY, "max_updates": 4, "eval_every": 4})
    first = pretrain(config, token_data, tmp_path / "first", progress=False)
    (token_data / "tokenizer" / "encoder_bpe_10.json").write_text('{"a</w>": 0}')  # as `gpt1 prepare` copies it
    shutil.copytree(token_data / "tokenizer", tmp_path / "first" / "checkpoints" / "step-00000004" / "tokenizer",
                    dirs_exist_ok=True)
    second = pretrain(config, token_data, tmp_path / "second", init_from=tmp_path / "first", progress=False)
    assert second["val"][0]["val_loss"] == pytest.approx(first["val"][-1]["val_loss"], rel=1e-6)  # the same weights

    (token_data / "tokenizer" / "encoder_bpe_10.json").write_text('{"b</w>": 0}')  # same size, other tokens
    with pytest.raises(UserError, match=r"first/checkpoints/step-00000004/tokenizer: another tokenizer than the one"):
        pretrain(config, token_data, tmp_path / "third", init_from=tmp_path / "first", progress=False)
    fine_tuned = tmp_path / "ft" / "model"
    shutil.copytree(tmp_path / "first" / "checkpoints" / "step-00000004", fine_tuned)
    (fine_tuned / "task.json").write_text("{}")
    with pytest.raises(UserError, match=r"ft: a fine-tuned model \(it holds task.json\)"):
        pretrain(config, token_data, tmp_path / "fourth", init_from=tmp_path / "ft", progress=False)
    assert not (tmp_path / "third").exists() and not (tmp_path / "fourth").exists()


def test_unigram_perplexity_is_that_of_add_one_smoothed_training_frequencies(tmp_path):
    (tmp_path / "train.bin").write_bytes(np.array([1, 1, 2, 3], dtype=np.uint16).tobytes())
    (tmp_path / "val.bin").write_bytes(np.array([1, 0], dtype=np.uint16).tobytes())
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 4}))
    # counts + 1 = [1, 3, 2, 2] of 8: p(1) = 3/8, p(0) = 1/8
    assert unigram_perplexity(TokenData(tmp_path)) == pytest.approx(math.exp(-(math.log(3 / 8) + math.log(1 / 8)) / 2))


def test_a_gpu_named_without_index_is_this_processs_torchrun_slot(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("cuda") == torch.device("cuda", 1)  # not cuda:0 for every process
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="GPU 2 does not exist; this machine has 2"):
        pick_device("cuda:2")


def test_a_device_this_machine_lacks_or_a_wrong_name_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda: this machine has no usable CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(UserError, match="--device foo: not a device name"):
        pick_device("foo")
    assert pick_device(None) == torch.device("cpu")


def test_recipes_parse_and_their_batch_arithmetic_holds():
    for name in ("gpt1", "cpu-small", "demo"):
        config = PretrainConfig.from_recipe(name)
        assert config.tokens_per_update % (config.micro_batch * config.context) == 0, name
    paper = PretrainConfig.from_recipe("gpt1")
    assert (paper.tokens_per_update, paper.context, paper.lr, paper.warmup_updates) == (64 * 512, 512, 2.5e-4, 2000)


def start_torchrun(data: Path, out: Path, settings: dict, *flags: str) -> subprocess.Popen:
    """`gpt1 pretrain` on 2 CPU processes under torchrun, with a recipe file of `settings`."""
    recipe = out.parent / f"{out.name}.toml"
    recipe.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt1.cli",
           "pretrain", "--data", str(data), "--out", str(out), "--recipe", str(recipe), *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`: torchrun's workers, each in a session of its own."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*children(proc.pid), proc.pid]:  # the workers too: killing the launcher leaves them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, stderr


def torchrun(data: Path, out: Path, settings: dict, *flags: str) -> None:
    returncode, stderr = finish(start_torchrun(data, out, settings, *flags))
    assert returncode == 0, stderr[-3000:]


def validation(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["update"]: r["val_loss"] for r in records if "val_loss" in r}


def replicas(run: Path) -> list[dict]:
    return [json.loads((run / "replicas" / f"rank{r}.json").read_text()) for r in (0, 1)]


# 2 processes x 4 windows x 32 tokens = 256 tokens per micro-step: 2 micro-batches per update. The gradient's
# norm is 0.7-0.85 in these updates: clipping at 0.5 acts on every one. 17 validation windows: one process
# gets 9 (two batches), the other 8 (one).
TWO_PROCESSES = {**TINY, "tokens_per_update": 512, "max_updates": 4, "grad_clip": 0.5, "eval_windows": 17}


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    """The same 4 updates under DistributedDataParallel and under FSDP."""
    root = tmp_path_factory.mktemp("distributed")
    data = write_token_data(root / "data")
    torchrun(data, root / "ddp", TWO_PROCESSES)
    torchrun(data, root / "fsdp", TWO_PROCESSES, "--fsdp")
    return data, root


def test_two_processes_under_torchrun_stay_in_sync_and_see_different_data(distributed_runs):
    _, root = distributed_runs
    ranks = replicas(root / "ddp")
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["windows_sha256"] != ranks[1]["windows_sha256"]
    total = sum(p.numel() for p in load_model(root / "ddp").parameters())
    assert ranks[0]["parameters_held"] == ranks[1]["parameters_held"] == total  # each holds the whole model
    run = json.loads((root / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2 and run["pretrain"]["fsdp"] is False
    assert max(losses(root / "ddp")) == 4


def test_fsdp_shards_the_model_and_trains_as_ddp_does(distributed_runs):
    _, root = distributed_runs
    ranks = replicas(root / "fsdp")
    total = sum(p.numel() for p in load_model(root / "fsdp").parameters())  # its checkpoint holds whole tensors
    assert ranks[0]["parameters_held"] + ranks[1]["parameters_held"] == total
    assert max(r["parameters_held"] for r in ranks) < 0.6 * total
    assert ranks[0]["windows_sha256"] == replicas(root / "ddp")[0]["windows_sha256"]  # the same data as DDP
    ddp_losses, fsdp_losses = losses(root / "ddp"), losses(root / "fsdp")
    assert ddp_losses.keys() == fsdp_losses.keys() == {1, 2, 3, 4}
    for update in ddp_losses:  # reduce-scatter and all-reduce may round differently
        assert fsdp_losses[update] == pytest.approx(ddp_losses[update], rel=1e-5), update
    # Validation of the same initial weights on 17 windows split 9/8: the same on both, and on one process.
    val_ddp, val_fsdp = (validation(root / name)[0] for name in ("ddp", "fsdp"))
    data = TokenData(root / "data")
    starts = validation_starts(len(data.val), 32, 17)
    x, y = windows(data.val, starts, 32)
    config = PretrainConfig.from_dict(TWO_PROCESSES)
    torch.manual_seed(config.seed)  # the initial weights of both runs
    with torch.no_grad():
        one_process = GPT(config.model_config(64)).eval().lm_loss(x, y).item()
    assert val_ddp == pytest.approx(one_process, rel=1e-5) and val_fsdp == pytest.approx(one_process, rel=1e-5)
    a, b = load_model(root / "ddp").state_dict(), load_model(root / "fsdp").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_an_fsdp_run_resumes_from_its_checkpoint_loss_for_loss(distributed_runs, tmp_path):
    data, root = distributed_runs
    resumed = tmp_path / "resumed"
    shutil.copytree(root / "fsdp", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000004")  # as if killed after the checkpoint of update 3
    (resumed / "latest").write_text("step-00000003\n")
    one_process = tmp_path / "one-process"
    shutil.copytree(resumed, one_process)
    torchrun(data, resumed, TWO_PROCESSES, "--fsdp", "--resume")
    assert losses(resumed) == losses(root / "fsdp")  # the sharded Adam moments came back where they were
    assert replicas(resumed)[0]["weights_sha256"] == replicas(root / "fsdp")[0]["weights_sha256"]
    # The checkpoint holds whole tensors: one process without FSDP takes the run on from it too.
    summary = pretrain(PretrainConfig.from_dict(TWO_PROCESSES), data, one_process, resume=True, progress=False)
    assert summary["start_update"] == 3 and summary["updates"] == 4


def test_sigterm_to_one_process_stops_both_at_the_same_update_with_a_checkpoint(tmp_path):
    data = write_token_data(tmp_path / "data")
    run = tmp_path / "run"
    proc = start_torchrun(data, run, {**TWO_PROCESSES, "max_updates": 100000, "eval_every": 100000,
                                      "checkpoint_every": 100000})
    try:
        for _ in range(600):  # until both processes train
            if (run / "metrics.jsonl").exists() and len(losses(run)) >= 3:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGTERM)  # a scheduler's signal that reached one process first
    finally:
        returncode, stderr = finish(proc, timeout=120)
    assert returncode != 0  # the run did not finish: a script must not take it for done
    stopped_at = max(losses(run))
    assert (run / "latest").read_text().strip() == f"step-{stopped_at:08d}"
    ranks = replicas(run)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert stderr.count("SIGTERM: saving a checkpoint after this update") <= 1


def test_an_error_every_process_meets_is_printed_once_without_collective_tracebacks(tmp_path):
    data = write_token_data(tmp_path / "data")
    (tmp_path / "taken").write_text("a file where the run folder should go")
    returncode, stderr = finish(start_torchrun(data, tmp_path / "taken", TWO_PROCESSES))
    assert returncode != 0
    assert stderr.count("a file is in the way of this output folder") == 1, stderr[-3000:]
    assert "gloo" not in stderr.lower() and "connection" not in stderr.lower(), stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
def test_compiled_and_checkpointed_training_follows_the_eager_run(token_data, tmp_path):
    no_dropout = {"model": {"embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0}}
    eager = PretrainConfig.from_dict({**TINY, **no_dropout, "max_updates": 4})
    pretrain(eager, token_data, tmp_path / "eager", progress=False)
    fast = PretrainConfig.from_dict({**TINY, **no_dropout, "max_updates": 4, "compile": True,
                                     "activation_checkpointing": True})
    pretrain(fast, token_data, tmp_path / "fast", progress=False)
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "fast")
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for update in a:
        assert b[update] == pytest.approx(a[update], rel=1e-4), update
