"""Loading what rlr's commands start from, with errors that name the config key or flag.

- tokenizers: an HF fast tokenizer directory;
- policies: an HF causal-LM directory, or a fresh model from an inline `architecture`;
- scorers (PRM / ORM / critic): an HF directory with a one-label `score` head, read as a
  token-classification model (an ORM is read at the last response token);
- problems (prompts with gold answers) in any of rlr.data's formats, and step-labelled
  solutions for reward-model training;
- exports: complete HF model directories (weights, config.json and the tokenizer files).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr.data.records import Problem, StepLabelled
from rlr.data.segmentation import unique_token_ids
from rlr.models import (
    DecoderConfig,
    DecoderForCausalLM,
    DecoderForSequenceClassification,
    DecoderForTokenClassification,
    init_params,
    load_pretrained,
    save_pretrained,
)
from rlr.training.schemas import LABELLED_FORMATS, PROBLEM_FORMATS, ModelSpec

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
# ModelSpec.dtype / param_dtype names -> JAX dtypes
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ------------------------------------------------------------------- tokenizers


def load_tokenizer(path: str | pathlib.Path, *, what: str = "tokenizer"):
    """An HF fast tokenizer from a local directory; `what` names the setting in errors."""
    from rlr.tokenizer import load_fast_tokenizer

    if path and not pathlib.Path(path).exists() and "/" in str(path):
        try:  # an org/name id in the local Hugging Face cache
            path = model_dir(str(path), what)
        except ValueError:
            pass
    if not path or not (pathlib.Path(path) / "tokenizer.json").is_file():
        raise ValueError(
            f"{what} {str(path)!r} is not a directory holding tokenizer.json; "
            "make one with `rlr train-tokenizer --out DIR` and point to DIR"
        )
    tokenizer = load_fast_tokenizer(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{what} {path} must be a fast tokenizer (tokenizer.json)")
    return tokenizer


# --------------------------------------------------------------------- networks


def hf_config_of(spec: ModelSpec, tokenizer: Any = None, *, what: str = "model") -> dict[str, Any]:
    """The config.json-style mapping of a network: `path`'s config.json when it exists, else
    the inline `architecture` (so `rlr plan` can size a model whose weights are elsewhere).

    An inline architecture without `vocab_size`, `pad_token_id` or `eos_token_id` takes them
    from `tokenizer` (when given).
    """
    import json

    config_file = None
    if spec.path:
        try:
            config_file = model_dir(spec.path, what) / "config.json"
        except ValueError:
            if spec.architecture is None:
                raise
    if config_file is not None and config_file.is_file():
        return json.loads(config_file.read_text())
    if spec.architecture is None:
        raise ValueError(
            f"{what}.path {spec.path!r} holds no config.json and {what}.architecture is not "
            "given: point path to an HF model directory"
        )
    hf = dict(spec.architecture)
    if tokenizer is not None:
        hf.setdefault("vocab_size", len(tokenizer))
        if hf["vocab_size"] < len(tokenizer):
            raise ValueError(
                f"{what}.architecture.vocab_size={hf['vocab_size']} is smaller than the "
                f"tokenizer's {len(tokenizer)} tokens; drop the key to use the tokenizer's size"
            )
        hf.setdefault("pad_token_id", tokenizer.pad_token_id)
        hf.setdefault("eos_token_id", tokenizer.eos_token_id)
    if "vocab_size" not in hf:
        raise ValueError(f"{what}.architecture needs vocab_size (or a tokenizer to take it from)")
    return hf


def network_config(
    spec: ModelSpec, tokenizer: Any = None, *, what: str = "model", num_layers: int | None = None
) -> DecoderConfig:
    """The DecoderConfig of a network spec (see hf_config_of); `num_layers` overrides its depth."""
    hf = hf_config_of(spec, tokenizer, what=what)
    if num_layers is not None:
        hf = {**hf, "num_hidden_layers": num_layers}
    try:
        return DecoderConfig.from_hf(hf)
    except (ValueError, TypeError) as err:
        source = f"{what}.path {spec.path}" if spec.path else f"{what}.architecture"
        raise ValueError(f"{source} is invalid: {err}") from None


def _module_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """The module fields a network spec sets: dtypes, remat and scan_layers."""
    return dict(
        dtype=DTYPES[spec.dtype],
        param_dtype=DTYPES[spec.param_dtype],
        remat=spec.remat,
        scan_layers=spec.scan_layers,
    )


def network_module(
    spec: ModelSpec, config: DecoderConfig, *, head: Literal["lm", "score"]
) -> nn.Module:
    """The Flax module of a network: a causal LM, or a one-label token-score model."""
    kwargs = _module_kwargs(spec)
    if head == "lm":
        return DecoderForCausalLM(config, **kwargs)
    return DecoderForTokenClassification(config, num_labels=1, **kwargs)


def with_lora(module: nn.Module, spec: ModelSpec) -> nn.Module:
    """`module` (a decoder) with the low-rank adapters of `spec.lora` on its projections; the
    module itself when the spec has none."""
    from rlr.models.architecture import LoraConfig

    if spec.lora is None:
        return module
    lora = LoraConfig(rank=spec.lora.rank, alpha=spec.lora.alpha, targets=spec.lora.targets)
    return module.clone(config=dataclasses.replace(module.config, lora=lora))


def model_dir(path: str, what: str) -> pathlib.Path:
    """An HF directory from a path, or from an `org/name` id in the local Hugging Face cache
    (offline; the error says how to download it)."""
    from rlr.models.hub import resolve_model_dir

    if pathlib.Path(path).is_dir():
        return pathlib.Path(path)
    return resolve_model_dir(path, what=_path_field(what))


def scorer_format(spec: ModelSpec, *, what: str = "prm") -> str:
    """A PRM's step format: `format` when set, else detected from the architecture and label
    count named by its config.json (or inline `architecture`); rlr's own when none are named.
    A causal LM of a family no released PRM uses is "rlr" here, so that load_scorer says it
    has no score head; a Mistral / Llama causal LM must name its format (it may be a
    Math-Shepherd or RLHFlow PRM, or no PRM at all)."""
    from rlr.models.step_scorers import detect_format

    if spec.format is not None:
        return spec.format
    if spec.path is None:
        hf = dict(spec.architecture or {})
    else:
        hf = hf_config_of(spec, None, what=what)
    arch = (hf.get("architectures") or [""])[0]
    causal_lm_prm = hf.get("model_type") in ("mistral", "llama")  # Math-Shepherd, RLHFlow
    if not arch or (arch.endswith("ForCausalLM") and not causal_lm_prm):
        return "rlr"  # no released PRM of this kind: load_scorer says it has no score head
    field = f"{what}-format" if what.startswith("--") else f"{what}.format"
    source = f"{what}.path {spec.path}" if spec.path else what
    return detect_format(hf, source=source, field=field)


def check_orm_format(spec: ModelSpec, *, what: str = "orm") -> None:
    """An ORM is read in rlr's format only (one label, scored at the last token): any other
    format (a released PRM, a 2-label classifier) is an error naming `what`'s format field."""
    fmt = scorer_format(spec, what=what)
    if fmt != "rlr":
        field = f"{what}-format" if what.startswith("--") else f"{what}.format"
        raise ValueError(
            f"{field}: {spec.path} reads as {fmt!r}, but an ORM is read in rlr's format only "
            "(a one-label score at the last token); give a released PRM as the PRM instead"
        )


