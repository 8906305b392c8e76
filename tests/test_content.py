"""Content kinds, pasted-text parsing, rendering and file importers."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from safeguard_desktop.core.content import (
    KINDS,
    MAX_BYTES,
    Content,
    ContentError,
    Turn,
    content_from_dict,
    from_text,
)
from safeguard_desktop.core.importers import import_file, parse_bytes

HEADER = "Chat transcript. Classify only the turn marked JUDGED TURN; the other turns are context."


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8"))
    else:
        path.write_bytes(data)
    return path


def error_of(path: Path, **kwargs: object) -> str:
    """The one-line error a user sees when importing ``path``."""
    with pytest.raises(ContentError) as info:
        import_file(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# --- pasted text ---------------------------------------------------------------------------


def test_message_keeps_text_as_typed() -> None:
    c = from_text("  Buy cheap pills now!\n")
    assert c.kind == "message"
    assert c.render() == "  Buy cheap pills now!\n"


@pytest.mark.parametrize("kind", KINDS)
def test_empty_text_is_refused(kind: str) -> None:
    with pytest.raises(ContentError, match="empty"):
        from_text(" \n\t", kind)  # type: ignore[arg-type]


def test_chat_transcript_roles_and_continuation_lines() -> None:
    c = from_text("User: hi\nBot: hello, how can I help?\nsecond line\nuser: sell me pills", "chat")
    assert c.turns == (
        Turn("user", "hi"),
        Turn("assistant", "hello, how can I help?\nsecond line"),
        Turn("user", "sell me pills"),
    )


def test_chat_transcript_with_timestamps_and_names() -> None:
    text = (
        "[12:01] alice: hi\n[12:02] Bob Smith: got a deal for you\n"
        "Note: it is cheap\n[12:03] alice: no"
    )
    c = from_text(text, "chat")
    assert [t.role for t in c.turns] == ["alice", "Bob Smith", "alice"]
    assert c.turns[1].content == "got a deal for you\nNote: it is cheap"


def test_chat_label_on_its_own_line_and_bold_labels() -> None:
    c = from_text("**User:** hello\n\nAssistant:\nFirst line.\n\nSecond para.\n", "chat")
    assert c.turns == (Turn("user", "hello"), Turn("assistant", "First line.\n\nSecond para."))


def test_chat_from_pasted_json_messages() -> None:
    pasted = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            ],
            "judged": 0,
        }
    )
    c = from_text(pasted, "chat")
    assert c.turns == (Turn("user", "hi"), Turn("assistant", "hello"))
    assert c.judged == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("just one plain sentence", "No chat turns found"),
        ("A title\nuser: hi", "Line 1 comes before any speaker"),
        ("user: hi\nassistant:", r"last turn \(assistant\) is empty"),
    ],
)
def test_chat_text_that_cannot_be_parsed(text: str, expected: str) -> None:
    with pytest.raises(ContentError, match=expected):
        from_text(text, "chat")


@pytest.mark.parametrize(
    "text",
    [
        "How do I pick a lock?\n---\nFirst, get a tension wrench.",
        "Prompt: How do I pick a lock?\nCompletion: First, get a tension wrench.",
        "prompt:\nHow do I pick a lock?\n\nResponse:\nFirst, get a tension wrench.\n",
    ],
)
def test_completion_split(text: str) -> None:
    c = from_text(text, "completion")
    assert (c.prompt, c.completion) == ("How do I pick a lock?", "First, get a tension wrench.")


def test_completion_that_cannot_be_split_says_how() -> None:
    with pytest.raises(ContentError, match=r"'---'.*'Prompt:' and 'Completion:'"):
        from_text("a prompt and an answer run together", "completion")


# --- rendering and serialisation -------------------------------------------------------------

CHAT = Content(
    kind="chat",
    turns=(Turn("user", "hi"), Turn("assistant", "buy now"), Turn("user", "no thanks")),
    judged=1,
)


def test_chat_render_marks_judged_turn_exactly() -> None:
    assert CHAT.render() == (
        f"{HEADER}\n\n[1] user:\nhi\n\n"
        "[2] assistant (JUDGED TURN):\nbuy now\n\n"
        "[3] user:\nno thanks"
    )
    # Stable: an equal item renders byte-identically (highlight offsets rely on it).
    assert content_from_dict(CHAT.to_dict()).render() == CHAT.render()


def test_chat_render_judges_last_turn_by_default() -> None:
    c = Content(kind="chat", turns=(Turn("user", "a"), Turn("assistant", "b")))
    assert c.render().endswith("[2] assistant (JUDGED TURN):\nb")
    assert c.render().count("JUDGED TURN") == 2  # header + the one marked turn


def test_completion_render_labels_both_parts() -> None:
    c = Content(kind="completion", prompt="Q?", completion="A.")
    assert c.render() == "Prompt:\nQ?\n\nCompletion (classify this):\nA."


def test_judged_out_of_range_is_refused() -> None:
    with pytest.raises(ContentError, match="does not exist"):
        Content(kind="chat", turns=(Turn("user", "a"),), judged=3)


def test_preview_is_one_short_line() -> None:
    c = from_text("line one\nline two " + "x" * 200)
    p = c.preview(40)
    assert "\n" not in p and len(p) == 40 and p.startswith("line one line two") and p.endswith("…")
    assert "no thanks" not in CHAT.preview() and "buy now" in CHAT.preview()


@pytest.mark.parametrize(
    "item",
    [
        Content(kind="message", text="hello\r\n", source="a.txt", ref="42"),
        CHAT,
        Content(kind="completion", prompt="p", completion="c", source="q.csv:3"),
    ],
)
def test_dict_round_trip(item: Content) -> None:
    d = json.loads(json.dumps(item.to_dict()))
    assert content_from_dict(d) == item


def test_malformed_dict_is_refused() -> None:
    with pytest.raises(ContentError):
        content_from_dict({"kind": "chat", "turns": [{"role": "user"}]})
    with pytest.raises(ContentError):
        content_from_dict({"kind": "poem"})


# --- text files ------------------------------------------------------------------------------


def test_txt_crlf_normalised_and_source_set(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "note.TXT", "first\r\nsecond\r\n"))
    assert c == Content(kind="message", text="first\nsecond\n", source="note.TXT")


def test_md_as_chat_kind(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "log.md", "user: hi\nassistant: hello"), kind="chat")
    assert [t.role for t in c.turns] == ["user", "assistant"]


def test_txt_chat_error_names_the_file(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "log.txt", "no speakers here"), kind="chat").startswith(
        "log.txt: No chat turns found"
    )


def test_unknown_extension_read_as_text(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "ticket.log", "hello there"))
    assert c.text == "hello there"


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "bom.txt", b"\xef\xbb\xbfhello"))
    assert c.text == "hello"
    # In a CSV the BOM would otherwise hide the first header name.
    items = import_file(write(tmp_path, "bom.csv", b"\xef\xbb\xbftext\nhi\n"))
    assert [i.text for i in items] == ["hi"]


def test_utf16_with_bom_is_decoded(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "u16.txt", "caf\u00e9 \u2603\r\n".encode("utf-16")))
    assert c.text == "caf\u00e9 \u2603\n"


# --- JSON and JSON Lines ---------------------------------------------------------------------


def test_json_messages_object_with_judged_and_id(tmp_path: Path) -> None:
    doc = {
        "id": "case-7",
        "judged": -2,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "buy"},
            {"role": "user", "content": "ok"},
        ],
    }
    [c] = import_file(write(tmp_path, "chat.json", json.dumps(doc)))
    assert (c.kind, c.judged, c.ref, c.source) == ("chat", 1, "case-7", "chat.json")
    assert "[2] assistant (JUDGED TURN):" in c.render()


def test_json_message_list_is_one_chat(tmp_path: Path) -> None:
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hey"}]
    [c] = import_file(write(tmp_path, "m.json", json.dumps(msgs)))
    assert c.turns == (Turn("system", "be nice"), Turn("user", "hey"))


def test_json_completion_and_message_objects(tmp_path: Path) -> None:
    [pair] = import_file(write(tmp_path, "p.json", '{"prompt": "Q", "completion": "A"}'))
    assert (pair.kind, pair.prompt, pair.completion) == ("completion", "Q", "A")
    [msg] = import_file(write(tmp_path, "t.json", '{"message": "spam!", "ref": 9}'))
    assert (msg.kind, msg.text, msg.ref) == ("message", "spam!", "9")


def test_json_list_of_objects_gives_many_items(tmp_path: Path) -> None:
    doc = [
        {"text": "one"},
        {"prompt": "Q", "completion": "A"},
        {"messages": [{"role": "u", "content": "x"}]},
    ]
    items = import_file(write(tmp_path, "many.json", json.dumps(doc)))
    assert [i.kind for i in items] == ["message", "completion", "chat"]
    assert [i.source for i in items] == ["many.json#1", "many.json#2", "many.json#3"]


def test_json_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "bad.json", '{\n  "text": "hi",\n  oops\n}'))
    assert "bad.json is not valid JSON (line 3, column 3" in message


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ('{"title": "x", "score": 3}', "no usable field (found: title, score)"),
        ("42", "not an object"),
        ("[]", "empty list"),
        ('{"messages": [{"role": "user", "content": "a"}], "judged": 5}', "judged turn 5"),
    ],
)
def test_json_unusable_shapes(tmp_path: Path, doc: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, "x.json", doc))


def test_json_kind_mismatch_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", '{"prompt": "Q", "completion": "A"}')
    assert "holds a completion item, not a chat" in error_of(path, kind="chat")


def test_jsonl_items_with_line_sources(tmp_path: Path) -> None:
    lines = [
        '{"id": 1, "text": "a"}',
        "",
        '{"prompt": "Q", "response": "A"}',
        '[{"role": "user", "content": "x"}]',
    ]
    items = import_file(write(tmp_path, "q.jsonl", "\n".join(lines)))
    assert [(i.kind, i.source) for i in items] == [
        ("message", "q.jsonl:1"),
        ("completion", "q.jsonl:3"),
        ("chat", "q.jsonl:4"),
    ]
    assert items[0].ref == "1"


def test_jsonl_bad_line_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "q.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": \n')
    assert "q.jsonl line 3 is not valid JSON" in error_of(path)


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_text_and_id_columns_skip_empty_rows(tmp_path: Path) -> None:
    data = 'id,Text,label\n1,hello,0\n2,,1\n3,"multi\nline, quoted",1\n,,\n'
    items = import_file(write(tmp_path, "queue.csv", data))
    assert [(i.text, i.ref, i.source) for i in items] == [
        ("hello", "1", "queue.csv:2"),
        ("multi\nline, quoted", "3", "queue.csv:4"),
    ]


def test_csv_semicolon_delimiter(tmp_path: Path) -> None:
    items = import_file(
        write(tmp_path, "eu.csv", "ref;message\nA-1;Hallo, wie geht's?\nA-2;Kauf jetzt\n")
    )
    assert [(i.ref, i.text) for i in items] == [
        ("A-1", "Hallo, wie geht's?"),
        ("A-2", "Kauf jetzt"),
    ]


def test_csv_tab_delimiter(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "t.csv", "body\tid\nsome, text\tx\n"))
    assert (c.text, c.ref) == ("some, text", "x")


def test_csv_prompt_and_completion_columns(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "pc.csv", "prompt,completion\nQ?,A.\nQ2,\n"))
    assert (c.kind, c.prompt, c.completion) == ("completion", "Q?", "A.")


def test_csv_chosen_column_and_unknown_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "title,comment\nT,nice post\n")
    assert [i.text for i in import_file(path, csv_text_column="Comment")] == ["nice post"]
    assert "has no column 'remark' (columns: title, comment)" in error_of(
        path, csv_text_column="remark"
    )
    assert "has no text column (columns: title, comment)" in error_of(path)


def test_csv_chat_kind_parses_each_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "chats.csv", 'text\n"user: hi\nassistant: hello"\n')
    [c] = import_file(path, kind="chat")
    assert c.turns == (Turn("user", "hi"), Turn("assistant", "hello"))


def test_csv_without_text_rows(tmp_path: Path) -> None:
    assert "no rows with text in column 'text'" in error_of(
        write(tmp_path, "e.csv", "text,id\n,1\n")
    )


# --- e-mail ----------------------------------------------------------------------------------


def make_email(html: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Prize Team <win@example.com>"
    msg["To"] = "you@example.org"
    msg["Subject"] = "You won!"
    if html:
        msg.set_content(
            "<html><head><style>p{color:red}</style></head><body><p>Claim your "
            "<b>prize</b> &amp; more</p><script>x()</script><p>Now</p></body></html>",
            subtype="html",
        )
    else:
        msg.set_content("Claim your prize.\nReply with your bank details.\n")
        msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="form.pdf")
    return bytes(msg)


def test_eml_plain_body_with_attachment_listed(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "mail.eml", make_email()))
    assert c.text == (
        "From: Prize Team <win@example.com>\nTo: you@example.org\nSubject: You won!\n\n"
        "Claim your prize.\nReply with your bank details.\n\n"
        "Attachments (not included): form.pdf"
    )
    assert "%PDF" not in c.text


def test_eml_html_body_becomes_plain_text(tmp_path: Path) -> None:
    [c] = import_file(write(tmp_path, "mail.EML", make_email(html=True)))
    assert c.text.endswith("Subject: You won!\n\nClaim your prize & more\n\nNow")


# --- errors ------------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "File not found" in error_of(tmp_path / "nope.txt")
    assert "is a folder; choose a file inside it" in error_of(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    assert "empty.txt is empty" in error_of(write(tmp_path, "empty.txt", b""))
    assert "blank.csv is empty" in error_of(write(tmp_path, "blank.csv", b"\xef\xbb\xbf \n\n"))


def test_three_megabyte_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.txt", b"a" * (3 * 1024 * 1024))
    message = error_of(path)
    assert "huge.txt is 3.0 MB, over the 2.0 MB limit; split it" in message
    with pytest.raises(ContentError, match=r"over the 2\.0 MB limit"):
        parse_bytes(b"a" * (MAX_BYTES + 1), "huge.txt")
    assert len(import_file(path, max_bytes=4 * 1024 * 1024)[0].text) == 3 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", " (PDF)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", " (PNG)"),
        (b"PK\x03\x04\x14\x00", " (ZIP"),
        (b"plain start\x00\x01\x02", "; if it is text, re-save it as UTF-8"),
    ],
)
def test_binary_files_are_refused(tmp_path: Path, data: bytes, label: str) -> None:
    message = error_of(write(tmp_path, "upload.txt", data))
    assert f"upload.txt looks like a binary file{label}" in message


def test_invalid_utf8_names_byte_offset(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "latin.csv", "text\ncaf\u00e9\n".encode("latin-1")))
    assert "latin.csv is not valid UTF-8 (byte 8, line 2); re-save it as UTF-8" in message
