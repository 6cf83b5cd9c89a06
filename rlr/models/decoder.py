"""One decoder for the Qwen2/2.5, Qwen3, Llama 3.x and Mistral families in Flax linen, its
heads, and a KV cache for sampling. The families differ only through `DecoderConfig`.

Parameters carry logical axis names (`nn.with_logical_partitioning`) that the rules table in
rlr/sharding.py maps onto a mesh: embedding [V, D] ("vocab", "embed"); q kernel [D, H*Dh]
("embed", "heads"); k/v kernels [D, Hkv*Dh] ("embed", "kv_heads"); o kernel [H*Dh, D]
("heads", "embed"); gate/up [D, F] ("embed", "mlp"); down [F, D] ("mlp", "embed"); norm
scales ("norm",); lm_head [D, V] ("embed", "vocab"); score heads [D, L] ("embed", None).
A projection named in `config.lora.targets` also holds a low-rank adapter: lora_a [In, r]
(its kernel's In axis, "lora_rank") and lora_b [r, Out] ("lora_rank", its kernel's Out axis).

The decoder layers run as one `nn.scan` by default (`scan_layers=True`): their params sit
under "layers" with a leading [L] axis (logical name "layers"), so the program, and its
compile time, no longer grow with depth. `scan_layers=False` unrolls a Python loop over
"layers_0" .. "layers_{L-1}" instead; `stack_layer_params` / `unstack_layer_params` convert
params between the two layouts.

Attention is causal over cache slots (column index of the input, or cache slot during
decoding) and masks padded keys, so left- and right-padded rows both work; positions for RoPE
default to cumsum(mask) - 1, which makes a padded row's real tokens see the same positions as
the unpadded row.

Why one module (over 600 lines): the families, the KV cache, the LoRA projections, the stacked
layers and the heads all shape one forward pass; each piece is short, and a reader follows a
call from the heads down to attention in one file.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlr.models.architecture import DecoderConfig, LoraConfig, RopeScaling

Dtype = Any
# A large finite negative rather than -inf, so rows with no visible key (padded queries) stay
# finite instead of producing NaN that could leak into gradients.
_MASKED = -1e30


def _normal_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), axes)


class KVCache(NamedTuple):
    """Keys and values of every layer, stacked, heads-major so decoding never transposes.

    keys, values: [L, B, Hkv, S, Dh] (L layers, S slots; the same layout whether the layers
    are scanned or looped); key_mask: [B, S], 1 for slots that hold (or will hold) a real
    token; index: [] int32, the next slot to write, or [B] int32, each row's own next slot
    (a continuous-batching sampler, whose rows are at different steps of different prompts).
    """

    keys: jax.Array
    values: jax.Array
    key_mask: jax.Array
    index: jax.Array

    def take_rows(self, rows: chex.Array) -> KVCache:  # rows [B'] int32 -> a B'-row cache
        """The cache of rows `rows` only (in that order), at the same index: what a sampler
        keeps when it drops finished rows from its batch."""
        chex.assert_rank(rows, 1)
        return KVCache(
            keys=self.keys[:, rows],
            values=self.values[:, rows],
            key_mask=self.key_mask[rows],
            index=self.index[rows] if self.index.ndim else self.index,
        )


def init_cache(
    config: DecoderConfig,
    key_mask: chex.Array,  # [B, S] 1 for slots that will hold real tokens
    *,
    dtype: Dtype = jnp.float32,
) -> KVCache:
    """An empty KV cache of S slots per row, keys and values [L, B, Hkv, S, Dh] each; slot i is
    visible only where key_mask[:, i] is 1."""
    chex.assert_rank(key_mask, 2)
    batch, length = key_mask.shape
    shape = (
        config.num_hidden_layers,
        batch,
        config.num_key_value_heads,
        length,
        config.head_dim,
    )
    return KVCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        key_mask=jnp.asarray(key_mask, jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def default_positions(mask: chex.Array) -> chex.Array:  # [B, S] -> [B, S] int32
    """RoPE positions cumsum(mask) - 1 (0 on leading padding), as HF generate uses."""
    chex.assert_rank(mask, 2)
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def rope_frequencies(
    head_dim: int, *, theta: float, scaling: RopeScaling | None = None
) -> chex.Array:  # [Dh/2] f32
    """RoPE inverse frequencies theta^(-2i/Dh), with Llama 3.1's rule when `scaling` is set:
    wavelengths above original_max / low_freq_factor are divided by `factor`, those below
    original_max / high_freq_factor kept, and the band between interpolated smoothly."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    old_context = scaling.original_max_position_embeddings
    low_wavelen = old_context / scaling.low_freq_factor
    high_wavelen = old_context / scaling.high_freq_factor
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


