"""Step scorers: any supported PRM turned into one probability in [0, 1] per reasoning step.

    scorer = load_step_scorer(path)            # the format is read from config.json
    scorer.score_steps(questions, solutions)   # solutions: list[list[str]] -> list[list[float]]

A format knows three things about its PRM: how a question and its steps are rendered as
tokens, at which token each step's score is read, and how the network's output there becomes
a probability.

- rlr (what `rlr train-prm` writes, a one-label token classifier): rlr's prompt, the steps
  joined by "\\n" and EOS; sigmoid of the logit at each step's last token.
- qwen_math_prm (Qwen2ForProcessRewardModel, an MLP head with 2 labels): the chat template over
  a system turn, the question and the steps each ended by `<extra_0>`; softmax over the labels,
  label 1, at each `<extra_0>`.
- math_shepherd (a Mistral causal LM): "{question} {step 1} ки\\n{step 2} ки..."; at each `ки`
  the softmax over the logits of "+" and "-", the "+" share.
- pure (a 2-label token classifier, as TRL's PRMTrainer trains one: PURE's PRM): BOS (when the
  tokenizer has one) + question, then each step's tokens and the "\\n" tokens; softmax over the
  two labels, label 1, at each step's last "\\n" token.
- skywork (a Qwen2 trunk with the value head `v_head`): BOS + question + "\\n", then the
  response (the steps joined by "\\n\\n") split on every "\\n", each piece's tokens and the "\\n"
  token; sigmoid of the head at the "\\n" that ends each step's last line.
- rlhflow (a Llama 3.1 causal LM): a chat where each step is a user turn answered "+"; softmax
  over "+" and "-" at the token before each "+".

config.json names the head, and for a token classifier its label count, but a causal LM's
config.json does not say which recipe (if any) it was trained for: math_shepherd and rlhflow
are never assumed, they must be named (format=).

Scoring is one jitted program per (rows, length bucket, steps bucket): rows are sorted by
length and right-padded to a bucket (a quarter step of a power of two), so a few compilations
serve any mix of solutions; with a mesh the parameters and rows are sharded by rlr.sharding's
rules.

Why one module (over 600 lines): each PRM format is a short class, and load_step_scorer picks
one from a checkpoint's config; the supported formats sit side by side in one file.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlr.data.segmentation import pad_id_of
from rlr.models.decoder import (
    DecoderForCausalLM,
    DecoderForProcessReward,
    DecoderForTokenClassification,
    DecoderWithValueHead,
)

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_FORMATS = ("rlr", "qwen_math_prm", "math_shepherd", "skywork", "rlhflow", "pure")


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One solution as the PRM reads it: token ids [S] and, per step, the column [K] whose
    output scores that step."""

    ids: tuple[int, ...]
    read_at: tuple[int, ...]


def _one_token(tokenizer, text: str, *, what: str, fmt: str, last: bool = True) -> int:
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(f"format {fmt!r}: the tokenizer encodes {what} {text!r} to no tokens")
    return int(ids[-1] if last else ids[0])


class StepFormat:
    """How one PRM family renders, where it reads and how it makes a probability."""

    name: str = ""
    network: type[nn.Module] = DecoderForTokenClassification
    num_labels: int | None = None  # the score head's outputs, where the network has a score head
    reads_lm: bool = False  # True: a causal LM read through two candidate tokens

    def render(self, tokenizer, question: str, steps: Sequence[str]) -> Rendered:
        """The PRM's tokens for one solution and the column that scores each step."""
        raise NotImplementedError

    def candidates(self, tokenizer) -> tuple[int, int]:
        """(good, bad) token ids of an LM-read format."""
        raise ValueError(f"format {self.name!r} is not read through candidate tokens")

    def probability(self, outputs: chex.Array) -> chex.Array:  # [B, K, L] -> [B, K]
        """The step probability from the head's outputs at the read columns."""
        raise NotImplementedError


