"""Evaluation metrics against sacrebleu, the copy baseline, and the preference-pair rule (pure functions)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import sacrebleu
from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from smol_experiments.alignment.build_preference_pairs import choose_pair, pairs_from_samples
from smol_experiments.alignment.evaluate import corpus_metrics, parse_models, unchanged_share
from smol_experiments.alignment.prompt_format import make_prompt, strip_instruction
from smolhub_hub.errors import UserError

HYPS = ["The cat sat on the mat.", "He go to school every day .", "She has a red ball!", ""]
REFS = ["The cat sat on the mat.", "He goes to school every day.", "She has a red ball.", "It was sunny."]


def test_metrics_match_sacrebleu_on_known_strings():
    m = corpus_metrics(HYPS, REFS)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a").score / 100)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score / 100)
    assert m["exact_match"] == pytest.approx(1 / 4)


def test_perfect_and_hopeless_hypotheses():
    assert corpus_metrics(REFS, REFS) == {"bleu": pytest.approx(1.0), "chrf": pytest.approx(1.0), "exact_match": 1.0}
    assert corpus_metrics(["zzz"] * 4, REFS)["bleu"] == 0.0


def test_hypotheses_are_compared_without_surrounding_space():
    # generations begin with the completion's leading space; that must not cost an exact match
    assert corpus_metrics([" The cat sat on the mat.\n"], ["The cat sat on the mat."])["exact_match"] == 1.0


def test_copy_baseline_drops_the_instruction():
    assert strip_instruction("Fix grammar: He go home.") == "He go home."
    assert strip_instruction("Remove all grammatical errors from this text: A: b.") == "A: b."
    assert strip_instruction("no instruction here") == "no instruction here"


def test_unchanged_share_counts_outputs_equal_to_their_input():
    sources = ["He go home.", "She have a cat.", "It rain."]
    assert unchanged_share([" He go home.\n", "She has a cat.", "It rain."], sources) == pytest.approx(2 / 3)
    assert unchanged_share(sources, sources) == 1.0
    with pytest.raises(ValueError):  # one output per input, never a silent truncation
        unchanged_share(["He go home."], sources)


def test_pair_building_picks_the_closer_candidate():
    ref = "She goes to the park."
    assert choose_pair(ref, ["She go to park.", " She goes to the park."]) == (" She goes to the park.",
                                                                               "She go to park.")
    assert choose_pair(ref, ["She goes to the park!", "xx"]) == ("She goes to the park!", "xx")


def test_pair_building_drops_ties():
    ref = "She goes to the park."
    assert choose_pair(ref, ["She goes to the parks.", "She goes to the bark."]) is None  # both one edit away
    assert choose_pair(ref, ["same", "same"]) is None
    rows = [{"src": "Fix: a", "tgt": "ab", "samples": ["abc", "abd"]},  # tie: dropped
            {"src": "Fix: b", "tgt": "ab", "samples": ["zz", "ab"]}]
    pairs = pairs_from_samples(rows)
    assert pairs == [{"prompt": make_prompt("Fix: b"), "chosen": " ab", "rejected": " zz", "reference": " ab"}]


@given(st.text(max_size=20), st.lists(st.text(max_size=20), min_size=2, max_size=4))
def test_chosen_is_strictly_closer_than_rejected(reference, candidates):
    picked = choose_pair(reference, candidates)
    distances = [Levenshtein.distance(c.strip(), reference.strip()) for c in candidates]
    if picked is None:
        assert min(distances) == max(distances)
    else:
        chosen, rejected = picked
        assert Levenshtein.distance(chosen.strip(), reference.strip()) == min(distances) < max(distances)
        assert Levenshtein.distance(rejected.strip(), reference.strip()) == max(distances)


def test_model_specs_are_checked():
    assert parse_models(["sft=runs/sft", "base=HuggingFaceTB/SmolLM-135M"]) == {
        "sft": "runs/sft", "base": "HuggingFaceTB/SmolLM-135M"}
    for bad in (["runs/sft"], ["sft="], ["a=x", "a=y"], ["copy-input=x"]):
        with pytest.raises(UserError):
            parse_models(bad)
