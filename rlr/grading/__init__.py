"""Answer grading: extraction, normalisation, equivalence, and a killable process pool.

from rlr.grading import Grader, extract_answer, is_equivalent
with Grader(num_workers=2, timeout_s=5.0) as grader:
    rewards = grader.grade_responses(responses, gold_answers)
"""

from rlr.grading.equivalence import fast_verdict, is_equivalent
from rlr.grading.extract import extract_answer
from rlr.grading.normalize import normalize_answer
from rlr.grading.pool import Grader

__all__ = ["Grader", "extract_answer", "fast_verdict", "is_equivalent", "normalize_answer"]
