"""GAE: rlr's jitted reverse scan against the Python loops that trl/verl-style trainers use.

Peers, measured in the same run on the same inputs (gamma=0.99, lam=0.95, right-padded rows):
- numpy: the loop reversed over t and vectorised over B (trl's compute_advantages / verl's
  compute_gae_advantage_return, with the response mask), ported to NumPy;
- rlax: `truncated_generalized_advantage_estimation` (a step-by-step reverse lax.scan),
  vmapped over rows and jitted, when rlax is importable;
- torch: the same loop in torch, when torch is importable.
Prints the median time of each and the ratio peer / rlr. Run:

    JAX_PLATFORMS=cpu python bench/bench_gae.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import numpy as np

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


def median_seconds(fn, repeats):
    fn()  # warm-up (compiles the jitted function)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_inputs(batch, num_tokens, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(num_tokens // 2, num_tokens + 1, batch)
    mask = (np.arange(num_tokens)[None, :] < lengths[:, None]).astype(np.float32)
    rewards = (rng.normal(size=(batch, num_tokens)) * mask).astype(np.float32)
    values = rng.normal(size=(batch, num_tokens)).astype(np.float32)
    return rewards, values, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
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
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; median of {args.repeats}")
    header = f"{'B':>5} {'T':>5} {'rlr ms':>9} {'numpy ms':>9} {'ratio':>7}"
    if rlax is not None:
        header += f" {'rlax ms':>9} {'ratio':>7}"
    if torch is not None:
        header += f" {'torch ms':>9} {'ratio':>7}"
    print(header)
    for batch, num_tokens in SHAPES:
        rewards, values, mask = make_inputs(batch, num_tokens)
        device_args = [jax.device_put(a) for a in (rewards, values, mask)]
        # Same numbers first: the benchmark compares equal work.
        want, _ = numpy_gae(rewards, values, mask, gamma=GAMMA, lam=LAM)
        got, _ = gae(*device_args)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)
        rlr_s = median_seconds(
            functools.partial(lambda a: jax.block_until_ready(gae(*a)), device_args), args.repeats
        )
        numpy_s = median_seconds(
            functools.partial(numpy_gae, rewards, values, mask, gamma=GAMMA, lam=LAM),
            args.repeats,
        )
        row = f"{batch:>5} {num_tokens:>5} {rlr_s * 1e3:>9.2f} {numpy_s * 1e3:>9.2f}"
        row += f" {numpy_s / rlr_s:>6.1f}x"
        if rlax is not None:
            np.testing.assert_allclose(np.asarray(rlax_gae(*device_args)), want, atol=1e-3)
            rlax_s = median_seconds(
                functools.partial(lambda a: jax.block_until_ready(rlax_gae(*a)), device_args),
                args.repeats,
            )
            row += f" {rlax_s * 1e3:>9.2f} {rlax_s / rlr_s:>6.1f}x"
        if torch is not None:
            t_args = [torch.from_numpy(a) for a in (rewards, values, mask)]
            torch_s = median_seconds(
                functools.partial(torch_gae, *t_args, gamma=GAMMA, lam=LAM), args.repeats
            )
            row += f" {torch_s * 1e3:>9.2f} {torch_s / rlr_s:>6.1f}x"
        print(row, flush=True)


if __name__ == "__main__":
    main()
