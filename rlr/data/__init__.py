"""Datasets, step segmentation, the synthetic arithmetic task and prompt building.

The tfds builder lives in `rlr.data.tfds_builder` and is not imported here, so that readers
and segmentation do not pay for importing tensorflow_datasets.
"""

from rlr.data.answers import answer_from_text, last_boxed, strip_calculator_notes
from rlr.data.prompts import build_prompt
from rlr.data.readers import (
    READERS,
    MalformedRecordError,
    ReadResult,
    read_gsm8k,
    read_jsonl,
    read_math,
    read_math_shepherd,
    read_mathinstruct,
    read_prm800k,
    read_problems,
    read_step_labelled,
    write_jsonl,
)
from rlr.data.records import Problem, StepLabelled
from rlr.data.segmentation import (
    decode_with_offsets,
    insert_step_tags,
    last_token_of_spans,
    pad_id_of,
    prm_inputs,
    split_steps,
    step_ends,
    step_ends_from_ids,
    step_texts,
)

__all__ = [
    "READERS",
    "MalformedRecordError",
    "Problem",
    "ReadResult",
    "StepLabelled",
    "answer_from_text",
    "build_prompt",
    "decode_with_offsets",
    "insert_step_tags",
    "last_boxed",
    "last_token_of_spans",
    "pad_id_of",
    "prm_inputs",
    "read_gsm8k",
    "read_jsonl",
    "read_math",
    "read_math_shepherd",
    "read_mathinstruct",
    "read_problems",
    "read_prm800k",
    "read_step_labelled",
    "split_steps",
    "step_ends",
    "step_ends_from_ids",
    "step_texts",
    "strip_calculator_notes",
    "write_jsonl",
]
