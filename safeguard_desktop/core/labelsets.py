"""Labelled sets for the policy workbench: texts with their true verdict, read from a file.

Shapes (``.gz`` files are decompressed first, whatever their inner shape):

* **JSON Lines** (``.jsonl``, ``.ndjson``) or a JSON list of objects (``.json``): the text
  from ``text_column`` or the first of ``text``, ``content``, ``prompt``, ``message``,
  ``body`` that any row has; the label from ``label_column`` or the first of LABEL_KEYS any
  row has. A row without the label (missing, null or empty) is *unknown*: left out and
  counted, as in OpenAI's moderation set where each category column (S, H, V, HR, SH, S3,
  H2, V2) is present only where it was labelled and the user picks the column.
* **CSV with a column mapping** (``.csv``, ``.tsv``): the delimiter is sniffed from the
  first lines (comma, semicolon, tab or pipe), a UTF-8 BOM is dropped, header names match
  case-insensitively. A column may also be named by its 1-based number; then the first row
  is a header unless its label cell already reads as a label (a file without a header).
* **CSV with section rows**, as OpenAI's spam golden set: a row whose first cell is filled
  and every other cell empty starts a section, its first cell the label of the items below
  it; an item row has a first cell (its number, kept in ``ref`` as "SP2#4") and the text in
  the second; every other column is ignored (in the golden set the tenth is a model's
  earlier output, not the truth), and so is any row whose first cell is empty (a title row,
  the summary block at the end). Detected when no column is chosen and the first row with
  a filled first cell is such a section row (and that cell is not a column name).

Label values, compared trimmed and case-insensitively: 1 / true / yes / violation /
invalid / unsafe mean a violation, 0 / false / no / safe / valid mean safe (numbers equal to
1 or 0, such as "1.0", too). A rule or tier id (SP2, H2.f, R1.1) follows the tier convention
of OpenAI's policy format, the one the verdict parser reads in answers: tier 0 ("SP0",
allowed content) is safe, any higher tier ("SP2", "SP3", "SP4") a violation; the id is also
kept as the item's category. Any other value needs ``positive``, the values that count as
violation (then every other value is safe, tier ids included, so ``positive`` also overrides
the tier rule: ``positive=("SP3", "SP4")`` makes SP2 safe); without it a LabelSetError
lists the values found. A policy whose tiers do not follow the convention (an "SP1" that is
allowed) is read right only with ``positive``.

Categories sit beside the binary truth: the tier id of the label, the ``categories`` or
``category`` field or column (a list, or text split at commas and semicolons), and any
``category_columns``: a column whose value reads as a violation adds its own name (the
moderation set's "S3": 1 adds "S3"), one holding other text adds that text.

Every problem (encoding, binary file, bad JSON line, missing columns, unknown labels, an
empty set) is a one-line LabelSetError saying what to do.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import stat
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safeguard_desktop.core.content import ContentError, first_surrogate, loads_json
from safeguard_desktop.core.content import visible_surrogates as _visible
from safeguard_desktop.core.importers import decode_text
from safeguard_desktop.core.vocabulary import RULE_ID

MAX_LABELSET_BYTES = 64 * 1024 * 1024  # decompressed size limit of one labelled set
TEXT_KEYS = ("text", "content", "prompt", "message", "body")
LABEL_KEYS = (
    "label",
    "labels",
    "truth",
    "ground_truth",
    "gold",
    "is_violation",
    "violation",
    "violates",
)
CATEGORY_KEYS = ("categories", "category")
REF_KEYS = ("id", "ref")
VIOLATION_VALUES = frozenset({"1", "true", "yes", "violation", "invalid", "unsafe"})
SAFE_VALUES = frozenset({"0", "false", "no", "safe", "valid"})
_TIER_ID = re.compile(RULE_ID)
_SHOWN_VALUES = 12  # distinct values an error message lists
_DELIMITERS = (",", ";", "\t", "|")

Shape = Literal["jsonl", "json", "csv", "sections"]


class LabelSetError(ContentError):
    """A labelled set that cannot be read; str() is one line saying what to do.

    ``values`` holds the distinct label values found when they were the problem, and
    ``columns`` the columns found when a column was missing, for a picker to offer.
    """

    def __init__(
        self, message: str, *, values: Sequence[str] = (), columns: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.values = tuple(values)
        self.columns = tuple(columns)


@dataclass(frozen=True)
class LabelledItem:
    """One example: its text, whether it truly violates, and its categories."""

    text: str
    truth: bool
    categories: tuple[str, ...] = ()
    ref: str | None = None
    line: int = 0  # the line (JSON Lines, CSV) or position (JSON list) it came from


@dataclass(frozen=True)
class LabelSetSummary:
    """What was read: the counts a user checks before trusting the set."""

    name: str
    shape: Shape
    text_column: str | None  # None for section rows (the second cell)
    label_column: str | None  # None for section rows (the section label)
    rows: int  # data rows read: items + left_out + no_text
    items: int
    violations: int
    left_out: int  # rows with an unknown label (missing, null or empty), not in the set
    no_text: int  # rows with a label but no text, not in the set
    ignored: int  # rows that are not data: header, section rows, a summary block
    label_values: tuple[tuple[str, int], ...]  # distinct raw label values and their rows
    positive: tuple[str, ...]  # the raw values read as a violation
    checksum: str  # labelset_checksum(items)

    @property
    def safe(self) -> int:
        return self.items - self.violations


@dataclass(frozen=True)
class LabelSet:
    items: tuple[LabelledItem, ...]
    summary: LabelSetSummary


@dataclass(frozen=True)
class _Row:
    line: int
    text: str | None
    label: str | None  # trimmed raw value; None when unknown
    categories: tuple[str, ...]
    ref: str | None


# --- label values --------------------------------------------------------------------------


def tier_number(code: str) -> int | None:
    """The tier of a rule id ("SP2.a" -> 2, "SP0" -> 0); None when ``code`` is not one."""
    code = code.strip()
    if not _TIER_ID.fullmatch(code):
        return None
    digits = re.search(r"(\d+)$", code.split(".", 1)[0])
    return int(digits.group(1)) if digits else None


def builtin_truth(value: str) -> bool | None:
    """Whether a label value means violation by the built-in rules; None when it is unknown."""
    text = value.strip().lower()
    if text in VIOLATION_VALUES:
        return True
    if text in SAFE_VALUES:
        return False
    try:
        number = float(text)
    except ValueError:
        number = None
    if number == 1:
        return True
    if number == 0:
        return False
    tier = tier_number(value)
    return None if tier is None else tier > 0


def _shown(values: Sequence[str]) -> str:
    head = ", ".join(repr(_visible(v)) for v in values[:_SHOWN_VALUES])
    more = len(values) - _SHOWN_VALUES
    return head + (f" and {more} more" if more > 0 else "")


def _truth_of(
    name: str, column: str, values: Sequence[str], positive: Sequence[str] | None
) -> dict[str, bool]:
    """Each distinct value's truth, or a LabelSetError listing the values found."""
    if positive is not None:
        wanted = {p.strip().lower() for p in positive if p.strip()}
        if not wanted:
            raise LabelSetError(
                f"{name}: no positive value given; name the values of the {column} that "
                "count as violation.",
                values=values,
            )
        truth = {v: v.lower() in wanted for v in values}
        if values and not any(truth.values()):
            raise LabelSetError(
                f"{name}: none of the values of the {column} ({_shown(values)}) is a positive "
                f"value ({', '.join(sorted(wanted))}); name the values that count as violation.",
                values=values,
            )
        return truth
    known = {v: builtin_truth(v) for v in values}
    if any(t is None for t in known.values()):
        raise LabelSetError(
            f"{name}: the values of the {column} ({_shown(values)}) are not all 1/0, "
            "true/false, yes/no, violation/safe, invalid/valid, unsafe/safe or tier ids like "
            "SP2; name the values that count as violation (--positive V,V).",
            values=values,
        )
    return {v: t is True for v, t in known.items()}