def text_prm_format(
    spec: ModelSpec, policy_tokenizer_dir: str | None, *, what: str = "prm"
) -> str | None:
    """The step format of a PRM that must be read as text (rlr.training.step_scoring), or
    None when it is an rlr PRM sharing the policy's tokenizer, read inside the scoring graph.
    A PRM directory that is not here (rlr plan sizing it from `architecture`) counts as
    sharing the tokenizer."""
    from rlr.training.step_scoring import same_tokenizer

    fmt = scorer_format(spec, what=what)
    if fmt != "rlr":
        return fmt
    try:
        prm_dir = model_dir(spec.path, what) if spec.path else None
    except ValueError:
        prm_dir = None
    return None if same_tokenizer(prm_dir, policy_tokenizer_dir) else fmt


def scorer_module(
    spec: ModelSpec, fmt: str, *, what: str = "prm", num_layers: int | None = None
) -> nn.Module:
    """The Flax network a PRM of step format `fmt` is read through (its head as the released
    checkpoint has it), from config.json / `architecture` alone."""
    from rlr.models.step_scorers import make_format

    config = network_config(spec, None, what=what, num_layers=num_layers)
    step_format = make_format(fmt)
    cls = step_format.network
    kwargs = _module_kwargs(spec)
    if cls is DecoderForTokenClassification:
        # HF's token classifiers have a biased `score` (TRL's PRMs); rlr's own has none
        use_bias = fmt != "rlr"
        return cls(config, num_labels=step_format.num_labels, use_bias=use_bias, **kwargs)
    return cls(config, **kwargs)


