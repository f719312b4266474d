"""Training-step, inference, fine-tuning-step and generation speed of gpt1 against Hugging Face transformers.

Modes, each against its peer from transformers:
  train     pre-training step: LM loss, backward, clipping, AdamW.       Peer: OpenAIGPTLMHeadModel.
  infer     forward pass to the LM logits, no gradients.                 Peer: OpenAIGPTLMHeadModel.
  finetune  fine-tuning step: classifier head on the last token plus the auxiliary LM loss (lambda 0.5),
            vocabulary extended by the 3 fine-tuning tokens.  Peer: OpenAIGPTDoubleHeadsModel with one
            choice per example, HF's GPT-1 model for exactly this loss.
  finetune-sst2  fine-tuning updates as they come in practice: 32 random SST-2 training sentences per update
            (transformation `s text e`, real lengths), in forward/backward passes of at most 8 examples, and
            tokens/s counts the sentences' own tokens. gpt1 groups each update's examples by length
            (`gpt1.finetune.length_groups`) and drops padding from the LM loss; the peer takes each update
            in 4 passes of 8 in the order drawn, padded to the longest and with -100 as the padding's LM
            label, as gradient accumulation with transformers is written. Needs --data.
  generate  sampling with the KV cache, top-k 40, --new-tokens new tokens per sequence (fewer if the context
            is shorter) after a prompt of the shape's length.            Peer: OpenAIGPTLMHeadModel.generate,
            which has no KV cache for GPT-1: it re-reads the whole sequence for every new token.

Both models get the same weights, shapes, threads, dtype and dropout (the paper's 0.1 in training). The
peer uses torch's AdamW at its fastest stock setting (fused), gpt1 its own (fused too). Each measurement
runs in a fresh subprocess so that its peak memory (max RSS on CPU, max allocated on GPU) is its own.
Prints tokens/s, peak memory and the ratio gpt1/peer; on CPU also the achieved FLOP/s against a large
torch.matmul of the same dtype, measured in gpt1's process just before and after its steps (the higher of
the two, in the kept run), on GPU the MFU against --peak-tflops.

    python benchmarks/bench_train.py                       # GPT-1 preset, 1x512 and 8x128, fp32 and bf16
    python benchmarks/bench_train.py --preset small --steps 3
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SHAPES = [(1, 512), (8, 128)]
SST2_BATCH, SST2_MICRO = 32, 8  # the paper's examples per update; gpt1's default --micro-batch
GENERATE_SHAPES = [(1, 32), (8, 32)]  # (sequences, prompt tokens)
N_CLASSES = 2


def matmul_flops(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(impl: str, preset: str, device: str, mode: str):
    from gpt1.model import GPT, preset_config

    config = preset_config(preset)
    if mode.startswith("finetune"):  # start, delimiter, extract
        config = preset_config(preset, vocab_size=config.vocab_size + 3)
    torch.manual_seed(0)
    if impl == "gpt1" and mode.startswith("finetune"):
        from gpt1.finetune import TaskModel

        return TaskModel(config, "classification", N_CLASSES).to(device), config
    ours = GPT(config)
    if impl == "gpt1":
        return ours.to(device), config
    import transformers

    from gpt1.convert import config_to_hf, hf_state_from_gpt1

    hf_class = transformers.OpenAIGPTDoubleHeadsModel if mode.startswith("finetune") else transformers.OpenAIGPTLMHeadModel
    hf = hf_class(transformers.OpenAIGPTConfig(**config_to_hf(config)))
    hf.load_state_dict(hf_state_from_gpt1(ours), strict=False)  # lm_head is tied to the embedding
    return hf.to(device), config


def _hf_loss(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1]).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))


def measure(args) -> dict:
    """One measurement in this process: returns tokens/s, median step time, peak memory."""
    torch.set_num_threads(args.threads)
    if args.command_settings:
        from gpt1.cli import bound_kernel_cache, keep_freed_memory

        keep_freed_memory()
        bound_kernel_cache()
    device = args.device
    model, config = build(args.impl, args.preset, device, args.mode)
    compile_gpt1 = args.compile and args.impl == "gpt1"  # the first step pays the compile time (first_step_s)
    if compile_gpt1 and args.mode == "infer":
        model = torch.compile(model)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.context + 1), generator=gen).to(device)
    tokens = args.batch * args.context
    if args.mode == "finetune-sst2":
        step, step_tokens = _sst2_updates(args, model, autocast, device)
    elif args.mode in ("train", "finetune"):
        model.train()
        optimizer = _optimizer(args.impl, model)
        labels = torch.randint(0, N_CLASSES, (args.batch,), generator=gen).to(device)
        loss_of = _loss if args.mode == "train" else _finetune_loss
        if compile_gpt1:
            loss_of = torch.compile(loss_of)  # the whole loss computation, model included

        def step():
            with autocast:
                loss = loss_of(args.impl, model, ids, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    elif args.mode == "generate":
        model.eval()
        prompt = ids[:, : args.context]
        new_tokens = min(args.new_tokens, config.n_positions - args.context)  # the peer cannot go past its context
        tokens = args.batch * new_tokens

        @torch.no_grad()
        def step():
            with autocast:
                if args.impl == "gpt1":
                    from gpt1.generate import generate

                    generate(model, prompt[0].tolist(), new_tokens, top_k=40, seed=0, num_samples=args.batch)
                else:
                    prompts = prompt[:1].expand(args.batch, -1)  # gpt1 samples num_samples from one prompt too
                    model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=40,
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    else:
        model.eval()

        @torch.no_grad()
        def step():
            with autocast:
                out = model(ids[:, :-1])
                (out if args.impl == "gpt1" else out.logits).sum().item()
    t0 = time.perf_counter()
    step()
    _sync(device)
    first_step = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    _sync(device)
    # The matmul rate just before and just after the timed steps, in this process (the higher of the two): a
    # shared machine's speed drifts over minutes, so a rate measured once per run can be far from the steps'.
    def matmul_of():
        return matmul_flops(torch.bfloat16 if args.dtype == "bf16" else torch.float32, device,
                            n=8192 if device.startswith("cuda") else 2048)

    matmul_before = matmul_of() if args.impl == "gpt1" else None  # only gpt1's rows use it
    times, timed_tokens = [], 0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        timed_tokens += step_tokens() if args.mode == "finetune-sst2" else tokens
    median = statistics.median(times)
    # Updates of real batches differ in size: their rate is all tokens over all time, not a median step's.
    tokens_per_s = timed_tokens / sum(times) if args.mode == "finetune-sst2" else tokens / median
    if args.profile and args.impl == "gpt1":
        name = f"{args.mode}-{args.dtype}-{args.batch}x{args.context}{'-compile' if args.compile else ''}.txt"
        try:
            _profile(step, device, Path(args.profile) / name)
        except Exception as e:  # the timing above is kept either way
            print(f"profiling failed: {e!r}", file=sys.stderr)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    matmul = max(matmul_before, matmul_of()) if matmul_before is not None else None
    return {"tokens_per_s": tokens_per_s, "step_s": median, "peak_mib": peak, "first_step_s": first_step,
            "matmul_flops_per_s": matmul}


def _profile(step, device: str, path: Path) -> None:
    """One more step under torch.profiler; its operators by own time (device time on GPU) go to `path`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities, record_shapes=True) as prof:
        step()
        _sync(device)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40, max_name_column_width=50,
                                                               max_shapes_column_width=80)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table + "\n")


