"""The array_record tfds builder: build into a tmp data_dir, read back without TensorFlow."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tempfile

import pytest

from rlr.data import READERS, MalformedRecordError

tfds = pytest.importorskip("tensorflow_datasets")

from rlr.data.tfds_builder import (  # noqa: E402
    RlrData,
    build_array_record,
    problem_from_example,
    step_labelled_from_example,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data"


def test_tensorflow_is_not_needed():
    """The point of the array_record path: building and reading never import TensorFlow (in a
    fresh process, so no other test's imports count)."""
    code = (
        "import sys\n"
        "from rlr.data.tfds_builder import build_array_record, problem_from_example\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here; the no-TensorFlow claim is untested")


@pytest.mark.parametrize(
    "format_name, files",
    [
        ("gsm8k", {"train": "gsm8k.jsonl"}),
        ("math", {"train": "math.jsonl", "test": "math500.jsonl"}),
        ("mathinstruct", {"train": "mathinstruct.jsonl"}),
        ("prm800k", {"train": "prm800k.jsonl"}),
        ("math_shepherd", {"train": "math_shepherd.jsonl"}),
    ],
)
def test_round_trip_identical_records(tmp_path, monkeypatch, format_name, files):
    temp = tmp_path / "temp"  # the temporary folder, which preparing leaves as it found it
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    paths = {split: FIXTURES / name for split, name in files.items()}
    sources = build_array_record(format_name, paths, data_dir=tmp_path / "data")
    assert list(temp.iterdir()) == []
    decode = (
        step_labelled_from_example
        if format_name in ("prm800k", "math_shepherd")
        else problem_from_example
    )
    for split, path in paths.items():
        expected = list(READERS[format_name](path))
        source = sources[split]
        assert len(source) == len(expected)
        assert [decode(source[i]) for i in range(len(source))] == expected
    # Reopen through the public tfds entry point, with no files given.
    reopened = tfds.data_source(f"rlr_data/{format_name}", data_dir=str(tmp_path / "data"))
    first_split = next(iter(paths))
    assert decode(reopened[first_split][0]) == READERS[format_name](paths[first_split])[0]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format_name must be one of"):
        build_array_record("gsm9k", {"train": FIXTURES / "gsm8k.jsonl"}, data_dir=tmp_path)
    with pytest.raises(ValueError, match="not found"):
        build_array_record("gsm8k", {"train": tmp_path / "nope.jsonl"}, data_dir=tmp_path)
    with pytest.raises(ValueError, match="nothing to prepare"):
        RlrData(config="gsm8k", data_dir=str(tmp_path / "empty")).download_and_prepare()


def test_skip_malformed_lines(tmp_path):
    good = (FIXTURES / "gsm8k.jsonl").read_text().splitlines()
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([good[0], "{broken", good[1]]) + "\n")
    with pytest.raises(MalformedRecordError, match=r"mixed\.jsonl:2: invalid JSON"):
        build_array_record("gsm8k", {"train": path}, data_dir=tmp_path / "strict")
    builder = RlrData(
        config="gsm8k", files={"train": path}, data_dir=str(tmp_path / "lax"), skip_malformed=True
    )
    builder.download_and_prepare()
    assert builder.skipped_lines == {"train": [2]}
    source = builder.as_data_source()["train"]
    assert [problem_from_example(source[i]).answer for i in range(len(source))] == ["7", "1400"]
