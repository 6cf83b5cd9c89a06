"""Tiny random checkpoints laid out like the released PRMs, tokenizers with each format's
special tokens and chat template, and torch references of each format's published scoring
recipe (from the model cards and inference code of the released PRMs). Shared by the step
scorer tests and the tests that train and evaluate with those PRMs."""

from __future__ import annotations

import json

import torch
import transformers
from safetensors.torch import save_file
from toy_assets import shared_toy_assets

VOCAB = 320
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
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return module


def format_tokenizer(fmt: str):
    """rlr's toy byte-level BPE with the format's special tokens and chat template."""
    tok = transformers.AutoTokenizer.from_pretrained(shared_toy_assets() / "tokenizer")
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
    assert len(tok) <= VOCAB
    return tok


def hf_config(family: str, **extra):
    return getattr(transformers, f"{family}Config")(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **extra,
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


def skywork_reference(model, tok, question, steps):
    step_token = "\n"
    prompt_ids = tok.encode(tok.bos_token + question + "\n")
    response_ids, reward_flags = [], [0] * len(prompt_ids)
    step_token_id = tok.encode(step_token)[-1]
    for step in "\n".join(steps).split(step_token):
        step_ids = tok.encode(step) if step != "" else []
        step_ids += [step_token_id]
        flag = [0] * len(step_ids)
        flag[-1] = 1
        response_ids.extend(step_ids)
        reward_flags.extend(flag)
    ids = torch.tensor([prompt_ids + response_ids])
    values = model(ids, torch.ones_like(ids))
    flags = torch.tensor([reward_flags]) == 1
    return torch.sigmoid(values[flags]).tolist()


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


# ------------------------------------------------------------------ checkpoints


def make_qwen(directory):
    config = hf_config("Qwen2")
    model = random_(QwenPRM(config).eval(), 1)
    tensors = {f"model.{k}": v for k, v in model.model.state_dict().items()}
    tensors.update({f"score.{k}": v for k, v in model.score.state_dict().items()})
    write_checkpoint(directory, config, tensors, "Qwen2ForProcessRewardModel")
    return model


def make_shepherd(directory):
    model = random_(transformers.MistralForCausalLM(hf_config("Mistral")).eval(), 2)
    model.save_pretrained(directory)
    return model


def make_skywork(directory):
    config = hf_config("Qwen2", tie_word_embeddings=False)
    model = random_(SkyworkPRM(config).eval(), 3)
    tensors = dict(model.lm.state_dict())
    tensors.update({f"v_head.{k}": v for k, v in model.v_head.state_dict().items()})
    write_checkpoint(directory, config, tensors, "Qwen2ForPrmModel")
    return model


def make_rlhflow(directory):
    config = hf_config(
        "Llama",
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
            "rope_theta": 500000.0,
        },
    )
    model = random_(transformers.LlamaForCausalLM(config).eval(), 4)
    model.save_pretrained(directory)
    return model


MAKERS = {
    "qwen_math_prm": (make_qwen, qwen_reference),
    "math_shepherd": (make_shepherd, shepherd_reference),
    "skywork": (make_skywork, skywork_reference),
    "rlhflow": (make_rlhflow, rlhflow_reference),
}


def make_released_prm(fmt: str, directory):
    """Writes a released-layout checkpoint of format `fmt` with its tokenizer to `directory`;
    returns (torch model, tokenizer)."""
    make, _ = MAKERS[fmt]
    model = make(directory)
    tok = format_tokenizer(fmt)
    tok.save_pretrained(directory)
    return model, tok
