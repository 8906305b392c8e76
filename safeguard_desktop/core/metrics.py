"""How well a policy does on a labelled set, and whether one version beats another.

Pure functions over the outcome of each item (its truth and the verdict the model gave),
for the policy workbench: confusion counts, precision, recall, F1, accuracy, false-positive
rate and Cohen's kappa with 95% Wilson intervals, per-category recall against targets,
median time and tokens per item, and the comparison of two runs with an exact McNemar test.

An item with no decision (an ``unparsed`` or ``incomplete`` answer, or a ``failed`` review)
is never taken as safe: it is counted under ``unparsed`` (with a breakdown by label) and
left out of TP/FP/TN/FN, so every rate is over the *decided* items, ``tp + fp + tn + fn``,
and ``n`` counts them all. When two runs are compared, though, such an item counts as
*incorrect*: a policy that leaves an item without a verdict did not get it right, so a
version that makes the model fail more often cannot look better for it.

A figure that is undefined (precision with no violation predicted, a rate over nothing)
is None, never 0 or NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Prediction = Literal["violation", "safe", "unparsed", "incomplete", "failed"]
PREDICTIONS: tuple[Prediction, ...] = ("violation", "safe", "unparsed", "incomplete", "failed")
# The predictions that carry no decision, counted on their own under "unparsed".
UNDECIDED: tuple[Prediction, ...] = ("unparsed", "incomplete", "failed")

# The two-sided 95% normal quantile, NormalDist().inv_cdf(0.975).
Z95 = 1.959963984540054

# The figures compared side by side (each difference is b - a).
COMPARED = (
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
    "median_seconds",
    "median_tokens",
)

Interval = tuple[float, float]


class MetricsError(ValueError):
    """Outcomes that cannot be measured or compared; the message says what to do."""


def _prediction(value: str) -> Prediction:
    if value not in PREDICTIONS:
        raise MetricsError(f"Unknown prediction {value!r}; use one of {', '.join(PREDICTIONS)}.")
    return value


@dataclass(frozen=True)
class Outcome:
    """One item of an evaluation run: its truth, the model's verdict and what it cost."""

    item: str
    truth: bool
    predicted: Prediction
    categories: tuple[str, ...] = ()
    seconds: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        _prediction(self.predicted)

    @property
    def correct(self) -> bool:
        """The verdict matches the truth; an item without a decision is never correct."""
        if self.predicted not in ("violation", "safe"):
            return False
        return (self.predicted == "violation") == self.truth


