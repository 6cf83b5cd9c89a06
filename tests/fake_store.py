"""An offline stand-in for a gs:// bucket: everything rlr writes under gs://BUCKET/... lands
in ROOT/BUCKET/..., through the same code paths a real bucket takes.

etils.epath keeps gs:// paths as URIs and hands them to its backend, which is replaced here
by the local file system under ROOT (etils.epath.testing.mock_epath); orbax writes array
data with TensorStore's own gcs driver, whose kvstore spec is pointed at the same folder
(TensorStore's file driver), and the bucket is a flat one (orbax would ask
google-cloud-storage). Nothing else is changed, so a command that turns a URI into a
local path (a folder literally named `gs:`) still does so under the fake store.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from typing import Any

from etils.epath import testing as epath_testing

PREFIX = "gs://"


@contextlib.contextmanager
def fake_gcs(root: pathlib.Path, monkeypatch: Any) -> Iterator[pathlib.Path]:
    """gs://BUCKET/... is ROOT/BUCKET/... while the context is open; yields ROOT."""
    from orbax.checkpoint._src.path import gcs_utils

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def local(path: Any) -> Any:
        text = str(path)
        return str(root / text.removeprefix(PREFIX)) if text.startswith(PREFIX) else path

    def redirect(original, path, *args, **kwargs):
        args = tuple(local(a) for a in args)  # rename / replace / copy: the destination too
        return original(local(path), *args, **kwargs)

    def glob(original, pattern):
        found = original(local(pattern))
        if not str(pattern).startswith(PREFIX):
            return found
        return [PREFIX + str(pathlib.Path(p).relative_to(root)) for p in found]

    def walk(original, top, **kwargs):
        for directory, dirs, files in original(local(top), **kwargs):
            if str(top).startswith(PREFIX):
                directory = PREFIX + str(pathlib.Path(directory).relative_to(root))
            yield directory, dirs, files

    def kvstore(path: str) -> dict[str, Any]:
        return {"driver": "file", "path": local(path)}

    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
    # a flat bucket (no hierarchical namespace), so orbax asks no storage API about it
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    names = ("copy", "exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove")
    names += ("rename", "replace", "rmtree", "stat")
    mocks = dict.fromkeys(names, redirect)
    with epath_testing.mock_epath(glob=glob, walk=walk, **mocks):
        yield root
