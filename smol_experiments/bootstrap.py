"""Paired bootstrap confidence intervals for corpus-level scores, used wherever either pipeline reports one.

Every score here is a function of per-example statistics summed over the examples: corpus BLEU and chrF of
their n-gram counts (sacrebleu's own sentence statistics, as its significance tests use them), exact match
and routing accuracy of (hits, count). A resample draws the examples with replacement — the same draw for
every system, which makes it paired — and recomputes each system's score from the drawn examples' summed
statistics. The percentile interval of the per-resample differences is the difference's interval; a
difference is significant only when that interval excludes 0, and identical systems get exactly [0, 0].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

RESAMPLES, LEVEL = 1000, 0.95


def paired_bootstrap(stats: Mapping[str, np.ndarray], score: Callable[[np.ndarray], float], *,
                     compare_to: str | None = None, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict:
    """Each system's score and interval, and each system minus `compare_to` with its paired interval.

    stats[system]: (examples, k) statistics of the same examples in the same order for every system;
    score(sums of shape (k,)) -> float. Returns {"systems": {name: {"score", "ci"}},
    "vs": {name: {"diff", "ci", "significant"}}} ("vs" only with `compare_to`).
    """
    arrays = {name: np.asarray(s, dtype=np.float64) for name, s in stats.items()}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every system needs statistics for the same, non-empty examples; got sizes {sizes}")
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.full(n, 1 / n), size=resamples)  # (resamples, examples): times each is drawn
    points = {name: score(a.sum(0)) for name, a in arrays.items()}
    boot = {name: np.array([score(row) for row in draws @ a]) for name, a in arrays.items()}
    tail = 100 * (1 - level) / 2

    def interval(values: np.ndarray) -> list[float]:
        return np.percentile(values, [tail, 100 - tail]).tolist()

    result = {"systems": {name: {"score": points[name], "ci": interval(boot[name])} for name in arrays}}
    if compare_to is not None:
        result["vs"] = {}
        for name in arrays:
            low, high = interval(boot[name] - boot[compare_to])
            result["vs"][name] = {"diff": points[name] - points[compare_to], "ci": [low, high],
                                  "significant": low > 0 or high < 0}
    return result


def ratio(sums: np.ndarray) -> float:
    """Score of (hits, count) statistics: exact match, accuracy."""
    return float(sums[0] / sums[1])


def verdict(diffs: Mapping[str, dict]) -> str:
    """'better: BLEU; worse: chrF' from significant differences only, else 'no significant difference'."""
    better = [m for m, d in diffs.items() if d["significant"] and d["diff"] > 0]
    worse = [m for m, d in diffs.items() if d["significant"] and d["diff"] < 0]
    parts = [f"better: {', '.join(better)}"] * bool(better) + [f"worse: {', '.join(worse)}"] * bool(worse)
    return "; ".join(parts) or "no significant difference"
