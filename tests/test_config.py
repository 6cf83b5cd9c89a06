import dataclasses
from typing import Literal

import pytest

from rlr.config_loading import ConfigError, dump_config, load_config, require, to_dict


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-5
    warmup_steps: int = 0

    def __post_init__(self):
        require(self.lr > 0, f"optim.lr must be > 0; got {self.lr}")


@dataclasses.dataclass(frozen=True)
class Reward:
    method: Literal["raw", "clip", "delta", "clip_delta"] = "clip_delta"
    alpha: float = 1.0
    eta: float | None = None


@dataclasses.dataclass(frozen=True)
class Model:
    path: str = ""
    architecture: dict | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    name: str = "run"
    seed: int = 0
    steps: tuple[int, ...] = (1, 2)
    use_prm: bool = True
    optim: Optim = dataclasses.field(default_factory=Optim)
    reward: Reward = dataclasses.field(default_factory=Reward)
    prm: Model | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    assert load_config(Run) == Run()


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "seed: 3\noptim:\n  lr: 1e-6\nreward:\n  method: clip\n")
    cfg = load_config(Run, path, ["reward.alpha=0.5", "optim.warmup_steps=10", "steps=[4, 5]"])
    assert cfg.seed == 3 and cfg.optim.lr == 1e-6 and cfg.optim.warmup_steps == 10
    assert cfg.reward == Reward(method="clip", alpha=0.5)
    assert cfg.steps == (4, 5)
    assert dataclasses.is_dataclass(cfg.optim)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_typo_in_file_suggests_the_nearest_key(tmp_path):
    path = write(tmp_path, "reward:\n  alhpa: 0.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*reward.*'alhpa'.*did you mean 'alpha'"):
        load_config(Run, path)


def test_typo_in_override_suggests_the_nearest_key():
    with pytest.raises(ConfigError, match=r"'optim.lrr=1'.*did you mean 'lr'"):
        load_config(Run, None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Run, None, ["seed"])


def test_type_and_value_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"reward.method: must be one of"):
        load_config(Run, None, ["reward.method=clipdelta"])
    with pytest.raises(ConfigError, match=r"seed: expected an integer"):
        load_config(Run, None, ["seed=1.5"])
    with pytest.raises(ConfigError, match=r"use_prm: expected true or false"):
        load_config(Run, None, ["use_prm=maybe"])
    with pytest.raises(ConfigError, match=r"optim.lr must be > 0"):
        load_config(Run, None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Run, write(tmp_path, "- 1\n- 2\n"))


def test_dump_round_trip(tmp_path):
    cfg = load_config(Run, None, ["reward.eta=0.3", "name=x"])
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(Run, tmp_path / "out.yaml") == cfg
    assert to_dict(cfg)["reward"] == {"method": "clip_delta", "alpha": 1.0, "eta": 0.3}


def test_overrides_reach_optional_sections_and_free_form_mappings(tmp_path):
    path = write(tmp_path, "prm:\n  path: a\n  architecture:\n    layers: 28\n    heads: 4\n")
    cfg = load_config(Run, path, ["prm.architecture.layers=2", "prm.path=b"])
    assert cfg.prm == Model(path="b", architecture={"layers": 2, "heads": 4})
    assert load_config(Run, None, ["prm.path=c"]).prm == Model(path="c")
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        load_config(Run, None, ["seed.x=1"])


@pytest.mark.parametrize(
    "schema, override, new",
    [
        ("rlr.training.schemas:PPOConfig", "eval_every=5", "eval.every"),
        ("rlr.training.schemas:PPOConfig", "data.max_test_problems=5", "eval.max_examples"),
        ("rlr.training.schemas:SFTConfig", "eval.num_problems=5", "eval.max_examples"),
        ("rlr.training.schemas:RewardModelConfig", "eval_every=5", "eval.every"),
        ("rlr.training.schemas:RewardModelConfig", "eval_batch_size=5", "eval.batch_size"),
        ("rlr.training.schemas:RewardModelConfig", "max_eval_records=5", "eval.max_examples"),
        ("rlr.training.schemas:RewardModelConfig", "train.max_steps=5", "train.max_reasoning"),
        ("rlr.reproduce.schemas:ReproduceConfig", "task.max_steps=3", "task.max_operations"),
    ],
)
def test_keys_of_earlier_releases_name_their_new_place(schema, override, new):
    import importlib

    from rlr.config_loading import ConfigError, from_dict, load_config

    module, _, name = schema.partition(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=f"it is now {new}"):
        load_config(cls, None, [override])
    key, value = override.split("=")
    *sections, last = key.split(".")
    data = {last: int(value)}
    for section in reversed(sections):
        data = {section: data}
    with pytest.raises(ConfigError, match=f"it is now {new}"):  # the same key in a YAML file
        from_dict(cls, data)


def test_a_renamed_flag_names_its_new_spelling(tmp_path, capsys):
    from rlr.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["make-data", "--out", str(tmp_path), "--max-steps", "3"])
    assert exit_.value.code == 2
    assert "--max-steps is now --max-operations" in capsys.readouterr().err
