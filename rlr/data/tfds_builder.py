"""A tfds builder over local JSONL files, written as array_record and read without TensorFlow.

    builder = RlrData(config="gsm8k", files={"test": "gsm8k_test.jsonl"}, data_dir=d)
    builder.download_and_prepare()
    source = builder.as_data_source()["test"]          # random access, no TensorFlow
    problem = problem_from_example(source[0])

or, once prepared, `tfds.data_source("rlr_data/gsm8k", data_dir=d)`. Records keep file order
(shuffling is disabled) so index i is line i of the input (minus skipped lines).
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from rlr.data.readers import READERS
from rlr.data.records import Problem, StepLabelled

PROBLEM_FORMATS = ("gsm8k", "math", "mathinstruct", "problems")
STEP_FORMATS = ("prm800k", "math_shepherd", "step_labelled")


def _problem_features() -> tfds.features.FeaturesDict:
    text = tfds.features.Text()
    return tfds.features.FeaturesDict(
        {
            "id": text,
            "question": text,
            "answer": text,
            "has_answer": np.bool_,
            "solution": text,
            "has_solution": np.bool_,
            "source": text,
            "meta_json": text,
        }
    )


def _step_features() -> tfds.features.FeaturesDict:
    text = tfds.features.Text()
    return tfds.features.FeaturesDict(
        {
            "id": text,
            "question": text,
            "steps": tfds.features.Sequence(text),
            "labels": tfds.features.Sequence(np.int32),
            "gold_answer": text,
            "has_gold_answer": np.bool_,
            "source": text,
            "meta_json": text,
        }
    )


def problem_to_example(problem: Problem) -> dict[str, Any]:
    """A Problem as a tfds example of the problem formats."""
    return {
        "id": problem.id,
        "question": problem.question,
        "answer": problem.answer or "",
        "has_answer": problem.answer is not None,
        "solution": problem.solution or "",
        "has_solution": problem.solution is not None,
        "source": problem.source,
        "meta_json": json.dumps(problem.meta, ensure_ascii=False, sort_keys=True),
    }


def step_labelled_to_example(record: StepLabelled) -> dict[str, Any]:
    """A StepLabelled record as a tfds example of the step formats."""
    return {
        "id": record.id,
        "question": record.question,
        "steps": list(record.steps),
        "labels": np.asarray(record.labels, np.int32),
        "gold_answer": record.gold_answer or "",
        "has_gold_answer": record.gold_answer is not None,
        "source": record.source,
        "meta_json": json.dumps(record.meta, ensure_ascii=False, sort_keys=True),
    }


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def problem_from_example(example: dict[str, Any]) -> Problem:
    """Inverse of `problem_to_example` on what the array_record data source returns."""
    return Problem(
        id=_text(example["id"]),
        question=_text(example["question"]),
        answer=_text(example["answer"]) if bool(example["has_answer"]) else None,
        solution=_text(example["solution"]) if bool(example["has_solution"]) else None,
        source=_text(example["source"]),
        meta=json.loads(_text(example["meta_json"])),
    )


def step_labelled_from_example(example: dict[str, Any]) -> StepLabelled:
    """Inverse of `step_labelled_to_example` on what the data source returns."""
    return StepLabelled(
        id=_text(example["id"]),
        question=_text(example["question"]),
        steps=tuple(_text(s) for s in example["steps"]),
        labels=tuple(int(y) for y in example["labels"]),
        gold_answer=_text(example["gold_answer"]) if bool(example["has_gold_answer"]) else None,
        source=_text(example["source"]),
        meta=json.loads(_text(example["meta_json"])),
    )


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """A DatasetInfo that never looks for pre-computed metadata on tfds's GCS bucket."""

    def initialize_from_bucket(self) -> None:
        # rlr's data is never on the bucket, and tfds makes a temporary folder for the
        # metadata before it looks and leaves it behind, one per new builder.
        return None


class RlrData(tfds.core.GeneratorBasedBuilder):
    """JSONL files of one rlr-readable format -> array_record splits, one config per format.

    Pass `files={split: path}` to prepare; reading an already prepared dataset needs no files.
    `skip_malformed=True` skips bad lines; after preparing, `skipped_lines[split]` lists them.
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=f"{name} JSONL")
        for name in PROBLEM_FORMATS + STEP_FORMATS
    ]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tensorflow-datasets 4.9.10 resolves a packaged builder's path through
        # `importlib_resources`, which it only declares for Python < 3.9, so on newer Pythons
        # preparing fails with ModuleNotFoundError. This module's own file is what it would find.
        return epath.Path(inspect.getfile(cls))

    def __init__(
        self,
        *,
        files: dict[str, str | os.PathLike] | None = None,
        skip_malformed: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("file_format", "array_record")
        self._files = dict(files or {})
        self._skip_malformed = skip_malformed
        self.skipped_lines: dict[str, list[int]] = {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        step = self.builder_config.name in STEP_FORMATS
        return _LocalDatasetInfo(
            builder=self,
            description="rlr math data from local JSONL files",
            features=_step_features() if step else _problem_features(),
            # Index i must stay record i of the file: preparation keeps file order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        if not self._files:
            raise ValueError(
                f"RlrData({self.builder_config.name}) has nothing to prepare: pass"
                " files={'train': 'path.jsonl', ...}"
            )
        for split, path in self._files.items():
            if not os.path.isfile(path):
                raise ValueError(f"RlrData: file for split {split!r} not found: {path}")
        return {
            split: self._generate_examples(path, split=split) for split, path in self._files.items()
        }

    def _generate_examples(self, path, split: str = "train"):
        name = self.builder_config.name
        result = READERS[name](path, skip_malformed=self._skip_malformed)
        self.skipped_lines[split] = list(result.skipped_lines)
        convert = step_labelled_to_example if name in STEP_FORMATS else problem_to_example
        for i, record in enumerate(result.records):
            yield i, convert(record)


def build_array_record(
    format_name: str,
    files: dict[str, str | os.PathLike],
    *,
    data_dir: str | os.PathLike,
    skip_malformed: bool = False,
) -> dict[str, Any]:
    """Prepare `files` ({split: path}) of `format_name` under `data_dir`; return the data sources.

    Each source supports len() and random access; decode items with `problem_from_example` or
    `step_labelled_from_example`.
    """
    if format_name not in PROBLEM_FORMATS + STEP_FORMATS:
        raise ValueError(
            f"format_name must be one of {', '.join(PROBLEM_FORMATS + STEP_FORMATS)};"
            f" got {format_name!r}"
        )
    builder = RlrData(
        config=format_name, files=files, data_dir=os.fspath(data_dir), skip_malformed=skip_malformed
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return builder.as_data_source()
