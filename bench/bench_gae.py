"""GAE: rlr's jitted reverse scan against the Python loops that trl/verl-style trainers use.

Peers, measured in the same run on the same inputs (gamma=0.99, lam=0.95, right-padded rows):
- numpy: the loop reversed over t and vectorised over B (trl's compute_advantages / verl's
  compute_gae_advantage_return, with the response mask), ported to NumPy;
- rlax: `truncated_generalized_advantage_estimation` (a step-by-step reverse lax.scan),
  vmapped over rows and jitted, when rlax is importable;
- torch: the same loop in torch, when torch is importable.
Each peer's advantages are checked against the NumPy loop's before any timing.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
per shape one warm-up call of each (the jitted ones compile), then `--repeats` (5) rounds of
one call of each in turn (rlr, numpy, rlax, torch); printed are the median ms of each with the
spread (min-max) and the ratio of the medians peer / rlr. Run:

    JAX_PLATFORMS=cpu python bench/bench_gae.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools

import jax
import numpy as np
from protocol import interleaved, load_line, median, runs_line, summary

import rlr

GAMMA, LAM = 0.99, 0.95
SHAPES = ((256, 1024), (64, 4096))


def numpy_gae(rewards, values, mask, *, gamma, lam):
    """The trl/verl loop in NumPy: reversed over t, vectorised over B."""
    batch, num_tokens = rewards.shape
    values = values * mask
    last = np.zeros(batch, np.float32)
    reversed_adv = []
    for t in reversed(range(num_tokens)):
        next_values = values[:, t + 1] if t < num_tokens - 1 else 0.0
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        new_last = delta + gamma * lam * last
        last = new_last * mask[:, t] + (1 - mask[:, t]) * last
        reversed_adv.append(last)
    advantages = np.stack(reversed_adv[::-1], axis=1) * mask
    return advantages, (advantages + values) * mask


def torch_gae(rewards, values, mask, *, gamma, lam):
    """The same loop in torch (verl's compute_gae_advantage_return)."""
    import torch

    with torch.no_grad():
        batch, num_tokens = rewards.shape
        values = values * mask
        last = torch.zeros(batch)
        reversed_adv = []
        for t in reversed(range(num_tokens)):
            next_values = values[:, t + 1] if t < num_tokens - 1 else 0.0
            delta = rewards[:, t] + gamma * next_values - values[:, t]
            new_last = delta + gamma * lam * last
            last = new_last * mask[:, t] + (1 - mask[:, t]) * last
            reversed_adv.append(last)
        advantages = torch.stack(reversed_adv[::-1], dim=1) * mask
        return advantages, (advantages + values) * mask


def rlax_gae_rows(rewards, values, mask, *, rlax):
    """rlax's step-by-step reverse scan, vmapped over rows; discount 0 after the last token."""
    next_valid = jax.numpy.pad(mask[:, 1:], ((0, 0), (0, 1)))
    values = values * mask
    bootstrapped = jax.numpy.concatenate([values, jax.numpy.zeros_like(values[:, :1])], axis=1)
    adv = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(0, 0, None, 0))(
        rewards * mask, GAMMA * next_valid, LAM, bootstrapped
    )
    return adv * mask


def make_inputs(batch, num_tokens, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(num_tokens // 2, num_tokens + 1, batch)
    mask = (np.arange(num_tokens)[None, :] < lengths[:, None]).astype(np.float32)
    rewards = (rng.normal(size=(batch, num_tokens)) * mask).astype(np.float32)
    values = rng.normal(size=(batch, num_tokens)).astype(np.float32)
    return rewards, values, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median of these)")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None

    try:
        import rlax
    except ImportError:
        rlax = None
    rlax_gae = jax.jit(functools.partial(rlax_gae_rows, rlax=rlax))
    gae = jax.jit(functools.partial(rlr.gae_advantages, gamma=GAMMA, lam=LAM))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {runs_line(args.repeats)}")
    print("ms per call: median (min-max); ratio: peer median / rlr median")
    print(load_line("before"), flush=True)
    header = f"{'B':>5} {'T':>5} {'rlr':>27} {'numpy':>27} {'ratio':>7}"
    if rlax is not None:
        header += f" {'rlax':>27} {'ratio':>7}"
    if torch is not None:
        header += f" {'torch':>27} {'ratio':>7}"
    print(header)
    for batch, num_tokens in SHAPES:
        rewards, values, mask = make_inputs(batch, num_tokens)
        device_args = [jax.device_put(a) for a in (rewards, values, mask)]
        # Same numbers first: the benchmark compares equal work.
        want, _ = numpy_gae(rewards, values, mask, gamma=GAMMA, lam=LAM)
        got, _ = gae(*device_args)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)
        fns = {
            "rlr": lambda a=device_args: jax.block_until_ready(gae(*a)),
            "numpy": functools.partial(numpy_gae, rewards, values, mask, gamma=GAMMA, lam=LAM),
        }
        if rlax is not None:
            np.testing.assert_allclose(np.asarray(rlax_gae(*device_args)), want, atol=1e-3)
            fns["rlax"] = lambda a=device_args: jax.block_until_ready(rlax_gae(*a))
        if torch is not None:
            t_args = [torch.from_numpy(a) for a in (rewards, values, mask)]
            fns["torch"] = functools.partial(torch_gae, *t_args, gamma=GAMMA, lam=LAM)
        times = interleaved(fns, repeats=args.repeats)
        rlr_s = median(times["rlr"])
        row = f"{batch:>5} {num_tokens:>5} {summary(times['rlr'], unit='ms'):>27}"
        for name in list(fns)[1:]:
            ratio = median(times[name]) / rlr_s
            row += f" {summary(times[name], unit='ms'):>27} {ratio:>6.1f}x"
        print(row, flush=True)
    print(load_line("after"))


if __name__ == "__main__":
    main()
