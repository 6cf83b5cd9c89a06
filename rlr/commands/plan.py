"""`rlr plan`: compile a PPO config for a target mesh and report per-device memory (rlr.plan)."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys

from rlr.plan import GIB, format_report, parse_mesh, plan


def run(args: argparse.Namespace) -> int:
    """`rlr plan`: print the report; exit 1 when the estimate exceeds the device memory."""
    config = args.run_config
    if args.mesh:
        sizes = parse_mesh(args.mesh)
    else:
        sizes = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
        if -1 in sizes.values():
            raise ValueError("give --mesh explicitly: the config's mesh has a -1 (fill) axis")
    devices = math.prod(sizes.values())
    import jax

    if jax.device_count() != devices:
        if os.environ.get("RLR_PLAN_CHILD"):
            raise RuntimeError(f"expected {devices} fake devices, got {jax.device_count()}")
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        )
        env["JAX_PLATFORMS"] = "cpu"
        env["RLR_PLAN_CHILD"] = "1"
        cmd = [sys.executable, "-m", "rlr.cli", "plan", "--config", args.config, *args.overrides]
        cmd += ["--mesh", ",".join(f"{k}={v}" for k, v in sizes.items())]
        if args.device_memory_gib is not None:
            cmd += ["--device-memory-gib", str(args.device_memory_gib)]
        if args.json:
            cmd += ["--json", args.json]
        if args.extrapolate:
            cmd += ["--extrapolate"]
        return subprocess.run(cmd, env=env).returncode
    result = plan(config, sizes, extrapolate=args.extrapolate)
    limit = (
        args.device_memory_gib if args.device_memory_gib is not None else (config.device_memory_gib)
    )
    print(format_report(result, limit))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    if limit is not None and result["peak_bytes_per_device"] > limit * GIB:
        return 1
    return 0
