"""The network against the specification and against Hugging Face's OpenAIGPT on the same weights."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt1.checkpoint import load_model, save_model
from gpt1.convert import convert
from gpt1.errors import UserError
from gpt1.model import (
    GPT,
    GPTConfig,
    KVCache,
    attention_with_dropout,
    count_parameters_formula,
    dropout,
    keep_mask,
    linear,
    lm_cross_entropy,
    preset_config,
)

transformers = pytest.importorskip("transformers")
VOCAB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt1_vocab"


def tiny_hf_model(seed=0, vocab=97, positions=24):
    torch.manual_seed(seed)
    config = transformers.OpenAIGPTConfig(
        vocab_size=vocab, n_positions=positions, n_embd=32, n_layer=3, n_head=4, afn="gelu"
    )
    model = transformers.OpenAIGPTLMHeadModel(config).eval()
    with torch.no_grad():  # HF initialises biases and LN to constants; randomise so a mix-up would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def test_paper_model_has_the_papers_parameter_count():
    config = preset_config("gpt1")
    assert count_parameters_formula(config) == 116_534_784
    with torch.device("meta"):
        assert GPT(config).num_parameters() == 116_534_784


def test_init_follows_the_paper():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5000, n_positions=64, n_embd=128, n_layer=2, n_head=4))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        elif "ln_" in name:
            assert torch.all(p == 1), name
        else:
            assert abs(p.std().item() - 0.02) < 0.002, name  # no depth scaling anywhere


def test_block_is_post_layernorm_with_tanh_gelu():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    model = GPT(config).eval()
    block = model.h[0]
    x = torch.randn(2, 5, 16)
    a = block.attn(x)
    n = F.layer_norm(x + a, (16,), block.ln_1.weight, block.ln_1.bias, 1e-5)
    u = block.mlp.c_fc(n)
    gelu = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
    h = F.layer_norm(n + block.mlp.c_proj(gelu), (16,), block.ln_2.weight, block.ln_2.bias, 1e-5)
    torch.testing.assert_close(block(x), h)


def test_hf_import_gives_the_same_logits_and_loss(tmp_path):
    hf = tiny_hf_model()
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "gpt1", "hf", "gpt1")
    model = load_model(tmp_path / "gpt1")
    ids = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids, labels=ids)
        logits = model(ids)
        loss = model.lm_loss(ids[:, :-1], ids[:, 1:])
    torch.testing.assert_close(logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, expected.loss, rtol=1e-5, atol=1e-5)


def test_hf_import_reads_pytorch_model_bin_without_pickle_code(tmp_path):
    hf = tiny_hf_model(seed=3)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=False)
    assert (tmp_path / "hf" / "pytorch_model.bin").exists()
    convert(tmp_path / "hf", tmp_path / "gpt1", "hf", "gpt1")
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "gpt1")(ids), hf(ids).logits, rtol=1e-5, atol=1e-5)


def test_export_to_hf_loads_in_transformers_with_equal_logits(tmp_path):
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)).eval()
    save_model(model, tmp_path / "gpt1")
    convert(tmp_path / "gpt1", tmp_path / "hf", "gpt1", "hf")
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=1e-5, atol=1e-5)


def test_training_mode_differs_only_by_dropout():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4))
    ids = torch.randint(0, 97, (2, 24))
    model.train()
    a, b = model(ids), model(ids)
    assert not torch.allclose(a, b)  # dropout on embeddings, attention and residuals is active
    zero = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0))
    zero.load_state_dict(model.state_dict())
    zero.train()
    torch.testing.assert_close(zero(ids), model.eval()(ids))


def test_keep_mask_is_bernoulli_and_follows_the_seed():
    for p in (0.1, 0.5):
        keep = keep_mask((1001, 999), p)  # an odd number of elements: half a 64-bit draw is left over
        assert keep.shape == (1001, 999) and keep.dtype == torch.bool
        flat = keep.flatten().float()
        for part in (flat, flat[0::2], flat[1::2]):  # and each of the two 32-bit halves of a draw
            assert abs(part.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / part.numel()), p
    assert keep_mask((64,), 0.0).all()
    torch.manual_seed(3)
    a = keep_mask((4096,), 0.1)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask((4096,), 0.1)) and not torch.equal(a, keep_mask((4096,), 0.1))


def test_cpu_dropout_scales_the_kept_values_and_their_gradients():
    x = torch.randn(300, 70, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert 0.85 < kept.float().mean().item() < 0.95
    torch.testing.assert_close(y[kept], x[kept] / 0.9)
    (y * 3).sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 3 / 0.9)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_in_value_and_all_three_gradients(with_bias):
    torch.manual_seed(0)
    x = torch.randn(7, 3, 48).transpose(0, 1).requires_grad_()  # (3, 7, 48), not contiguous
    weight = torch.randn(80, 48, requires_grad=True)
    bias = torch.randn(80, requires_grad=True) if with_bias else None
    leaves = [t for t in (x, weight, bias) if t is not None]
    grad_y = torch.randn(3, 7, 80)
    y = linear(x, weight, bias)
    if torch.backends.mkldnn.is_available():  # the CPU path this function exists for is the one under test
        assert type(y.grad_fn).__name__ == "_OneDNNLinearBackward"
    grads = torch.autograd.grad(y, leaves, grad_y)
    expected_y = F.linear(x, weight, bias)
    expected_grads = torch.autograd.grad(expected_y, leaves, grad_y)
    torch.testing.assert_close(y, expected_y)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, weight, bias), expected_y)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts F.linear's inputs; linear leaves it that
        assert linear(x, weight, bias).dtype == torch.bfloat16


@pytest.mark.parametrize("query_block", [128, 4])  # one block; blocks of 4, 4 and 3 queries
def test_cpu_attention_with_dropout_is_sdpa_with_the_drawn_mask(query_block):
    B, H, T, hs = 2, 3, 11, 8
    q, k, v = (torch.randn(B, H, T, hs, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(attention_with_dropout(q, k, v, 0.0, query_block), expected)
    torch.manual_seed(7)
    got = attention_with_dropout(q, k, v, 0.25, query_block)
    torch.manual_seed(7)
    keep = torch.zeros(B * H, T, T, dtype=torch.bool)  # above the diagonal the probabilities are 0 anyway
    for start in range(0, T, query_block):  # one mask per block, drawn in order, over the keys it sees
        end = min(start + query_block, T)
        keep[:, start:end, :end] = keep_mask((B * H, end - start, end), 0.25)
    keep = keep.view(B, H, T, T)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(hs)).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    torch.testing.assert_close(got, (scores.softmax(-1) * keep / 0.75) @ v)

    def seeded(q, k, v):  # the same masks on every call
        torch.manual_seed(7)
        return attention_with_dropout(q, k, v, 0.25, query_block)

    assert torch.autograd.gradcheck(seeded, tuple(t.requires_grad_() for t in (q, k, v)))


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.config, batch_size=2)
        pieces = [model(ids[:, :7], cache)]  # prefill
        pieces.append(model(ids[:, 7:10], cache))  # several new tokens after a cached prefix
        pieces += [model(ids[:, t : t + 1], cache) for t in range(10, 20)]  # one at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_context_longer_than_the_model_is_refused():
    model = GPT(GPTConfig(vocab_size=97, n_positions=8, n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="exceeds the model's context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_chunked_loss_matches_full_cross_entropy_and_its_gradient():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 97, (3, 24))
    targets = ids.roll(-1, 1)
    targets[0, 5:] = -100  # padding is masked
    loss = model.lm_loss(ids, targets)
    loss.backward()
    grad = model.tokens_embed.weight.grad.clone()
    model.zero_grad()
    reference = F.cross_entropy(model(ids).reshape(-1, 97), targets.reshape(-1), ignore_index=-100)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, model.tokens_embed.weight.grad)
    h = model.hidden_states(ids).detach().requires_grad_()
    many_chunks = lm_cross_entropy(h, model.tokens_embed.weight, targets, chunk_tokens=7)  # 72 tokens
    many_chunks.backward()
    h_ref = h.detach().clone().requires_grad_()
    F.cross_entropy(F.linear(h_ref, model.tokens_embed.weight).reshape(-1, 97), targets.reshape(-1)).backward()
    torch.testing.assert_close(many_chunks, reference)
    torch.testing.assert_close(h.grad, h_ref.grad)
    with torch.no_grad():
        torch.testing.assert_close(lm_cross_entropy(h, model.tokens_embed.weight, targets, chunk_tokens=7), reference)


def test_lm_head_gradient_handed_to_the_token_lookup_is_autograds_sum_of_both_uses():
    """`hidden_states_and_lm_loss` hands the tied head's gradient to the token lookup, which adds its rows in place.
    The weight's gradient must equal autograd's sum over the two separate uses: for the LM loss, for a loss that
    also uses the hidden states, for one that leaves the LM loss out of the backward pass, and over two passes
    accumulated."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 97, (3, 16))
    targets = ids.roll(-1, 1)
    targets[1, 9:] = -100

    def node_names(tensor):
        seen, todo = set(), [tensor.grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and node not in seen:
                seen.add(node)
                todo += [next_node for next_node, _ in node.next_functions]
        return {node.name() for node in seen}

    def weight_grad(loss_of, hand_over: bool, passes: int = 1):
        model.zero_grad(set_to_none=True)
        for _ in range(passes):
            if hand_over:
                h, lm = model.hidden_states_and_lm_loss(ids, targets)
            else:
                h = model.hidden_states(ids)
                lm = lm_cross_entropy(h, model.tokens_embed.weight, targets)
            loss = loss_of(h, lm)
            assert ("_TokenLookupBackward" in node_names(loss)) == hand_over
            loss.backward()
        return model.tokens_embed.weight.grad.clone()

    losses = [lambda h, lm: lm, lambda h, lm: h[:, -1].square().sum() + 0.5 * lm, lambda h, lm: h.square().sum()]
    for loss_of in losses:
        torch.testing.assert_close(weight_grad(loss_of, True), weight_grad(loss_of, False))
    torch.testing.assert_close(weight_grad(losses[1], True, passes=2), weight_grad(losses[1], False, passes=2))
    with torch.no_grad():
        assert model.hidden_states_and_lm_loss(ids, targets)[1].grad_fn is None


def test_chunked_loss_weight_gradient_sums_the_chunks_and_allows_no_tokens():
    torch.manual_seed(0)
    h, targets = torch.randn(30, 16), torch.randint(0, 50, (30,))
    targets[3] = -100
    grads = []
    for chunk_tokens in (7, 1024):
        weight = torch.randn(50, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
        lm_cross_entropy(h, weight, targets, chunk_tokens=chunk_tokens).backward()
        grads.append(weight.grad)
    reference = torch.randn(50, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
    F.cross_entropy(h @ reference.t(), targets).backward()
    torch.testing.assert_close(grads[0], reference.grad)
    torch.testing.assert_close(grads[1], reference.grad)
    weight = torch.randn(50, 16, requires_grad=True)
    loss = lm_cross_entropy(torch.randn(0, 16), weight, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and not weight.grad.any()


def test_chunked_loss_under_bf16_autocast_matches_the_full_loss_in_fp32_parameters():
    """The GPU recipe's setting: bf16 products, fp32 softmax, gradients in the dtype of h and of the weight."""
    torch.manual_seed(0)
    h, targets = torch.randn(30, 16, requires_grad=True), torch.randint(0, 50, (30,))
    targets[4] = -100
    weight = torch.randn(50, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lm_cross_entropy(h, weight, targets, chunk_tokens=7)
        reference = F.cross_entropy(F.linear(h, weight).float(), targets)
    grads = torch.autograd.grad(loss, (h, weight))
    expected = torch.autograd.grad(reference, (h, weight))
    assert loss.dtype == torch.float32 and [g.dtype for g in grads] == [torch.float32, torch.float32]
    torch.testing.assert_close(loss, reference)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)


def test_chunked_loss_refuses_a_second_backward_through_the_same_graph():
    """Its gradients are scaled in place (one (V, C) tensor less at the peak): autograd must stop a second pass
    instead of letting it scale them twice."""
    model = GPT(GPTConfig(vocab_size=97, n_positions=8, n_embd=32, n_layer=1, n_head=4))
    ids = torch.randint(0, 97, (2, 8))
    loss = 0.5 * model.lm_loss(ids, ids.roll(-1, 1))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace operation"):
        loss.backward()


def test_loading_weights_of_another_shape_names_the_file(tmp_path):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)), tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config["n_embd"] = 64
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"model\.safetensors: .* has shape"):
        load_model(tmp_path / "a")


@pytest.mark.skipif(not (VOCAB_DIR / "params_shapes.json").exists(), reason="../shared/data/gpt1_vocab is absent")
def test_original_release_layout_loads_every_array_where_the_spec_says(tmp_path):
    shapes = json.loads((VOCAB_DIR / "params_shapes.json").read_text())
    assert len(shapes) == 146
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(int(np.prod(s)), dtype=np.float32).reshape(s) for s in shapes]
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    release = tmp_path / "release"
    release.mkdir()
    (release / "params_shapes.json").write_text(json.dumps(shapes))
    for i, part in enumerate(np.array_split(flat, 10)):  # the release ships 10 shards
        np.save(release / f"params_{i}.npy", part)
    del flat
    convert(release, tmp_path / "gpt1", "openai", "gpt1")
    state = load_model(tmp_path / "gpt1").state_dict()
    assert state["tokens_embed.weight"].shape == (40478, 768)
    torch.testing.assert_close(state["positions_embed.weight"], torch.from_numpy(arrays[0]), rtol=0, atol=0)
    torch.testing.assert_close(state["tokens_embed.weight"], torch.from_numpy(arrays[1]), rtol=0, atol=0)
    names = ["attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_1.weight",
             "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
             "ln_2.weight", "ln_2.bias"]  # GPT1.md's order; [1, in, out] is y = x @ W + b
    for layer in range(12):
        for j, name in enumerate(names):
            expected = torch.from_numpy(arrays[2 + 12 * layer + j])
            if expected.dim() == 3:
                expected = expected[0].t()
            torch.testing.assert_close(state[f"h.{layer}.{name}"], expected, rtol=0, atol=0)