# --- counts and rates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Confusion:
    """Confusion counts; items without a decision are in ``undecided``, never in the four."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    undecided: Mapping[str, int] = field(default_factory=dict, hash=False)  # label -> count

    @property
    def unparsed(self) -> int:
        """Items with no decision: unparsed, incomplete and failed together."""
        return sum(self.undecided.values())

    @property
    def decided(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def n(self) -> int:
        return self.decided + self.unparsed


def count_confusion(pairs: Iterable[tuple[bool, str]]) -> Confusion:
    """Confusion counts from (truth, predicted label) pairs; a violation is the positive."""
    tp = fp = tn = fn = 0
    undecided: dict[str, int] = dict.fromkeys(UNDECIDED, 0)
    for truth, label in pairs:
        predicted = _prediction(label)
        if predicted == "violation":
            tp, fp = (tp + 1, fp) if truth else (tp, fp + 1)
        elif predicted == "safe":
            fn, tn = (fn + 1, tn) if truth else (fn, tn + 1)
        else:
            undecided[predicted] += 1
    return Confusion(tp=tp, fp=fp, tn=tn, fn=fn, undecided=undecided)


def _ratio(k: int, n: int) -> float | None:
    return k / n if n else None


def wilson_interval(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of ``successes`` out of ``n``; None when n is 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise MetricsError(f"{successes} successes out of {n} is not a proportion.")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 or n successes one bound is exact: no rounding residue such as 1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def cohen_kappa(tp: int, fp: int, tn: int, fn: int) -> float | None:
    """Cohen's kappa between truth and verdict; None with no items or chance agreement 1.

    kappa = (po - pe) / (1 - pe), with po the observed agreement (accuracy) and pe the
    agreement expected by chance from the two margins.
    """
    n = tp + fp + tn + fn
    if n == 0:
        return None
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    if pe >= 1:
        return None
    return (po - pe) / (1 - pe)


def _median(values: Iterable[float | int | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True)
class CategoryRecall:
    """Recall among the truly violating items of one category, against an optional target."""

    category: str
    n: int  # truly violating items of the category, decided or not
    caught: int  # predicted violation
    missed: int  # predicted safe
    unparsed: int  # no decision
    recall: float | None  # caught / (caught + missed)
    ci: Interval | None
    target: float | None = None
    met: bool | None = None  # recall >= target; None without a target or a recall

    def to_json(self) -> dict[str, object]:
        return {
            "n": self.n,
            "caught": self.caught,
            "missed": self.missed,
            "unparsed": self.unparsed,
            "recall": self.recall,
            "recall_ci": _interval_json(self.ci),
            "target": self.target,
            "met": self.met,
        }


def category_recall(
    outcomes: Iterable[Outcome],
    targets: Mapping[str, float] | None = None,
    z: float = Z95,
) -> tuple[CategoryRecall, ...]:
    """Recall per category among truly violating items, sorted by category.

    A category is reported when a truly violating item carries it, or when it has a target
    (then with n 0 and recall None). Categories are matched as written: "H2.f" is not
    counted under "H2". Safe items' categories (such as "SP0") count towards nothing.
    """
    targets = dict(targets or {})
    for name, wanted in targets.items():
        if not 0 <= wanted <= 1:
            raise MetricsError(
                f"The recall target for {name} is {wanted}; give it as a share between 0 and 1."
            )
    counts: dict[str, list[int]] = {name: [0, 0, 0] for name in targets}
    for outcome in outcomes:
        if not outcome.truth:
            continue
        for category in dict.fromkeys(outcome.categories):
            row = counts.setdefault(category, [0, 0, 0])
            if outcome.predicted == "violation":
                row[0] += 1
            elif outcome.predicted == "safe":
                row[1] += 1
            else:
                row[2] += 1
    result = []
    for category in sorted(counts):
        caught, missed, unparsed = counts[category]
        recall = _ratio(caught, caught + missed)
        target = targets.get(category)
        met = None if target is None or recall is None else recall >= target
        result.append(
            CategoryRecall(
                category=category,
                n=caught + missed + unparsed,
                caught=caught,
                missed=missed,
                unparsed=unparsed,
                recall=recall,
                ci=wilson_interval(caught, caught + missed, z),
                target=target,
                met=met,
            )
        )
    return tuple(result)


def _interval_json(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


@dataclass(frozen=True)
class Metrics:
    """The figures of one run. Rates are over decided items; None when undefined."""

    confusion: Confusion
    precision: float | None
    recall: float | None
    f1: float | None
    accuracy: float | None
    fpr: float | None
    kappa: float | None
    precision_ci: Interval | None
    recall_ci: Interval | None
    accuracy_ci: Interval | None
    fpr_ci: Interval | None
    categories: tuple[CategoryRecall, ...] = ()
    median_seconds: float | None = None
    median_tokens: float | None = None

    @property
    def n(self) -> int:
        return self.confusion.n

    @property
    def tp(self) -> int:
        return self.confusion.tp

    @property
    def fp(self) -> int:
        return self.confusion.fp

    @property
    def tn(self) -> int:
        return self.confusion.tn

    @property
    def fn(self) -> int:
        return self.confusion.fn

    @property
    def unparsed(self) -> int:
        return self.confusion.unparsed

    def figure(self, name: str) -> float | int | None:
        """One figure by its JSON key (one of COMPARED)."""
        if name not in COMPARED:
            raise MetricsError(f"Unknown figure {name!r}; use one of {', '.join(COMPARED)}.")
        value: float | int | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, object]:
        """``n, tp, fp, tn, fn, unparsed, precision, recall, f1, accuracy, fpr, kappa`` first,
        then the intervals (``[lo, hi]`` or null), the breakdown of ``unparsed``, the number
        of decided items, the medians and the per-category recall."""
        return {
            "n": self.n,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "unparsed": self.unparsed,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "fpr": self.fpr,
            "kappa": self.kappa,
            "precision_ci": _interval_json(self.precision_ci),
            "recall_ci": _interval_json(self.recall_ci),
            "accuracy_ci": _interval_json(self.accuracy_ci),
            "fpr_ci": _interval_json(self.fpr_ci),
            "decided": self.confusion.decided,
            "unparsed_by": {k: self.confusion.undecided.get(k, 0) for k in UNDECIDED},
            "median_seconds": self.median_seconds,
            "median_tokens": self.median_tokens,
            "categories": {c.category: c.to_json() for c in self.categories},
        }


def metrics_from_confusion(
    confusion: Confusion,
    *,
    categories: tuple[CategoryRecall, ...] = (),
    median_seconds: float | None = None,
    median_tokens: float | None = None,
    z: float = Z95,
) -> Metrics:
    """The rates of a confusion matrix, each proportion with its Wilson interval.

    F1 is 2TP / (2TP + FP + FN): 0 when there are positives but none is caught, None only
    when neither the truth nor the verdicts hold a violation.
    """
    tp, fp, tn, fn = confusion.tp, confusion.fp, confusion.tn, confusion.fn
    decided = confusion.decided
    return Metrics(
        confusion=confusion,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        accuracy=_ratio(tp + tn, decided),
        fpr=_ratio(fp, fp + tn),
        kappa=cohen_kappa(tp, fp, tn, fn),
        precision_ci=wilson_interval(tp, tp + fp, z),
        recall_ci=wilson_interval(tp, tp + fn, z),
        accuracy_ci=wilson_interval(tp + tn, decided, z),
        fpr_ci=wilson_interval(fp, fp + tn, z),
        categories=categories,
        median_seconds=median_seconds,
        median_tokens=median_tokens,
    )


def compute_metrics(
    outcomes: Sequence[Outcome],
    *,
    targets: Mapping[str, float] | None = None,
    z: float = Z95,
) -> Metrics:
    """Every figure of a run from its outcomes; ``targets`` are recall targets per category.

    The medians are over the items that have a time (or a token count), decided or not.
    """
    return metrics_from_confusion(
        count_confusion((o.truth, o.predicted) for o in outcomes),
        categories=category_recall(outcomes, targets, z),
        median_seconds=_median(o.seconds for o in outcomes),
        median_tokens=_median(o.tokens for o in outcomes),
        z=z,
    )


# --- comparing two runs --------------------------------------------------------------------


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    A binomial test of min(b, c) successes in n = b + c trials at 1/2:
    p = min(1, 2 * sum_{i <= min(b, c)} C(n, i) / 2^n), and p = 1 when n = 0.
    """
    if b < 0 or c < 0:
        raise MetricsError(f"Discordant counts must not be negative (got {b} and {c}).")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, tail / (1 << (n - 1)))  # 2 * tail / 2^n


