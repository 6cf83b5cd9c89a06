"""Random checkpoints laid out like the released PRMs, tokenizers with each format's special
tokens and chat template, and torch references of each format's published scoring recipe (from
the model cards and inference code of the released PRMs). Shared by the step scorer tests, the
tests that train and evaluate with those PRMs, and bench/bench_step_scorers.py.

The defaults give the tests' tiny checkpoints (the toy tokenizer of tests/toy_assets.py, a
vocabulary of VOCAB ids, SIZES, 512 positions); the bench passes its own tokenizer, widths,
context and rope theta."""

from __future__ import annotations

import json
import pathlib
from itertools import chain

import torch
import transformers
from safetensors.torch import save_file
from toy_assets import shared_toy_assets

VOCAB = 320
SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
FAMILY = {
    "rlr": "Qwen2",
    "qwen_math_prm": "Qwen2",
    "math_shepherd": "Mistral",
    "skywork": "Qwen2",
    "rlhflow": "Llama",
    "pure": "Qwen2",
}
# causal-LM PRMs: config.json cannot tell them from any LM, so they are loaded with format=
NAMED_FORMATS = ("math_shepherd", "rlhflow")
FIELDS = {"rlr": {"num_labels": 1}, "skywork": {"tie_word_embeddings": False}}
SEEDS = {fmt: seed for seed, fmt in enumerate(FAMILY)}
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHATML = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA31 = (
    "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- '<|eot_id|>' }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
)
QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples?",
    "A box holds 12 pens. 5 are red. How many are not red?",
    "What is 6 * 7?",
]
SOLUTIONS = [
    ["Step 1: 3 + 4 = 7", "Step 2: The answer is 7"],
    ["12 - 5 = 7", "So 7 pens are not red.", "Let me check: 7 + 5 = 12", "The answer is 7"],
    ["6 * 7 = 42"],
]


