"""Graded answers per second: rlr's Grader (in-process, 1 and 2 workers) vs plain math-verify.

    python bench/bench_grading.py [--items 1000] [--data-dir tests/data] [--repeats 5]

The mix is real GSM8K model-solution answers and MATH500 answers (each paired with its own gold
and, for half of them, with another problem's gold), or built-in cases where the data folder is
absent. The peer is math-verify called in-process, gold first, as rlr calls it but without
rlr's normalisation or fast path: `verify(parse(gold), parse(pred))`.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0).
The three Graders start first (their start-up, timed once, is printed on its own); then one
warm-up run of each mode over all the answers, then `--repeats` (5) rounds of one run of each
mode in turn (peer, rlr in-process, 1 worker, 2 workers). math-verify's LRU caches (20 parses)
are emptied in this process at the start of every run; a worker's caches keep the parses of
the list's last answers, which the next run, starting at the list's head, has evicted before
it reaches them. Printed: the median answers/s of each mode, the spread of the run times
(min-max) and the ratio of the medians to the peer; timeouts are counted over all runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import random

from protocol import interleaved, load_line, median, runs_line, spread, timed

from rlr.grading import Grader, extract_answer

DEFAULT_DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"

BUILTIN = [
    ("18", "18"),
    ("1,000", "1000"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("(1,2)", "(2,1)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1,2)", "[1,2]"),
    ("2\\pi", "\\pi"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\text{(B)}", "B"),
    ("50\\%", "50"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"),
]


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_pairs(data_dir: pathlib.Path, num_items: int, seed: int = 0) -> tuple[list, str]:
    """(prediction, gold) pairs: half MATH500, half GSM8K model solutions, shuffled."""
    rng = random.Random(seed)
    if not data_dir.is_dir():
        pairs = [BUILTIN[i % len(BUILTIN)] for i in range(num_items)]
        return pairs, f"built-in cases ({data_dir} is absent)"
    math_rows = _read_jsonl(data_dir / "math500_test.jsonl")
    answers = [row["answer"] for row in math_rows]
    math_pairs = []
    for row in math_rows:
        extracted = extract_answer(row["solution"])
        math_pairs.append((extracted, row["answer"]))
        math_pairs.append((extracted, rng.choice(answers)))
    gsm_pairs = []
    for row in _read_jsonl(data_dir / "gsm8k_model_solutions.jsonl"):
        gold = extract_answer(row["ground_truth"])
        for sample in row.values():
            if isinstance(sample, dict) and "solution" in sample:
                gsm_pairs.append((extract_answer(sample["solution"]), gold))
    rng.shuffle(math_pairs)
    rng.shuffle(gsm_pairs)
    half = num_items // 2
    pairs = math_pairs[:half] + gsm_pairs[: num_items - half]
    rng.shuffle(pairs)
    return pairs, f"real data from {data_dir}"


def math_verify_verdicts(pairs: list) -> list[bool]:
    """The peer: math-verify in-process (LaTeX extraction only: no Python eval of answers)."""
    import math_verify

    config = [math_verify.LatexExtractionConfig()]
    verdicts = []
    for pred, gold in pairs:
        if pred is None:
            verdicts.append(False)
            continue
        gold_parsed = math_verify.parse("\\boxed{" + gold + "}", extraction_config=config)
        pred_parsed = math_verify.parse("\\boxed{" + pred + "}", extraction_config=config)
        verdicts.append(bool(math_verify.verify(gold_parsed, pred_parsed)))
    return verdicts


def clear_math_verify_caches() -> None:
    """Empties math-verify's LRU caches so that no in-process mode reuses another's parses."""
    from math_verify import parser as math_verify_parser

    for name in ("parse_latex_cached", "parse_expr_cached", "extract_latex"):
        cached = getattr(math_verify_parser, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000, help="answers graded per mode")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median of these)")
    args = parser.parse_args()
    if args.items <= 0:
        raise ValueError(f"--items must be > 0; got {args.items}")
    pairs, source = load_pairs(args.data_dir, args.items)
    preds, golds = [p for p, _ in pairs], [g for _, g in pairs]
    print(f"{len(pairs)} answers, {source}")

    print(runs_line(args.repeats))
    print(load_line("before"), flush=True)
    reference: list[bool] = []
    verdicts_by_mode: dict[int, list[bool]] = {}

    def run_peer():
        clear_math_verify_caches()
        reference[:] = math_verify_verdicts(pairs)

    peer = "math-verify in-process (peer)"
    fns, graders, startup = {peer: run_peer}, {}, {}
    with contextlib.ExitStack() as stack:
        for workers in (0, 1, 2):
            name = "rlr Grader in-process" if workers == 0 else f"rlr Grader, {workers} worker(s)"
            startup[name], graders[name] = timed(
                lambda w=workers: Grader(num_workers=w, timeout_s=args.timeout_s)
            )
            stack.enter_context(graders[name])

            def run_rlr(grader=graders[name], workers=workers):
                clear_math_verify_caches()
                verdicts_by_mode[workers] = grader.grade(preds, golds)

            fns[name] = run_rlr
        times = interleaved(fns, repeats=args.repeats)
        timeouts = {name: grader.num_timeouts for name, grader in graders.items()}
    print(load_line("after"))

    peer_s = median(times[peer])
    head = f"{'mode':<40} {'start-up s':>10} {'answers/s':>10} {'run s min-max':>14}"
    print(f"{head} {'vs peer':>8}")
    for name, seconds in times.items():
        rate = len(pairs) / median(seconds)
        label = name + (f" [{timeouts[name]} timeouts, all runs]" if timeouts.get(name) else "")
        print(
            f"{label:<40} {startup.get(name, 0.0):>10.2f} {rate:>10.1f} "
            f"{spread(seconds):>14} {peer_s / median(seconds):>7.2f}x"
        )
    agreement = sum(a == b for a, b in zip(verdicts_by_mode[0], reference)) / len(pairs)
    pool_same = verdicts_by_mode[0] == verdicts_by_mode[1] == verdicts_by_mode[2]
    print(f"rlr vs math-verify verdict agreement: {agreement:.2%}; pool == in-process: {pool_same}")
    print(f"fraction graded correct by rlr: {sum(verdicts_by_mode[0]) / len(pairs):.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
