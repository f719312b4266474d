"""The GPT-1 decoder (Radford et al., 2018), as specified in GPT1.md.

Post-LayerNorm Transformer blocks, learned position embeddings, tanh-GELU MLP, fused q|k|v projection,
LM head tied to the token embedding, every weight N(0, 0.02). Attention runs through
`scaled_dot_product_attention`, which keeps attention-probability dropout in training, except when training
on CPU (`attention_with_dropout`, below).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class GPTConfig:
    vocab_size: int = 40478  # BPE ids; fine-tuning appends start/delimiter/extract rows
    n_positions: int = 512  # context length
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self):
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "layer_norm_epsilon", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


# The paper's model and smaller ones for CPU work. Any other size: GPTConfig(...) or a recipe.
PRESETS: dict[str, dict] = {
    "gpt1": dict(n_layer=12, n_embd=768, n_head=12, n_positions=512),  # 116.5M parameters
    "small": dict(n_layer=6, n_embd=384, n_head=6, n_positions=256),  # 26.2M (15.5M of them embeddings)
    "tiny": dict(n_layer=4, n_embd=256, n_head=4, n_positions=128),  # 13.5M (10.4M embeddings)
    "test": dict(n_layer=2, n_embd=64, n_head=4, n_positions=64),  # for unit tests
}


def preset_config(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated to the full context."""

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.n_positions, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions already cached

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, hs) after the cached positions; return all keys and values so far."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def repeat(self, n: int) -> KVCache:
        """n copies of this one-sequence cache: n samples from one prompt encode the prompt once."""
        if self.k.size(1) != 1:
            raise ValueError(f"only a cache of one sequence can be repeated, this one holds {self.k.size(1)}")
        copies = KVCache.__new__(KVCache)
        copies.k, copies.v = self.k.repeat(1, n, 1, 1, 1), self.v.repeat(1, n, 1, 1, 1)
        copies.length = self.length
        return copies


def keep_mask(shape: torch.Size, p: float, device=None) -> torch.Tensor:
    """Bernoulli(1 - p) booleans: each is a uniform 32-bit integer at or above the p-quantile (exact to 2^-32).
    On CPU, 64 random bits per two elements take a quarter of the time of torch's `bernoulli_`."""
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits
    return (bits.view(torch.int32)[:n] >= -(2**31) + round(p * 2**32)).view(shape)