class RlrFormat(StepFormat):
    """What `rlr train-prm` writes: a one-label token classifier read, as PPO reads it, at the
    last token of each step of the response ("\\n"-joined steps, then EOS) that follows rlr's
    prompt. The steps are the ones given: each is read at the last token overlapping its
    characters, whatever separators its own text holds."""

    name = "rlr"
    num_labels = 1

    def __init__(self, prompt_style: str = "plain"):
        self.prompt_style = prompt_style

    def render(self, tokenizer, question, steps):
        from rlr.data.prompts import build_prompt
        from rlr.data.segmentation import decode_with_offsets, last_token_of_spans

        prompt = build_prompt(question, style=self.prompt_style, tokenizer=tokenizer)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        text = "\n".join(steps)
        response = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        try:
            decoded, offsets = decode_with_offsets(response, tokenizer)
        except ValueError:  # not a byte-level BPE: the tokenizer's own offsets
            decoded = text
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
        if decoded != text:
            raise ValueError(
                f"format {self.name!r}: the tokenizer does not decode the steps back to their "
                "text, so steps cannot be located in its tokens"
            )
        spans, start = [], 0
        for step in steps:
            spans.append((start, start + len(step)))
            start += len(step) + 1
        ends = last_token_of_spans(spans, offsets)
        read, last = [], 0
        for end in ends:  # an empty step is read where the step before it ended
            last = end if end >= 0 else last
            read.append(len(prompt_ids) + last)
        if tokenizer.eos_token_id is not None:
            response.append(int(tokenizer.eos_token_id))
        return Rendered(tuple(prompt_ids) + tuple(response), tuple(read))

    def probability(self, outputs):
        return jax.nn.sigmoid(outputs[..., 0])