class RopeTables(NamedTuple):
    """cos and sin of every position's RoPE angles, [B, S, 1, Dh] each (f32 angles, cast to the
    activations' dtype): computed once per forward pass and shared by every layer."""

    cos: jax.Array
    sin: jax.Array


def rope_tables(
    positions: chex.Array,  # [B, S]
    head_dim: int,
    *,
    theta: float,
    scaling: RopeScaling | None = None,
    dtype: Dtype = jnp.float32,
) -> RopeTables:  # cos, sin [B, S, 1, Dh]
    """The RoPE tables of `positions` in HF's half-split layout (angles repeated over both
    halves of Dh)."""
    chex.assert_rank(positions, 2)
    inv_freq = rope_frequencies(head_dim, theta=theta, scaling=scaling)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, S, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return RopeTables(jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype))


def rotate(x: chex.Array, tables: RopeTables) -> chex.Array:  # [B, S, N, Dh] -> same
    """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1) for halves x1, x2.

    The halves are swapped by reversing a [..., 2, Dh/2] view rather than by slicing and
    concatenating: the backward pass of a reverse is a reverse, while slices turn into pads
    and adds, which cost XLA CPU 3x more.
    """
    chex.assert_rank(x, 4)
    half = x.shape[-1] // 2
    pairs = x.reshape(*x.shape[:-1], 2, half)
    sign = jnp.asarray([[-1.0], [1.0]], x.dtype)  # [2, 1]: negate the (moved) second half
    rotated = (jnp.flip(pairs, axis=-2) * sign).reshape(x.shape)
    return x * tables.cos + rotated * tables.sin


def apply_rope(
    x: chex.Array,  # [B, S, N, Dh]
    positions: chex.Array,  # [B, S]
    *,
    theta: float,
    scaling: RopeScaling | None = None,
) -> chex.Array:  # [B, S, N, Dh]
    """Rotary embedding in HF's half-split layout: x * cos + rotate_half(x) * sin (f32 angles)."""
    chex.assert_rank([x, positions], [4, 2])
    tables = rope_tables(positions, x.shape[-1], theta=theta, scaling=scaling, dtype=x.dtype)
    return rotate(x, tables)


def grouped_attention(
    q: chex.Array,  # [B, S, H, Dh]
    k: chex.Array,  # [B, Hkv, L, Dh]
    v: chex.Array,  # [B, Hkv, L, Dh]
    allowed: chex.Array,  # [B, S, L] bool, True where query s may see key l
) -> chex.Array:  # [B, S, H*Dh]
    """Softmax attention with G = H / Hkv query heads per key/value head; f32 softmax."""
    chex.assert_rank([q, k, v, allowed], [4, 4, 4, 3])
    batch, length, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    # Scaling q rather than the scores touches Dh numbers per query, not L.
    q = (q * head_dim**-0.5).reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    scores = jnp.einsum("bskgd,bkld->bkgsl", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    # The output in the matmul's own batch-major layout, then one transpose: asking einsum for
    # [B, S, K, G, Dh] directly leaves XLA CPU a strided batched matmul, 2-3x slower.
    out = jnp.einsum("bkgsl,bkld->bkgsd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads * head_dim)


@jax.custom_vjp
def projection(
    x: chex.Array,  # [..., In]
    kernel: chex.Array,  # [In, Out]
) -> chex.Array:  # [..., Out]
    """x @ kernel, with a backward pass that writes the kernel gradient as one matmul over the
    flattened leading axes, transposing whichever of x and the output gradient is narrower.

    Autodiff's own rule leaves that choice to XLA, which on CPU transposes the output gradient
    inside its elementwise producer (the SwiGLU backward, say): a strided loop that cost more
    than the matmul it feeds. On GPU and TPU the transpose folds into the matmul either way.
    """
    return jnp.dot(x, kernel)


def _projection_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _projection_bwd(residuals, grad):
    x, kernel = residuals
    rows_in = x.reshape(-1, x.shape[-1])  # [N, In]
    rows_grad = grad.reshape(-1, grad.shape[-1])  # [N, Out]
    if rows_in.shape[1] <= rows_grad.shape[1]:
        kernel_grad = jnp.dot(rows_in.T, rows_grad)
    else:
        kernel_grad = jnp.dot(rows_grad.T, rows_in).T
    x_grad = jnp.dot(grad, kernel.T)
    return x_grad.astype(x.dtype), kernel_grad.astype(kernel.dtype)


projection.defvjp(_projection_fwd, _projection_bwd)


# PEFT's init of lora_A (kaiming_uniform_ with a = sqrt(5)): uniform in +-1/sqrt(In)
_LORA_A_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=0, out_axis=1)


def _lora_delta(
    module: nn.Module, x: chex.Array, features: int, axes: tuple[str | None, ...], lora: LoraConfig
) -> chex.Array:  # [..., In] -> [..., features]
    """scaling * (x @ lora_a) @ lora_b, params lora_a [In, r] (uniform, as PEFT) and lora_b
    [r, features] (zeros) of `module`, sharded like its kernel's In and Out axes."""
    a = module.param(
        "lora_a",
        nn.with_logical_partitioning(_LORA_A_INIT, (axes[0], "lora_rank")),
        (x.shape[-1], lora.rank),
        module.param_dtype,
    )
    b = module.param(
        "lora_b",
        nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", axes[-1])),
        (lora.rank, features),
        module.param_dtype,
    )
    low = jnp.dot(x.astype(module.dtype), jnp.asarray(a, module.dtype))  # [..., r]
    return jnp.dot(low, jnp.asarray(b, module.dtype)) * jnp.asarray(lora.scaling, module.dtype)


def _linear(
    module: nn.Module,
    x: chex.Array,
    features: int,
    axes: tuple[str | None, ...],
    use_bias: bool,
    lora: LoraConfig | None = None,
) -> chex.Array:  # [..., In] -> [..., features]
    """x @ kernel (+ bias) as params "kernel" [In, features] and "bias" [features] of
    `module` (inside its compact call), with `module`'s dtype and param_dtype; with `lora`,
    plus its low-rank adapter's output (`_lora_delta`)."""
    kernel = module.param("kernel", _normal_init(axes), (x.shape[-1], features), module.param_dtype)
    y = projection(x.astype(module.dtype), jnp.asarray(kernel, module.dtype))
    if lora is not None:
        y = y + _lora_delta(module, x, features, axes, lora)
    if use_bias:
        bias = module.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
            (features,),
            module.param_dtype,
        )
        y = y + jnp.asarray(bias, module.dtype)
    return y


