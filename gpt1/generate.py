"""Sampling from a language model with a KV cache: temperature, top-k, nucleus (top-p), a seed."""

from __future__ import annotations

import torch

from .errors import UserError
from .model import GPT, KVCache


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set whose probability reaches top_p."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    num_samples: int = 1,
) -> list[list[int]]:
    """New ids (not including the prompt) for each of num_samples samples. temperature 0 is greedy.

    When the context fills up, the cache is rebuilt from the last half context of tokens and decoding goes on.
    """
    for name, value, valid, wanted in (
        ("max_new_tokens", max_new_tokens, max_new_tokens >= 0, ">= 0"),
        ("temperature", temperature, temperature >= 0, ">= 0 (0 is greedy)"),
        ("top_k", top_k, top_k >= 0, ">= 0 (0 is off)"),
        ("top_p", top_p, 0 < top_p <= 1, "in (0, 1] (1 is off)"),
        ("num_samples", num_samples, num_samples >= 1, ">= 1"),
    ):
        if not valid:
            raise UserError(f"{name} (--{name.replace('_', '-')}) must be {wanted}, got {value}")
    if not prompt_ids:
        raise UserError("the prompt is empty: give at least one token")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    n_ctx = model.config.n_positions
    prompt = torch.tensor([prompt_ids[-n_ctx:]], dtype=torch.long, device=device)  # (1, P)
    dtype = next(model.parameters()).dtype
    if torch.is_autocast_enabled(device.type):  # keys and values come out of the autocast matmuls
        dtype = torch.get_autocast_dtype(device.type)
    cache = KVCache(model.config, 1, device=device, dtype=dtype)
    logits = model.next_token_logits(prompt, cache).expand(num_samples, -1)  # (S, V): the prompt encoded once
    cache = cache.repeat(num_samples) if num_samples > 1 else cache
    tokens = prompt.expand(num_samples, -1)  # (S, P)
    out = []
    for _ in range(max_new_tokens):
        if temperature == 0:
            next_id = logits.argmax(-1, keepdim=True)  # (S, 1)
        else:
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
            next_id = torch.multinomial(probs, 1, generator=generator)  # (S, 1)
        out.append(next_id)
        tokens = torch.cat([tokens, next_id], dim=1)
        if cache.length == n_ctx:  # full: re-encode the recent half context
            cache = KVCache(model.config, num_samples, device=device, dtype=dtype)
            logits = model.next_token_logits(tokens[:, -(n_ctx // 2) :], cache)
        else:
            logits = model.next_token_logits(next_id, cache)
    return torch.cat(out, dim=1).tolist() if out else [[] for _ in range(num_samples)]


def generate_text(model: GPT, tokenizer, prompt: str = "", max_new_tokens: int = 100, **sampling) -> list[str]:
    """Decoded samples continuing `prompt` (which they include); an empty prompt starts a new paragraph.
    `sampling`: temperature, top_k, top_p, seed, num_samples as for `generate`."""
    prompt_ids = tokenizer.encode(prompt) if prompt.strip() else [tokenizer.newline_id]  # spaces encode to nothing
    if not prompt_ids:  # not empty, but every character is one the tokenizer drops (control characters)
        raise UserError(f"the prompt {prompt!r} encodes to no token: give text the tokenizer keeps, or no prompt")
    samples = generate(model, prompt_ids, max_new_tokens, **sampling)
    return [tokenizer.decode((prompt_ids if prompt.strip() else []) + ids) for ids in samples]
