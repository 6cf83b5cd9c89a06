"""rlr.models.hub: model directories and org/name ids resolved offline in a fake HF cache."""

from __future__ import annotations

import pathlib

import pytest

from rlr.models.hub import hub_cache_dir, parse_model_id, resolve_model_dir

MAIN = "a" * 40
OTHER = "b" * 40


def _snapshot(cache: pathlib.Path, repo_id: str, commit: str, ref: str | None = None):
    """A fake cached model: snapshots/{commit}/config.json and, when given, refs/{ref}."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    if ref is not None:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # huggingface_hub writes no newline
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path


def test_ref_main(cache):
    expected = _snapshot(cache, "Qwen/Qwen2.5-Math-1.5B", MAIN, ref="main")
    _snapshot(cache, "Qwen/Qwen2.5-Math-1.5B", OTHER, ref="v2")
    assert resolve_model_dir("Qwen/Qwen2.5-Math-1.5B") == expected
    assert (resolve_model_dir("Qwen/Qwen2.5-Math-1.5B") / "config.json").is_file()


def test_explicit_revision_by_ref_or_commit(cache):
    _snapshot(cache, "org/model", MAIN, ref="main")
    tagged = _snapshot(cache, "org/model", OTHER, ref="v1.0")
    assert resolve_model_dir("org/model@v1.0") == tagged
    assert resolve_model_dir(f"org/model@{OTHER}") == tagged  # a commit names its snapshot
    pr = _snapshot(cache, "org/model", "c" * 40, ref="refs/pr/1")
    assert resolve_model_dir("org/model@refs/pr/1") == pr


def test_single_snapshot_without_refs(cache):
    only = _snapshot(cache, "org/model", MAIN)
    assert resolve_model_dir("org/model") == only


def test_several_snapshots_without_refs_ask_for_a_revision(cache):
    _snapshot(cache, "org/model", MAIN)
    _snapshot(cache, "org/model", OTHER)
    with pytest.raises(ValueError, match=r"2 snapshots .*name one as @revision"):
        resolve_model_dir("org/model")
    assert resolve_model_dir(f"org/model@{OTHER}").name == OTHER


def test_missing_id_says_where_it_looked_and_how_to_get_it(cache):
    with pytest.raises(ValueError) as err:
        resolve_model_dir("org/absent", what="policy.path")
    message = str(err.value)
    assert message.startswith("policy.path 'org/absent' is not a local directory")
    assert str(cache) in message
    assert "`huggingface-cli download org/absent`" in message
    assert "`hf download org/absent`" in message
    assert "pass a local directory" in message


def test_missing_revision_names_it_in_the_download_command(cache):
    _snapshot(cache, "org/model", MAIN, ref="main")
    with pytest.raises(ValueError) as err:
        resolve_model_dir("org/model@v9", what="--policy")
    message = str(err.value)
    assert "--policy 'org/model@v9'" in message and "revision 'v9'" in message
    assert "huggingface-cli download org/model --revision v9" in message


def test_ref_to_a_missing_snapshot_is_reported(cache):
    _snapshot(cache, "org/model", MAIN, ref="main")
    (cache / "models--org--model" / "refs" / "main").write_text(OTHER)
    with pytest.raises(ValueError, match=rf"names commit '{OTHER}', which has no snapshot"):
        resolve_model_dir("org/model")


def test_local_directory_is_returned_as_is(cache, tmp_path, monkeypatch):
    local = tmp_path / "runs" / "sft"
    local.mkdir(parents=True)
    assert resolve_model_dir(str(local)) == local
    assert resolve_model_dir(local) == local
    # A local directory wins over a cached id of the same spelling.
    _snapshot(cache, "runs/sft", MAIN, ref="main")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("runs/sft") == pathlib.Path("runs/sft")


@pytest.mark.parametrize("path", ["./no/such/dir", "/no/such/model", "model", "a/b/c", "../x/y"])
def test_nonexistent_path_is_an_error(cache, path):
    with pytest.raises(ValueError, match=rf"^tokenizer '{path}' does not exist; "):
        resolve_model_dir(path, what="tokenizer")


def test_a_file_is_not_a_model_directory(cache, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model_dir(str(tmp_path / "config.json"))


def test_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hub_cache_dir() == tmp_path / "hubcache"


def test_hf_home_cache_is_searched(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    expected = _snapshot(tmp_path / "hf" / "hub", "org/model", MAIN, ref="main")
    assert resolve_model_dir("org/model") == expected


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("Qwen/Qwen2.5-Math-7B", ("Qwen", "Qwen2.5-Math-7B", None)),
        ("org/name@main", ("org", "name", "main")),
        ("org/name@refs/pr/1", ("org", "name", "refs/pr/1")),
        ("org/name@../../etc", None),
        ("org/na--me", None),
        ("./org/name", None),
        ("name", None),
        ("a/b/c", None),
        ("org/name@", None),
    ],
)
def test_parse_model_id(text, parsed):
    assert parse_model_id(text) == parsed