class QwenMathPRMFormat(StepFormat):
    """Qwen2.5-Math-PRM: the chat template over a system turn, the question and the steps each
    ended by `<extra_0>`; softmax over the two labels, label 1, at each `<extra_0>`."""

    name = "qwen_math_prm"
    network = DecoderForProcessReward
    num_labels = 2
    step_tag = "<extra_0>"

    def render(self, tokenizer, question, steps):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"format {self.name!r} needs a tokenizer with a chat template")
        messages = [
            {"role": "system", "content": QWEN_MATH_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "".join(s + self.step_tag for s in steps)},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tokenizer.encode(text)
        tag = _one_token(tokenizer, self.step_tag, what="the step tag", fmt=self.name, last=False)
        return Rendered(tuple(ids), tuple(i for i, t in enumerate(ids) if t == tag))

    def probability(self, outputs):
        return jax.nn.softmax(outputs, axis=-1)[..., 1]


class MathShepherdFormat(StepFormat):
    """Math-Shepherd: "{question} {step} ки\\n{step} ки..."; at each tag `ки` the LM's
    softmax over the logits of "+" and "-", the "+" share."""

    name = "math_shepherd"
    network = DecoderForCausalLM
    reads_lm = True
    step_tag = "ки"

    def render(self, tokenizer, question, steps):
        output = "\n".join(f"{step} {self.step_tag}" for step in steps)
        ids = tokenizer.encode(f"{question} {output}")
        tag = _one_token(tokenizer, self.step_tag, what="the step tag", fmt=self.name)
        return Rendered(tuple(ids), tuple(i for i, t in enumerate(ids) if t == tag))

    def candidates(self, tokenizer):
        ids = tokenizer.encode("+ -")
        if tokenizer.bos_token_id is not None and ids and ids[0] == tokenizer.bos_token_id:
            ids = ids[1:]
        if len(ids) != 2:
            raise ValueError(
                f"format {self.name!r}: '+ -' must encode to two tokens (after BOS); got {ids}"
            )
        return int(ids[0]), int(ids[1])

    def probability(self, outputs):
        return jax.nn.softmax(outputs, axis=-1)[..., 0]


class SkyworkFormat(StepFormat):
    """Skywork-o1-Open-PRM, as its reference inference renders a response
    (github.com/SkyworkAI/skywork-o1-prm-inference, model_utils/io_utils.py, prepare_input with
    step_token="\\n"): BOS + question + "\\n", then the response split on every "\\n", each piece
    encoded on its own (an empty piece to no tokens) and followed by the "\\n" token; the value
    head's sigmoid at each of those "\\n" tokens (derive_step_rewards) is a piece's score.

    The response is the steps joined by `separator` ("\\n\\n", rlr's step separator, by
    default), so the tokens are the reference's for that text: a "\\n\\n" between steps is two
    "\\n" tokens, the second closing the empty piece between them, never one "\\n\\n" token.
    Step k is read at the "\\n" that closes its last line (the reference's score for that
    line); the reference's extra score for the empty piece after it, and those of a step's
    inner lines, are not used. `separator` must start with "\\n", so that each step ends a
    piece. Steps carry no separator of their own: PPO passes the first of reward.separators,
    so a response that was cut at a later one (e.g. single "\\n" where no "\\n\\n" split it)
    is rendered with the first between its steps, not as the policy wrote it."""

    name = "skywork"
    network = DecoderWithValueHead
    step_token = "\n"

    def __init__(self, separator: str = "\n\n"):
        if not separator.startswith(self.step_token):
            raise ValueError(
                f"format {self.name!r}: the step separator must start with a newline; "
                f"got {separator!r}"
            )
        self.separator = separator

    def render(self, tokenizer, question, steps):
        bos = tokenizer.bos_token
        if bos is None:
            raise ValueError(f"format {self.name!r} needs a tokenizer with a bos_token")
        ids = list(tokenizer.encode(bos + question + "\n"))
        step_id = _one_token(tokenizer, self.step_token, what="the step token", fmt=self.name)
        step_ends, at = [], 0  # the character where each step's text ends in the response
        for step in steps:
            at += len(step)
            step_ends.append(at)
            at += len(self.separator)
        closing, at = {}, 0  # piece end (character) -> column of the "\n" token closing it
        for piece in self.separator.join(steps).split(self.step_token):
            ids.extend(tokenizer.encode(piece) if piece else [])
            ids.append(step_id)
            at += len(piece)
            closing[at] = len(ids) - 1
            at += len(self.step_token)
        return Rendered(tuple(ids), tuple(closing[end] for end in step_ends))

    def probability(self, outputs):
        return jax.nn.sigmoid(outputs[..., 0])


class PureFormat(StepFormat):
    """A two-label token classifier as TRL's PRMTrainer trains one (trl/trainer/prm_trainer.py,
    PRMTrainer.tokenize_row, step_separator "\\n"): PURE's PRM (github.com/CJReinforce/PURE,
    PRM/finetune.py; jinachris/Qwen2.5-Math-7B-PRM800K, a Qwen2ForTokenClassification). BOS
    when the tokenizer has one, the question's tokens, then each step's tokens followed by the
    tokens of "\\n", each encoded without special tokens; a step is read at the last token of
    its "\\n". Label 1 is a correct step (TRL's label True), label 0 a wrong one.

    The score is p(+) = softmax(logits)[1], a probability as rlr's reward shaping takes it.
    PURE's RL (openrlhf/utils/utils.py, turn_process_reward_logits_to_reward) uses
    p(+) - p(-) = 2 p(+) - 1 in [-1, 1]: the same number, rescaled, so nothing is lost. PURE
    also reads the PRM after the policy's own chat-formatted prompt
    (openrlhf/trainer/ppo_utils/experience_maker.py, make_experience); rlr gives it the
    question as the PRM was trained on it."""

    name = "pure"
    network = DecoderForTokenClassification
    num_labels = 2
    step_separator = "\n"

    def render(self, tokenizer, question, steps):
        ids = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
        ids += tokenizer(question, add_special_tokens=False)["input_ids"]
        separator = tokenizer.encode(self.step_separator, add_special_tokens=False)
        if not separator:
            raise ValueError(f"format {self.name!r}: the tokenizer encodes '\\n' to no tokens")
        read = []
        for step in steps:
            ids += tokenizer(step, add_special_tokens=False)["input_ids"] if step else []
            ids += separator
            read.append(len(ids) - 1)
        return Rendered(tuple(int(i) for i in ids), tuple(read))

    def probability(self, outputs):
        return jax.nn.softmax(outputs, axis=-1)[..., 1]


class RLHFlowFormat(StepFormat):
    """RLHFlow's Llama 3.1 PRMs: a chat where step k is a user turn (the first prefixed by the
    question and a space) and the assistant answers "+"; the step's score is the softmax over
    the "+" and "-" logits at the token before that "+" (the conversation up to step k is a
    prefix of the whole one, so one pass scores every step)."""

    name = "rlhflow"
    network = DecoderForCausalLM
    reads_lm = True

    def _ids(self, tokenizer, conversation) -> list[int]:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        return list(tokenizer.encode(text, add_special_tokens=False))

    def render(self, tokenizer, question, steps):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"format {self.name!r} needs a tokenizer with a chat template")
        conversation, read = [], []
        for k, step in enumerate(steps):
            text = f"{question} {step}" if k == 0 else step
            conversation += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "+"},
            ]
            read.append(len(self._ids(tokenizer, conversation)) - 3)
        ids = self._ids(tokenizer, conversation) if conversation else []
        prefix = self._ids(tokenizer, conversation[:2]) if conversation else []
        if ids[: len(prefix)] != prefix:
            raise ValueError(
                f"format {self.name!r}: the chat template does not render a conversation's "
                "first turns as a prefix of the whole; rlr scores all steps in one pass"
            )
        return Rendered(tuple(ids), tuple(read))

    def candidates(self, tokenizer):
        return (
            _one_token(tokenizer, "+", what="'+'", fmt=self.name),
            _one_token(tokenizer, "-", what="'-'", fmt=self.name),
        )

    def probability(self, outputs):
        return jax.nn.softmax(outputs, axis=-1)[..., 0]