@dataclass(frozen=True)
class Flip:
    """An item whose verdict differs between run A and run B."""

    item: str
    truth: bool
    a: Prediction
    b: Prediction

    def to_json(self) -> dict[str, object]:
        """Truth as the verdict label it should have been, so it reads beside a and b."""
        return {
            "item": self.item,
            "truth": "violation" if self.truth else "safe",
            "a": self.a,
            "b": self.b,
        }


@dataclass(frozen=True)
class Comparison:
    """Two runs on the same items: figures, differences, McNemar and the flips."""

    a: Metrics
    b: Metrics
    difference: Mapping[str, float | None]  # b - a; None when either side is None
    only_a_correct: int  # items A got right and B did not (one discordant cell)
    only_b_correct: int  # items B got right and A did not (the other)
    mcnemar_p: float
    flips: tuple[Flip, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "difference": dict(self.difference),
            "only_a_correct": self.only_a_correct,
            "only_b_correct": self.only_b_correct,
            "mcnemar_p": self.mcnemar_p,
            "flips": [flip.to_json() for flip in self.flips],
        }


def _by_item(outcomes: Sequence[Outcome], run: str) -> dict[str, Outcome]:
    found: dict[str, Outcome] = {}
    for outcome in outcomes:
        if outcome.item in found:
            raise MetricsError(
                f"Item {outcome.item!r} appears twice in run {run}; "
                "give every item of a run its own id."
            )
        found[outcome.item] = outcome
    return found


def _difference(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or b is None else b - a


def compare_runs(
    a: Sequence[Outcome],
    b: Sequence[Outcome],
    *,
    targets: Mapping[str, float] | None = None,
    z: float = Z95,
) -> Comparison:
    """Compare run B with run A on the same items (matched by ``item``).

    McNemar is over correctness against the truth, an item without a decision counting as
    incorrect; the flips are the items whose verdict labels differ (in A's order), which
    includes a decision in one run and none in the other.
    """
    in_a, in_b = _by_item(a, "A"), _by_item(b, "B")
    if in_a.keys() != in_b.keys():
        only_a, only_b = len(in_a.keys() - in_b.keys()), len(in_b.keys() - in_a.keys())
        raise MetricsError(
            f"The runs are not on the same items ({only_a} only in A, {only_b} only in B); "
            "compare two runs of the same labelled set."
        )
    for item, first in in_a.items():
        if first.truth != in_b[item].truth:
            raise MetricsError(
                f"Item {item!r} has a different truth in the two runs; "
                "compare two runs of the same labelled set."
            )
    metrics_a = compute_metrics(a, targets=targets, z=z)
    metrics_b = compute_metrics(b, targets=targets, z=z)
    only_a = sum(1 for i, o in in_a.items() if o.correct and not in_b[i].correct)
    only_b = sum(1 for i, o in in_a.items() if not o.correct and in_b[i].correct)
    flips = tuple(
        Flip(item=i, truth=o.truth, a=o.predicted, b=in_b[i].predicted)
        for i, o in in_a.items()
        if o.predicted != in_b[i].predicted
    )
    difference = {
        name: _difference(metrics_a.figure(name), metrics_b.figure(name)) for name in COMPARED
    }
    return Comparison(
        a=metrics_a,
        b=metrics_b,
        difference=difference,
        only_a_correct=only_a,
        only_b_correct=only_b,
        mcnemar_p=mcnemar_exact(only_a, only_b),
        flips=flips,
    )