class _ScaledMask(torch.autograd.Function):
    """x * keep / (1 - p), saving only the boolean mask for the backward pass (a quarter of a float mask)."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout`; on CPU with the mask of `keep_mask`, kept as booleans."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return _ScaledMask.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`. On CPU in fp32 the forward product goes through oneDNN (`torch.ops.mkldnn`). On the AVX2
    development VM it ran this model's wide outputs (768 -> 2304, 3072) at about 1.3x the speed of the BLAS
    call behind `F.linear` and the 40,478-word head at 1.4-2x on slow days; on fast days the head at 1.1x and
    the rest at 0.85x (benchmarks/README.md). The backward products stay with BLAS, the faster of the two
    there when measured (session 8)."""
    if not (_HAS_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """x @ weight^T + bias through oneDNN; the gradients as autograd computes them for `F.linear`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # (..., out)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y_2d = grad_y.reshape(-1, grad_y.size(-1))  # (N, out)
        grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None  # (..., in)
        grad_weight = grad_y_2d.t() @ x.reshape(-1, x.size(-1)) if ctx.needs_input_grad[1] else None  # (out, in)
        grad_bias = grad_y_2d.sum(0) if ctx.needs_input_grad[2] else None  # (out,)
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, query_block: int = 128
) -> torch.Tensor:
    """Causal attention with dropout p on the probabilities, as `scaled_dot_product_attention` computes it on
    CPU (where no fused kernel has dropout): softmax(q k^T / sqrt(hs) + causal), dropped, times v; with the
    faster mask of `keep_mask`, and keeping for the backward pass the probabilities and the boolean mask, not
    the dropped probabilities.

    Queries go in blocks of `query_block`, each against the keys up to its last query only: at 512 positions
    that skips 3/8 of the (T, T) scores, all of them above the diagonal. q, k, v, result: (B, H, T, hs)."""
    B, H, T, hs = q.shape
    q = (q * hs**-0.5).reshape(B * H, T, hs)  # (B*H, T, hs)
    k, v = k.reshape(B * H, T, hs), v.reshape(B * H, T, hs)
    ys = []
    for start in range(0, T, query_block):
        end = min(start + query_block, T)  # queries start..end-1 see keys 0..end-1 at most
        causal = torch.full((end - start, end), float("-inf"), dtype=q.dtype, device=q.device).triu_(start + 1)
        scores = torch.baddbmm(causal, q[:, start:end], k[:, :end].transpose(1, 2))  # (B*H, end - start, end)
        ys.append(_DroppedSoftmaxTimesV.apply(scores, v[:, :end], p))  # (B*H, end - start, hs)
    return torch.cat(ys, dim=1).view(B, H, T, hs)


class _DroppedSoftmaxTimesV(torch.autograd.Function):
    """dropout(softmax(scores), p) @ v. The backward pass recomputes the dropped probabilities from the
    probabilities and the mask rather than keeping them: one (B*H, T, T) float tensor less per layer. The
    1 / (1 - p) scaling is applied to the (B*H, T, hs) side of each product, a sixteenth of the elements.

    Softmax's backward pass needs each row's sum of grad_probs * probs; as in FlashAttention, that is the
    (B*H, T, hs) product grad_y . y, so the (B*H, T, T) gradient is made in place, in three passes over it."""

    @staticmethod
    def forward(ctx, scores, v, p):
        probs = scores.softmax(dim=-1)  # (B*H, T, T)
        keep = keep_mask(probs.shape, p, probs.device)
        ctx.scale = 1.0 / (1.0 - p)
        y = torch.where(keep, probs, 0.0) @ (v * ctx.scale)  # (B*H, T, hs)
        ctx.save_for_backward(probs, keep, v, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        probs, keep, v, y = ctx.saved_tensors
        row_dot = (grad_y * y).sum(dim=-1, keepdim=True)  # (B*H, T, 1): sum over j of grad_probs * probs
        grad_y = grad_y * ctx.scale  # (B*H, T, hs)
        grad_v = torch.where(keep, probs, 0.0).transpose(1, 2) @ grad_y  # (B*H, T, hs)
        grad_probs = grad_y @ v.transpose(1, 2)  # (B*H, T, T), before the mask
        zero = grad_probs.new_zeros(())
        grad_scores = torch.where(keep, grad_probs, zero, out=grad_probs).sub_(row_dot).mul_(probs)
        return grad_scores, grad_v, None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)  # q|k|v in one matmul
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)  # (B, H, past + T, hs)
        if past == 0:
            mask, causal = None, True
        elif T == 1:
            mask, causal = None, False  # one new query sees every cached position
        else:  # several new queries after a cached prefix: query i sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        p = self.attn_pdrop if self.training else 0.0
        if p > 0.0 and cache is None and x.device.type == "cpu":
            y = attention_with_dropout(q, k, v, p)  # (B, H, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)  # (B, H, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.n_inner)
        self.c_proj = Linear(config.n_inner, config.n_embd)
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Post-LN: n = LN(x + Attn(x)); h = LN(n + MLP(n))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        n = self.ln_1(x + self.attn(x, cache, layer))
        return self.ln_2(n + self.mlp(n))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        # Memory option for training: keep only each block's input and recompute the block in the backward
        # pass (about a third more compute). A training setting, not part of the architecture.
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the LM head is tied: nothing extra

    def hidden_states(
        self, idx: torch.Tensor, cache: KVCache | None = None, head_gradient: HeadGradient | None = None
    ) -> torch.Tensor:
        """Final block's output (B, T, C) for ids (B, T). `head_gradient`: see `hidden_states_and_lm_loss`."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.n_positions:
            raise ValueError(f"sequence of {past + T} tokens exceeds the model's context of {self.config.n_positions}")
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        if head_gradient is None:
            tokens = self.tokens_embed(idx)  # (B, T, C)
        else:
            tokens = _TokenLookup.apply(self.tokens_embed.weight, idx, head_gradient)  # (B, T, C)
        x = self.drop(tokens + self.positions_embed(pos))  # (B, T, C)
        for layer, block in enumerate(self.h):
            if self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)  # recomputed with the same dropout masks
            else:
                x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return x

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """LM logits (B, T, vocab_size) through the head tied to the token embedding."""
        return linear(self.hidden_states(idx, cache), self.tokens_embed.weight)

    def next_token_logits(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """LM logits (B, vocab_size) at the last position only: what sampling needs, without the head's product
        and the (B, T, vocab_size) logits of every other position."""
        return linear(self.hidden_states(idx, cache)[:, -1], self.tokens_embed.weight)

    def lm_loss(self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean next-token cross-entropy; targets (B, T) are the ids that follow idx, ignore_index masks padding."""
        return self.hidden_states_and_lm_loss(idx, targets, ignore_index)[1]

    def hidden_states_and_lm_loss(
        self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states (B, T, C) and the LM loss of `lm_loss`, from one pass.

        The token embedding's weight gets two gradients, the LM head's, dense, and the lookup's, T rows. Autograd
        adds them as two (V, C) tensors, the second one zero-filled at every step: 124 MB for GPT-1, and on CPU
        that fill is mostly page faults, 0.13-0.18 s of a 1 x 512 training step. On CPU, in eager mode, the loss
        hands its gradient over to the lookup instead (`HeadGradient`), which adds its rows to it in place."""
        weight = self.tokens_embed.weight
        hand_over = (torch.is_grad_enabled() and weight.requires_grad and weight.device.type == "cpu"
                     and not torch.compiler.is_compiling())
        head_gradient = HeadGradient() if hand_over else None
        h = self.hidden_states(idx, head_gradient=head_gradient)
        return h, lm_cross_entropy(h, weight, targets, ignore_index, head_gradient=head_gradient)


class HeadGradient:
    """Carries the tied LM head's (V, C) gradient from `lm_cross_entropy`'s backward pass to the token lookup's,
    which runs later in the same pass (the lookup is the first operation of the forward pass)."""

    def __init__(self):
        self.grad: torch.Tensor | None = None


class _TokenLookup(torch.autograd.Function):
    """weight[idx], whose backward pass adds the rows of its gradient into the LM head's gradient of the same
    weight when the head's loss handed that over, and returns the sum as the weight's whole gradient."""

    @staticmethod
    def forward(ctx, weight, idx, head_gradient):
        ctx.save_for_backward(idx)
        ctx.head_gradient, ctx.weight_shape = head_gradient, weight.shape
        return F.embedding(idx, weight)

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        grad_weight, ctx.head_gradient.grad = ctx.head_gradient.grad, None
        if grad_weight is None:  # the head's loss was not part of this backward pass
            grad_weight = grad_out.new_zeros(ctx.weight_shape)
        grad_weight.index_add_(0, idx.reshape(-1), grad_out.reshape(-1, grad_out.size(-1)))
        return grad_weight, None, None


def lm_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_tokens: int = 1024,
    head_gradient: HeadGradient | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the logits h @ weight^T over the tokens whose target is not ignore_index.

    The logits of a batch are (B*T, 40478) floats, the largest tensor of a step. They are made one chunk of
    tokens at a time; with gradients on, each chunk's gradients are computed on the spot, so neither the full
    logits nor a recomputation of them in the backward pass is ever needed. With `head_gradient` (from
    `GPT.hidden_states_and_lm_loss`), weight's gradient is handed to the token lookup instead of returned.
    """
    h = h.reshape(-1, h.size(-1))  # (N, C)
    targets = targets.reshape(-1)  # (N,)
    valid = targets != ignore_index
    n_valid = valid.sum().clamp(min=1)
    # Ignored tokens (a fine-tuning batch's padding, often more than half of it) are dropped before the products,
    # which are the loss's whole cost. The test reads the mask on the host; a compiled graph keeps every token.
    if not torch.compiler.is_compiling() and not bool(valid.all()):
        h, targets = h[valid], targets[valid]  # (n_valid, C), (n_valid,)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        total = _ChunkedLinearCrossEntropy.apply(h, weight, targets, ignore_index, chunk_tokens, head_gradient)
    else:
        total = sum(
            F.cross_entropy(linear(h[i : i + chunk_tokens], weight).float(), targets[i : i + chunk_tokens],
                            ignore_index=ignore_index, reduction="sum")
            for i in range(0, h.size(0), chunk_tokens)
        )
    return total / n_valid


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of h @ weight^T whose forward pass also computes both gradients, chunk by chunk.

    Each chunk's logits are made transposed, (V, n), as weight @ h^T: CPU BLAS computes that product at about
    1.3x the speed of h @ weight^T, whose wide (n, 40478) output is its slow case, and the transposed softmax
    gradient is then the left operand of the (V, C) weight gradient as it is."""

    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index, chunk_tokens, head_gradient):
        ctx.head_gradient = head_gradient
        grad_h = torch.empty_like(h)  # (N, C)
        grad_w = None  # (V, C), fp32 under autocast too
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, h.size(0), chunk_tokens):
            hc, tc = h[i : i + chunk_tokens], targets[i : i + chunk_tokens]  # (n, C), (n,)
            logits = weight @ hc.t()  # (V, n), bf16 under bf16 autocast
            product_dtype = logits.dtype
            logits = logits.float()
            valid = tc != ignore_index
            safe_t = tc.clamp(min=0)
            tokens = torch.arange(len(tc), device=tc.device)
            target_logit = logits[safe_t, tokens]  # (n,)
            # Softmax in place: the chunk's logits are the only (V, n) tensor alive, and are read fewer times.
            col_max = logits.amax(dim=0)  # (n,)
            probs = logits.sub_(col_max).exp_()  # unnormalised
            col_sum = probs.sum(dim=0)  # (n,)
            total += ((col_max + col_sum.log() - target_logit) * valid).sum()
            d_logits = probs.mul_(valid / col_sum)  # d(sum of CE)/d(logits) = softmax - one_hot; 0 if ignored
            d_logits[safe_t, tokens] -= valid.to(d_logits.dtype)
            # Cast once for both products below (autocast would cast it for each). Under autocast that is a copy,
            # and the fp32 logits are let go before the products: 166 MB less at the peak of a 1,024-token step.
            d_logits = d_logits.to(product_dtype)
            del logits, probs
            grad_h[i : i + chunk_tokens] = d_logits.t() @ weight  # (n, C)
            chunk_grad_w = d_logits @ hc  # (V, C)
            if grad_w is None:  # the first chunk's product as it is: no zero-filled (V, C) tensor to add it to
                grad_w = chunk_grad_w.float()
            else:
                grad_w += chunk_grad_w
        if grad_w is None:  # no tokens
            grad_w = torch.zeros_like(weight)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        # Scaled in place, which spares a second (V, C) tensor (124 MB for GPT-1). A second backward through the
        # same graph then fails autograd's check that saved tensors are unchanged, instead of scaling twice.
        grad_h.mul_(grad_total)
        grad_w.mul_(grad_total)
        if ctx.head_gradient is not None:  # the token lookup adds its rows and returns it
            ctx.head_gradient.grad, grad_w = grad_w, None
        return grad_h, grad_w, None, None, None, None


def count_parameters_formula(config: GPTConfig) -> int:
    """Closed-form parameter count (GPT1.md: 116,534,784 for the paper's model)."""
    C, F_ = config.n_embd, config.n_inner
    per_block = (C * 3 * C + 3 * C) + (C * C + C) + (C * F_ + F_) + (F_ * C + C) + 4 * C
    return config.vocab_size * C + config.n_positions * C + config.n_layer * per_block


def flops_per_token(config: GPTConfig, context: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward, 2 FLOPs per multiply-add)."""
    C, L = config.n_embd, config.n_layer
    matmul_params = L * (4 * C * C + 2 * C * config.n_inner) + config.vocab_size * C
    attention = L * 2 * context * C  # q.k and p.v, causal half counted in full as kernels compute it
    return 6 * matmul_params + 6 * attention

