"""Every `rlr` command of the README's command table runs as typed after the main job, at
smoke size: the session's smoke reproduction stands in for `bash launch/local.sh`'s
runs/reproduce, and each command gets only overrides that shrink it (steps, iterations, sizes),
never ones that change where it reads from. A command added to the README must be added here,
run or skipped with the reason, so the table cannot drift from the code."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil

import pytest
from smoke_run import smoke_results

from rlr import cli

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "data"

# README command -> extra arguments that only make it smaller
SHRINK = {
    "rlr sft --config sft_cpu": [
        "train.steps=2",
        "train.checkpoint_every=2",
        "eval.max_examples=4",
        "eval.batch_size=4",
    ],
    "rlr train-prm --config prm_cpu": ["train.steps=2", "train.checkpoint_every=2"],
    "rlr train-orm --config orm_cpu": ["train.steps=2", "train.checkpoint_every=2"],
    "rlr ppo --config ppo_cpu reward.method=raw": [
        "iterations=1",
        "rollout.prompts_per_iteration=2",
        "rollout.samples_per_prompt=2",
        "ppo.minibatches=1",
        "eval.max_examples=4",
    ],
    "rlr ppo --config ppo_cpu algorithm=grpo ppo.critic_lr=null out_dir=runs/grpo": [
        "iterations=1",
        "rollout.prompts_per_iteration=2",
        "rollout.samples_per_prompt=2",
        "ppo.minibatches=1",
        "eval.max_examples=4",
    ],
    "rlr evaluate --config ppo_cpu --policy runs/reproduce/sft/model --out runs/eval/sft.json": [
        "eval.max_examples=4",
    ],
    "rlr probe --out runs/probe": ["--max-filler", "2"],
    "rlr configs [NAME]": [],
    # these two read nothing: they run in an empty folder of their own (they would otherwise
    # rewrite the data and tokenizer that the commands above read)
    "rlr make-data --out runs/reproduce/data --operations +- --max-operations 3 --max-digits 1 "
    "--sft-filler-fraction 0.1": ["--num-train", "60", "--num-test", "10"],
    "rlr train-tokenizer --out runs/reproduce/tokenizer": ["--num-problems", "100"],
}
SKIP = {
    "rlr plan --config qwen25_math_7b --mesh data=1,fsdp=32,tensor=4": (
        "needs 128 fake devices and about a minute of compilation; tests/test_plan.py runs plan"
    ),
    "rlr reproduce --preset cpu --out runs/reproduce [--seeds 3] [--algorithm ppo,grpo] "
    "[--sweep eta=0.3,0.5] [--prm filler_aware]": (
        "the session's smoke reproduction (tests/smoke_run.py) is this command at smoke size"
    ),
    "rlr label-steps": "the row names the command without arguments (tests/test_labelling.py)",
    "rlr eval-bon": "the row names the command without arguments (tests/test_bon.py)",
    "rlr prepare-prm-data --format prm800k --input FILE --out FILE": (
        "FILE is a placeholder; tests/test_prepare_prm_data.py runs it"
    ),
}


def readme_commands() -> list[str]:
    """The `rlr ...` commands in the first cell of each row of the README's command table."""
    text = README.read_text()
    table = text[text.index("## Commands") :].split("\n\n")[1]
    commands = []
    for row in table.splitlines()[2:]:
        first_cell = row.split(" | ")[0]
        commands += [c for c in re.findall(r"`([^`]+)`", first_cell) if c.startswith("rlr ")]
    return commands


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 10
    unknown = [c for c in commands if c not in SHRINK and c not in SKIP]
    assert not unknown, f"README commands this test does not know: {unknown}"
    stale = [c for c in (*SHRINK, *SKIP) if c not in commands]
    assert not stale, f"commands no longer in the README: {stale}"


@pytest.fixture(scope="module")
def after_main_job(tmp_path_factory):
    """A folder laid out as after `bash launch/local.sh`: runs/reproduce holds the main job's
    data, tokenizer and models (a copy of the smoke reproduction's, so nothing shared changes)."""
    root = tmp_path_factory.mktemp("after_local_sh")
    smoke = smoke_results()
    for part in ("data", "tokenizer", "sft/model", "prm/model", "orm/model"):
        shutil.copytree(smoke / part, root / "runs" / "reproduce" / part)
    return root


@pytest.mark.parametrize("command", list(SHRINK))
def test_readme_command_runs_as_typed_after_the_main_job(
    after_main_job, command, monkeypatch, tmp_path
):
    reads_nothing = command.startswith(("rlr make-data", "rlr train-tokenizer"))
    monkeypatch.chdir(tmp_path if reads_nothing else after_main_job)
    if command == "rlr configs [NAME]":
        assert cli.main(["configs"]) == 0 and cli.main(["configs", "ppo_cpu"]) == 0
        return
    argv = shlex.split(command)[1:] + SHRINK[command]
    assert cli.main(argv) == 0, command
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    if out is not None and out.endswith(".json"):  # a results file (rlr evaluate)
        assert json.loads(pathlib.Path(out).read_text()), f"{command} wrote an empty {out}"
    elif out is not None:
        assert any(pathlib.Path(out).iterdir()), f"{command} wrote nothing to {out}"


def test_a_run_of_another_algorithm_cannot_resume_into_the_same_out_dir(
    after_main_job, monkeypatch, capsys
):
    """`rlr ppo --config ppo_cpu` then the same with algorithm=grpo and no new out_dir: the
    second says which run the folder holds instead of failing inside the checkpoint reader."""
    monkeypatch.chdir(after_main_job)
    ppo = (
        shlex.split("ppo --config ppo_cpu out_dir=runs/mixed")
        + SHRINK["rlr ppo --config ppo_cpu reward.method=raw"]
    )
    assert cli.main(ppo) == 0
    grpo = ppo + ["algorithm=grpo", "ppo.critic_lr=null"]
    assert cli.main(grpo) == 2
    assert "holds checkpoints of an algorithm=ppo run" in capsys.readouterr().err
