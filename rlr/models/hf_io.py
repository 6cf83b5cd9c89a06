"""Hugging Face checkpoint I/O: config.json + safetensors in, the same layout out.

Reads single-file or sharded (model.safetensors.index.json) checkpoints with the safetensors
NumPy reader, so neither torch nor pickle is involved. HF linear weights are [out, in]; rlr
kernels are [in, out], so kernels are transposed both ways. HF names every layer's tensors
apart (model.layers.{i}.*); a scanned model's params hold them stacked ("layers" [L, ...]), so
loading stacks them and saving splits them again.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from rlr.models.architecture import DecoderConfig
from rlr.models.decoder import (
    DecoderForCausalLM,
    DecoderForProcessReward,
    DecoderForSequenceClassification,
    DecoderForTokenClassification,
    DecoderWithValueHead,
    unstack_layer_params,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# architectures[0] suffix -> module; the prefix names the family (Qwen2, Qwen3, Llama, Mistral).
_HEADS = {
    "ForCausalLM": DecoderForCausalLM,
    "ForTokenClassification": DecoderForTokenClassification,
    "ForSequenceClassification": DecoderForSequenceClassification,
    "ForProcessRewardModel": DecoderForProcessReward,  # Qwen2.5-Math-PRM
    "ForPrmModel": DecoderWithValueHead,  # Skywork-o1-Open-PRM
}
# what save_pretrained writes (the others are read-only: their HF classes are remote code)
_SAVED_HEADS = ("ForCausalLM", "ForTokenClassification", "ForSequenceClassification")


def is_stacked(path: tuple[str, ...]) -> bool:
    """Whether an rlr parameter path runs through a scanned model's stacked layers
    ("model", "layers", ...): its array is [L, ...], one HF tensor per layer."""
    return "layers" in path


def hf_name(path: tuple[str, ...], layer: int | None = None) -> tuple[str, bool]:
    """HF tensor name of an rlr parameter path, and whether the array is transposed in HF.

    A looped model's "layers_{i}" is HF's "layers.{i}"; a path through a scanned model's
    stacked "layers" names the tensor of layer `layer` (which it then requires), e.g.
    ("model", "layers", "mlp", "up_proj", "kernel"), 3 -> "model.layers.3.mlp.up_proj.weight".
    """
    parts = []
    for p in path:
        if p == "layers":
            if layer is None:
                raise ValueError(f"{'/'.join(path)} holds every layer: say which with layer=")
            parts.append(f"layers.{layer}")
        elif p.startswith("layers_"):
            parts.append(p.replace("layers_", "layers."))
        else:
            parts.append(p)
    leaf = parts[-1]
    transpose = leaf == "kernel"
    parts[-1] = "bias" if leaf == "bias" else "weight"
    return ".".join(parts), transpose


def _param_paths(tree: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield tuple(str(k.key) for k in key_path), leaf


class _TensorReader:
    """Name -> file map over one or more safetensors files, opened lazily."""

    def __init__(self, directory: pathlib.Path):
        index = directory / INDEX_NAME
        single = directory / WEIGHTS_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index} has no 'weight_map' object")
            self.files = {name: directory / file for name, file in weight_map.items()}
            for file in set(self.files.values()):
                if not file.is_file():
                    raise ValueError(f"{index} names shard {file.name}, which is missing")
        elif single.is_file():
            with safe_open(single, framework="numpy") as f:
                self.files = {name: single for name in f.keys()}
        else:
            found = sorted(p.name for p in directory.glob("*.safetensors"))
            raise ValueError(
                f"{directory} has neither {WEIGHTS_NAME} nor {INDEX_NAME} (found safetensors "
                f"files: {found or 'none'}); rlr reads safetensors only, never pickled .bin files"
            )
        self.described = index if index.is_file() else single

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, without reading it."""
        if name not in self.files:
            raise ValueError(f"tensor {name!r} is missing from {self.described}")
        with safe_open(self.files[name], framework="numpy") as f:
            return tuple(f.get_slice(name).get_shape())

    def read(self, name: str) -> np.ndarray:
        if name not in self.files:
            raise ValueError(f"tensor {name!r} is missing from {self.described}")
        with safe_open(self.files[name], framework="numpy") as f:
            if name not in f.keys():
                raise ValueError(
                    f"tensor {name!r} is missing from {self.files[name]} "
                    f"(the index {self.described} says it is there)"
                )
            return f.get_tensor(name)


def _build_model(
    hf: dict[str, Any], reader: _TensorReader, dtype, param_dtype, scan_layers: bool
) -> nn.Module:
    config = DecoderConfig.from_hf(hf)
    architectures = hf.get("architectures") or [f"{config.family}ForCausalLM"]
    arch = architectures[0]
    cls = next((c for suffix, c in _HEADS.items() if arch.endswith(suffix)), None)
    if cls is None:
        raise ValueError(
            f"config.json architectures={architectures!r} is not supported; rlr loads "
            f"*{', *'.join(_HEADS)}"
        )
    kw = dict(dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers)
    if cls in (DecoderForCausalLM, DecoderWithValueHead):  # no label count to read
        return cls(config, **kw)
    # The number of labels is the head's real output size, whatever config.json says.
    last = "score.2.weight" if cls is DecoderForProcessReward else "score.weight"
    num_labels = reader.shape(last)[0]
    if cls is DecoderForProcessReward:
        return cls(config, num_labels=num_labels, **kw)
    return cls(config, num_labels=num_labels, use_bias="score.bias" in reader, **kw)


