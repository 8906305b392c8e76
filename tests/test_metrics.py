"""Policy workbench figures, checked against counts and values worked out by hand."""

from __future__ import annotations

import json

import pytest

from safeguard_desktop.core.metrics import (
    Confusion,
    MetricsError,
    Outcome,
    category_recall,
    cohen_kappa,
    compare_runs,
    compute_metrics,
    count_confusion,
    mcnemar_exact,
    metrics_from_confusion,
    wilson_interval,
)

FIRST_KEYS = [
    "n",
    "tp",
    "fp",
    "tn",
    "fn",
    "unparsed",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "fpr",
    "kappa",
]


def outcomes(truths: str, predictions: list[str], **extra: list[object]) -> list[Outcome]:
    """Outcomes i1, i2, ... from a truth string ("TTF": violation, violation, safe)."""
    assert len(truths) == len(predictions)
    result = []
    for i, (truth, predicted) in enumerate(zip(truths, predictions, strict=True)):
        fields = {key: values[i] for key, values in extra.items()}
        result.append(Outcome(f"i{i + 1}", truth == "T", predicted, **fields))  # type: ignore[arg-type]
    return result


# --- Wilson intervals ----------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 8/10 at z = 1.96: p = 0.8, z^2/n = 0.38416, denominator 1.38416,
    # centre = (0.8 + 0.19208) / 1.38416 = 0.71675,
    # half = 1.96 / 1.38416 * sqrt(0.8 * 0.2 / 10 + 3.8416 / 400) = 1.41602 * 0.16001 = 0.22658
    # -> [0.4902, 0.9433].
    lo, hi = wilson_interval(8, 10, z=1.96) or (0.0, 0.0)
    assert lo == pytest.approx(0.4902, abs=5e-5)
    assert hi == pytest.approx(0.9433, abs=5e-5)
    # The default z is the exact 97.5% quantile 1.95996...: the same to four places.
    lo, hi = wilson_interval(8, 10) or (0.0, 0.0)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)


def test_wilson_interval_at_the_edges() -> None:
    # 0/10: centre = half = 0.19208 / 1.38416 = 0.13877 -> [0, 0.2775]; 10/10 mirrors it.
    lo, hi = wilson_interval(0, 10, z=1.96) or (1.0, 1.0)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=5e-5)
    lo, hi = wilson_interval(10, 10, z=1.96) or (0.0, 0.0)
    assert lo == pytest.approx(0.7225, abs=5e-5)
    assert hi == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(MetricsError):
        wilson_interval(11, 10)


# --- one run -------------------------------------------------------------------------------


def test_rates_from_hand_counted_confusion() -> None:
    m = metrics_from_confusion(Confusion(tp=8, fp=2, tn=85, fn=5))
    assert (m.n, m.tp, m.fp, m.tn, m.fn, m.unparsed) == (100, 8, 2, 85, 5, 0)
    assert m.precision == pytest.approx(0.8)  # 8 / (8 + 2)
    assert m.recall == pytest.approx(8 / 13)  # 8 / (8 + 5) = 0.6154
    assert m.f1 == pytest.approx(16 / 23)  # 2*8 / (2*8 + 2 + 5) = 0.6957
    assert m.accuracy == pytest.approx(0.93)  # (8 + 85) / 100
    assert m.fpr == pytest.approx(2 / 87)  # 2 / (2 + 85) = 0.0230
    # kappa: po = 0.93; pe = ((8+2)(8+5) + (5+85)(2+85)) / 100^2 = (130 + 7830) / 10000
    # = 0.796; kappa = (0.93 - 0.796) / (1 - 0.796) = 0.134 / 0.204 = 67/102 = 0.6569.
    assert m.kappa == pytest.approx(67 / 102)
    assert m.precision_ci is not None
    assert [round(x, 4) for x in m.precision_ci] == [0.4902, 0.9433]  # 8/10, as above
    assert m.recall_ci == wilson_interval(8, 13)
    assert m.accuracy_ci == wilson_interval(93, 100)
    assert m.fpr_ci == wilson_interval(2, 87)