def load_or_init_policy(
    spec: ModelSpec, tokenizer: Any, *, seed: int, what: str = "policy", shardings: Any = None
) -> tuple[nn.Module, Any]:
    """(DecoderForCausalLM, params) from `spec.path`, or freshly initialised from `architecture`.

    With `shardings` (NamedShardings shaped like the params) every parameter goes straight to
    its shards as it is read or initialised.
    """
    dtype, param_dtype = DTYPES[spec.dtype], DTYPES[spec.param_dtype]
    if spec.path:
        path = model_dir(spec.path, what)
        model, params = load_pretrained(
            path,
            dtype=dtype,
            param_dtype=param_dtype,
            shardings=shardings,
            scan_layers=spec.scan_layers,
        )
        if not isinstance(model, DecoderForCausalLM):
            raise ValueError(
                f"{_path_field(what)} {spec.path} holds a {type(model).__name__}, not a causal LM"
            )
        config = with_generation_eos(model.config, path)
        return model.clone(config=config, remat=spec.remat), params  # scan_layers as loaded
    model = network_module(spec, network_config(spec, tokenizer, what=what), head="lm")
    return model, init_params(model, jax.random.key(seed), shardings=shardings)


def with_generation_eos(config: DecoderConfig, directory: str | pathlib.Path) -> DecoderConfig:
    """`config` with the EOS ids of the directory's generation_config.json added (HF chat
    models list several there, e.g. `<|im_end|>` and `<|endoftext|>`), so sampling stops at
    every one of them."""
    import json

    path = pathlib.Path(directory) / "generation_config.json"
    if not path.is_file():
        return config
    try:
        listed = json.loads(path.read_text()).get("eos_token_id")
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    ids = unique_token_ids(config.eos_token_id, listed)
    if not ids:
        return config
    return dataclasses.replace(config, eos_token_id=ids[0] if len(ids) == 1 else tuple(ids))


def load_scorer(
    spec: ModelSpec, *, what: str = "prm", shardings: Any = None
) -> tuple[nn.Module, Any]:
    """A PRM / ORM from an HF directory (or cached `org/name`). rlr's format is read as a
    one-label token-classification module over its {"model", "score"} params (an ORM at the
    last token, by rlr.readouts); a released PRM's format keeps its own network (see
    rlr.models.step_scorers). `shardings` places each parameter straight into its shards."""
    if not spec.path:
        raise ValueError(
            f"{what} needs `path`: an HF directory written by `rlr train-prm` / `rlr train-orm`, "
            "or a released PRM (with `format`)"
        )
    fmt = scorer_format(spec, what=what)
    model, params = load_pretrained(
        model_dir(spec.path, what),
        dtype=DTYPES[spec.dtype],
        param_dtype=DTYPES[spec.param_dtype],
        shardings=shardings,
        scan_layers=spec.scan_layers,
    )
    from rlr.models.step_scorers import make_format

    step_format = make_format(fmt)
    labels = getattr(model, "num_labels", None)
    if step_format.num_labels is not None and labels not in (None, step_format.num_labels):
        field = f"{what}-format" if what.startswith("--") else f"{what}.format"
        raise ValueError(
            f"{_path_field(what)} {spec.path}: format {fmt!r} reads a score head with "
            f"{step_format.num_labels} label(s), but this one has {labels}; set {field} to "
            "the format that reads it"
        )
    if fmt != "rlr":
        expected = step_format.network
        if not isinstance(model, expected):
            raise ValueError(
                f"{_path_field(what)} {spec.path}: format {fmt!r} reads a {expected.__name__}, "
                f"but the directory holds a {type(model).__name__}"
            )
        return model.clone(remat=spec.remat), params
    if "score" not in params:
        raise ValueError(
            f"{_path_field(what)} {spec.path}: not a reward model (no 'score' head); export it as "
            "a *ForTokenClassification or *ForSequenceClassification model, or set "
            f"{what}.format to a released PRM's format"
        )
    return network_module(spec, model.config, head="score"), params


