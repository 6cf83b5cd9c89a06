#!/usr/bin/env bash
# rlr's checks on one GPU, as one script: the maths / PPO-core / sampler tests on the device,
# the GAE benchmark, and a PPO iteration timed by phase with an ~85M-parameter policy.
#   bash bench/gpu_check.sh [OUT_DIR]
# Decode tokens/s against the HBM roofline and update MFU at Qwen2-0.5B / 1.5B shapes are a second
# call of their own: timeout 500 python3 bench/bench_gpu_scale.py --shape 0.5b --hf (then 1.5b).
# Needs jax with CUDA, flax, optax, orbax, chex, transformers, tokenizers, safetensors, pytest and
# hypothesis; a missing pure-Python package (math-verify) can be installed from
# wheels in .whl/ (pip download them on a machine with network access).
set -uo pipefail
OUT_DIR="${1:-${OUT:-/tmp/rlr_gpu}}"
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
echo "== tests on the GPU (f32 matmuls at full precision, as on CPU)"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 200 python3 -m pytest -q -x -p no:cacheprovider \
  tests/test_rewards.py tests/test_losses.py tests/test_ppo_core.py tests/test_sampling.py \
  -k "not sharded" 2>&1 | tail -4 | tee "$OUT_DIR/tests.txt"
echo "== GAE"
timeout 90 python3 bench/bench_gae.py 2>&1 | tail -12 | tee "$OUT_DIR/gae.txt"
echo "== PPO iteration by phase, d=768 x 12 layers, 512 rows x 256 new tokens"
timeout 240 python3 bench/bench_ppo.py --hidden-size 768 --layers 12 --intermediate-size 2048 \
  --json "$OUT_DIR/ppo.json" rollout.prompts_per_iteration=64 rollout.samples_per_prompt=8 \
  rollout.max_new_tokens=256 rollout.max_prompt_tokens=64 ppo.minibatches=8 \
  grading.num_workers=4 2>&1 | grep -v "^\s*$" | tail -16 | tee "$OUT_DIR/ppo.txt"
