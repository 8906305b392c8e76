"""Labelled sets: every shape, the label rules, bad input, and the two shared real sets."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from safeguard_desktop.core.labelsets import (
    LabelledItem,
    LabelSetError,
    builtin_truth,
    labelset_checksum,
    parse_labelset,
    read_labelset,
    tier_number,
)

# /work/main/tests -> /work/shared/data in the development checkout; absent in CI's clone.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPAM_GOLDEN = SHARED / "spam-golden" / "golden_dataset.csv"
MODERATION = SHARED / "openai-moderation-1680" / "samples-1680.jsonl.gz"


def jsonl(*rows: object) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def error(data: bytes, name: str, **options: object) -> str:
    with pytest.raises(LabelSetError) as info:
        parse_labelset(data, name, **options)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- label values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        ("1", True),
        ("true", True),
        (" YES ", True),
        ("Violation", True),
        ("INVALID", True),
        ("unsafe", True),
        ("1.0", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("safe", False),
        ("VALID", False),
        ("0.0", False),
        ("SP0", False),  # tier 0: allowed content
        ("SP0.a", False),
        ("SP2", True),
        ("SP4", True),
        ("H2.f", True),
        ("R1.1", True),
        ("spam", None),
        ("2", None),
        ("nan", None),
        ("", None),
    ],
)
def test_builtin_truth(value: str, truth: bool | None) -> None:
    assert builtin_truth(value) is truth


def test_tier_number() -> None:
    assert (tier_number("SP2.a"), tier_number("SP0"), tier_number("H2")) == (2, 0, 2)
    assert tier_number("S") is None
    assert tier_number("valid") is None


# --- JSON Lines ----------------------------------------------------------------------------


def test_jsonl_with_builtin_labels() -> None:
    data = jsonl(
        {"id": "a", "text": "buy now", "label": 1},
        {"id": 7, "text": "hello", "label": False},
        {"text": "cheap pills", "label": "Violation"},
        {"text": "see you", "label": " safe "},
        {"text": "free $$$", "label": 1.0},
    )
    labelset = parse_labelset(data, "set.jsonl")
    assert [(i.text, i.truth, i.ref, i.line) for i in labelset.items] == [
        ("buy now", True, "a", 1),
        ("hello", False, "7", 2),
        ("cheap pills", True, None, 3),
        ("see you", False, None, 4),
        ("free $$$", True, None, 5),
    ]
    s = labelset.summary
    assert (s.shape, s.text_column, s.label_column) == ("jsonl", "text", "label")
    assert (s.rows, s.items, s.violations, s.safe, s.left_out, s.no_text) == (5, 5, 3, 2, 0, 0)
    assert s.label_values == (("1", 1), ("false", 1), ("Violation", 1), ("safe", 1), ("1.0", 1))
    assert s.positive == ("1", "Violation", "1.0")
    assert s.checksum == labelset_checksum(labelset.items)


def test_jsonl_text_and_label_fields_by_default_or_chosen() -> None:
    data = jsonl({"prompt": "p1", "is_violation": 0}, {"prompt": "p2", "is_violation": 1})
    labelset = parse_labelset(data, "set.jsonl")
    assert [(i.text, i.truth) for i in labelset.items] == [("p1", False), ("p2", True)]
    assert labelset.summary.text_column == "prompt"
    data = jsonl({"body": "x", "content": "c", "gold": "yes", "mine": "no"})
    labelset = parse_labelset(data, "set.jsonl", text_column="body", label_column="mine")
    assert [(i.text, i.truth) for i in labelset.items] == [("x", False)]
    assert parse_labelset(data, "set.jsonl").items[0].text == "c"  # content before body


def test_missing_label_is_left_out_and_counted() -> None:
    # The moderation set's shape: one column per category, absent where not labelled.
    data = jsonl(
        {"prompt": "a", "S": 1, "H": 0},
        {"prompt": "b", "H": 1},
        {"prompt": "c", "S": None, "H": 0},
        {"prompt": "d", "S": "", "H": 0},
        {"prompt": "e", "S": 0},
        {"prompt": "", "S": 1},
    )
    message = error(data, "mod.jsonl")
    assert "no label column (columns: prompt, S, H)" in message
    with pytest.raises(LabelSetError) as info:
        parse_labelset(data, "mod.jsonl")
    assert info.value.columns == ("prompt", "S", "H")
    labelset = parse_labelset(data, "mod.jsonl", label_column="S")
    assert [(i.text, i.truth) for i in labelset.items] == [("a", True), ("e", False)]
    s = labelset.summary
    # rows 6 = items 2 + left out 3 (b: missing, c: null, d: empty) + no text 1 (the last).
    assert (s.rows, s.items, s.left_out, s.no_text, s.violations) == (6, 2, 3, 1, 1)
    h = parse_labelset(data, "mod.jsonl", label_column="h")  # any case when unambiguous
    assert (h.summary.label_column, h.summary.items, h.summary.violations) == ("H", 4, 1)


def test_jsonl_gz_is_read_transparently() -> None:
    data = jsonl({"text": "x", "label": 1}, {"text": "y", "label": 0})
    plain = parse_labelset(data, "set.jsonl")
    packed = parse_labelset(gzip.compress(data), "set.jsonl.gz")
    assert packed.items == plain.items
    assert packed.summary.name == "set.jsonl"
    assert packed.summary.checksum == plain.summary.checksum
    # Recognised by its magic bytes whatever the name; the shape sniffed from the content.
    assert parse_labelset(gzip.compress(data), "download.bin").items == plain.items


def test_json_list() -> None:
    data = json.dumps([{"text": "a", "label": "unsafe"}, {"text": "b", "label": "valid"}])
    labelset = parse_labelset(data.encode(), "set.json")
    assert [(i.truth, i.line) for i in labelset.items] == [(True, 1), (False, 2)]
    assert labelset.summary.shape == "json"
    assert "not a list of objects" in error(b'{"text": "a"}', "set.json")
    assert "item 2 is a str, not an object" in error(b'[{"text": "a", "label": 1}, "b"]', "x.json")


def test_categories_beside_the_truth() -> None:
    data = jsonl(
        {"text": "a", "label": "H2.f"},
        {"text": "b", "label": 1, "categories": ["SP2", "SP3"]},
        {"text": "c", "label": 1, "category": "V2; HR"},
        {"text": "d", "label": "SP0"},
    )
    items = parse_labelset(data, "set.jsonl").items
    assert [(i.truth, i.categories) for i in items] == [
        (True, ("H2.f",)),
        (True, ("SP2", "SP3")),
        (True, ("V2", "HR")),
        (False, ("SP0",)),
    ]
    # Moderation style: a category column set to 1 adds its own name.
    data = jsonl(
        {"prompt": "x", "S": 1, "S3": 1},
        {"prompt": "y", "S": 1, "S3": 0},
        {"prompt": "z", "S": 0},
    )
    items = parse_labelset(data, "m.jsonl", label_column="S", category_columns=["S3"]).items
    assert [i.categories for i in items] == [("S3",), (), ()]
    assert "no column 'S9'" in error(data, "m.jsonl", label_column="S", category_columns=["S9"])


def test_unknown_label_values_need_positive() -> None:
    data = jsonl(
        {"text": "a", "label": "spam"},
        {"text": "b", "label": "ham"},
        {"text": "c", "label": "Spam"},
        {"text": "d", "label": "1"},
    )
    message = error(data, "set.jsonl")
    assert "label column 'label' ('spam', 'ham', 'Spam', '1') are not all" in message
    assert "--positive" in message
    with pytest.raises(LabelSetError) as info:
        parse_labelset(data, "set.jsonl")
    assert info.value.values == ("spam", "ham", "Spam", "1")
    labelset = parse_labelset(data, "set.jsonl", positive=["SPAM"])
    # Case-insensitive; every other value, even "1", is then safe.
    assert [i.truth for i in labelset.items] == [True, False, True, False]
    assert labelset.summary.positive == ("spam", "Spam")
    assert "is a positive value (spma)" in error(data, "set.jsonl", positive=["spma"])


def test_unknown_values_are_listed_capped() -> None:
    data = jsonl(*({"text": f"t{i}", "label": f"v{i}"} for i in range(20)))
    message = error(data, "set.jsonl")
    assert "'v11' and 8 more" in message
    assert "'v12'" not in message


def test_positive_overrides_the_tier_rule() -> None:
    data = jsonl(*({"text": f"t{c}", "label": c} for c in ("SP0", "SP2", "SP3", "SP4")))
    default = parse_labelset(data, "set.jsonl")
    assert [i.truth for i in default.items] == [False, True, True, True]
    strict = parse_labelset(data, "set.jsonl", positive=("SP3", "SP4"))
    assert [i.truth for i in strict.items] == [False, False, True, True]
    assert [i.categories for i in strict.items] == [("SP0",), ("SP2",), ("SP3",), ("SP4",)]


def test_bad_json_lines() -> None:
    data = b'{"text": "a", "label": 1}\n\n{"text": "b", "label": \n'
    assert error(data, "set.jsonl").startswith("set.jsonl line 3 is not valid JSON")
    assert "line 2 is a list, not an object" in error(b'{"text": "a"}\n[1]', "set.jsonl")
    assert "line 1: 'text' is a int, not text" in error(jsonl({"text": 5, "label": 1}), "s.jsonl")
    assert "line 1: the label 'label' is a list" in error(
        jsonl({"text": "x", "label": [1]}), "s.jsonl"
    )
    assert "lone surrogate" in error(b'{"text": "a\\ud800", "label": 1}', "s.jsonl")
    assert "lone surrogate" in error(b'{"text": "a", "label": "\\udc00"}', "s.jsonl")
    assert "lone surrogate" in error(b'{"text": "a", "label": 1, "id": "\\ud800"}', "s.jsonl")
    assert "no text column (columns: body2, label)" in error(
        jsonl({"body2": "x", "label": 1}), "s.jsonl"
    )
    assert "no column 'txt' (columns: text, label)" in error(
        jsonl({"text": "x", "label": 1}), "s.jsonl", text_column="txt"
    )


def test_shape_is_sniffed_without_a_known_extension() -> None:
    as_list = parse_labelset(b' [{"text": "a", "label": 1}]', "set.txt")
    assert as_list.summary.shape == "json"
    assert parse_labelset(b"text,label\na,1\n", "set").summary.shape == "csv"
    assert "not valid JSON (line 1, column 2" in error(b"[oops]", "set.json")
    assert "too deeply" in error(b"[" * 100_000, "set.json")
    assert "no positive value given" in error(
        jsonl({"text": "a", "label": "x"}), "s.jsonl", positive=[" "]
    )


# --- CSV with a column mapping -------------------------------------------------------------


def test_csv_with_header() -> None:
    data = b'ID,Text,Label\nr1,"hello, world",0\nr2,"buy\nnow",1\nr3,skip me,\n'
    labelset = parse_labelset(data, "set.csv")
    assert [(i.text, i.truth, i.ref, i.line) for i in labelset.items] == [
        ("hello, world", False, "r1", 2),
        ("buy\nnow", True, "r2", 3),  # a quoted multi-line cell keeps its starting line
    ]
    s = labelset.summary
    assert (s.shape, s.text_column, s.label_column) == ("csv", "Text", "Label")
    assert (s.rows, s.items, s.left_out, s.ignored) == (3, 2, 1, 1)


def test_csv_delimiter_bom_and_chosen_columns() -> None:
    data = "\ufeffmessage;verdict;note\nhi;valid;x\nbuy;INVALID;y\n".encode()
    labelset = parse_labelset(data, "set.csv", label_column="Verdict")
    assert [(i.text, i.truth) for i in labelset.items] == [("hi", False), ("buy", True)]
    assert labelset.summary.label_column == "verdict"
    tab = b"content\tgold\r\na\t1\r\nb\t0\r\n"
    assert [i.truth for i in parse_labelset(tab, "set.tsv").items] == [True, False]
    utf16 = codecs.BOM_UTF16_LE + "text,label\nhé,1\n".encode("utf-16-le")
    assert parse_labelset(utf16, "set.csv").items[0].text == "hé"


def test_csv_columns_by_number() -> None:
    headerless = b"hello,0\nbuy now,1\n"
    labelset = parse_labelset(headerless, "set.csv", text_column="1", label_column="2")
    assert [(i.text, i.truth, i.line) for i in labelset.items] == [
        ("hello", False, 1),
        ("buy now", True, 2),
    ]
    assert (labelset.summary.text_column, labelset.summary.ignored) == ("1", 0)
    with_header = b"words,gold standard\nhello,0\nbuy now,1\n"
    labelset = parse_labelset(with_header, "set.csv", text_column="1", label_column="2")
    assert [i.line for i in labelset.items] == [2, 3]
    assert labelset.summary.label_column == "gold standard"
    assert "no column '3'" in error(headerless, "set.csv", text_column="1", label_column="3")


def test_csv_categories_column() -> None:
    data = b'text,label,category\na,1,SP2\nb,0,\nc,1,"H2.f,H2.a"\n'
    items = parse_labelset(data, "set.csv").items
    assert [i.categories for i in items] == [("SP2",), (), ("H2.f", "H2.a")]


def test_csv_missing_columns_are_listed() -> None:
    assert "no label column (columns: text, score)" in error(b"text,score\na,1\n", "set.csv")
    assert "no text column (columns: body2, label)" in error(b"body2,label\na,1\n", "set.csv")
    assert "no examples" in error(b"text,label\n", "set.csv")
    # An unclosed quote swallows the rest of the file into one cell, over csv's field limit.
    unclosed = b'text,label\nok,1\n"a,1\n' + b"x" * 140_000
    assert "line 3 cannot be read as CSV" in error(unclosed, "set.csv")


# --- CSV with section rows -----------------------------------------------------------------


SECTIONS = (
    b",,,,model output,\r\n"
    b"VALID,,,,,\r\n"
    b"1,Hello Sam here is the report,,,INVALID,\r\n"
    b"2,Can you fix my order?,,,VALID,\r\n"
    b"INVALID ,,,,,\r\n"
    b"1,Buy gold rings here!,,,VALID,\r\n"
    b",,,,,\r\n"
    b",,,,Accuracy,0.5\r\n"
    b",,,,Recall,1"
)


def test_section_rows() -> None:
    labelset = parse_labelset(SECTIONS, "golden.csv")
    # The fifth column (a model's output) is not the truth: the section label is.
    assert [(i.text, i.truth, i.ref, i.line, i.categories) for i in labelset.items] == [
        ("Hello Sam here is the report", False, "VALID#1", 3, ()),
        ("Can you fix my order?", False, "VALID#2", 4, ()),
        ("Buy gold rings here!", True, "INVALID#1", 6, ()),
    ]
    s = labelset.summary
    assert (s.shape, s.text_column, s.label_column) == ("sections", None, None)
    # ignored: the title row, 2 section rows and 2 summary rows (the blank row is not a row).
    assert (s.rows, s.items, s.violations, s.ignored) == (3, 3, 1, 5)
    assert s.label_values == (("VALID", 2), ("INVALID", 1))


def test_section_rows_with_unknown_labels_need_positive() -> None:
    data = b"Ham,,\n1,hello,\nSpam,,\n1,buy,\n2,win,\n"
    assert "section rows ('Ham', 'Spam') are not all" in error(data, "s.csv")
    labelset = parse_labelset(data, "s.csv", positive=["spam"])
    assert [i.truth for i in labelset.items] == [False, True, True]


def test_section_rows_are_not_guessed_for_a_mapped_csv() -> None:
    # A header row is never a section row: it has more than one filled cell.
    assert parse_labelset(b"text,label\nSP2,1\n", "s.csv").summary.shape == "csv"
    # A lone column name in the first row is not a section label either.
    assert "no label column" in error(b"text,\nhello,\n", "s.csv")
    # Choosing a column means a mapped CSV: here the model's output (column 5) as the label.
    labelset = parse_labelset(SECTIONS, "golden.csv", text_column="2", label_column="5")
    assert labelset.summary.shape == "csv"
    assert [(i.text, i.truth) for i in labelset.items][:1] == [
        ("Hello Sam here is the report", True)
    ]
    # A file whose first item row comes before any section row is a mapped CSV.
    assert "no text column (columns: title)" in error(b",title,\n1,hello,\nSP0,,\n", "s.csv")


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"", "set.csv", "set.csv is empty"),
        (b"  \n\n", "set.jsonl", "set.jsonl is empty"),
        (b"text,label\n\xff\xfe\xfa,1\n", "set.csv", "not valid UTF-8 (byte 11, line 2)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "set.csv", "binary file (PNG)"),
        (b"text,label\x00\x00\x00", "set.csv", "binary file"),
        (b"\x1f\x8b\x08\x00garbage", "set.jsonl.gz", "not a readable gzip file"),
        (gzip.compress(b'{"text": "a", "label": 1}\n')[:-6], "s.jsonl.gz", "not a readable gzip"),
        (gzip.compress(b"\n\n"), "set.jsonl.gz", "set.jsonl is empty"),
        (b",,\n,,\n", "set.csv", "holds no rows"),
        (b"text,label\na,\nb,\n", "set.csv", "no labelled items (2 rows read, 2 with no label"),
    ],
)
def test_bad_input(data: bytes, name: str, expected: str) -> None:
    assert expected in error(data, name)


def test_size_limit_covers_the_decompressed_size() -> None:
    data = gzip.compress(b'{"text": "a", "label": 1}\n' * 1000)
    assert "once decompressed" in error(data, "s.jsonl.gz", max_bytes=1000)
    assert "over" in error(b"text,label\n" + b"a,1\n" * 500, "s.csv", max_bytes=1000)


def test_read_labelset_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LabelSetError, match="File not found"):
        read_labelset(tmp_path / "missing.csv")
    with pytest.raises(LabelSetError, match="not a regular file"):
        read_labelset(tmp_path)
    path = tmp_path / "ok.csv"
    path.write_bytes(b"text,label\na,1\n")
    assert read_labelset(path).items == (LabelledItem("a", True, (), None, 2),)
    assert isinstance(LabelSetError("x"), ValueError)


# --- checksum ------------------------------------------------------------------------------


def test_checksum_is_over_the_canonical_items() -> None:
    items = [LabelledItem("hé", True, ("SP2",), "r1", 5), LabelledItem("b", False)]
    # One compact JSON line per item, [text, truth, categories, ref], UTF-8, in order.
    canonical = '["hé",true,["SP2"],"r1"]\n["b",false,[],null]\n'.encode()
    assert labelset_checksum(items) == hashlib.sha256(canonical).hexdigest()
    moved = [LabelledItem("hé", True, ("SP2",), "r1", 99), LabelledItem("b", False, line=7)]
    assert labelset_checksum(moved) == labelset_checksum(items)  # lines are not content
    flipped = [items[0], LabelledItem("b", True)]
    assert labelset_checksum(flipped) != labelset_checksum(items)
    # The same examples from two shapes give the same checksum.
    a = parse_labelset(b"text,label\nx,1\ny,0\n", "a.csv")
    b = parse_labelset(
        jsonl({"text": "x", "label": "yes"}, {"text": "y", "label": "no"}), "b.jsonl"
    )
    assert a.summary.checksum == b.summary.checksum


# --- the shared real sets ------------------------------------------------------------------


@pytest.mark.skipif(
    not SPAM_GOLDEN.is_file(), reason=f"shared spam golden set not found at {SPAM_GOLDEN}"
)
def test_real_spam_golden_set() -> None:
    # Counted with: tr -d '\r' < golden_dataset.csv | awk -F, '$1 ~ /^SP/ && $2=="" {s=$1;
    # next} $1 ~ /^[0-9]+$/ {c[s]++} END {for (k in c) print k, c[k]}'
    # -> SP0 18, SP2 7, "SP3 " 8, SP4 7: 40 items; by the policy SP0 is VALID (safe), SP2,
    # SP3 and SP4 INVALID: 18 safe, 22 violations. 51 rows: a title row, 4 section rows,
    # 40 items, 2 blank rows and a 4-row summary block (Accuracy, Precision, Recall, F1).
    labelset = read_labelset(SPAM_GOLDEN)
    s = labelset.summary
    assert s.shape == "sections"
    assert (s.rows, s.items, s.violations, s.safe, s.left_out, s.no_text) == (40, 40, 22, 18, 0, 0)
    assert s.ignored == 9  # title + 4 sections + 4 summary rows
    assert s.label_values == (("SP0", 18), ("SP2", 7), ("SP3", 8), ("SP4", 7))
    assert s.positive == ("SP2", "SP3", "SP4")
    first, last = labelset.items[0], labelset.items[-1]
    assert (first.ref, first.line, first.truth, first.categories) == ("SP0#1", 3, False, ("SP0",))
    assert (last.ref, last.line, last.truth, last.categories) == ("SP4#7", 45, True, ("SP4",))
    # SP2 item 4: the model's earlier output (tenth column) says SP0; the truth is SP2.
    sp2_4 = next(i for i in labelset.items if i.ref == "SP2#4")
    assert (sp2_4.truth, sp2_4.categories) == (True, ("SP2",))
    assert all(i.text.strip() for i in labelset.items)
    assert len(s.checksum) == 64


@pytest.mark.skipif(
    not MODERATION.is_file(), reason=f"shared moderation set not found at {MODERATION}"
)
def test_real_moderation_set() -> None:
    # Counted with zcat samples-1680.jsonl.gz | wc -l -> 1680;
    # zcat ... | grep -c '"S": ' -> 984 and grep -c '"S": 1' -> 237;
    # zcat ... | grep -c '"H2": ' -> 761 and grep -c '"H2": 1' -> 41.
    message = ""
    try:
        read_labelset(MODERATION)
    except LabelSetError as e:
        message = str(e)
    assert "no label column (columns: prompt, S, H, V, HR, SH, S3, H2, V2)" in message
    s = read_labelset(MODERATION, label_column="S").summary
    assert (s.name, s.shape, s.text_column) == ("samples-1680.jsonl", "jsonl", "prompt")
    assert (s.rows, s.items, s.violations, s.left_out, s.no_text) == (1680, 984, 237, 696, 0)
    assert s.label_values == (("0", 747), ("1", 237))
    h2 = read_labelset(MODERATION, label_column="H2").summary
    assert (h2.items, h2.violations, h2.left_out) == (761, 41, 1680 - 761)
