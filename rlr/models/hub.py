"""Model ids resolved offline through the local Hugging Face hub cache.

A network may be named by a local directory or by a Hugging Face id, `org/name` or
`org/name@revision`. An id is looked up in the hub cache that `huggingface-cli download`
fills, without any network access and without huggingface_hub:

    {cache}/models--{org}--{name}/refs/{revision}        a file holding a commit hash
    {cache}/models--{org}--{name}/snapshots/{hash}/      the files of that commit

The cache is `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
`$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (huggingface_hub's order).
Without a revision the ref is `main`; when that ref file is missing but the model has exactly
one snapshot, that snapshot is used. A revision that is a commit hash may also name its
snapshot directly. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import pathlib
import re

DEFAULT_REVISION = "main"
# Hugging Face repo names: letters, digits, '-', '_' and '.', not starting with '.' or '-'.
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,95}"
_MODEL_ID = re.compile(rf"^(?P<org>{_PART})/(?P<name>{_PART})(?:@(?P<revision>[^@\s]+))?$")
# A revision is a branch, a tag or a commit hash; '/' allowed (refs/pr/1), '..' never.
_REVISION = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")


def hub_cache_dir() -> pathlib.Path:
    """The local Hugging Face hub cache directory (it need not exist); see the module doc."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return pathlib.Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return pathlib.Path(os.environ["HF_HOME"]).expanduser() / "hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return pathlib.Path("~/.cache/huggingface/hub").expanduser()


def parse_model_id(text: str) -> tuple[str, str, str | None] | None:
    """(org, name, revision or None) of `org/name[@revision]`, or None when `text` is not a
    plausible Hugging Face model id."""
    match = _MODEL_ID.match(text)
    if match is None:
        return None
    org, name, revision = match.group("org", "name", "revision")
    if ".." in org or ".." in name or "--" in org or "--" in name:
        return None
    if revision is not None and (not _REVISION.match(revision) or ".." in revision):
        return None
    return org, name, revision


def resolve_model_dir(name_or_path: str | os.PathLike, *, what: str = "model") -> pathlib.Path:
    """The directory of a network named by a local directory or a Hugging Face id.

    A local directory is returned as is. An `org/name` or `org/name@revision` id is looked up
    offline in the hub cache (`hub_cache_dir`) and its snapshot directory returned. Raises
    ValueError naming `what` (the flag or config key that named the model): for an id not in
    the cache, saying which cache was searched and how to download it, and for anything else
    that is not an existing directory, saying so.
    """
    text = os.fspath(name_or_path)
    local = pathlib.Path(text).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ValueError(f"{what} {text!r} is a file; give a model directory or an org/name id")
    parsed = parse_model_id(text)
    if parsed is None:
        raise ValueError(
            f"{what} {text!r} does not exist; give an existing model directory or a Hugging "
            "Face id such as org/name or org/name@revision"
        )
    org, name, revision = parsed
    cache = hub_cache_dir()
    repo = cache / f"models--{org}--{name}"
    snapshot, problem = _snapshot(repo, revision)
    if snapshot is not None:
        return snapshot
    repo_id = f"{org}/{name}"
    download = f"{repo_id} --revision {revision}" if revision else repo_id
    at = f" at revision {revision!r}" if revision else ""
    raise ValueError(
        f"{what} {text!r} is not a local directory, and {repo_id}{at} is not in the Hugging "
        f"Face cache {cache} ({problem}); on a machine with network run "
        f"`huggingface-cli download {download}` (or `hf download {download}`) and copy the "
        "cache here (set HF_HUB_CACHE or HF_HOME to where it lies), or pass a local directory"
    )


def _snapshot(repo: pathlib.Path, revision: str | None) -> tuple[pathlib.Path | None, str]:
    """(the snapshot directory of `revision` (None: main) in one model's cache folder, or
    None and what is missing)."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None, f"no {snapshots}"
    ref = repo / "refs" / (revision or DEFAULT_REVISION)
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        candidate = snapshots / commit
        if commit and "/" not in commit and ".." not in commit and candidate.is_dir():
            return candidate, ""
        return None, f"{ref} names commit {commit!r}, which has no snapshot directory"
    if revision is not None:
        candidate = snapshots / revision  # a commit hash names its snapshot directly
        if "/" not in revision and candidate.is_dir():
            return candidate, ""
        return None, f"neither {ref} nor {candidate} exists"
    found = sorted(path.name for path in snapshots.iterdir() if path.is_dir())
    if len(found) == 1:
        return snapshots / found[0], ""
    if not found:
        return None, f"{snapshots} is empty"
    return None, (
        f"no {ref} and {len(found)} snapshots ({', '.join(found)}); name one as @revision"
    )