def test_export_to_the_original_layout_loads_in_transformers_reader_of_the_release(tmp_path):
    """transformers' `load_tf_weights_in_openai_gpt` reads the release's folder by its own code: the peer check."""
    from transformers.models.openai.modeling_openai import load_tf_weights_in_openai_gpt

    torch.manual_seed(6)
    model = GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=128, n_layer=2, n_head=2)).eval()
    with torch.no_grad():  # biases and LayerNorm start as constants; a mix-up would not show
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "encoder_bpe_3.json").write_text('{"a</w>": 0}')
    (tokenizer / "vocab_3.bpe").write_text("#version: 0.2\n")
    save_model(model, tmp_path / "gpt1", tokenizer)
    convert(tmp_path / "gpt1", tmp_path / "release", "gpt1", "openai")
    release = tmp_path / "release"
    assert sorted(p.name for p in release.glob("params_*.npy")) == [f"params_{i}.npy" for i in range(10)]
    assert (release / "vocab_3.bpe").read_text() == "#version: 0.2\n"

    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=97, n_positions=24, n_embd=128, n_layer=2, n_head=2, afn="gelu")).eval()
    load_tf_weights_in_openai_gpt(hf.transformer, hf.config, str(release))
    hf.tie_weights()
    ids = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=1e-5, atol=1e-5)

    convert(release, tmp_path / "back", "openai", "gpt1")  # and back, bit for bit, tokenizer included
    back = load_model(tmp_path / "back")
    assert back.config == model.config
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert (tmp_path / "back" / "tokenizer" / "encoder_bpe_3.json").is_file()