def test_cohen_kappa_by_hand() -> None:
    # Perfect agreement: po = 1, pe = (5*5 + 5*5) / 100 = 0.5 -> kappa 1.
    assert cohen_kappa(5, 0, 5, 0) == pytest.approx(1.0)
    # Always wrong: po = 0, pe = (5*5 + 5*5) / 100 = 0.5 -> (0 - 0.5) / 0.5 = -1.
    assert cohen_kappa(0, 5, 0, 5) == pytest.approx(-1.0)
    # tp=20 fp=5 tn=15 fn=10, n=50: po = 35/50 = 0.7;
    # pe = (25*30 + 25*20) / 2500 = 1250 / 2500 = 0.5 -> kappa = 0.2 / 0.5 = 0.4.
    assert cohen_kappa(20, 5, 15, 10) == pytest.approx(0.4)
    # Every verdict and every truth safe: pe = 1, kappa undefined.
    assert cohen_kappa(0, 0, 5, 0) is None
    assert cohen_kappa(0, 0, 0, 0) is None


def test_count_confusion_keeps_undecided_apart() -> None:
    pairs = [
        (True, "violation"),  # TP
        (True, "safe"),  # FN
        (False, "violation"),  # FP
        (False, "safe"),  # TN
        (False, "safe"),  # TN
        (True, "unparsed"),
        (False, "incomplete"),
        (True, "failed"),
        (False, "unparsed"),
    ]
    c = count_confusion(pairs)
    assert (c.tp, c.fn, c.fp, c.tn) == (1, 1, 1, 2)
    assert dict(c.undecided) == {"unparsed": 2, "incomplete": 1, "failed": 1}
    assert (c.unparsed, c.decided, c.n) == (4, 5, 9)
    with pytest.raises(MetricsError, match="Unknown prediction 'maybe'"):
        count_confusion([(True, "maybe")])


def test_unparsed_is_never_taken_as_safe() -> None:
    # Two violations left unparsed: they are neither FN nor TN, and the rates are over the
    # four decided items (1 TP, 1 FN, 2 TN).
    run = outcomes("TTTTFF", ["violation", "safe", "unparsed", "incomplete", "safe", "safe"])
    m = compute_metrics(run)
    assert (m.n, m.tp, m.fn, m.tn, m.fp, m.unparsed) == (6, 1, 1, 2, 0, 2)
    assert m.recall == pytest.approx(0.5)  # 1 / (1 + 1), not 1 / 4
    assert m.accuracy == pytest.approx(0.75)  # 3 / 4
    data = m.to_json()
    assert data["decided"] == 4
    assert data["unparsed_by"] == {"unparsed": 1, "incomplete": 1, "failed": 0}


def test_undefined_figures_are_none() -> None:
    # Violations exist but none predicted: tp=0 fp=0 tn=3 fn=2.
    m = compute_metrics(outcomes("TTFFF", ["safe"] * 5))
    assert m.precision is None and m.precision_ci is None  # no positive predictions
    assert m.recall == 0.0  # 0 / 2
    assert m.f1 == 0.0  # 2*0 / (0 + 0 + 2)
    assert m.fpr == 0.0  # 0 / 3
    # kappa: po = 3/5; pe = (0*2 + 5*3) / 25 = 0.6 -> (0.6 - 0.6) / 0.4 = 0.
    assert m.kappa == pytest.approx(0.0)
    # No violation anywhere: precision, recall, F1 and kappa undefined, accuracy 1.
    m = compute_metrics(outcomes("FFF", ["safe"] * 3))
    assert (m.precision, m.recall, m.f1, m.kappa) == (None, None, None, None)
    assert (m.accuracy, m.fpr) == (1.0, 0.0)
    # Nothing decided at all.
    m = compute_metrics(outcomes("TF", ["unparsed", "failed"]))
    assert (m.n, m.unparsed) == (2, 2)
    assert all(m.to_json()[k] is None for k in FIRST_KEYS[6:])


def test_empty_run() -> None:
    data = compute_metrics([]).to_json()
    assert [data[k] for k in FIRST_KEYS] == [0] * 6 + [None] * 6
    assert data["precision_ci"] is None
    assert data["median_seconds"] is None and data["median_tokens"] is None
    assert data["categories"] == {}


def test_to_json_keys_and_values() -> None:
    run = outcomes("TF", ["violation", "safe"], seconds=[1.0, 2.0], tokens=[10, 30])
    data = compute_metrics(run).to_json()
    assert list(data)[: len(FIRST_KEYS)] == FIRST_KEYS
    assert {"precision_ci", "recall_ci", "accuracy_ci", "fpr_ci", "categories"} <= set(data)
    assert json.loads(json.dumps(data)) == data  # plain JSON: lists, not tuples
    assert isinstance(data["precision_ci"], list) and len(data["precision_ci"]) == 2
    assert data["median_seconds"] == 1.5  # median of 1, 2
    assert data["median_tokens"] == 20.0  # median of 10, 30