def _loss(impl, model, ids, labels=None):
    if impl == "gpt1":
        return model.lm_loss(ids[:, :-1], ids[:, 1:])
    return _hf_loss(model, ids)


def _finetune_loss(impl, model, ids, labels):
    """Classification loss on the last token's state + 0.5 x LM loss on the same full-length inputs."""
    x = ids[:, None, :-1]  # (B, 1, T): one input sequence per example
    B, _, T = x.shape
    lengths = torch.full((B, 1), T, device=ids.device)
    if impl == "gpt1":
        logits, lm_loss = model(x, lengths, lm_loss=True)
        return model.task_loss(logits, labels) + 0.5 * lm_loss
    out = model(x, mc_token_ids=lengths - 1, labels=x, mc_labels=torch.zeros_like(labels))
    return out.mc_loss + 0.5 * out.loss


def _sst2_updates(args, model, autocast, device: str):
    """The step of `finetune-sst2`: one update on the next batch of a fixed random sequence of SST-2 batches (the
    same for both sides), and a function giving the sentence tokens of the step that last ran."""
    from gpt1.datasets import load_benchmark
    from gpt1.finetune import (
        InputTransform, accumulate_gradients, collate, encode_examples, group_overhead_tokens, length_groups,
    )
    from gpt1.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Path(args.data) / "gpt1_vocab")
    task = load_benchmark("sst2", Path(args.data) / "glue" / "SST-2")
    n_steps = args.warmup + args.steps + 1  # the first step, the warm-up steps, the timed steps, a profiled one
    examples = random.Random(0).sample(task.splits["train"], SST2_BATCH * n_steps)
    encoded, _ = encode_examples(examples, InputTransform(tokenizer, "classification", args.context))
    batches = [encoded[i : i + SST2_BATCH] for i in range(0, len(encoded), SST2_BATCH)]
    model.train()
    optimizer = _optimizer(args.impl, model)
    overhead = group_overhead_tokens(torch.device(device))
    done = []

    def step():
        batch = batches[len(done) % len(batches)]
        if args.impl == "gpt1":
            accumulate_gradients(model, length_groups(batch, SST2_MICRO, overhead), 0.5, torch.device(device), autocast)
        else:
            for m in range(0, len(batch), SST2_MICRO):
                ids, lengths, labels = collate(batch[m : m + SST2_MICRO])
                ids, lengths, labels = ids.to(device), lengths.to(device), labels.to(device)
                positions = torch.arange(ids.size(-1), device=device)
                real = positions < lengths[..., None]  # (B, 1, T)
                with autocast:
                    out = model(ids, attention_mask=real.view(-1, ids.size(-1)).long(), mc_token_ids=lengths - 1,
                                labels=ids.masked_fill(~real, -100), mc_labels=torch.zeros_like(labels))
                ((out.mc_loss + 0.5 * out.loss) * (len(labels) / len(batch))).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done.append(sum(len(seq) for ex in batch for seq in ex.sequences))

    return step, lambda: done[-1]