FORMATS: dict[str, Callable[..., StepFormat]] = {
    "rlr": RlrFormat,
    "qwen_math_prm": QwenMathPRMFormat,
    "math_shepherd": MathShepherdFormat,
    "skywork": SkyworkFormat,
    "rlhflow": RLHFlowFormat,
    "pure": PureFormat,
}
FORMAT_OPTIONS = {"rlr": ("prompt_style",), "skywork": ("separator",)}
# causal-LM PRMs: their config.json is a plain LM's, so the format must be named
LM_READ_FORMATS = tuple(name for name, cls in FORMATS.items() if cls.reads_lm)


def config_num_labels(hf: dict[str, Any]) -> int:
    """A classifier's label count as transformers reads config.json: `num_labels`, else the
    size of `id2label`, else 2 (PretrainedConfig's default, which save_pretrained leaves out)."""
    if hf.get("num_labels") is not None:
        return int(hf["num_labels"])
    if hf.get("id2label"):
        return len(hf["id2label"])
    return 2


def detect_format(
    hf: dict[str, Any], *, source: str = "config.json", field: str = "format="
) -> str:
    """The step format of a checkpoint from its config.json: the architecture names the head,
    and a token classifier's label count says how it is read (1: rlr's sigmoid, 2: a softmax
    over labels, read as PURE / TRL's PRMTrainer do). A causal LM is never assumed to be a PRM
    (Math-Shepherd's and RLHFlow's configs are plain Mistral / Llama ones), nor a classifier
    with another label count: the error asks for `field` (as the caller names it)."""
    arch = (hf.get("architectures") or [""])[0]
    model_type = hf.get("model_type", "")
    choices = f"set {field} one of {', '.join(STEP_FORMATS)}"
    if arch.endswith("ForProcessRewardModel"):
        return "qwen_math_prm"
    if arch.endswith("ForPrmModel"):
        return "skywork"
    if arch.endswith(("ForTokenClassification", "ForSequenceClassification")):
        labels = config_num_labels(hf)
        if labels == 1:
            return "rlr"
        if labels == 2 and arch.endswith("ForTokenClassification"):
            return "pure"
        raise ValueError(
            f"{source}: {arch} with {labels} labels matches no step format (rlr reads a "
            f"one-label token or sequence classifier, pure a two-label token classifier); "
            f"{choices} if one of them reads it"
        )
    if arch.endswith("ForCausalLM"):
        raise ValueError(
            f"{source}: {arch} is a causal LM, and config.json does not say which PRM recipe "
            f"(if any) it was trained for: {choices} ({' or '.join(LM_READ_FORMATS)} for a "
            "causal-LM PRM such as Math-Shepherd's or RLHFlow's)"
        )
    raise ValueError(
        f"{source}: cannot tell the step format of architectures={hf.get('architectures')!r} "
        f"(model_type {model_type!r}); {choices}"
    )


