"""Memory of PPO with and without LoRA on CPU, for a policy big enough that parameters matter.

The policy is an inline Qwen2-shaped architecture of 22.8M parameters (hidden 512,
intermediate 1408, 8 layers, 8 heads, 2 KV heads, head_dim 64, tied embeddings, float32),
initialised from the seed (no checkpoint), with a tokenizer and problems made by `rlr
train-tokenizer` and `rlr make-data` in a scratch folder. algorithm=ppo with its critic
(critic_init=policy: the policy's trunk and a zero head), success reward, no PRM / ORM, 16
rows (8 prompts x 2 samples) of 64 prompt + 64 new tokens, 2 minibatches. Variants:

- full: every weight of the policy and the critic trains;
- policy.lora: `policy.lora.rank=16` (alpha 32, all seven projections);
- both: also `ppo.critic_lora.rank=16` (the critic's trunk is the reference's weights).

Each variant is measured twice, one process at a time:

1. `rlr plan --mesh data=1` (one CPU device): XLA's memory analysis of the compiled update,
   decoding and scoring programs and plan's peak estimate (program arguments, outputs and
   temporaries with every other resident buffer beside them);
2. `/usr/bin/time -v rlr ppo` for `--iterations` (3) iterations: the process's maximum
   resident set size, which also holds the Python interpreter, JAX's CPU runtime and compiled
   programs, the tokenizer and the grader (the same in every variant).

Memory does not depend on the machine's load, so the timing protocol of bench/protocol.py
does not apply; the load is printed all the same. Output: one table (MiB) and, with --json,
the numbers.

    JAX_PLATFORMS=cpu python bench/bench_lora_memory.py [--iterations 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from protocol import load_line

ARCHITECTURE = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1.0e-6,
    "tie_word_embeddings": True,
}
VARIANTS = {
    "full": [],
    "policy.lora": ["policy.lora.rank=16"],
    "both": ["policy.lora.rank=16", "ppo.critic_lora.rank=16"],
}
MIB = 1024**2


def rlr(*argv: str, time_v: bool = False) -> subprocess.CompletedProcess:
    """`rlr ARGV` in a fresh process (under `/usr/bin/time -v` when asked); errors raise."""
    command = [sys.executable, "-m", "rlr.cli", *argv]
    if time_v:
        command = ["/usr/bin/time", "-v", *command]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return proc


def make_inputs(root: pathlib.Path) -> dict:
    """The tokenizer, the problems and the PPO config (a dict) in `root`."""
    rlr("make-data", "--out", str(root / "data"), "--num-train=400", "--num-test=16")
    rlr("train-tokenizer", "--out", str(root / "tokenizer"), "--vocab-size=512")
    vocab = len(json.loads((root / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    return {
        "name": "lora_memory",
        "tokenizer": str(root / "tokenizer"),
        "policy": {"path": "", "architecture": {**ARCHITECTURE, "vocab_size": vocab}},
        "data": {
            "train": str(root / "data" / "problems_train.jsonl"),
            "test": str(root / "data" / "problems_test.jsonl"),
        },
        "rollout": {
            "prompts_per_iteration": 8,
            "samples_per_prompt": 2,
            "max_prompt_tokens": 64,
            "max_new_tokens": 64,
        },
        "ppo": {"minibatches": 2, "policy_lr": 1e-5, "critic_lr": 1e-5},
        "grading": {"num_workers": 0},
        "checkpoint_every": 1000,
        "eval": {"every": 0, "max_examples": 8},
    }


def measure(config_path: pathlib.Path, out: pathlib.Path, overrides: list[str], iterations: int):
    """(plan's JSON, max RSS in bytes of an `iterations`-iteration run) of one variant."""
    out.mkdir(parents=True, exist_ok=True)
    plan_json = out / "plan.json"
    rlr("plan", "--config", str(config_path), "--mesh", "data=1", "--json", str(plan_json),
        *overrides)  # fmt: skip
    proc = rlr(
        "ppo", "--config", str(config_path), f"out_dir={out / 'run'}",
        f"iterations={iterations}", *overrides, time_v=True,
    )  # fmt: skip
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    return json.loads(plan_json.read_text()), rss_kib * 1024


def main() -> None:
    """Runs every variant one after the other and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(load_line("before"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        config_path = root / "config.yaml"
        config_path.write_text(json.dumps(make_inputs(root)))  # JSON is YAML
        for name, overrides in VARIANTS.items():
            plan, rss = measure(config_path, root / name, overrides, args.iterations)
            rows[name] = {"overrides": overrides, "plan": plan, "max_rss_bytes": rss}
            print(f"{name}: max RSS {rss / MIB:.0f} MiB", flush=True)
    print(load_line("after"))
    header = ["variant", "trainable params", "optimizer state", "frozen params",
              "update temporaries", "plan peak", "max RSS"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, row in rows.items():
        plan, held = row["plan"], row["plan"]["per_device_bytes"]
        cells = [held["trainable_params"], held["optimizer_state"], held["frozen_params"],
                 plan["update_step"]["temporaries"], plan["peak_bytes_per_device"],
                 row["max_rss_bytes"]]  # fmt: skip
        print(f"| {name} | " + " | ".join(f"{c / MIB:.0f} MiB" for c in cells) + " |")
    counts = rows["full"]["plan"]["parameters"]
    print(f"parameters (full): {json.dumps(counts)}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
