"""File importers behind ``content.parse_bytes`` / ``content.import_file``.

Every problem with a file (size, binary, encoding, shape) becomes a one-line ContentError
that names the file and says what to do, so the UI and CLI can show it as is.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeguard_desktop.core.content import (
    KINDS,
    MAX_BYTES,
    Content,
    ContentError,
    Kind,
    check_unicode,
    from_text,
    judged_from,
    loads_json,
    turns_from_messages,
    visible_surrogates,
)

if TYPE_CHECKING:  # imported where used: only .eml files need the e-mail package
    from email.message import Message

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"\x89PNG", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"PK\x03\x04", "ZIP, e.g. .docx or .xlsx"),
    (b"PK\x05\x06", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!", "RAR"),
    (b"SQLite format 3\x00", "SQLite"),
    (b"\x7fELF", "executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Office document, e.g. .doc or .xls"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: its BOM starts the same way
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TEXT_KEYS = ("text", "content", "message", "body", "prompt")
_ANSWER_KEYS = ("completion", "response")
_REF_KEYS = ("id", "ref")
_FORMATS = ".txt, .md, .json, .jsonl, .csv or .eml"
# Every extension with an importer of its own (any other name is read as UTF-8 text).
EXTENSIONS = (".txt", ".md", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".eml")


def import_file(
    path: Path | str,
    *,
    kind: Kind | None = None,
    max_bytes: int = MAX_BYTES,
    csv_text_column: str | None = None,
) -> list[Content]:
    """Read a file from disk, refusing oversized files before reading them."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ContentError(f"{p} is a folder; choose a file inside it.")
        if not stat.S_ISREG(st.st_mode):
            raise ContentError(
                f"{p} is not a regular file (a device, pipe or socket); save the content to "
                "a file and open that."
            )
        _check_size(st.st_size, p.name, max_bytes)
        with p.open("rb") as fh:  # the size may change between stat and read
            data = fh.read(max_bytes + 1)
        _check_size(len(data), p.name, max_bytes)
    except FileNotFoundError:
        raise ContentError(
            f"File not found: {p}; check the path and choose the file again."
        ) from None
    except OSError as e:
        raise ContentError(f"Cannot read {p} ({e.strerror}); check that it is readable.") from None
    return parse_bytes(
        data, p.name, kind=kind, max_bytes=max_bytes, csv_text_column=csv_text_column
    )


def parse_bytes(
    data: bytes,
    name: str,
    *,
    kind: Kind | None = None,
    max_bytes: int = MAX_BYTES,
    csv_text_column: str | None = None,
) -> list[Content]:
    """Items from a file's bytes, by the extension of ``name`` (unknown: UTF-8 text).

    No item holds text a UTF-8 file or the history cannot store (a lone surrogate).
    """
    if kind is not None and kind not in KINDS:
        raise ContentError(f"Unknown content kind {kind!r}; use one of {', '.join(KINDS)}.")
    # A name from the command line may carry undecodable bytes (as lone surrogates).
    name = visible_surrogates(Path(name).name)
    items = _parse(data, name, kind, max_bytes, csv_text_column)
    return [check_unicode(item, item.source or name) for item in items]


def _parse(
    data: bytes, name: str, kind: Kind | None, max_bytes: int, csv_text_column: str | None
) -> list[Content]:
    _check_size(len(data), name, max_bytes)
    if not data.strip():
        raise ContentError(f"{name} is empty; choose a file that holds the content to classify.")
    ext = Path(name).suffix.lower()
    if ext == ".eml":
        _check_binary(data, name)  # emails may be 8-bit in any charset: no UTF-8 check
        return [_from_email(data, name, kind)]
    text = decode_text(data, name)
    if not text.strip():
        raise ContentError(f"{name} is empty; choose a file that holds the content to classify.")
    if ext == ".json":
        return _from_json(text, name, kind)
    if ext in (".jsonl", ".ndjson"):
        return _from_jsonl(text, name, kind)
    if ext in (".csv", ".tsv"):
        return _from_csv(text, name, kind, csv_text_column)
    return [replace(_parse_text(text, kind or "message", name), source=name)]


# --- bytes to text -------------------------------------------------------------------------


def _size(n: int) -> str:
    mb = f"{n / 2**20:.1f} MB"
    return mb if mb != "0.0 MB" else f"{n} bytes"


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise ContentError(
            f"{name} is {_size(size)}, over the {_size(max_bytes)} limit; "
            "split it into smaller files and import them one by one."
        )