def make_format(name: str, **options: Any) -> StepFormat:
    """The StepFormat called `name`; options a format does not take are ignored (rlr's
    prompt_style, skywork's separator)."""
    if name not in FORMATS:
        raise ValueError(f"step format must be one of {', '.join(STEP_FORMATS)}; got {name!r}")
    unknown = set(options) - {k for keys in FORMAT_OPTIONS.values() for k in keys}
    if unknown:
        raise TypeError(f"make_format: unknown options {sorted(unknown)}")
    taken = {k: v for k, v in options.items() if k in FORMAT_OPTIONS.get(name, ())}
    return FORMATS[name](**taken)


def read_step_outputs(
    model: nn.Module,
    step_format: StepFormat,
    params: Any,
    input_ids: chex.Array,  # [B, S] right-padded
    attention_mask: chex.Array,  # [B, S]
    read_at: chex.Array,  # [B, K] column of each step
    candidates: tuple[int, int] | None = None,
) -> chex.Array:  # [B, K] probabilities
    """Step probabilities of a batch: an LM-read format applies the LM head to the K read
    columns only ([B, K, V], never [B, S, V]) and keeps its two candidate logits; a score
    head is read at the K columns."""
    chex.assert_rank([input_ids, attention_mask, read_at], 2)
    variables = {"params": params}
    index = read_at.astype(jnp.int32)[..., None]
    if step_format.reads_lm:
        hidden = model.apply(
            variables, input_ids, attention_mask, method=lambda m, i, a: m.model(i, a)
        )
        picked = jnp.take_along_axis(hidden, index, axis=1)  # [B, K, D]
        logits = model.apply(variables, picked, method=lambda m, h: m.logits(h))
        outputs = logits[..., jnp.asarray(candidates)]  # [B, K, 2]
    else:
        scores = model.apply(variables, input_ids, attention_mask)  # [B, S, L]
        outputs = jnp.take_along_axis(scores, index, axis=1)  # [B, K, L]
    return step_format.probability(outputs.astype(jnp.float32))


