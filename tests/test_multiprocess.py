"""Two processes of 4 CPU devices train exactly like one process of 8: the multi-process
contract of rlr.training.distributed, run for real with jax.distributed on this machine.

Each process runs tests/ppo_setup.py's tiny PPO config through PPOTrainer (the code `rlr ppo`
runs), started with RLR_COORDINATOR_ADDRESS / RLR_NUM_PROCESSES / RLR_PROCESS_ID as
launch/local_multiprocess.sh starts it. Every PPO launch packs its update rows (ppo.pack) and,
where torch is installed to write one, scores with a PRM read as text: one set of launches
covers both beside the multi-process contract.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file
from toy_assets import shared_toy_assets

pytestmark = pytest.mark.slow_subprocess

TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
ITERATIONS = 3
SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, signal, sys, pathlib
    sys.path.insert(0, sys.argv[1])
    from ppo_setup import tiny_config
    from rlr.training.schemas import MeshSpec
    from rlr.training.ppo import PPOTrainer
    from rlr.training.schemas import EvalSpec, ModelSpec
    root, out, mode, iterations = (
        pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    )
    prm, eval_every, pack = sys.argv[6], int(sys.argv[7]), sys.argv[8] == "pack"
    config = tiny_config(
        root, out, iterations=iterations, eval=EvalSpec(every=eval_every), mesh=MeshSpec(data=8)
    )
    config = dataclasses.replace(
        config,
        rollout=dataclasses.replace(config.rollout, prompts_per_iteration=8),
        ppo=dataclasses.replace(config.ppo, pack=pack),
    )
    if prm != "-":  # a PRM read as text (its own tokenizer and format): PATH::FORMAT
        path, _, fmt = prm.partition("::")
        config = dataclasses.replace(
            config,
            prm=ModelSpec(path=path, format=fmt or None),
            ppo=dataclasses.replace(config.ppo, critic_init="policy"),
        )
    trainer = PPOTrainer(config)
    process = int(os.environ.get("RLR_PROCESS_ID", "0"))
    original = trainer.iteration
    def iteration(it, grader):
        if mode == "kill" and it == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(it, grader)
        if mode == "term" and it == 0 and process == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    trainer.iteration = iteration
    summary = trainer.run()
    if not summary["preempted"]:
        trainer.export_policy(out / "export")
    print("SUMMARY " + json.dumps(summary), flush=True)
    """
)


@pytest.fixture(scope="module")
def assets():
    return shared_toy_assets(**TINY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def process_env(index: int, processes: int, port: int) -> dict[str, str]:
    """Process `index` of `processes` over 8 CPU devices, as launch/local_multiprocess.sh
    starts it."""
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's (tests/conftest.py)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={8 // processes}",
    }
    if processes > 1:
        env.update(
            RLR_COORDINATOR_ADDRESS=f"localhost:{port}",
            RLR_NUM_PROCESSES=str(processes),
            RLR_PROCESS_ID=str(index),
        )
    return env


