"""The paired bootstrap both pipelines report: intervals that cover the truth, zero width for identical systems,
and a results table that calls a one-sentence difference what it is."""

import numpy as np
import pytest
import sacrebleu

from smol_experiments.alignment.evaluate import METRICS, corpus_metrics, score_systems, unchanged_share, write_table
from smol_experiments.bootstrap import paired_bootstrap, ratio, verdict


def correct_answers(rng, n: int, accuracy_a: float, accuracy_b: float) -> dict[str, np.ndarray]:
    """(hits, 1) per example for two correlated systems with known true accuracies."""
    shared = rng.random(n)  # the same difficulty for both systems: what pairing exploits
    hits_a, hits_b = shared < accuracy_a, shared < accuracy_b
    flip = rng.random(n) < 0.1  # and some disagreement of their own
    hits_b = np.where(flip, rng.random(n) < accuracy_b, hits_b)
    return {"a": np.stack([hits_a, np.ones(n)], 1), "b": np.stack([hits_b, np.ones(n)], 1)}


def test_difference_intervals_cover_the_true_difference():
    rng = np.random.default_rng(0)
    trials, covered = 100, 0
    for trial in range(trials):
        boot = paired_bootstrap(correct_answers(rng, 300, 0.7, 0.6), ratio, compare_to="b", resamples=400, seed=trial)
        low, high = boot["vs"]["a"]["ci"]
        covered += low <= 0.1 <= high
        score = boot["systems"]["a"]
        assert score["ci"][0] <= score["score"] <= score["ci"][1]
    assert covered >= 0.88 * trials  # a 95% interval, up to the sampling noise of 100 trials


def test_identical_systems_differ_by_exactly_zero():
    stats = correct_answers(np.random.default_rng(1), 50, 0.8, 0.8)
    boot = paired_bootstrap({"sft": stats["a"], "dpo": stats["a"].copy()}, ratio, compare_to="sft")
    assert boot["vs"]["dpo"] == {"diff": 0.0, "ci": [0.0, 0.0], "significant": False}
    assert boot["systems"]["dpo"] == boot["systems"]["sft"]
    assert verdict({"BLEU": boot["vs"]["dpo"]}) == "no significant difference"


def test_a_clear_difference_is_significant_and_named():
    boot = paired_bootstrap(correct_answers(np.random.default_rng(2), 400, 0.9, 0.5), ratio, compare_to="b")
    assert boot["vs"]["a"]["significant"] and boot["vs"]["a"]["ci"][0] > 0.3
    worse = {"diff": -0.1, "significant": True}
    assert verdict({"BLEU": boot["vs"]["a"], "chrF": worse}) == "better: BLEU; worse: chrF"


def test_sentence_statistics_give_sacrebleu_corpus_scores():
    hyps = ["The cat sat on the mat.", "He go to school every day .", "She has a red ball!", ""]
    refs = ["The cat sat on the mat.", "He goes to school every day.", "She has a red ball.", "It was sunny."]
    systems, _ = score_systems({"sys": hyps, "ref": refs}, refs, "ref", resamples=50, seed=0)
    assert systems["sys"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score / 100)
    assert systems["sys"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score / 100)
    assert {m: systems["sys"][m] for m in METRICS} == corpus_metrics(hyps, refs)


def test_one_changed_sentence_of_40_is_no_significant_difference(tmp_path):
    refs = [f"Sentence number {i} was written by the tiny model today." for i in range(40)]
    sft = [r.replace("was", "were") if i % 4 == 0 else r for i, r in enumerate(refs)]
    dpo = list(sft)
    dpo[0] = refs[0]  # one sentence fixed: a small gain in the point estimate only
    systems, comparisons = score_systems({"sft": sft, "sft+dpo": dpo, "same": list(sft)}, refs, "sft",
                                         resamples=1000, seed=0)
    assert comparisons["sft+dpo"]["bleu"]["diff"] > 0
    assert comparisons["sft+dpo"]["verdict"] == comparisons["same"]["verdict"] == "no significant difference"
    assert comparisons["same"]["bleu"]["ci"] == [0.0, 0.0]
    for name, hyps in {"sft": sft, "sft+dpo": dpo, "same": sft}.items():
        systems[name]["unchanged"] = unchanged_share(hyps, sft)  # as if sft's outputs were the inputs
    results = {"rows": 40, "dataset": "d", "split": "validation", "task": "gec", "note": "", "compare_to": "sft",
               "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95}, "systems": systems,
               "comparisons": comparisons}
    write_table(results, tmp_path)
    table = (tmp_path / "results.md").read_text()
    score_row, difference_row = [line for line in table.splitlines() if line.startswith("| sft+dpo |")]
    assert score_row.endswith("| 97.5% |")  # sft+dpo changed one input of 40
    assert difference_row.endswith("| no significant difference |") and "Difference to sft" in table