def _check_binary(data: bytes, name: str) -> None:
    for magic, label in _MAGIC:
        if data.startswith(magic):
            raise ContentError(
                f"{name} looks like a binary file ({label}); save the content as text "
                f"({_FORMATS}) and import that."
            )
    if b"\x00" in data[:8192]:
        raise ContentError(
            f"{name} looks like a binary file; if it is text, re-save it as UTF-8 and try again."
        )


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (BOM stripped) or BOM-marked UTF-16/32, with newlines normalised to \\n."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as e:
                raise ContentError(
                    f"{name} is not valid {encoding.upper()} (byte {e.start}); "
                    "re-save it as UTF-8 and import it again."
                ) from None
            break
    else:
        _check_binary(data, name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ContentError(
                f"{name} is not valid UTF-8 (byte {e.start}, line {line}); "
                "re-save it as UTF-8 and import it again."
            ) from None
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_text(text: str, kind: Kind, where: str) -> Content:
    """from_text with the file (and line) named in its errors."""
    try:
        return from_text(text, kind)
    except ContentError as e:
        raise ContentError(f"{where}: {e}") from None


# --- JSON and JSON Lines -------------------------------------------------------------------


def _from_json(text: str, name: str, kind: Kind | None) -> list[Content]:
    try:
        value = loads_json(text, name)
    except json.JSONDecodeError as e:
        raise ContentError(
            f"{name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "fix it there or save the content as .txt."
        ) from None
    is_message_list = (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )
    if not isinstance(value, list) or is_message_list:
        return [replace(_item_from_json(value, name, kind), source=name)]
    if not value:
        raise ContentError(f"{name} holds an empty list; add items to classify.")
    return [
        replace(_item_from_json(item, f"{name} item {i}", kind), source=f"{name}#{i}")
        for i, item in enumerate(value, start=1)
    ]


def _from_jsonl(text: str, name: str, kind: Kind | None) -> list[Content]:
    items = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = loads_json(line, f"{name} line {number}")
        except json.JSONDecodeError as e:
            raise ContentError(
                f"{name} line {number} is not valid JSON (column {e.colno}: {e.msg}); "
                "fix or remove that line."
            ) from None
        where = f"{name} line {number}"
        items.append(replace(_item_from_json(value, where, kind), source=f"{name}:{number}"))
    return items


def _item_from_json(value: object, where: str, kind: Kind | None) -> Content:
    """One item from any supported JSON shape; ``where`` names it in errors."""
    if isinstance(value, list):
        item = Content(kind="chat", turns=turns_from_messages(value, where))
    elif isinstance(value, Mapping):
        item = _item_from_object(value, where, kind)
    else:
        raise ContentError(
            f"{where} is a {type(value).__name__}, not an object; give items as objects "
            'like {"text": ...}, {"messages": [...]} or {"prompt": ..., "completion": ...}.'
        )
    if kind is not None and item.kind != kind:
        raise ContentError(
            f"{where} holds a {item.kind} item, not a {kind}; choose the {item.kind} kind "
            "or let the kind be detected."
        )
    return item


def _item_from_object(obj: Mapping[str, object], where: str, kind: Kind | None) -> Content:
    ref = next((obj[k] for k in _REF_KEYS if isinstance(obj.get(k), str | int)), None)
    ref_text = None if ref is None else str(ref)
    if "messages" in obj:
        turns = turns_from_messages(obj["messages"], where)
        judged = judged_from(obj.get("judged"), turns, where)
        return Content(kind="chat", turns=turns, judged=judged, ref=ref_text)
    answer_key = next((k for k in _ANSWER_KEYS if k in obj), None)
    if "prompt" in obj and answer_key is not None:
        prompt, completion = obj["prompt"], obj[answer_key]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ContentError(f"{where}: 'prompt' and '{answer_key}' must be text.")
        if not completion.strip():
            raise ContentError(
                f"{where} has an empty '{answer_key}'; fill it in or remove the item."
            )
        return Content(kind="completion", prompt=prompt, completion=completion, ref=ref_text)
    fields = [(k, v) for k in _TEXT_KEYS if isinstance(v := obj.get(k), str)]
    if not fields:
        found = ", ".join(visible_surrogates(str(k)) for k in obj) or "none"
        raise ContentError(
            f"{where} has no usable field (found: {found}); give it 'text', 'messages' "
            "or 'prompt' and 'completion'."
        )
    key, text = fields[0]
    if not text.strip():
        raise ContentError(f"{where} has an empty '{key}'; fill it in or remove the item.")
    return replace(_parse_text(text, kind or "message", where), ref=ref_text)


# --- CSV -----------------------------------------------------------------------------------


def _rows(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """CSV rows with the line each starts on; the delimiter is the header's commonest one."""
    header = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ContentError(
                f"{name} line {reader.line_num} cannot be read as CSV ({e}); fix the quoting there."
            ) from None
        yield start, row


def _from_csv(text: str, name: str, kind: Kind | None, column: str | None) -> list[Content]:
    rows = _rows(text, name)
    _, header = next(rows)
    columns = [h.strip() for h in header]
    index: dict[str, int] = {}
    for i, h in enumerate(columns):
        index.setdefault(h.lower(), i)
    shown = ", ".join(h for h in columns if h) or "none"
    if column is not None:
        if column.strip().lower() not in index:
            raise ContentError(
                f"{name} has no column {column!r} (columns: {shown}); pick one of those."
            )
        text_key = column.strip().lower()
    else:
        found = next((k for k in _TEXT_KEYS if k in index), None)
        if found is None:
            raise ContentError(
                f"{name} has no text column (columns: {shown}); name it 'text' in the header "
                "row or choose the column to import."
            )
        text_key = found
    answer_key = next((k for k in _ANSWER_KEYS if k in index), None)
    pair = text_key == "prompt" and answer_key is not None and kind in (None, "completion")
    ref_col = next((index[k] for k in _REF_KEYS if k in index), None)

    def cell(row: list[str], col: int | None) -> str:
        return row[col] if col is not None and col < len(row) else ""

    items = []
    for line, row in rows:
        ref = cell(row, ref_col).strip() or None
        source = f"{name}:{line}"
        if pair:
            assert answer_key is not None
            completion = cell(row, index[answer_key])
            if completion.strip():
                prompt = cell(row, index["prompt"])
                items.append(
                    Content(
                        "completion", prompt=prompt, completion=completion, source=source, ref=ref
                    )
                )
            continue
        value = cell(row, index[text_key])
        if value.strip():
            items.append(
                replace(_parse_text(value, kind or "message", source), source=source, ref=ref)
            )
    if not items:
        wanted = f"'{answer_key}'" if pair else f"'{columns[index[text_key]]}'"
        raise ContentError(f"{name} has no rows with text in column {wanted}; fill it in.")
    return items


# --- e-mail ---------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "table", "hr", "section", "article", "ul", "ol",
}  # fmt: skip
_HIDDEN_TAGS = {"script", "style", "head", "title", "template"}


@functools.cache
def _html_text() -> type[Any]:
    """The parser class (made on first use: only e-mails with an HTML body need it)."""
    from html.parser import HTMLParser

    class _HTMLText(HTMLParser):
        """Visible text of an HTML body: tags dropped, blocks on their own lines."""

        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in _HIDDEN_TAGS:
                self.hidden += 1
            elif tag in _BLOCK_TAGS:
                self.parts.append("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in _HIDDEN_TAGS:
                self.hidden = max(0, self.hidden - 1)
            elif tag in _BLOCK_TAGS:
                self.parts.append("\n")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    return _HTMLText


def html_to_text(html: str) -> str:
    """Plain text of an HTML document, whitespace collapsed as a browser would."""
    parser = _html_text()()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _part_text(part: Message) -> str:
    from email.message import EmailMessage

    try:
        content = part.get_content() if isinstance(part, EmailMessage) else None
    except (LookupError, UnicodeError):
        content = None  # unknown or lying charset: decode the raw payload leniently
    if not isinstance(content, str):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content.replace("\r\n", "\n").replace("\r", "\n")


def _from_email(data: bytes, name: str, kind: Kind | None) -> Content:
    if kind not in (None, "message"):
        raise ContentError(f"{name} is an e-mail, which imports as a message; choose that kind.")
    import email  # here: the e-mail package is only needed for .eml files
    import email.policy
    from email.message import EmailMessage

    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise ContentError(f"{name} has no e-mail headers; save the message as .eml or .txt.")
    headers = [f"{h}: {msg[h]}" for h in ("From", "To", "Subject") if msg.get(h)]
    body_part = msg.get_body(preferencelist=("plain", "html"))
    body = ""
    if body_part is not None:
        body = _part_text(body_part)
        if body_part.get_content_type() == "text/html":
            body = html_to_text(body)
    attachments = [
        part.get_filename() or f"unnamed ({part.get_content_type()})"
        for part in msg.walk()
        if not part.is_multipart()
        and part is not body_part
        and (part.get_filename() or part.get_content_disposition() == "attachment")
    ]
    if not body.strip() and not msg.get("Subject"):
        raise ContentError(f"{name} has no subject and no text body; nothing to classify.")
    text = "\n".join(headers) + "\n\n" + body.strip("\n")
    if attachments:
        text += f"\n\nAttachments (not included): {', '.join(attachments)}"
    return Content(kind="message", text=text, source=name)