class Dense(nn.Module):
    """x @ kernel (+ bias) with logical axis names; kernel [in, out] (HF stores [out, in]).
    With `lora`, plus a low-rank adapter (params lora_a [in, r], lora_b [r, out])."""

    features: int
    kernel_axes: tuple[str | None, ...]
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    lora: LoraConfig | None = None

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:  # [..., In] -> [..., Out]
        return _linear(self, x, self.features, self.kernel_axes, self.use_bias, self.lora)


def _lora_of(config: DecoderConfig, name: str) -> LoraConfig | None:
    """The adapter config of projection `name`: config.lora when it targets `name`, else None."""
    lora = config.lora
    return lora if lora is not None and name in lora.targets else None


class RMSNorm(nn.Module):
    """scale * x / sqrt(mean(x^2) + eps), normalised in f32 as HF does."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:  # [..., D]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return jnp.asarray(scale, self.dtype) * normed.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding [V, D]; `attend` gives tied-embedding logits hidden @ embedding.T."""

    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            _normal_init(("vocab", "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: chex.Array) -> chex.Array:  # [B, S] -> [B, S, D]
        return jnp.take(jnp.asarray(self.embedding, self.dtype), ids, axis=0)

    def attend(self, hidden: chex.Array) -> chex.Array:  # [B, S, D] -> [B, S, V]
        return jnp.dot(hidden.astype(self.dtype), jnp.asarray(self.embedding, self.dtype).T)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE and an optional KV cache; the config says which
    projections carry a bias and whether q and k are RMS-normalised per head."""

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: chex.Array,  # [B, S, D]
        rope: RopeTables,  # [B, S, 1, Dh] each
        allowed: chex.Array,  # [B, S, S_c]
        cache: tuple[jax.Array, jax.Array] | None = None,  # 2 x [L, B, Hkv, S_c, Dh]
        layer: int | jax.Array = 0,  # [] this layer's index into the cache
        cache_index: jax.Array | None = None,  # [] or [B] first slot written by this call
    ) -> tuple[chex.Array, tuple[jax.Array, jax.Array] | None]:
        """-> (out [B, S, D], the cache with this layer's keys and values for slots
        cache_index .. cache_index+S-1 written, or None without a cache)."""
        cfg = self.config
        batch, length, _ = x.shape
        heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        kw = dict(use_bias=cfg.attention_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        dense = lambda n, width, axes: Dense(  # noqa: E731
            width, axes, name=n, lora=_lora_of(cfg, n), **kw
        )
        q = dense("q_proj", heads * head_dim, ("embed", "heads"))(x)
        k = dense("k_proj", kv_heads * head_dim, ("embed", "kv_heads"))(x)
        v = dense("v_proj", kv_heads * head_dim, ("embed", "kv_heads"))(x)
        q = q.reshape(batch, length, heads, head_dim)
        k = k.reshape(batch, length, kv_heads, head_dim)
        if cfg.qk_norm:  # Qwen3: RMSNorm over Dh of every head, before RoPE
            norm = dict(dtype=self.dtype, param_dtype=self.param_dtype)
            q = RMSNorm(cfg.rms_norm_eps, name="q_norm", **norm)(q)
            k = RMSNorm(cfg.rms_norm_eps, name="k_norm", **norm)(k)
        q = rotate(q, rope)
        k = rotate(k, rope)
        k = k.transpose(0, 2, 1, 3)  # [B, Hkv, S, Dh]
        v = v.reshape(batch, length, kv_heads, head_dim).transpose(0, 2, 1, 3)
        new_cache = None
        if cache is not None:
            # Only this call's S slots of this layer are written (in place in a loop carry);
            # attention then reads the layer's whole [B, Hkv, S_c, Dh] slice.
            cache_k, cache_v = cache
            cache_k = _write_slots(cache_k, k, layer, cache_index)
            cache_v = _write_slots(cache_v, v, layer, cache_index)
            k = jax.lax.dynamic_index_in_dim(cache_k, layer, keepdims=False)
            v = jax.lax.dynamic_index_in_dim(cache_v, layer, keepdims=False)
            new_cache = (cache_k, cache_v)
        out = grouped_attention(q, k.astype(self.dtype), v.astype(self.dtype), allowed)
        out = Dense(
            cfg.hidden_size,
            ("heads", "embed"),
            use_bias=cfg.attention_out_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="o_proj",
            lora=_lora_of(cfg, "o_proj"),
        )(out)
        return out, new_cache


def _write_slots(
    cache: jax.Array,  # [L, B, Hkv, S_c, Dh]
    new: jax.Array,  # [B, Hkv, S, Dh]
    layer: int | jax.Array,  # []
    index: jax.Array,  # [] or [B] first slot of each row
) -> jax.Array:  # [L, B, Hkv, S_c, Dh]
    """The cache with this layer's slots index .. index+S-1 of every row set to `new`."""
    new = new.astype(cache.dtype)
    if index.ndim == 0:  # every row at the same slot: one contiguous update
        return jax.lax.dynamic_update_slice(cache, new[None], (layer, 0, 0, index, 0))
    batch, _, length, _ = new.shape
    rows = jnp.arange(batch)[:, None]
    slots = index[:, None] + jnp.arange(length)  # [B, S]
    # Advanced indices (layer, rows, slots) split by a slice: the indexed view is [B, S, Hkv, Dh].
    return cache.at[layer, rows, :, slots].set(new.transpose(0, 2, 1, 3), mode="drop")


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:  # [B, S, D]
        cfg = self.config
        kw = dict(use_bias=cfg.mlp_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        dense = lambda n, width, axes: Dense(  # noqa: E731
            width, axes, name=n, lora=_lora_of(cfg, n), **kw
        )
        gate = dense("gate_proj", cfg.intermediate_size, ("embed", "mlp"))(x)
        up = dense("up_proj", cfg.intermediate_size, ("embed", "mlp"))(x)
        return dense("down_proj", cfg.hidden_size, ("mlp", "embed"))(jax.nn.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(.)).

    Called carry-first, as `nn.scan` runs it over the layers: carry is (x [B, S, D], cache),
    cache None or the stacked (keys, values) [L, B, Hkv, S_c, Dh] of which this layer writes
    slice `layer`; returns (carry, None).
    """

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        carry: tuple[chex.Array, tuple[jax.Array, jax.Array] | None],
        rope: RopeTables,  # [B, S, 1, Dh] each
        allowed: chex.Array,  # [B, S, S_c]
        layer: int | jax.Array = 0,  # [] int32
        cache_index: jax.Array | None = None,  # [] or [B] int32
    ) -> tuple[tuple[chex.Array, tuple[jax.Array, jax.Array] | None], None]:
        x, cache = carry
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        eps = self.config.rms_norm_eps
        h, cache = Attention(self.config, name="self_attn", **kw)(
            RMSNorm(eps, name="input_layernorm", **kw)(x),
            rope,
            allowed,
            cache,
            layer,
            cache_index,
        )
        x = x + h
        x = x + MLP(self.config, name="mlp", **kw)(
            RMSNorm(eps, name="post_attention_layernorm", **kw)(x)
        )
        return (x, cache), None


# What each decoder layer keeps for the backward pass:
#   "none": every activation (attention probabilities included);
#   "minimal": the outputs of the projections (matmuls without batch dimensions); attention,
#     norms, RoPE and the SwiGLU product are recomputed. Less memory than "none", and on CPU
#     faster too: writing and reading back a scan's stacked residuals costs more than the
#     elementwise work it saves;
#   "full": only the residual stream between layers (gradient checkpointing), for models that
#     do not fit otherwise; one more forward pass per layer.
REMAT_POLICIES = ("none", "minimal", "full")
_SAVED = {"minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable, "full": None}


def remat_policy(remat: bool | str) -> str:
    """A module's `remat` field as one of REMAT_POLICIES (True: "full", False: "none")."""
    if isinstance(remat, bool):
        return "full" if remat else "none"
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be a bool or one of {REMAT_POLICIES}; got {remat!r}")
    return remat


def _is_stacked_layers(key: str) -> bool:
    return key == "layers"


def _layer_index(key: str) -> int | None:
    if key.startswith("layers_") and key[len("layers_") :].isdigit():
        return int(key[len("layers_") :])
    return None


def stack_layer_params(params: Any) -> Any:
    """Params of a `scan_layers=False` model -> those of the same model with `scan_layers=True`.

    Every dict (at any depth, so a whole model's params or a dict of several networks' params)
    holding "layers_0" .. "layers_{L-1}" gets one "layers" entry instead, each leaf stacked to
    [L, ...] (NumPy leaves stay on the host). Other entries are kept as they are.
    """
    if not isinstance(params, dict):
        return params
    indices = sorted(i for i in map(_layer_index, params) if i is not None)
    out = {k: stack_layer_params(v) for k, v in params.items() if _layer_index(k) is None}
    if indices:
        if indices != list(range(len(indices))):
            raise ValueError(f"layer params must be layers_0 .. layers_{{L-1}}; got {indices}")
        if "layers" in params:
            raise ValueError("params hold both 'layers' and 'layers_0'..: not one layout")
        layers = [params[f"layers_{i}"] for i in indices]

        def stack(*leaves):
            if all(isinstance(leaf, np.ndarray) for leaf in leaves):
                return np.stack(leaves)
            return jnp.stack(leaves)

        out["layers"] = jax.tree.map(stack, *layers)
    return out


def unstack_layer_params(params: Any) -> Any:
    """Params of a `scan_layers=True` model -> those of the same model with `scan_layers=False`:
    every "layers" entry (leaves [L, ...]) becomes "layers_0" .. "layers_{L-1}" (leaves
    [...]). The inverse of `stack_layer_params`."""
    if not isinstance(params, dict):
        return params
    out = {}
    for key, value in params.items():
        if not (_is_stacked_layers(key) and isinstance(value, dict)):
            out[key] = unstack_layer_params(value)
            continue
        depths = {leaf.shape[0] for leaf in jax.tree.leaves(value)}
        if len(depths) != 1:
            raise ValueError(f"stacked layer params disagree on the layer count: {depths}")
        for i in range(depths.pop()):
            out[f"layers_{i}"] = jax.tree.map(lambda leaf, i=i: leaf[i], value)
    return out


class DecoderModel(nn.Module):
    """The trunk: embeddings, decoder layers, final norm -> hidden states [B, S, D].

    Without a cache, attention is causal over columns with padded keys masked. With a
    `KVCache`, the S new tokens go to slots cache.index .. cache.index+S-1 and the call returns
    (hidden, updated cache); positions are then required.

    Packed rows (several sequences side by side in one row, rlr.packing) pass `segment_ids`
    [B, S] instead of an attention mask: a token sees the earlier tokens of its own segment
    only, 0 marks padding, and the positions (each segment's own, from 0) are required.
    """

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    # What a layer keeps for the backward pass (`REMAT_POLICIES`; True is "full", False
    # "none"). "minimal" keeps the projections' outputs and recomputes the rest.
    remat: bool | str = "minimal"
    # One nn.scan over the layers (params "layers" [L, ...]): compile time independent of
    # depth. False unrolls a Python loop (params "layers_0" ..), for comparison and debugging.
    scan_layers: bool = True

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        policy = remat_policy(self.remat)
        layer = DecoderLayer
        if policy != "none":
            # Inside a scan the loop already keeps the recomputation from being merged away.
            layer = nn.remat(DecoderLayer, prevent_cse=not self.scan_layers, policy=_SAVED[policy])
        if self.scan_layers:
            self.layers = nn.scan(
                layer,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
                length=cfg.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, **kw)
        else:
            self.layers = [layer(cfg, **kw) for _ in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, **kw)

    def __call__(
        self,
        input_ids: chex.Array,  # [B, S]
        attention_mask: chex.Array | None = None,  # [B, S]
        positions: chex.Array | None = None,  # [B, S]
        cache: KVCache | None = None,
        segment_ids: chex.Array | None = None,  # [B, S] int32, 0 on padding
    ):
        chex.assert_rank(input_ids, 2)
        batch, length = input_ids.shape
        if segment_ids is not None and (attention_mask is not None or positions is None):
            raise ValueError("packed rows take segment_ids and positions, no attention_mask")
        if cache is None:
            self.config.check_sequence_length(length)
            if attention_mask is None:
                attention_mask = jnp.ones((batch, length), jnp.int32)
            chex.assert_shape(attention_mask, (batch, length))
            if positions is None:
                positions = default_positions(attention_mask)
            query_slots = jnp.arange(length)
            key_slots = jnp.arange(length)
            key_mask = attention_mask if segment_ids is None else segment_ids
        else:
            if positions is None:
                raise ValueError("positions are required when decoding with a KV cache")
            self.config.check_sequence_length(cache.key_mask.shape[1])
            query_slots = jnp.reshape(cache.index, (-1, 1)) + jnp.arange(length)
            key_slots = jnp.arange(cache.key_mask.shape[1])
            key_mask = cache.key_mask
        chex.assert_shape(positions, (batch, length))
        query_slots = jnp.reshape(query_slots, (-1, length))  # [1, S], or [B, S] per-row index
        allowed = (key_slots[None, None, :] <= query_slots[:, :, None]) & (key_mask[:, None, :] > 0)
        if segment_ids is not None:
            if cache is not None:
                raise ValueError("segment_ids are for packed rows without a KV cache")
            chex.assert_shape(segment_ids, (batch, length))
            allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
        carry = (
            self.embed_tokens(input_ids),
            None if cache is None else (cache.keys, cache.values),
        )
        index = None if cache is None else cache.index
        cfg = self.config
        rope = rope_tables(
            positions,
            cfg.head_dim,
            theta=cfg.rope_theta,
            scaling=cfg.rope_scaling,
            dtype=self.dtype,
        )
        if self.scan_layers:
            layers = jnp.arange(cfg.num_hidden_layers, dtype=jnp.int32)
            carry, _ = self.layers(carry, rope, allowed, layers, index)
        else:
            for i, layer in enumerate(self.layers):
                carry, _ = layer(carry, rope, allowed, i, index)
        x, kv = carry
        hidden = self.norm(x)
        if cache is None:
            return hidden
        return hidden, KVCache(
            keys=kv[0],
            values=kv[1],
            key_mask=cache.key_mask,
            index=cache.index + length,
        )

    def attend(self, hidden: chex.Array) -> chex.Array:  # [B, S, D] -> [B, S, V]
        """Tied-embedding logits."""
        return self.embed_tokens.attend(hidden)


class ScoreHead(nn.Module):
    """HF's `score` Linear: hidden [..., D] -> [..., L]; no bias unless `use_bias`.

    Usable on its own over a shared trunk's hidden states (e.g. a critic with num_labels=1).
    """

    num_labels: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: chex.Array) -> chex.Array:  # [..., D] -> [..., L] f32
        y = _linear(self, hidden, self.num_labels, ("embed", None), self.use_bias)
        return y.astype(jnp.float32)


class DecoderForCausalLM(nn.Module):
    """Decoder + LM head: logits [B, S, V] in f32 (tied to the embedding when configured).

    `model.apply({"params": p}, input_ids, attention_mask=None, positions=None)`; with
    `cache=` returns (logits, cache); with `return_hidden=True` also returns hidden [B, S, D]
    (as (logits, hidden) or (logits, hidden, cache)); `last_only=True` gives logits [B, 1, V].
    """

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool | str = "minimal"  # what a layer keeps for backward (REMAT_POLICIES)
    scan_layers: bool = True  # one nn.scan over the layers (see DecoderModel)

    def setup(self):
        self.model = DecoderModel(
            self.config, self.dtype, self.param_dtype, self.remat, self.scan_layers
        )
        if not self.config.tie_word_embeddings:
            self.lm_head = Dense(
                self.config.vocab_size,
                ("embed", "vocab"),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )

    def __call__(
        self,
        input_ids: chex.Array,  # [B, S]
        attention_mask: chex.Array | None = None,  # [B, S]
        positions: chex.Array | None = None,  # [B, S]
        *,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        last_only: bool = False,
        segment_ids: chex.Array | None = None,  # [B, S] packed rows (see DecoderModel)
    ):
        out = self.model(input_ids, attention_mask, positions, cache, segment_ids)
        hidden, new_cache = out if cache is not None else (out, None)
        # Prefill only needs the last column's logits; skipping the rest saves a [B, S, V] matmul.
        logits = self.logits(hidden[:, -1:] if last_only else hidden)
        result = (logits, hidden) if return_hidden else logits
        if cache is not None:
            return (*result, new_cache) if return_hidden else (logits, new_cache)
        return result

    def logits(self, hidden: chex.Array) -> chex.Array:  # [B, S, D] -> [B, S, V] f32
        """The LM head alone, for callers that already hold the trunk's hidden states."""
        if self.config.tie_word_embeddings:
            return self.model.attend(hidden).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def head_weight(self) -> chex.Array:  # [V, D] in the module's dtype
        """The LM head as a [V, D] matrix (logits = hidden @ weight.T): the tied embedding, or
        the lm_head kernel transposed. What `rlr.readouts.lm_head_readout` takes."""
        if self.config.tie_word_embeddings:
            return jnp.asarray(self.model.embed_tokens.embedding, self.dtype)
        return jnp.asarray(self.lm_head.variables["params"]["kernel"], self.dtype).T


class MLPScoreHead(nn.Module):
    """Qwen2.5-Math-PRM's `score`: Linear(D, D) -> ReLU -> Linear(D, L), both with bias (HF
    names score.0 and score.2, the positions in its nn.Sequential)."""

    num_labels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: chex.Array) -> chex.Array:  # [..., D] -> [..., L] f32
        kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        inner = Dense(hidden.shape[-1], ("embed", "mlp"), name="0", **kw)(hidden)
        out = Dense(self.num_labels, ("mlp", None), name="2", **kw)(jax.nn.relu(inner))
        return out.astype(jnp.float32)


class ValueHead(nn.Module):
    """A value head `v_head.summary`: Linear(D, 1) with bias (Skywork's PRMs)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: chex.Array) -> chex.Array:  # [..., D] -> [..., 1] f32
        kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        return Dense(1, ("embed", None), name="summary", **kw)(hidden).astype(jnp.float32)


class _TrunkWithScores(nn.Module):
    """The trunk "model" and a per-token score module named by the head's HF layout:
    params {"model", <head name>}; call -> scores [B, S, L] f32 (with hidden [B, S, D] when
    `return_hidden`). Subclasses say which score module (`score_module`) and may pool
    (`pool`)."""

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool | str = "minimal"  # what a layer keeps for backward (REMAT_POLICIES)
    scan_layers: bool = True  # one nn.scan over the layers (see DecoderModel)

    def score_module(self) -> nn.Module:
        raise NotImplementedError

    def pool(self, scores: chex.Array, input_ids, attention_mask) -> chex.Array:
        return scores

    @nn.compact
    def __call__(
        self,
        input_ids: chex.Array,  # [B, S]
        attention_mask: chex.Array | None = None,  # [B, S]
        positions: chex.Array | None = None,  # [B, S]
        *,
        return_hidden: bool = False,
        segment_ids: chex.Array | None = None,  # [B, S] packed rows (see DecoderModel)
    ):
        hidden = DecoderModel(
            self.config,
            self.dtype,
            self.param_dtype,
            self.remat,
            self.scan_layers,
            name="model",
        )(input_ids, attention_mask, positions, None, segment_ids)
        scores = self.score_module()(hidden)
        if segment_ids is None:
            scores = self.pool(scores, input_ids, attention_mask)
        elif type(self).pool is not _TrunkWithScores.pool:
            raise ValueError(f"{type(self).__name__} pools over a row; it cannot read packed rows")
        return (scores, hidden) if return_hidden else scores


class DecoderForTokenClassification(_TrunkWithScores):
    """Decoder + `score` per token: [B, S, L]. num_labels=1 is the value head / critic."""

    num_labels: int = 1
    use_bias: bool = False

    def score_module(self) -> nn.Module:
        return ScoreHead(self.num_labels, self.use_bias, self.dtype, self.param_dtype, name="score")


class DecoderForProcessReward(_TrunkWithScores):
    """Decoder + an MLP `score` per token: [B, S, L] (Qwen2ForProcessRewardModel, L = 2)."""

    num_labels: int = 2

    def score_module(self) -> nn.Module:
        return MLPScoreHead(self.num_labels, self.dtype, self.param_dtype, name="score")


class DecoderWithValueHead(_TrunkWithScores):
    """Decoder + `v_head` per token: [B, S, 1] (Skywork's Qwen2 PRMs)."""

    @property
    def num_labels(self) -> int:
        return 1

    def score_module(self) -> nn.Module:
        return ValueHead(self.dtype, self.param_dtype, name="v_head")


def last_token_index(
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array | None,  # [B, S]
    *,
    pad_token_id: int | None,
) -> chex.Array:  # [B] int32
    """Index of the rightmost real token, as HF sequence classification picks it.

    Like HF, a set pad_token_id decides (rightmost token != pad, so left and right padding both
    work); otherwise the attention mask does; otherwise the last column.
    """
    chex.assert_rank(input_ids, 2)
    batch, length = input_ids.shape
    if pad_token_id is not None:
        real = input_ids != pad_token_id
    elif attention_mask is not None:
        real = attention_mask > 0
    else:
        return jnp.full((batch,), length - 1, jnp.int32)
    return jnp.argmax(jnp.where(real, jnp.arange(length), -1), axis=-1).astype(jnp.int32)


class DecoderForSequenceClassification(_TrunkWithScores):
    """Decoder + `score` read at the last non-pad token: [B, L] (the ORM head)."""

    num_labels: int = 1
    use_bias: bool = False

    def score_module(self) -> nn.Module:
        return ScoreHead(self.num_labels, self.use_bias, self.dtype, self.param_dtype, name="score")

    def pool(self, scores: chex.Array, input_ids, attention_mask) -> chex.Array:
        last = last_token_index(input_ids, attention_mask, pad_token_id=self.config.pad_token_id)
        return jnp.take_along_axis(scores, last[:, None, None], axis=1)[:, 0]


def math_shepherd_step_scores(
    logits: chex.Array,  # [B, S, V] LM logits of a Math-Shepherd style PRM
    positions: chex.Array,  # [B, K] index of each step tag token
    *,
    plus_id: int,
    minus_id: int,
) -> chex.Array:  # [B, K] f32
    """p("+") from a softmax over (logit["+"], logit["-"]) read at each step-tag position.

    Math-Shepherd PRMs are LMs trained to put "+" or "-" at a step tag; the step's score is
    the probability of "+" among the two.
    """
    chex.assert_rank([logits, positions], [3, 2])
    chex.assert_equal_shape_prefix([logits, positions], 1)
    vocab = logits.shape[-1]
    for name, token in (("plus_id", plus_id), ("minus_id", minus_id)):
        if not 0 <= token < vocab:
            raise ValueError(f"{name}={token} is outside the vocabulary [0, {vocab})")
    pair = logits[..., jnp.array([plus_id, minus_id])].astype(jnp.float32)  # [B, S, 2]
    picked = jnp.take_along_axis(pair, positions[..., None].astype(jnp.int32), axis=1)
    return jax.nn.softmax(picked, axis=-1)[..., 0]


def init_params(
    model: nn.Module,
    key: chex.PRNGKey,
    *,
    batch: int = 1,
    length: int = 4,
    shardings: Any = None,
) -> dict[str, Any]:
    """Random parameters for `model` as a plain pytree (logical-axis boxes removed).

    `shardings` (a pytree of Shardings shaped like the params) initialises every parameter
    directly into its shards, so no device holds the whole model.
    """
    # Jitted: one compile is far cheaper than hundreds of eager initialiser dispatches. Modules
    # are equal when their configs are, so without shardings one compiled init serves every
    # equal module (a reference beside its policy, a PRM and an ORM of one shape).
    if shardings is None and _hashable(model):
        return _cached_init(key, model=model, batch=batch, length=length)
    init = jax.jit(partial(_init, model=model, batch=batch, length=length), out_shardings=shardings)
    return init(key)


def _init(key: chex.PRNGKey, *, model: nn.Module, batch: int, length: int) -> dict[str, Any]:
    ids = jnp.zeros((batch, length), jnp.int32)
    return nn.meta.unbox(model.init(key, ids))["params"]


_cached_init = jax.jit(_init, static_argnames=("model", "batch", "length"))


def _hashable(model: nn.Module) -> bool:
    """Whether `model` can be a static jit argument (a config holding a list cannot)."""
    try:
        hash(model)
    except TypeError:
        return False
    return True