def start(command: list[str], *, processes: int) -> list[tuple[int, str, str]]:
    """`python COMMAND` as `processes` processes over 8 CPU devices; (code, stdout, stderr)
    of each."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, *command],
            env=process_env(index, processes, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        results.append((proc.returncode, stdout, stderr))
    return results


def launch(
    assets, out, *, processes, mode="", iterations=ITERATIONS, prm="-", eval_every=0, pack=False
):
    """Runs the PPO script in `processes` processes; returns their results."""
    here = str(pathlib.Path(__file__).parent)
    args = [here, str(assets), str(out), mode, str(iterations), str(prm), str(eval_every)]
    args.append("pack" if pack else "pad")
    return start(["-c", SCRIPT, *args], processes=processes)


def summaries(results):
    out = []
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
        line = next(line for line in stdout.splitlines() if line.startswith("SUMMARY "))
        out.append(json.loads(line[len("SUMMARY ") :]))
    return out


def metrics_of(run: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    """What every PPO launch here runs with: ppo.pack, which packs each process's own rows,
    and, where torch can write one, a PRM read as text (its own tokenizer and format)."""
    if importlib.util.find_spec("torch") is None:  # the toy PRM, read by token ids
        return {"pack": True}
    from released_prms import make_released_prm

    prm = tmp_path_factory.mktemp("text_prm")
    make_released_prm("math_shepherd", prm)
    return {"pack": True, "prm": f"{prm}::math_shepherd"}  # a causal LM: its format is named


@pytest.fixture(scope="module")
def one_and_two(assets, options, tmp_path_factory):
    """The same run with 1 process x 8 devices and with 2 processes x 4 devices."""
    root = tmp_path_factory.mktemp("multiprocess")
    # the last iteration also evaluates held-out accuracy (on every process)
    one = summaries(launch(assets, root / "one", processes=1, eval_every=ITERATIONS, **options))
    two = summaries(launch(assets, root / "two", processes=2, eval_every=ITERATIONS, **options))
    return root, one, two


def assert_same_training(one: pathlib.Path, two: pathlib.Path, steps: int) -> None:
    """Every metric of every step within 1e-5 (timings aside; a clip fraction within one
    token in a hundred), each step logged once, and exported parameters within 1e-5."""
    rows_one, rows_two = metrics_of(one), metrics_of(two)
    assert [r["step"] for r in rows_two] == list(range(1, steps + 1))
    assert rows_one[0].keys() == rows_two[0].keys()
    for a, b in zip(rows_one, rows_two):
        for name, value in a.items():
            if name.startswith("time") or "per_second" in name:
                continue
            # A clip fraction counts tokens past a threshold: rows packed in another layout
            # sum in another order, and a token within rounding of the threshold may flip.
            tolerance = 1e-2 if name.endswith("clip_fraction") else 1e-5
            assert abs(value - b[name]) <= tolerance, (a["step"], name, value, b[name])
    x = load_file(one / "export" / "model.safetensors")
    y = load_file(two / "export" / "model.safetensors")
    assert x.keys() == y.keys()
    for name in x:
        np.testing.assert_allclose(x[name], y[name], atol=1e-5, err_msg=name)


def test_two_processes_train_like_one(one_and_two):
    root, one, two = one_and_two
    assert [s["end_iteration"] for s in one + two] == [ITERATIONS] * 3
    assert_same_training(root / "one", root / "two", ITERATIONS)
    assert "eval_greedy/accuracy" in metrics_of(root / "two")[-1]


def test_a_prm_read_as_text_and_a_packed_update_run_with_two_processes(one_and_two, options):
    """The runs test_two_processes_train_like_one compares score with a text PRM and pack
    each process's rows (ppo.pack) as one process does."""
    if "prm" not in options:
        pytest.skip("torch writes the text PRM's checkpoint")
    root, _, _ = one_and_two
    row = metrics_of(root / "two")[-1]
    # 4 rows a process, 4 batch shards each: packed into as many rows, in another layout
    assert row["time/prm_text_scoring"] > 0 and row["update/packing_ratio"] == 1


def test_only_process_zero_writes_and_the_export_loads_in_transformers(one_and_two):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root, _, _ = one_and_two
    run = root / "two"
    assert len((run / "samples.jsonl").read_text().splitlines()) == ITERATIONS
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    ids = torch.tensor([[5, 6, 7, 8]])
    logits = []
    for name in ("one", "two"):
        model = transformers.AutoModelForCausalLM.from_pretrained(root / name / "export")
        with torch.no_grad():
            logits.append(model.eval()(ids).logits.numpy())
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_both_killed_then_restarted_ends_bitwise_equal(assets, options, one_and_two, tmp_path):
    root, _, _ = one_and_two
    killed = launch(assets, tmp_path / "run", processes=2, mode="kill", **options)
    assert all(code == -9 for code, _, _ in killed), [r[2][-2000:] for r in killed]
    resumed = summaries(launch(assets, tmp_path / "run", processes=2, **options))
    assert all(s["start_iteration"] in (1, 2) for s in resumed)
    x = load_file(root / "two" / "export" / "model.safetensors")
    y = load_file(tmp_path / "run" / "export" / "model.safetensors")
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)
    # each iteration appears once, though the killed run may have logged past its checkpoint
    assert [r["step"] for r in metrics_of(tmp_path / "run")] == list(range(1, ITERATIONS + 1))