def load_text_scorer(
    spec: ModelSpec,
    *,
    what: str = "prm",
    prompt_style: str = "plain",
    batch_size: int = 8,
    mesh: Any = None,
) -> Any:
    """A StepScorer (rlr.models.step_scorers) for a PRM that reads steps as text, with its
    own tokenizer; rlr's format renders its prompt with `prompt_style`."""
    from rlr.models.step_scorers import StepScorer, make_format

    fmt = scorer_format(spec, what=what)
    directory = model_dir(spec.path, what)
    module, params = load_scorer(spec, what=what)
    tokenizer = load_tokenizer(directory, what=f"the tokenizer of {_path_field(what)}")
    return StepScorer(
        make_format(fmt, prompt_style=prompt_style),
        module,
        params,
        tokenizer,
        batch_size=batch_size,
        mesh=mesh,
    )


def init_scorer(
    spec: ModelSpec,
    tokenizer: Any,
    *,
    seed: int,
    head: Literal["token", "sequence"],
) -> tuple[nn.Module, nn.Module, Any]:
    """A one-label scorer: (token model, export model, params) with a fresh `score` head.

    The trunk comes from `spec` (an SFT policy directory, or a fresh architecture). Training
    and PPO read scores through the token-classification model (rlr.readouts); the
    export model is DecoderForTokenClassification for a PRM and DecoderForSequenceClassification
    for an ORM. Both have the same params. The ORM's config has no pad_token_id, so the
    sequence head reads the last attended token, as readouts.orm_scores does.
    """
    if head not in ("token", "sequence"):
        raise ValueError(f"head must be 'token' or 'sequence'; got {head!r}")
    policy, policy_params = load_or_init_policy(spec, tokenizer, seed=seed, what="init")
    config = policy.config
    if head == "sequence":
        config = dataclasses.replace(config, pad_token_id=None)
    kwargs = dict(
        num_labels=1,
        dtype=policy.dtype,
        param_dtype=policy.param_dtype,
        scan_layers=policy.scan_layers,  # the layout of the trunk's params
    )
    token_model = DecoderForTokenClassification(config, **kwargs)
    fresh = init_params(token_model, jax.random.key(seed + 1))
    params = {"model": policy_params["model"], "score": fresh["score"]}
    if head == "token":
        return token_model, token_model, params
    return token_model, DecoderForSequenceClassification(config, **kwargs), params


def load_policy_dir(policy: str, tokenizer_dir: str | None = None) -> tuple[Any, Any, Any]:
    """(causal LM, params, tokenizer) from HF directories, for the --policy / --tokenizer
    flags of the evaluation commands; the tokenizer defaults to the policy directory."""
    for flag, path in (("--policy", policy), ("--tokenizer", tokenizer_dir or policy)):
        if not pathlib.Path(path).is_dir():
            raise ValueError(f"{flag} {path}: no such directory (give an HF model directory)")
    try:
        tokenizer = load_tokenizer(tokenizer_dir or policy, what="--tokenizer")
    except ValueError as e:
        raise ValueError(f"{e} (or pass --tokenizer DIR)") from None
    model, params = load_or_init_policy(ModelSpec(path=policy), tokenizer, seed=0, what="--policy")
    return model, params, tokenizer