def read_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The config.json of an HF model directory, with errors that name the file."""
    config_path = pathlib.Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise ValueError(f"{config_path} is missing; an HF model directory needs config.json")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from None


def _open(
    path: str | pathlib.Path, dtype: Any, param_dtype: Any, scan_layers: bool
) -> tuple[nn.Module, _TensorReader]:
    hf = read_config(path)
    reader = _TensorReader(pathlib.Path(path))
    return _build_model(hf, reader, dtype, param_dtype, scan_layers), reader


def pretrained_module(
    path: str | pathlib.Path,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    scan_layers: bool = True,
) -> nn.Module:
    """The Flax module `load_pretrained` would return for `path`, without reading weights
    (config.json and the safetensors headers only): what shardings are computed from."""
    return _open(path, dtype, param_dtype, scan_layers)[0]


def _read_tensor(
    reader: _TensorReader, path: tuple[str, ...], shape: tuple[int, ...], layer: int | None
) -> np.ndarray:
    """One HF tensor as rlr lays it out (kernels [in, out]), checked against `shape`."""
    name, transpose = hf_name(path, layer)
    array = reader.read(name)
    if transpose:
        array = array.T
    if array.shape != shape:
        hf_shape = array.T.shape if transpose else array.shape
        expected = shape[::-1] if transpose else shape
        raise ValueError(
            f"tensor {name!r} in {reader.files[name]} has shape {hf_shape}, but config.json "
            f"implies {expected}"
        )
    return array


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    shardings: Any = None,
    scan_layers: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Reads an HF Qwen2, Qwen3, Llama or Mistral directory -> (model, params); the head
    follows config.json `architectures` and the head tensors' shapes.

    dtype is the compute dtype, param_dtype the stored one (e.g. bf16 params, f32 compute).
    shardings, optional, is a pytree of `jax.sharding.Sharding` shaped like params (e.g. from
    the logical-axis rules): each tensor goes straight to its shards as it is read, so no
    device ever holds more than its share. With `scan_layers` (the model's default) the
    per-layer tensors model.layers.{i}.* are stacked into "layers" leaves [L, ...] one
    parameter at a time; without it they become "layers_{i}".
    """
    model, reader = _open(path, dtype, param_dtype, scan_layers)
    shapes = jax.eval_shape(
        lambda: nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    )["params"]
    treedef = jax.tree_util.tree_structure(shapes)
    if shardings is None:
        placements = [None] * treedef.num_leaves
    else:
        placements = treedef.flatten_up_to(shardings)
    leaves = []
    for (param_path, shape), placement in zip(_param_paths(shapes), placements):
        if is_stacked(param_path):  # [L, ...] from L per-layer tensors, filled in place
            array = np.empty(shape.shape, jnp.dtype(param_dtype))
            for i in range(shape.shape[0]):
                array[i] = _read_tensor(reader, param_path, shape.shape[1:], i)
        else:
            array = _read_tensor(reader, param_path, shape.shape, None)
            array = array.astype(jnp.dtype(param_dtype))
        leaves.append(jax.device_put(array, placement))
    return model, jax.tree_util.tree_unflatten(treedef, leaves)


def _to_numpy(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16, jnp.bfloat16):
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def save_pretrained(
    model: nn.Module,
    params: dict[str, Any],
    path: str | pathlib.Path,
    *,
    max_shard_bytes: int | None = None,
) -> None:
    """Writes config.json + model.safetensors (HF names, [out, in]) that transformers loads.

    With max_shard_bytes, tensors are split over model-0000i-of-0000n.safetensors files with a
    model.safetensors.index.json, as HF does for large models.
    """
    head = next((s for s in _SAVED_HEADS if type(model) is _HEADS[s]), None)
    if head is None:
        raise ValueError(
            f"save_pretrained writes DecoderForCausalLM, DecoderForTokenClassification or "
            f"DecoderForSequenceClassification; got {type(model).__name__}"
        )
    directory = pathlib.Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    # stacked layers [L, ...] are split on the host into HF's per-layer tensors
    host = unstack_layer_params(jax.tree.map(_to_numpy, nn.meta.unbox(params)))
    for param_path, array in _param_paths(host):
        name, transpose = hf_name(param_path)
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    dtypes = {str(t.dtype) for t in tensors.values()}
    hf = model.config.to_hf()
    hf["architectures"] = [f"{model.config.family}{head}"]
    hf["dtype"] = "bfloat16" if dtypes == {"bfloat16"} else "float32"
    if head != "ForCausalLM":
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(model.num_labels)}
        if head == "ForTokenClassification":
            hf["token_classification_bias"] = bool(model.use_bias)
    (directory / CONFIG_NAME).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    metadata = {"format": "pt"}
    if max_shard_bytes is None:
        save_file(tensors, directory / WEIGHTS_NAME, metadata=metadata)
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / file, metadata=metadata)
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