def _optimizer(impl: str, model):
    if impl == "gpt1":  # the product's optimizer: fused AdamW, no decay on biases and gains
        from gpt1.pretrain import decoupled_adam

        return decoupled_adam(model, lr=1e-4, weight_decay=0.01)
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)  # torch's fastest stock


def run_child(args, impl: str, mode: str, dtype: str, batch: int, context: int) -> dict | None:
    """One measurement in a fresh process; None (and the error printed) if it failed, so that the others still run."""
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--mode", mode, "--dtype", dtype, "--batch",
           str(batch), "--context", str(context), "--preset", args.preset, "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(args.threads), "--device", args.device,
           "--new-tokens", str(args.new_tokens), "--data", str(args.data)] + (["--compile"] if args.compile else []) \
        + (["--command-settings"] if args.command_settings else []) + (["--profile", args.profile] if args.profile else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        print(f"{impl} {mode} {dtype} {batch}x{context} failed:\n{out.stderr[-2000:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pair(args, mode: str, dtype: str, batch: int, context: int) -> tuple[dict | None, dict | None]:
    """gpt1's and the peer's measurement, each `--repeats` times in the order gpt1, peer, peer, gpt1, ... so that
    a machine slowing down or speeding up over the run favours neither; per implementation the run with the
    median tokens/s is kept (all tokens/s are in `tokens_per_s_runs`)."""
    runs: dict[str, list[dict]] = {"gpt1": [], "hf": []}
    for r in range(args.repeats):
        for impl in ("gpt1", "hf") if r % 2 == 0 else ("hf", "gpt1"):
            result = run_child(args, impl, mode, dtype, batch, context)
            if result is None:
                return None, None
            runs[impl].append(result)
    kept = []
    for impl in ("gpt1", "hf"):
        ordered = sorted(runs[impl], key=lambda result: result["tokens_per_s"])
        median = dict(ordered[(len(ordered) - 1) // 2])
        median["tokens_per_s_runs"] = [result["tokens_per_s"] for result in runs[impl]]
        kept.append(median)
    return kept[0], kept[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt1")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["train", "infer", "finetune", "finetune-sst2", "generate"])
    parser.add_argument("--shapes", nargs="+", default=[f"{b}x{t}" for b, t in SHAPES],
                        help="BATCHxCONTEXT for train/infer/finetune (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each implementation this many times, "
                        "alternating (gpt1, peer, peer, gpt1, ...), and keep the median run, the slower middle "
                        "one of an even count (default %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=128, help="generate: new tokens per sequence")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="finetune-sst2: the shared data folder, "
                        "with gpt1_vocab/ and glue/SST-2/ (default %(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile gpt1's model (not the peer's)")
    parser.add_argument("--command-settings", action="store_true", help="both sides with the process settings the "
                        "gpt1 command's training commands make for themselves: glibc keeps freed memory for reuse "
                        "and oneDNN at most 128 compiled kernels (gpt1.cli.keep_freed_memory, bound_kernel_cache); "
                        "default: the libraries' own settings for both")
    parser.add_argument("--profile", metavar="DIR", help="also profile one gpt1 step per row: an operator table "
                        "(own time, input shapes) per row in DIR")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="GPU: the card's dense bf16 peak, for MFU")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    import transformers

    from gpt1.model import flops_per_token, preset_config

    torch.set_num_threads(args.threads)
    config = preset_config(args.preset)
    peaks = {}
    for d in args.dtypes:
        dtype = torch.bfloat16 if d == "bf16" else torch.float32
        probe = matmul_flops(dtype, args.device, n=256, repeats=2)  # some CPUs (AVX2 only) lack bf16 kernels
        if probe < 5e9 and d == "bf16":
            print(f"skipping bf16: a 256x256 bf16 matmul runs at {probe / 1e9:.2f} GFLOP/s on this machine "
                  "(no native bf16 matrix instructions)")
            continue
        peaks[d] = matmul_flops(dtype, args.device, n=8192 if args.device.startswith("cuda") else 2048)
    if "finetune-sst2" in args.modes and not (args.data / "glue" / "SST-2").is_dir():
        print(f"skipping finetune-sst2: {args.data / 'glue' / 'SST-2'} not found (pass --data)")
        args.modes = [mode for mode in args.modes if mode != "finetune-sst2"]
    rows = []

    def write() -> None:  # after every row, so that an interrupted run keeps what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"device": args.device, "threads": args.threads, "torch": torch.__version__,
                                              "transformers": transformers.__version__, "preset": args.preset,
                                              "compile": args.compile, "new_tokens": args.new_tokens,
                                              "command_settings": args.command_settings,
                                              "matmul_flops_per_s": peaks, "rows": rows}, indent=2) + "\n")

    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, preset {args.preset}"
          + (", both sides with the gpt1 command's process settings" if args.command_settings else ""))
    print("matmul peak at the start: " + ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in peaks.items()))
    header = f"{'mode':13s} {'dtype':5s} {'shape':7s} {'gpt1 tok/s':>11s} {'HF tok/s':>9s} {'ratio':>6s} " \
             f"{'gpt1 MiB':>9s} {'HF MiB':>8s} {'mem':>5s} {'FLOP/s vs matmul':>17s} {'1st step s':>10s}" \
             + (f" {'MFU':>5s}" if args.peak_tflops else "")
    print(header)
    for mode in args.modes:
        for dtype in peaks:
            shapes = [tuple(map(int, shape.split("x"))) for shape in args.shapes]
            if mode == "generate":
                shapes = [(b, min(c, config.n_positions // 4)) for b, c in GENERATE_SHAPES]
            if mode == "finetune-sst2":  # examples per update; sentences are cut to the context, if ever
                shapes = [(SST2_BATCH, config.n_positions)]
            for batch, context in dict.fromkeys((b, min(c, config.n_positions)) for b, c in shapes):
                ours, peer = run_pair(args, mode, dtype, batch, context)
                if ours is None or peer is None:
                    continue
                # generation attends to a growing cache, and real fine-tuning batches hold sentences of all lengths:
                # their FLOP/s is left out (shown as 0)
                flops = {"train": 1, "finetune": 1, "infer": 1 / 3}.get(mode, 0) * flops_per_token(config, context)
                achieved = ours["tokens_per_s"] * flops
                row = {"mode": mode, "dtype": dtype, "batch": batch, "context": context, "gpt1": ours, "hf": peer,
                       "ratio": ours["tokens_per_s"] / peer["tokens_per_s"],
                       "memory_ratio": ours["peak_mib"] / peer["peak_mib"],
                       "gpt1_flops_per_s": achieved, "matmul_flops_per_s": ours["matmul_flops_per_s"]}
                if args.peak_tflops:
                    row["mfu"] = achieved / (args.peak_tflops * 1e12)
                rows.append(row)
                print(f"{mode:13s} {dtype:5s} {batch}x{context:<5d} {ours['tokens_per_s']:11.0f} "
                      f"{peer['tokens_per_s']:9.0f} {row['ratio']:6.2f} {ours['peak_mib']:9.0f} {peer['peak_mib']:8.0f} "
                      f"{row['memory_ratio']:5.2f} {achieved / row['matmul_flops_per_s']:16.0%} {ours['first_step_s']:10.1f}"
                      + (f" {row['mfu']:5.1%}" if args.peak_tflops else ""), flush=True)
                write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