def test_export_to_the_original_layout_refuses_settings_it_cannot_store(tmp_path):
    save_model(GPT(GPTConfig(vocab_size=97, n_positions=24, n_embd=32, n_layer=1, n_head=4)), tmp_path / "heads")
    with pytest.raises(UserError, match="number of heads"):
        convert(tmp_path / "heads", tmp_path / "out", "gpt1", "openai")
    config = GPTConfig(vocab_size=97, n_positions=24, n_embd=64, n_layer=1, n_head=1, layer_norm_epsilon=1e-6)
    save_model(GPT(config), tmp_path / "eps")
    with pytest.raises(UserError, match="epsilon"):
        convert(tmp_path / "eps", tmp_path / "out", "gpt1", "openai")
    assert not (tmp_path / "out").exists()


def test_gradients_equal_hugging_face_on_the_same_weights(tmp_path):
    hf = tiny_hf_model(seed=2)
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "gpt1", "hf", "gpt1")
    model = load_model(tmp_path / "gpt1")
    ids = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(4))
    hf(ids, labels=ids).loss.backward()  # eval mode on both: no dropout
    model.lm_loss(ids[:, :-1], ids[:, 1:]).backward()
    hf_grads = {k.removeprefix("transformer."): p.grad for k, p in hf.named_parameters()}
    for name, p in model.named_parameters():
        expected = hf_grads[name]
        if p.dim() == 2 and name.startswith("h."):
            expected = expected.t()  # Conv1D [in, out] vs Linear [out, in]
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_activation_checkpointing_gives_the_same_loss_and_gradients_with_dropout():
    config = GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=3, n_head=4)
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = GPT(config).train()
        model.activation_checkpointing = checkpointing
        torch.manual_seed(1)  # the same dropout masks in both runs, and in the recomputation
        loss = model.lm_loss(idx[:, :-1], idx[:, 1:])
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7, msg=name)
