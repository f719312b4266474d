"""Sampling: filters, seeds, greedy decoding through the KV cache, and going past the context."""

import pytest
import torch

from gpt1.errors import UserError
from gpt1.generate import filter_logits, generate
from gpt1.model import GPT, GPTConfig, KVCache


def model(n_positions=32):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4)).eval()


def test_top_k_keeps_the_k_largest_logits():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.5))
    assert kept.tolist() == [[True, False, False, False]]


def test_greedy_decoding_with_the_cache_equals_argmax_of_full_forward_passes():
    m = model()
    prompt = [3, 7, 11]
    out = generate(m, prompt, 10, temperature=0)[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            ids.append(int(m(torch.tensor([ids]))[0, -1].argmax()))
    assert out == ids[len(prompt):]


def test_same_seed_same_sample_and_different_seed_different_sample():
    m = model()
    a = generate(m, [1, 2], 20, temperature=1.0, top_k=20, top_p=0.95, seed=7)
    b = generate(m, [1, 2], 20, temperature=1.0, top_k=20, top_p=0.95, seed=7)
    c = generate(m, [1, 2], 20, temperature=1.0, top_k=20, top_p=0.95, seed=8)
    assert a == b and a != c


def test_top_k_one_is_greedy():
    m = model()
    assert generate(m, [4, 5], 8, top_k=1, seed=1) == generate(m, [4, 5], 8, temperature=0)


def test_samples_of_one_prompt_share_its_encoding_and_match_separate_runs():
    m = model()
    batch_sizes = []
    m.h[0].register_forward_hook(lambda module, args, out: batch_sizes.append(out.size(0)))
    prompt = [5, 9, 2, 30, 8]
    greedy = generate(m, prompt, 6, temperature=0, num_samples=3)
    assert batch_sizes[0] == 1 and set(batch_sizes[1:]) == {3}  # the prompt once, then the 3 samples together
    assert greedy == generate(m, prompt, 6, temperature=0) * 3
    # the repeated cache holds what encoding the prompt in every row gives
    cache = KVCache(m.config, 1)
    with torch.no_grad():
        m.next_token_logits(torch.tensor([prompt]), cache)
        repeated = cache.repeat(3)
        separate = KVCache(m.config, 3)
        m(torch.tensor([prompt] * 3), separate)
        torch.testing.assert_close(m.next_token_logits(torch.tensor([[4], [7], [1]]), repeated),
                                   m(torch.tensor([[4], [7], [1]]), separate)[:, -1])
    with pytest.raises(ValueError, match="only a cache of one sequence"):
        separate.repeat(2)


def test_generation_continues_past_the_context_length():
    m = model(n_positions=16)
    samples = generate(m, list(range(1, 15)), 40, seed=0, num_samples=3)
    assert len(samples) == 3 and all(len(s) == 40 for s in samples)
    assert all(0 <= t < 50 for s in samples for t in s)


@pytest.mark.parametrize("setting, message", [
    ({"num_samples": 0}, r"num_samples \(--num-samples\) must be >= 1, got 0"),
    ({"top_p": 0.0}, r"top_p \(--top-p\) must be in \(0, 1\]"),
    ({"top_k": -1}, r"top_k \(--top-k\) must be >= 0"),
    ({"temperature": -0.5}, r"temperature \(--temperature\) must be >= 0"),
])
def test_sampling_settings_out_of_range_are_named(setting, message):
    with pytest.raises(UserError, match=message):
        generate(model(), [1, 2], 3, **setting)
    with pytest.raises(UserError, match="the prompt is empty"):
        generate(model(), [], 3)