def random_(module, seed: int):
    """Weights large enough that step scores spread over (0, 1) rather than sit at 0.5; returns
    the module in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return module.eval()


def format_tokenizer(fmt: str, base: str | pathlib.Path | None = None):
    """The base tokenizer (default: rlr's toy byte-level BPE) with the format's special tokens
    and chat template."""
    if base is None:
        base = shared_toy_assets() / "tokenizer"
    tok = transformers.AutoTokenizer.from_pretrained(base)
    if fmt == "qwen_math_prm":
        tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
        tok.chat_template = CHATML
    elif fmt == "math_shepherd":
        from tokenizers.processors import TemplateProcessing

        tok.add_special_tokens({"bos_token": "<s>"})
        tok.add_tokens(["ки"])
        bos = tok.convert_tokens_to_ids("<s>")
        tok._tokenizer.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
        )
    elif fmt == "skywork":
        tok.add_special_tokens({"bos_token": "<|begin|>"})
        tok.add_tokens(["\n\n"])  # one token, as in Qwen2.5's vocabulary
    elif fmt == "rlhflow":
        tok.add_special_tokens(
            {
                "bos_token": "<|begin_of_text|>",
                "additional_special_tokens": [
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                ],
            }
        )
        tok.chat_template = LLAMA31
    return tok


def hf_config(
    fmt: str,
    *,
    vocab_size: int = VOCAB,
    max_position_embeddings: int = 512,
    rope_theta: float | None = None,
    llama3_context: int = 64,
    **fields,
):
    """The transformers config of the format's family: SIZES and the format's FIELDS, either
    overridden by `fields`. Rope: the family's default, or plain rope at `rope_theta`; rlhflow's
    is Llama 3.1's scaling (theta 500000 unless `rope_theta` is given) over an original context
    of `llama3_context` positions."""
    rope = None if rope_theta is None else {"rope_type": "default", "rope_theta": rope_theta}
    if fmt == "rlhflow":
        rope = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": llama3_context,
            "rope_theta": 500000.0 if rope_theta is None else rope_theta,
        }
    return getattr(transformers, f"{FAMILY[fmt]}Config")(
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        **({} if rope is None else {"rope_parameters": rope}),
        **{**SIZES, **FIELDS.get(fmt, {}), **fields},
    )


def write_checkpoint(directory, config, tensors, architecture):
    directory.mkdir(parents=True, exist_ok=True)
    hf = config.to_dict()
    hf["architectures"] = [architecture]
    (directory / "config.json").write_text(json.dumps(hf))
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors")


class QwenPRM(torch.nn.Module):
    """Qwen2ForProcessRewardModel: a Qwen2 trunk and score = Linear -> ReLU -> Linear(D, 2)."""

    def __init__(self, config):
        super().__init__()
        self.model = transformers.Qwen2Model(config)
        d = config.hidden_size
        self.score = torch.nn.Sequential(
            torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, 2)
        )

    def forward(self, input_ids):
        return self.score(self.model(input_ids).last_hidden_state)


class SkyworkPRM(torch.nn.Module):
    """Skywork's PRM_MODEL: a causal LM and v_head.summary = Linear(D, 1) on its last hidden."""

    def __init__(self, config):
        super().__init__()
        self.lm = transformers.Qwen2ForCausalLM(config)
        self.v_head = torch.nn.Module()
        self.v_head.summary = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
        out = self.lm(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.v_head.summary(out.hidden_states[-1]).squeeze(-1)


# ------------------------------------------------------------- the published recipes


def qwen_reference(model, tok, question, steps):
    messages = [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tok.encode(conversation, return_tensors="pt")
    logits = model(input_ids)
    step_sep_id = tok.encode("<extra_0>")[0]
    token_masks = input_ids == step_sep_id
    probabilities = torch.softmax(logits, dim=-1) * token_masks.unsqueeze(-1)
    sample = probabilities[0]
    return sample[sample != 0].view(-1, 2)[:, 1].tolist()


def shepherd_reference(model, tok, question, steps):
    candidate_tokens = tok.encode("+ -")[1:]
    step_tag_id = tok.encode("ки")[-1]
    output = "\n".join(f"{s} ки" for s in steps)
    input_id = torch.tensor([tok.encode(f"{question} {output}")])
    logits = model(input_id).logits[:, :, candidate_tokens]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_id == step_tag_id].tolist()


def skywork_prepare_input(problem, response, tokenizer, step_token="\n"):
    """Skywork's prepare_input (skywork-o1-prm-inference, model_utils/io_utils.py):
    (input_ids, steps, reward_flags)."""
    prompt_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
    response_ids = []
    steps = []
    reward_flags = [0] * len(prompt_ids)
    step_token_id = tokenizer.encode(step_token)[-1]
    for step in response.split(step_token):
        if step != "":
            step_ids = tokenizer.encode(step)
        else:
            step_ids = []
        step_ids += [step_token_id]
        step = step + step_token
        flag = [0] * len(step_ids)
        flag[-1] = 1
        response_ids.extend(step_ids)
        reward_flags.extend(flag)
        steps.append(step)
    input_ids = prompt_ids + response_ids
    return input_ids, steps, reward_flags


def skywork_piece_rewards(model, tok, question, response):
    """Skywork's reference scores of a response: one per "\\n"-piece (derive_step_rewards over
    the value head's sigmoid, PRM_MODEL(return_probs=True))."""
    input_ids, _, reward_flags = skywork_prepare_input(question, response, tok)
    ids = torch.tensor([input_ids])
    values = model(ids, torch.ones_like(ids))
    flags = torch.tensor([reward_flags]) == 1
    return torch.sigmoid(values[flags]).tolist()


def skywork_last_lines(steps, separator="\n\n"):
    """The index, among the pieces of separator.join(steps).split("\\n"), of each step's last
    line: the reference score rlr reads for that step."""
    out, piece = [], 0
    for step in steps:
        piece += step.count("\n")
        out.append(piece)
        piece += separator.count("\n")
    return out


def skywork_reference(model, tok, question, steps):
    rewards = skywork_piece_rewards(model, tok, question, "\n\n".join(steps))
    return [rewards[i] for i in skywork_last_lines(steps)]


def rlhflow_reference(model, tok, question, steps):
    plus_tag_id = tok.encode("+")[-1]
    minus_tag_id = tok.encode("-")[-1]
    candidate_tokens = [plus_tag_id, minus_tag_id]
    conversation, step_scores = [], []
    for k in range(len(steps)):
        text = question + " " + steps[0] if k == 0 else steps[k]
        conversation.append({"content": text, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
        rendered = tok.apply_chat_template(conversation, tokenize=False)
        input_ids = torch.tensor([tok.encode(rendered, add_special_tokens=False)])
        logits = model(input_ids).logits[:, -3, candidate_tokens]
        step_scores.append(logits.softmax(dim=-1)[:, 0][0].item())
    return step_scores


def pure_reference(model, tok, question, steps):
    """PURE's PRM as TRL's PRMTrainer.tokenize_row lays a row out (step_separator "\\n"; trl
    trainer/prm_trainer.py), read as PURE's turn_process_reward_logits_to_reward reads it
    (openrlhf/utils/utils.py): p(+) - p(-) from the softmax over the two labels at each step's
    separator. Returned as the probability (1 + r) / 2 = p(+), rlr's score."""
    prompt_ids = tok(question, add_special_tokens=False)["input_ids"]
    completions_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in steps]
    separator_ids = tok.encode("\n", add_special_tokens=False)
    completions_ids = [completion + separator_ids for completion in completions_ids]
    labels = [[-100] * (len(completion) - 1) + [1] for completion in completions_ids]
    completion_ids = list(chain(*completions_ids))
    labels = list(chain(*labels))
    if tok.bos_token_id is not None:
        prompt_ids = [tok.bos_token_id] + prompt_ids
    input_ids = prompt_ids + completion_ids
    labels = [-100] * len(prompt_ids) + labels
    ids = torch.tensor([input_ids])
    logits = model(ids, attention_mask=torch.ones_like(ids)).logits  # [1, S, 2]
    read = torch.tensor([labels]) != -100
    softmax_logits = logits[read].softmax(dim=-1)
    process_reward = softmax_logits[..., 1] - softmax_logits[..., 0]
    return ((1 + process_reward) / 2).tolist()


# ------------------------------------------------------------------ checkpoints


def make_rlr(directory, config, seed: int):
    """rlr's own PRM layout: Qwen2ForTokenClassification with one label."""
    model = random_(transformers.Qwen2ForTokenClassification(config), seed)
    model.save_pretrained(directory)
    return model


def make_pure(directory, config, seed: int):
    """PURE's PRM layout: Qwen2ForTokenClassification with two labels, saved by transformers
    (whose config.json then names no labels: 2 is PretrainedConfig's default)."""
    model = random_(transformers.Qwen2ForTokenClassification(config), seed)
    model.save_pretrained(directory)
    return model


def make_qwen(directory, config, seed: int):
    model = random_(QwenPRM(config), seed)
    write_checkpoint(directory, config, model.state_dict(), "Qwen2ForProcessRewardModel")
    return model


def make_causal_lm(directory, config, seed: int):
    """Math-Shepherd (Mistral) and RLHFlow (Llama 3.1): plain causal LMs."""
    causal_lm = getattr(transformers, type(config).__name__.replace("Config", "ForCausalLM"))
    model = random_(causal_lm(config), seed)
    model.save_pretrained(directory)
    return model


def make_skywork(directory, config, seed: int):
    model = random_(SkyworkPRM(config), seed)
    tensors = dict(model.lm.state_dict())
    tensors.update({f"v_head.{k}": v for k, v in model.v_head.state_dict().items()})
    write_checkpoint(directory, config, tensors, "Qwen2ForPrmModel")
    return model


MAKERS = {  # the released formats: (checkpoint maker, published recipe)
    "qwen_math_prm": (make_qwen, qwen_reference),
    "math_shepherd": (make_causal_lm, shepherd_reference),
    "skywork": (make_skywork, skywork_reference),
    "rlhflow": (make_causal_lm, rlhflow_reference),
    "pure": (make_pure, pure_reference),
}
CHECKPOINTS = {"rlr": make_rlr, **{fmt: make for fmt, (make, _) in MAKERS.items()}}


def make_released_prm(
    fmt: str,
    directory,
    *,
    tokenizer: str | pathlib.Path | None = None,
    vocab_size: int | None = VOCAB,
    seed: int | None = None,
    **config,
):
    """Writes a checkpoint of format `fmt` laid out as the released PRM is (rlr's own layout for
    "rlr"), with the base `tokenizer` (default: the toy one) plus the format's special tokens
    and chat template, to `directory`; returns (torch model, tokenizer). `vocab_size` None: the
    tokenizer's length; `seed` None: the format's in SEEDS; `config`: hf_config's widths,
    depth, max_position_embeddings, rope_theta and llama3_context."""
    tok = format_tokenizer(fmt, tokenizer)
    vocab_size = len(tok) if vocab_size is None else vocab_size
    assert len(tok) <= vocab_size, (len(tok), vocab_size)
    hf = hf_config(fmt, vocab_size=vocab_size, **config)
    directory = pathlib.Path(directory)
    model = CHECKPOINTS[fmt](directory, hf, SEEDS[fmt] if seed is None else seed)
    tok.save_pretrained(directory)
    return model, tok