def test_medians_skip_items_without_data() -> None:
    # seconds 4, 1, 3, 2 and two unknown -> sorted 1 2 3 4 -> (2 + 3) / 2 = 2.5;
    # tokens 100, 300, 200 -> 200; the unparsed item's time counts too.
    run = outcomes(
        "TTFFFT",
        ["violation", "safe", "safe", "unparsed", "safe", "safe"],
        seconds=[4.0, 1.0, 3.0, 2.0, None, None],
        tokens=[100, None, 300, 200, None, None],
    )
    m = compute_metrics(run)
    assert m.median_seconds == 2.5
    assert m.median_tokens == 200.0


def test_per_category_recall_against_targets() -> None:
    # SP2: 3 violations, caught 2, missed 1 -> 2/3, target 0.9 not met.
    # SP4: 2 violations, caught 1, unparsed 1 -> recall 1/1 (decided only), target 0.9 met.
    # H2.f: 1 violation caught -> 1/1, no target. SP0 is only on a safe item: not reported.
    # SP3 has a target and no item: n 0, recall None, met None.
    run = outcomes(
        "TTTTTTF",
        ["violation", "violation", "safe", "violation", "unparsed", "violation", "violation"],
        categories=[("SP2",), ("SP2",), ("SP2",), ("SP4",), ("SP4",), ("H2.f",), ("SP0",)],
    )
    rows = {r.category: r for r in category_recall(run, {"SP2": 0.9, "SP4": 0.9, "SP3": 0.5})}
    assert list(rows) == ["H2.f", "SP2", "SP3", "SP4"]
    sp2, sp3, sp4, h2f = rows["SP2"], rows["SP3"], rows["SP4"], rows["H2.f"]
    assert (sp2.n, sp2.caught, sp2.missed, sp2.unparsed) == (3, 2, 1, 0)
    assert sp2.recall == pytest.approx(2 / 3)
    assert sp2.ci == wilson_interval(2, 3)
    assert sp2.met is False
    assert (sp4.n, sp4.caught, sp4.missed, sp4.unparsed, sp4.recall, sp4.met) == (
        2,
        1,
        0,
        1,
        1.0,
        True,
    )
    assert (sp3.n, sp3.recall, sp3.ci, sp3.met) == (0, None, None, None)
    assert (h2f.recall, h2f.target, h2f.met) == (1.0, None, None)
    data = compute_metrics(run, targets={"SP2": 0.9}).to_json()
    categories = data["categories"]
    assert isinstance(categories, dict)
    assert categories["SP2"]["met"] is False
    assert categories["SP2"]["recall_ci"] == list(sp2.ci or ())
    with pytest.raises(MetricsError, match="between 0 and 1"):
        category_recall(run, {"SP2": 90})


# --- comparing two runs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 6, 0.125),  # n=7: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
        (6, 1, 0.125),  # symmetric
        (0, 5, 0.0625),  # n=5: 2 * 1 / 32
        (2, 10, 158 / 4096),  # n=12: 2 * (1 + 12 + 66) / 4096 = 0.0386
        (3, 3, 1.0),  # n=6: 2 * (1 + 6 + 15 + 20) / 64 = 1.3125 -> capped at 1
        (0, 0, 1.0),  # no discordant pair
        (0, 1, 1.0),  # n=1: 2 * 1 / 2
    ],
)
def test_mcnemar_exact(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p)


def test_mcnemar_exact_on_large_counts() -> None:
    assert mcnemar_exact(1000, 1000) == 1.0
    assert 0.0 <= mcnemar_exact(0, 3000) < 1e-300  # 2 / 2^3000: no overflow
    with pytest.raises(MetricsError):
        mcnemar_exact(-1, 2)