def test_sigterm_to_one_process_makes_both_save_and_exit_zero(assets, options, tmp_path):
    results = summaries(launch(assets, tmp_path / "run", processes=2, mode="term", **options))
    assert all(s["preempted"] and s["end_iteration"] == 1 for s in results)
    steps = sorted(
        int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps == [1]


def launch_cli(argv, out, *, processes):
    """`rlr ARGV out_dir=OUT` in `processes` processes over 8 CPU devices."""
    for code, _, stderr in start(["-m", "rlr.cli", *argv, f"out_dir={out}"], processes=processes):
        assert code == 0, stderr[-3000:]


LAUNCHER = pathlib.Path(__file__).parents[1] / "launch" / "local_multiprocess.sh"


def run_launcher(args, log_dir):
    """`bash launch/local_multiprocess.sh ARGS` with process i > 0 logging to LOG_DIR."""
    env = {**os.environ, "RLR_LOG_DIR": str(log_dir), "RLR_PYTHON": sys.executable}
    command = ["bash", str(LAUNCHER), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


# train-orm runs the same fit and data path as train-prm (one label per row instead of per step)
@pytest.mark.parametrize("command", ["sft", "train-prm"])
def test_supervised_training_with_two_processes_equals_one(assets, tmp_path, command):
    """The two-process run goes through launch/local_multiprocess.sh, as a user starts it;
    the PRM trains on packed rows (train.pack), the SFT run on padded ones."""
    common = [
        f"tokenizer={assets / 'tokenizer'}",
        "train.steps=3",
        "train.batch_size=8",
        "train.checkpoint_every=2",
        "train.warmup_steps=1",
    ]
    if command == "sft":
        argv = [
            "sft",
            "--config",
            "sft_cpu",
            *common,
            f"model.path={assets / 'policy'}",
            f"data.train={assets / 'data' / 'sft_train.jsonl'}",
            "data.test=null",
        ]
    else:
        argv = [
            command,
            "--config",
            "prm_cpu",
            *common,
            f"init.path={assets / 'policy'}",
            f"data.train={assets / 'data' / 'prm_train.jsonl'}",
            "data.test=null",
            "train.pack=true",  # each process packs the rows it holds
        ]
    launch_cli(argv, tmp_path / "one", processes=1)
    two = run_launcher(["2", *argv, f"out_dir={tmp_path / 'two'}"], tmp_path / "logs")
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "logs" / "process_1.log").is_file()  # process 1 logs there, not here
    rows_one, rows_two = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")
    assert [r["step"] for r in rows_two] == [1, 2, 3]
    for a, b in zip(rows_one, rows_two):
        for name, value in a.items():
            if name != "time":
                assert abs(value - b[name]) <= 1e-5, (a["step"], name, value, b[name])
    x = load_file(tmp_path / "one" / "model" / "model.safetensors")
    y = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for name in x:
        np.testing.assert_allclose(x[name], y[name], atol=1e-5, err_msg=name)


def test_the_launcher_passes_failures_on_and_prints_its_usage(tmp_path):
    """Its successful runs are test_supervised_training_with_two_processes_equals_one's."""
    bad = run_launcher(["2", "ppo", "--config", str(tmp_path / "missing.yaml")], tmp_path / "logs")
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr
    assert "missing.yaml" in (tmp_path / "logs" / "process_1.log").read_text()
    usage = run_launcher([], tmp_path / "logs")
    assert usage.returncode == 2 and "local_multiprocess.sh N CMD" in usage.stdout