def _categories(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if isinstance(v, str | int) and str(v).strip())
    if isinstance(value, str):
        return tuple(p.strip() for p in re.split(r"[,;]", value) if p.strip())
    return ()


def _category_from_column(column: str, value: object) -> tuple[str, ...]:
    """A category column's contribution: its own name when it reads as a violation."""
    if value is None or isinstance(value, list):
        return _categories(value)
    raw = _raw_label(value)
    if raw is None:
        return ()
    truth = builtin_truth(raw)
    if truth is None:
        return _categories(raw)
    return (column,) if truth else ()


# --- the whole set -------------------------------------------------------------------------


def labelset_checksum(items: Iterable[LabelledItem]) -> str:
    """sha256 over the items in order: one canonical JSON line [text, truth, categories, ref]
    each (UTF-8, no spaces). The line numbers are not part of it."""
    digest = hashlib.sha256()
    for item in items:
        line = json.dumps(
            [item.text, item.truth, list(item.categories), item.ref],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _build(
    rows: Sequence[_Row],
    *,
    name: str,
    shape: Shape,
    text_column: str | None,
    label_column: str | None,
    positive: Sequence[str] | None,
    ignored: int,
) -> LabelSet:
    counts = Counter(r.label for r in rows if r.label is not None and r.text)
    values = list(counts)
    column = f"label column {label_column!r}" if label_column else "section rows"
    truth = _truth_of(name, column, values, positive)
    items: list[LabelledItem] = []
    left_out = no_text = 0
    for row in rows:
        if not row.text:
            no_text += row.label is not None
            left_out += row.label is None
            continue
        if row.label is None:
            left_out += 1
            continue
        tier = (row.label,) if tier_number(row.label) is not None else ()
        categories = tuple(dict.fromkeys(tier + row.categories))
        items.append(LabelledItem(row.text, truth[row.label], categories, row.ref, row.line))
    if not items:
        raise LabelSetError(
            f"{name} has no labelled items ({len(rows)} rows read, {left_out} with no label, "
            f"{no_text} without text); choose a file or a label column that is filled in."
        )
    violations = sum(item.truth for item in items)
    return LabelSet(
        items=tuple(items),
        summary=LabelSetSummary(
            name=name,
            shape=shape,
            text_column=text_column,
            label_column=label_column,
            rows=len(rows),
            items=len(items),
            violations=violations,
            left_out=left_out,
            no_text=no_text,
            ignored=ignored,
            label_values=tuple(counts.items()),
            positive=tuple(v for v in values if truth[v]),
            checksum=labelset_checksum(items),
        ),
    )


def _check_text(text: str, where: str) -> None:
    index = first_surrogate(text)
    if index is not None:
        raise LabelSetError(
            f"{where} holds an invalid character ({_visible(text[index])}, a lone surrogate); "
            "fix or remove that escape and try again."
        )


# --- bytes to text -------------------------------------------------------------------------


def _gunzip(data: bytes, name: str, max_bytes: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            out = fh.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise LabelSetError(
            f"{name} is not a readable gzip file ({e}); decompress it and check the result."
        ) from None
    if len(out) > max_bytes:
        raise LabelSetError(
            f"{name} is over {max_bytes // 2**20} MB once decompressed; split it into smaller sets."
        )
    return out


def _text(data: bytes, name: str, max_bytes: int) -> tuple[str, str]:
    """The decoded text and the name of the inner file (without .gz)."""
    if data.startswith(b"\x1f\x8b"):
        data = _gunzip(data, name, max_bytes)
        if name.lower().endswith(".gz"):
            name = name[:-3]
    elif len(data) > max_bytes:
        raise LabelSetError(f"{name} is over {max_bytes // 2**20} MB; split it into smaller sets.")
    if not data.strip():
        raise LabelSetError(f"{name} is empty; choose a file that holds labelled examples.")
    try:
        text = decode_text(data, name)
    except ContentError as e:
        raise LabelSetError(str(e)) from None
    if not text.strip():
        raise LabelSetError(f"{name} is empty; choose a file that holds labelled examples.")
    return text, name


def _shape(text: str, name: str) -> Shape:
    ext = Path(name).suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json":
        return "json"
    if ext in (".csv", ".tsv"):
        return "csv"
    first = text.lstrip()[:1]
    return "jsonl" if first == "{" else "json" if first == "[" else "csv"


# --- JSON ----------------------------------------------------------------------------------


def _json_objects(text: str, name: str, shape: Shape) -> list[tuple[int, Mapping[str, object]]]:
    if shape == "json":
        try:
            value = loads_json(text, name)
        except json.JSONDecodeError as e:
            raise LabelSetError(
                f"{name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                "fix it there."
            ) from None
        except ContentError as e:
            raise LabelSetError(str(e)) from None
        if not isinstance(value, list):
            raise LabelSetError(
                f"{name} is not a list of objects; give a JSON list like "
                '[{"text": ..., "label": ...}] or one object per line (.jsonl).'
            )
        numbered: Iterable[tuple[int, object]] = enumerate(value, start=1)
        unit = "item"
    else:
        numbered = _json_lines(text, name)
        unit = "line"
    objects = []
    for number, obj in numbered:
        if not isinstance(obj, Mapping):
            raise LabelSetError(
                f"{name} {unit} {number} is a {type(obj).__name__}, not an object; "
                'give each example as {"text": ..., "label": ...}.'
            )
        objects.append((number, obj))
    return objects


def _json_lines(text: str, name: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            yield number, loads_json(line, where)
        except json.JSONDecodeError as e:
            raise LabelSetError(
                f"{where} is not valid JSON (column {e.colno}: {e.msg}); fix or remove that line."
            ) from None
        except ContentError as e:
            raise LabelSetError(str(e)) from None


def _raw_label(value: object) -> str | None:
    """A label value as trimmed text; None when unknown (missing, null, empty)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value).strip() or None
    return None


def _pick(
    wanted: str | None, defaults: Sequence[str], columns: Sequence[str], what: str, name: str
) -> str:
    if wanted is not None:
        if wanted in columns:
            return wanted
        folded = [c for c in columns if c.strip().lower() == wanted.strip().lower()]
        if len(folded) == 1:
            return folded[0]
        raise LabelSetError(
            f"{name} has no column {wanted!r} (columns: {_columns_shown(columns)}); "
            "pick one of those.",
            columns=columns,
        )
    found = next((k for k in defaults if k in columns), None)
    if found is None:
        raise LabelSetError(
            f"{name} has no {what} column (columns: {_columns_shown(columns)}); "
            f"choose the column that holds the {what}.",
            columns=columns,
        )
    return found


def _columns_shown(columns: Sequence[str]) -> str:
    return ", ".join(_visible(c) for c in columns if c.strip()) or "none"


def _from_json(
    text: str,
    name: str,
    shape: Shape,
    text_column: str | None,
    label_column: str | None,
    positive: Sequence[str] | None,
    category_columns: Sequence[str],
) -> LabelSet:
    objects = _json_objects(text, name, shape)
    if not objects:
        raise LabelSetError(f"{name} has no examples; add one object per line.")
    columns = list(dict.fromkeys(str(k) for _, obj in objects for k in obj))
    text_key = _pick(text_column, TEXT_KEYS, columns, "text", name)
    label_key = _pick(label_column, LABEL_KEYS, columns, "label", name)
    category_keys = [_pick(c, (), columns, "category", name) for c in category_columns]
    named = [k for k in CATEGORY_KEYS if k in columns and k != label_key]
    unit = "item" if shape == "json" else "line"
    rows = []
    for number, obj in objects:
        where = f"{name} {unit} {number}"
        value = obj.get(text_key)
        if value is not None and not isinstance(value, str):
            raise LabelSetError(
                f"{where}: {text_key!r} is a {type(value).__name__}, not text; "
                "give the text as a string or choose another text column."
            )
        if value is not None:
            _check_text(value, where)
        raw = obj.get(label_key)
        if isinstance(raw, list | dict):
            raise LabelSetError(
                f"{where}: the label {label_key!r} is a {type(raw).__name__}; "
                "give one label value per example, or choose another label column."
            )
        label = _raw_label(raw)
        categories = tuple(c for k in named for c in _categories(obj.get(k)))
        for column in category_keys:
            categories += _category_from_column(column, obj.get(column))
        ref = next((obj[k] for k in REF_KEYS if isinstance(obj.get(k), str | int)), None)
        ref = None if ref is None else str(ref)
        for part in (label, ref, *categories):
            _check_text(part or "", where)
        rows.append(
            _Row(
                line=number,
                text=value if value and value.strip() else None,
                label=label,
                categories=categories,
                ref=ref,
            )
        )
    return _build(
        rows,
        name=name,
        shape=shape,
        text_column=text_key,
        label_column=label_key,
        positive=positive,
        ignored=0,
    )


# --- CSV -----------------------------------------------------------------------------------


def _delimiter(text: str) -> str:
    """The delimiter found as often on each of the first lines, the most often; else ','."""
    lines = [line for line in text.split("\n")[:20] if line.strip()][:5]

    def score(d: str) -> int:
        return min(line.count(d) for line in lines) if lines else 0

    best = max(_DELIMITERS, key=score)
    if score(best) > 0:
        return best
    header = lines[0] if lines else ""
    return max(_DELIMITERS, key=header.count) if any(d in header for d in _DELIMITERS) else ","


def _csv_rows(text: str, name: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on."""
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
    rows: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as e:
            raise LabelSetError(
                f"{name} line {start} cannot be read as CSV ({e}); "
                "check the quoting of the row starting there."
            ) from None
        if any(cell.strip() for cell in row):
            rows.append((start, row))


def _cell(row: Sequence[str], col: int | None) -> str:
    return row[col] if col is not None and col < len(row) else ""


def _is_section_row(row: Sequence[str]) -> bool:
    return bool(row and row[0].strip()) and not any(c.strip() for c in row[1:])


def _is_sections(rows: Sequence[tuple[int, list[str]]]) -> bool:
    """The first row with a filled first cell is a section row (not a column name)."""
    first = next((row for _, row in rows if row and row[0].strip()), None)
    if first is None or not _is_section_row(first):
        return False
    if first[0].strip().lower() in TEXT_KEYS + LABEL_KEYS + CATEGORY_KEYS + REF_KEYS:
        return False
    return any(sum(1 for c in row if c.strip()) >= 2 for _, row in rows)


def _from_sections(
    rows: Sequence[tuple[int, list[str]]], name: str, positive: Sequence[str] | None
) -> LabelSet:
    section = ""  # _is_sections: a section row comes before any item row
    found: list[_Row] = []
    ignored = 0
    for line, row in rows:
        first = row[0].strip() if row else ""
        if not first:
            ignored += 1  # a title row or the summary block: no item number, no item
            continue
        if _is_section_row(row):
            section = first
            ignored += 1
            continue
        text = _cell(row, 1)
        _check_text(text, f"{name} line {line}")
        found.append(
            _Row(
                line=line,
                text=text if text.strip() else None,
                label=section,
                categories=(),
                ref=f"{section}#{first}",
            )
        )
    return _build(
        found,
        name=name,
        shape="sections",
        text_column=None,
        label_column=None,
        positive=positive,
        ignored=ignored,
    )


def _column_index(
    wanted: str | None, defaults: Sequence[str], names: Sequence[str], what: str, name: str
) -> int:
    """A CSV column by header name (any case), by 1-based number, or the first default."""
    lowered = [n.lower() for n in names]
    if wanted is None:
        found = next((k for k in defaults if k in lowered), None)
        if found is None:
            raise LabelSetError(
                f"{name} has no {what} column (columns: {_columns_shown(names)}); "
                f"name it in the header row or choose the column that holds the {what}.",
                columns=names,
            )
        return lowered.index(found)
    key = wanted.strip().lower()
    if key in lowered:
        return lowered.index(key)
    if key.isdigit() and 1 <= int(key) <= len(names):
        return int(key) - 1
    raise LabelSetError(
        f"{name} has no column {wanted!r} (columns: {_columns_shown(names)}); pick one of "
        f"those or a column number from 1 to {len(names)}.",
        columns=names,
    )


def _from_csv(
    rows: Sequence[tuple[int, list[str]]],
    name: str,
    text_column: str | None,
    label_column: str | None,
    positive: Sequence[str] | None,
    category_columns: Sequence[str],
) -> LabelSet:
    if not rows:
        raise LabelSetError(f"{name} holds no rows; choose a file that holds labelled examples.")
    header_line, header = rows[0]
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]
    text_col = _column_index(text_column, TEXT_KEYS, names, "text", name)
    label_col = _column_index(label_column, LABEL_KEYS, names, "label", name)
    extra = [_column_index(c, (), names, "category", name) for c in category_columns]
    # The label column named by number: the first row is data when its label cell reads as
    # a label (a file without a header row).
    by_number = label_column is not None and lowered[label_col] != label_column.strip().lower()
    first_label = _cell(header, label_col).strip()
    wanted = {p.strip().lower() for p in positive or ()}
    header_is_data = by_number and (
        builtin_truth(first_label) is not None or first_label.lower() in wanted
    )
    if header_is_data:
        names = lowered = [""] * len(header)

    def column(col: int) -> str:
        return names[col] or str(col + 1)

    named = [i for i, k in enumerate(lowered) if k in CATEGORY_KEYS and i != label_col]
    ref_col = next((lowered.index(k) for k in REF_KEYS if k in lowered), None)
    data = rows if header_is_data else rows[1:]
    found = []
    for line, row in data:
        text = _cell(row, text_col)
        _check_text(text, f"{name} line {line}")
        categories = tuple(c for col in named for c in _categories(_cell(row, col)))
        for col in extra:
            categories += _category_from_column(column(col), _cell(row, col))
        found.append(
            _Row(
                line=line,
                text=text if text.strip() else None,
                label=_cell(row, label_col).strip() or None,
                categories=categories,
                ref=_cell(row, ref_col).strip() or None,
            )
        )
    if not found:
        raise LabelSetError(
            f"{name} has a header row (line {header_line}) and no examples; add rows below it."
        )
    return _build(
        found,
        name=name,
        shape="csv",
        text_column=column(text_col),
        label_column=column(label_col),
        positive=positive,
        ignored=0 if header_is_data else 1,
    )


# --- entry points --------------------------------------------------------------------------


def parse_labelset(
    data: bytes,
    name: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    positive: Sequence[str] | None = None,
    category_columns: Sequence[str] = (),
    max_bytes: int = MAX_LABELSET_BYTES,
) -> LabelSet:
    """A labelled set from a file's bytes; ``name`` (its file name) gives the shape.

    ``text_column`` / ``label_column`` choose the columns (by name, or by 1-based number in
    a CSV); ``positive`` names the label values that count as violation, every other value
    then being safe; ``category_columns`` add categories beside the truth.
    """
    name = _visible(Path(name).name)
    text, name = _text(data, name, max_bytes)
    shape = _shape(text, name)
    if shape in ("jsonl", "json"):
        return _from_json(text, name, shape, text_column, label_column, positive, category_columns)
    rows = _csv_rows(text, name)
    if text_column is None and label_column is None and _is_sections(rows):
        return _from_sections(rows, name, positive)
    return _from_csv(rows, name, text_column, label_column, positive, category_columns)


def read_labelset(
    path: Path | str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    positive: Sequence[str] | None = None,
    category_columns: Sequence[str] = (),
    max_bytes: int = MAX_LABELSET_BYTES,
) -> LabelSet:
    """A labelled set from a file on disk (see parse_labelset), refusing oversized files."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise LabelSetError(f"{p} is not a regular file; choose a labelled set file.")
        if st.st_size > max_bytes:
            raise LabelSetError(f"{p} is over {max_bytes // 2**20} MB; split it into smaller sets.")
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise LabelSetError(f"File not found: {p}; check the path and try again.") from None
    except OSError as e:
        raise LabelSetError(f"Cannot read {p} ({e.strerror}); check that it is readable.") from None
    return parse_labelset(
        data,
        p.name,
        text_column=text_column,
        label_column=label_column,
        positive=positive,
        category_columns=category_columns,
        max_bytes=max_bytes,
    )