def test_compare_two_runs_by_hand() -> None:
    #        truth  A           B           A right  B right
    # i1     T      violation   violation   yes      yes
    # i2     T      safe        violation   no       yes   flip
    # i3     T      violation   violation   yes      yes
    # i4     F      safe        safe        yes      yes
    # i5     F      violation   safe        no       yes   flip
    # i6     F      safe        safe        yes      yes
    # i7     T      unparsed    violation   no       yes   flip (no verdict = incorrect)
    # i8     F      safe        incomplete  yes      no    flip
    rows = [
        ("T", "violation", "violation"),
        ("T", "safe", "violation"),
        ("T", "violation", "violation"),
        ("F", "safe", "safe"),
        ("F", "violation", "safe"),
        ("F", "safe", "safe"),
        ("T", "unparsed", "violation"),
        ("F", "safe", "incomplete"),
    ]
    truths = "".join(t for t, _, _ in rows)
    a = outcomes(truths, [p for _, p, _ in rows])
    b = outcomes(truths, [p for _, _, p in rows])
    result = compare_runs(a, b)
    # A: tp = i1, i3 = 2; fn = i2; fp = i5; tn = i4, i6, i8 = 3; unparsed = i7.
    assert (result.a.tp, result.a.fn, result.a.fp, result.a.tn, result.a.unparsed) == (
        2,
        1,
        1,
        3,
        1,
    )
    # B: tp = i1, i2, i3, i7 = 4; tn = i4, i5, i6 = 3; unparsed = i8.
    assert (result.b.tp, result.b.fn, result.b.fp, result.b.tn, result.b.unparsed) == (
        4,
        0,
        0,
        3,
        1,
    )
    assert result.a.precision == pytest.approx(2 / 3)
    assert result.a.accuracy == pytest.approx(5 / 7)
    # kappa A: po = 5/7, pe = (3*3 + 4*4) / 49 = 25/49 -> (35 - 25) / (49 - 25) = 10/24.
    assert result.a.kappa == pytest.approx(5 / 12)
    assert result.b.kappa == pytest.approx(1.0)
    d = result.difference
    assert d["precision"] == pytest.approx(1 / 3)  # 1 - 2/3
    assert d["accuracy"] == pytest.approx(2 / 7)  # 1 - 5/7
    assert d["fpr"] == pytest.approx(-0.25)  # 0 - 1/4
    assert d["kappa"] == pytest.approx(7 / 12)  # 1 - 5/12
    assert (d["tp"], d["unparsed"], d["n"]) == (2, 0, 0)
    assert d["median_seconds"] is None  # no timings: undefined on both sides
    # Discordant: only A right = i8 (1); only B right = i2, i5, i7 (3).
    # McNemar n = 4: 2 * (C(4,0) + C(4,1)) / 16 = 2 * 5 / 16 = 0.625.
    assert (result.only_a_correct, result.only_b_correct) == (1, 3)
    assert result.mcnemar_p == pytest.approx(0.625)
    assert [(f.item, f.truth, f.a, f.b) for f in result.flips] == [
        ("i2", True, "safe", "violation"),
        ("i5", False, "violation", "safe"),
        ("i7", True, "unparsed", "violation"),
        ("i8", False, "safe", "incomplete"),
    ]
    data = result.to_json()
    assert data["mcnemar_p"] == pytest.approx(0.625)
    assert data["flips"][0] == {"item": "i2", "truth": "violation", "a": "safe", "b": "violation"}
    assert json.loads(json.dumps(data)) == data


def test_compare_matches_items_by_id_not_order() -> None:
    a = outcomes("TF", ["violation", "safe"])
    b = list(reversed(outcomes("TF", ["violation", "violation"])))
    result = compare_runs(a, b)
    assert [(f.item, f.a, f.b) for f in result.flips] == [("i2", "safe", "violation")]
    assert (result.only_a_correct, result.only_b_correct) == (1, 0)
    assert result.mcnemar_p == 1.0


def test_compare_identical_runs() -> None:
    run = outcomes("TF", ["violation", "safe"])
    result = compare_runs(run, run)
    assert result.flips == ()
    assert result.mcnemar_p == 1.0
    assert result.difference["f1"] == 0.0


def test_compare_refuses_different_sets() -> None:
    with pytest.raises(MetricsError, match="1 only in A, 0 only in B"):
        compare_runs(outcomes("TF", ["safe", "safe"]), outcomes("T", ["safe"]))
    with pytest.raises(MetricsError, match="appears twice"):
        twice = [Outcome("x", True, "safe"), Outcome("x", True, "safe")]
        compare_runs(twice, twice)
    with pytest.raises(MetricsError, match="different truth"):
        compare_runs([Outcome("x", True, "safe")], [Outcome("x", False, "safe")])
    with pytest.raises(MetricsError, match="Unknown prediction"):
        Outcome("x", True, "maybe")  # type: ignore[arg-type]
    with pytest.raises(MetricsError, match="Unknown figure"):
        compute_metrics([]).figure("speed")