def export_model(
    model: nn.Module,
    params: Any,
    out_dir: Any,
    *,
    tokenizer_dir: str | None,
    base_model: str | None = None,
) -> Any:
    """save_pretrained + the tokenizer files beside it: a complete HF model directory, on a
    local disk or under a URI (gs://...: written locally, then copied file by file).

    A model with low-rank adapters (config.lora) is written merged (W + alpha / r * A @ B, a
    full HF model), and its adapters as a PEFT directory in `adapter/` beside it
    (base_model_name_or_path: `base_model`).

    Every process of a multi-process run must call it: parameters sharded across hosts are
    gathered first; process 0 alone writes. Returns the directory."""
    import shutil
    import tempfile

    from rlr.training import distributed
    from rlr.training.checkpoint import URI_PREFIXES, storage_path

    params = distributed.fetch(params)
    remote = str(out_dir).startswith(URI_PREFIXES)
    target = storage_path(out_dir) if remote else pathlib.Path(out_dir)
    if not distributed.is_main():
        return target
    with tempfile.TemporaryDirectory(prefix="rlr_export_") as scratch:
        local = pathlib.Path(scratch) if remote else target
        lora = getattr(model.config, "lora", None)
        if lora is not None:
            from rlr.models import lora as lora_lib

            _, adapters = lora_lib.split_adapters(params)
            lora_lib.save_peft_adapter(adapters, lora, local / "adapter", base_model=base_model)
            base = model.clone(config=dataclasses.replace(model.config, lora=None))
            save_pretrained(base, lora_lib.merge_into_kernels(params, lora), local)
        else:
            save_pretrained(model, params, local)
        if tokenizer_dir:
            for name in TOKENIZER_FILES:
                source = pathlib.Path(tokenizer_dir) / name
                if source.is_file():
                    shutil.copy2(source, local / name)
        if remote:
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(local.rglob("*")):  # adapter/ of a LoRA export too
                if file.is_file():
                    dest = target / str(file.relative_to(local))
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(file.read_bytes())
    return target


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
    import math

    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


# ------------------------------------------------------------------------ data


def load_problems(
    path: str | None,
    fmt: str = "synthetic",
    *,
    what: str = "data.train",
    need_solution: bool = False,
    limit: int | None = None,
) -> list[Problem]:
    """Problems with gold answers from a JSONL file in one of rlr.data's formats.

    `synthetic` is rlr's own Problem JSONL (`rlr make-data`). Records without a gold answer
    are dropped; `need_solution` makes a record without solution text an error (SFT data).
    `limit` keeps the first n.
    """
    from rlr.data.readers import READERS, read_problems

    if fmt not in PROBLEM_FORMATS:
        raise ValueError(f"{what}: format must be one of {', '.join(PROBLEM_FORMATS)}; got {fmt!r}")
    _require_file(path, what)
    if limit is not None and limit < 1:
        raise ValueError(f"{what}: the number of problems to keep must be >= 1; got {limit}")
    reader = read_problems if fmt == "synthetic" else READERS[fmt]
    records = reader(path).records
    if need_solution:
        for number, problem in enumerate(records, 1):
            if not problem.solution:
                raise ValueError(f"{path}: record {number} ({problem.id}) has no solution text")
    problems = [p for p in records if p.answer is not None]
    if not problems:
        raise ValueError(f"{what} {path}: no problems with a gold answer (format {fmt})")
    return problems if limit is None else problems[:limit]


def load_labelled(
    path: str | None, fmt: str = "rlr", *, what: str = "data.train"
) -> list[StepLabelled]:
    """Step-labelled solutions: rlr's StepLabelled JSONL ("rlr", as `rlr make-data` and
    `rlr label-steps` write it), or a PRM800K / Math-Shepherd file."""
    from rlr.data.readers import READERS, read_step_labelled

    if fmt not in LABELLED_FORMATS:
        raise ValueError(
            f"{what}: format must be one of {', '.join(LABELLED_FORMATS)}; got {fmt!r}"
        )
    _require_file(path, what)
    reader = read_step_labelled if fmt == "rlr" else READERS[fmt]
    records = list(reader(path))
    if not records:
        raise ValueError(f"{what} {path} holds no records")
    return records


def _require_file(path: str | None, what: str) -> None:
    if not path or not pathlib.Path(path).is_file():
        raise ValueError(
            f"{what} {str(path)!r} is not a file; make data with `rlr make-data --out DIR` "
            "or point to a JSONL file"
        )


def _path_field(what: str) -> str:
    """How errors name a network's path: the flag itself (--policy) or the config key."""
    return what if what.startswith("--") else f"{what}.path"
