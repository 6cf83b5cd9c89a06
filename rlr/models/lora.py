"""Low-rank adapters (LoRA) of a decoder: the parameter split, the merge, and PEFT export.

A decoder whose `DecoderConfig.lora` is set holds, in every targeted projection, lora_a
[In, r] and lora_b [r, Out] beside its kernel [In, Out] (rlr.models.decoder). Training keeps
the two apart: `split_adapters` cuts a params tree into the frozen base (exactly the params of
the same decoder with lora=None) and the adapters (a tree holding only lora_a / lora_b leaves),
and `merge_adapters` joins them again without copying an array. The reference policy of a
LoRA run is the base alone, read by the decoder without adapters.

Exports: `merge_into_kernels` folds adapters into the kernels (W + alpha / r * A @ B), which
`save_pretrained` writes as a full HF model; `save_peft_adapter` writes the adapters as a PEFT
directory (adapter_config.json + adapter_model.safetensors, PEFT's tensor names, lora_A
[r, In], lora_B [Out, r]) that `peft.PeftModel.from_pretrained` puts on the HF base model.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from rlr.models.architecture import LoraConfig
from rlr.models.decoder import unstack_layer_params

ADAPTER_LEAVES = ("lora_a", "lora_b")
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_NAMES = {"lora_a": "lora_A", "lora_b": "lora_B"}


def split_adapters(params: Any) -> tuple[Any, Any]:
    """(base, adapters) of a params dict tree: adapters keeps every lora_a / lora_b leaf (and
    the dicts on their paths), base everything else. Arrays are shared, not copied; both are
    plain dicts. A tree without adapters gives (params, {})."""
    if not isinstance(params, dict):
        return params, {}
    base, adapters = {}, {}
    for key, value in params.items():
        if key in ADAPTER_LEAVES:
            adapters[key] = value
        elif isinstance(value, dict):
            sub_base, sub_adapters = split_adapters(value)
            base[key] = sub_base
            if sub_adapters:
                adapters[key] = sub_adapters
        else:
            base[key] = value
    return base, adapters


def merge_adapters(base: Any, adapters: Any) -> Any:
    """The params tree of the adapted decoder: `base` with `adapters` added at their paths (the
    inverse of `split_adapters`; no array is copied). A key in both is an error."""
    if not adapters:
        return base
    out = dict(base)
    for key, value in adapters.items():
        if key in ADAPTER_LEAVES:
            if key in out:
                raise ValueError(f"base params already hold {key!r}")
            out[key] = value
        else:
            out[key] = merge_adapters(base[key], value)
    return out


def count_adapter_params(adapters: Any) -> int:
    """Scalars in an adapters tree (arrays or ShapeDtypeStructs)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(adapters))


def merge_into_kernels(params: Any, lora: LoraConfig) -> Any:
    """params of the adapted decoder -> those of its base with each adapter folded in:
    kernel [..., In, Out] + scaling * lora_a [..., In, r] @ lora_b [..., r, Out] (a stacked
    layer's leading [L] axis is batched), in the kernel's dtype; lora leaves dropped."""
    if not isinstance(params, dict):
        return params
    if "lora_a" in params:
        a, b, kernel = params["lora_a"], params["lora_b"], params["kernel"]
        delta = jnp.matmul(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        merged = jnp.asarray(kernel, jnp.float32) + lora.scaling * delta
        rest = {k: v for k, v in params.items() if k not in (*ADAPTER_LEAVES, "kernel")}
        return {**rest, "kernel": merged.astype(kernel.dtype)}
    return {k: merge_into_kernels(v, lora) for k, v in params.items()}


def peft_tensors(adapters: Any) -> dict[str, np.ndarray]:
    """PEFT's tensors of an adapters tree (`split_adapters` of a causal LM's params), f32 on the
    host: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, In] and
    lora_B.weight [Out, r] (rlr's lora_a [In, r] and lora_b [r, Out], transposed)."""
    host = unstack_layer_params(
        jax.tree.map(lambda x: np.asarray(x, np.float32), nn.meta.unbox(adapters))
    )
    tensors = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]:
        path = [str(k.key) for k in key_path]
        *module, name = [p.replace("layers_", "layers.") for p in path]
        tensor = f"base_model.model.{'.'.join(module)}.{_PEFT_NAMES[name]}.weight"
        tensors[tensor] = np.ascontiguousarray(leaf.T)
    return tensors


def save_peft_adapter(
    adapters: Any,
    lora: LoraConfig,
    path: str | pathlib.Path,
    *,
    base_model: str | None = None,
) -> pathlib.Path:
    """Writes `adapters` (of a causal LM) as a PEFT LoRA directory: adapter_config.json
    (r, lora_alpha, target_modules, no dropout, no bias, CAUSAL_LM; base_model_name_or_path
    `base_model`) and adapter_model.safetensors (`peft_tensors`). Returns the directory."""
    directory = pathlib.Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    (directory / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_file(peft_tensors(adapters), directory / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
    return directory