def length_bucket(n: int, least: int = 16) -> int:
    """n rounded up to a quarter step of its power of two (..., 512, 640, 768, 896, 1024, ...):
    at most 25 % padding, and four programs per doubling of the length."""
    if n <= least:
        return least
    step = max(least, (1 << ((n - 1).bit_length() - 1)) // 4)
    return -(-n // step) * step


class StepScorer:
    """A PRM with its format and tokenizer: `score_steps(questions, solutions)`.

    Rows go through one jitted program in batches of `batch_size`, right-padded to a length
    bucket (at most 25 % padding) and a power-of-two step count. With `mesh`, parameters are
    placed by rlr.sharding's rules and rows are split over the batch axes; on a mesh that
    spans several processes, every process must score the same solutions (the program is
    one collective computation), and each gets all the scores.
    """

    def __init__(
        self,
        step_format: StepFormat,
        model: nn.Module,
        params: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        mesh: Any = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if not isinstance(model, step_format.network):
            raise ValueError(
                f"format {step_format.name!r} reads a {step_format.network.__name__}; "
                f"this checkpoint is a {type(model).__name__}"
            )
        labels = step_format.num_labels
        if labels is not None and model.num_labels != labels:
            raise ValueError(
                f"format {step_format.name!r} reads a score head with {labels} label(s); this "
                f"checkpoint's has {model.num_labels}: name the format that reads it (format=)"
            )
        self.format = step_format
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.mesh = mesh
        self.candidates = step_format.candidates(tokenizer) if step_format.reads_lm else None
        if self.candidates is not None:
            vocab = model.config.vocab_size
            if not all(0 <= c < vocab for c in self.candidates):
                raise ValueError(
                    f"format {step_format.name!r}: candidate ids {self.candidates} fall outside "
                    f"the model's vocabulary of {vocab}"
                )
        self.pad_id = pad_id_of(tokenizer)
        self.params = params
        # (params, ids [B, S], mask [B, S], read_at [B, K]) -> [B, K] step probabilities
        self.read_rows = jax.jit(
            functools.partial(read_step_outputs, model, step_format, candidates=self.candidates)
        )

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        """The PRM's tokens for one solution and where each step is read."""
        rendered = self.format.render(self.tokenizer, question, list(steps))
        if len(rendered.read_at) != len(steps):
            raise ValueError(
                f"format {self.format.name!r}: {len(steps)} steps rendered with "
                f"{len(rendered.read_at)} score positions; a step's text must not contain the "
                "format's step tag"
            )
        return rendered

    def score_steps(
        self, questions: Sequence[str], solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """One probability in [0, 1] per step of each solution (solutions[i] is a list of
        step texts for questions[i])."""
        if len(questions) != len(solutions):
            raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions")
        for i, steps in enumerate(solutions):
            if isinstance(steps, str):
                raise ValueError(f"solutions[{i}] is a string; give a list of step texts")
        rendered = [self.render(q, s) for q, s in zip(questions, solutions)]
        return self.score_rendered(rendered)

    def score_rendered(self, rendered: Sequence[Rendered]) -> list[list[float]]:
        """Step probabilities of already rendered solutions, in batches."""
        out: list[list[float]] = [[] for _ in rendered]
        todo = [i for i, r in enumerate(rendered) if r.read_at]
        # rows of similar length share a batch: less padding
        todo.sort(key=lambda i: len(rendered[i].ids))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            probs = self._score_batch([rendered[i] for i in chunk])
            for row, i in enumerate(chunk):
                out[i] = [float(p) for p in probs[row, : len(rendered[i].read_at)]]
        return out

    def _score_batch(self, rows: Sequence[Rendered]) -> np.ndarray:  # [len(rows), K]
        B = self.batch_size
        S = length_bucket(max(len(r.ids) for r in rows))
        K = max(4, 1 << (max(len(r.read_at) for r in rows) - 1).bit_length())
        ids = np.full((B, S), self.pad_id, np.int32)
        mask = np.zeros((B, S), np.int32)
        read = np.zeros((B, K), np.int32)
        for b in range(B):
            r = rows[min(b, len(rows) - 1)]  # filler rows repeat the last real one
            ids[b, : len(r.ids)] = r.ids
            mask[b, : len(r.ids)] = 1
            read[b, : len(r.read_at)] = r.read_at
        arrays = (ids, mask, read)
        if self.mesh is not None:
            from rlr import sharding

            arrays = tuple(
                jax.device_put(a, sharding.batch_sharding(self.mesh, a.ndim)) for a in arrays
            )
            with jax.set_mesh(self.mesh):
                probs = self.read_rows(self.params, *arrays)
            if not probs.is_fully_addressable:  # rows on other processes' devices too
                from jax.experimental import multihost_utils

                return np.asarray(multihost_utils.process_allgather(probs, tiled=True))
        else:
            probs = self.read_rows(self.params, *arrays)
        return np.asarray(jax.device_get(probs))


def load_step_scorer(
    path: str | pathlib.Path,
    format: str | None = None,  # noqa: A002  (the name users pass)
    *,
    tokenizer: Any = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    batch_size: int = 8,
    mesh: Any = None,
    prompt_style: str = "plain",
) -> StepScorer:
    """A StepScorer for the PRM at `path` (an HF directory, or an `org/name` id found in the
    local Hugging Face cache). The format is read from config.json unless `format` is given;
    the tokenizer is the directory's own unless `tokenizer` is given. With `mesh`, every
    parameter goes straight to its shards as it is read."""
    from rlr.models.hf_io import CONFIG_NAME, load_pretrained, pretrained_module, read_config
    from rlr.models.hub import resolve_model_dir
    from rlr.tokenizer import load_fast_tokenizer

    directory = resolve_model_dir(str(path), what="PRM")
    hf = read_config(directory)
    name = format or detect_format(hf, source=str(directory / CONFIG_NAME))
    step_format = make_format(name, prompt_style=prompt_style)
    shardings = None
    if mesh is not None:
        from rlr import sharding

        module = pretrained_module(directory, dtype=dtype, param_dtype=param_dtype)
        shardings = sharding.module_param_shardings(module, mesh)
    model, params = load_pretrained(
        directory, dtype=dtype, param_dtype=param_dtype, shardings=shardings
    )
    if tokenizer is None:
        if not (directory / "tokenizer.json").is_file():
            raise ValueError(
                f"{directory} holds no tokenizer.json; pass tokenizer= (the PRM's tokenizer)"
            )
        tokenizer = load_fast_tokenizer(directory)
    return StepScorer(step_format, model, params, tokenizer, batch_size=batch_size, mesh=mesh)
