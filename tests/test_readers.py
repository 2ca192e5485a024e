"""Readers on files the tests write: encodings, malformed rows, Parquet, text, PDF, big files."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pypdf
import pytest
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from vecdash.errors import InvalidInput
from vecdash.readers import (
    ColumnMapping,
    RowError,
    check_mapping,
    count_rows,
    detect_encoding,
    file_records,
    guess_mapping,
    preview_rows,
    read_rows,
    records_from_rows,
)


def rows_of(path: Path, **kw: Any) -> list[Any]:
    return list(read_rows(path, **kw))


def test_csv_encodings(tmp_path: Path) -> None:
    text = "id,title,content\n1,Café,Crème brûlée recipe\n2,Naïve,Smörgåsbord and €uro\n"
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(text, encoding="utf-8")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(text.encode("cp1252"))
    assert detect_encoding(utf8) == "utf-8"
    assert detect_encoding(bom) == "utf-8-sig"
    assert detect_encoding(latin) == "cp1252"
    for path in (utf8, bom, latin):
        rows = rows_of(path)
        assert [r["id"] for r in rows] == ["1", "2"]  # the BOM does not leak into the header
        assert rows[0]["title"] == "Café" and rows[1]["content"] == "Smörgåsbord and €uro"
    undefined = tmp_path / "latin1.csv"  # 0x81 is undefined in cp1252: plain Latin-1 reads it
    undefined.write_bytes(b"id,content\n1,a\x81b \xe9\n")
    assert detect_encoding(undefined) == "latin-1"
    assert rows_of(undefined)[0]["content"] == "a\x81b é"


def test_tsv_and_bad_csv_rows(tmp_path: Path) -> None:
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("id\tcontent\na\tfirst, with a comma\nb\tsecond\n")
    assert [r["content"] for r in rows_of(tsv)] == ["first, with a comma", "second"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,content\n1,ok\n2,too,many,fields\n3,fine\n")
    rows = rows_of(bad)
    assert [r["id"] for r in rows if isinstance(r, dict)] == ["1", "3"]
    errors = [r for r in rows if isinstance(r, RowError)]
    assert len(errors) == 1 and "4 fields but the header has 2" in errors[0].reason


def test_jsonl_malformed_line_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "content": "alpha"}\n{"id": "b", "content": \n\n[1, 2]\n'
                    '{"id": "c", "content": "gamma", "embedding": [0.1, 0.2]}\n')
    rows = rows_of(path)
    good = [r for r in rows if isinstance(r, dict)]
    errors = [r for r in rows if isinstance(r, RowError)]
    assert [r["id"] for r in good] == ["a", "c"]
    assert [e.line for e in errors] == [2, 4]
    assert "not valid JSON" in errors[0].reason and "not an object" in errors[1].reason
    records = list(records_from_rows(rows, guess_mapping(["id", "content", "embedding"])))
    assert [r.error for r in records[:3]] == [
        "the vector column is empty", errors[0].reason, errors[1].reason]
    assert records[3].error is None and records[3].external_id == "c"
    assert list(records[3].embedding) == [0.1, 0.2]  # type: ignore[arg-type]


def test_json_array_and_wrapped(tmp_path: Path) -> None:
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps([{"text": "one"}, {"text": "two"}, 3]))
    rows = rows_of(plain)
    assert [r["text"] for r in rows if isinstance(r, dict)] == ["one", "two"]
    assert isinstance(rows[2], RowError)
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"documents": [{"text": "x"}], "version": 2}))
    assert rows_of(wrapped) == [{"text": "x"}]
    broken = tmp_path / "c.json"
    broken.write_text("[{")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        rows_of(broken)


def test_parquet_with_vectors(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    table = pa.table({"doc_id": ["a", "b"], "body": ["alpha", "beta"], "lang": ["en", "de"],
                      "vector": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]})
    pq.write_table(table, path)
    assert count_rows(path) == 2
    frame, errors = preview_rows(path)
    assert list(frame.columns) == ["doc_id", "body", "lang", "vector"] and not errors
    mapping = guess_mapping(list(frame.columns))
    assert (mapping.content, mapping.id, mapping.embedding, mapping.metadata) == \
        ("body", "doc_id", "vector", ("lang",))
    records = list(file_records(path, mapping))
    assert records[1].external_id == "b" and records[1].metadata == {"lang": "de"}
    assert list(records[0].embedding) == pytest.approx([0.1, 0.2, 0.3])  # type: ignore[arg-type]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInput, match="not a readable Parquet"):
        rows_of(broken)


def test_text_and_markdown(tmp_path: Path) -> None:
    md = tmp_path / "guide.md"
    md.write_text("Intro line.\n\n# Setup\nInstall it.\n\n## Usage\nRun it.\n")
    whole = rows_of(md)
    assert len(whole) == 1 and whole[0]["title"] == "Setup" and whole[0]["id"] == "guide.md"
    sections = rows_of(md, text_mode="sections")
    assert [s["title"] for s in sections] == ["guide", "Setup", "Usage"]
    assert sections[1]["content"] == "# Setup\nInstall it."
    txt = tmp_path / "notes.txt"
    txt.write_text("first paragraph\n\n  \nsecond paragraph\n")
    assert [s["content"] for s in rows_of(txt, text_mode="sections")] == \
        ["first paragraph", "second paragraph"]


def make_pdf(path: Path, pages: list[str]) -> None:
    """A real PDF written with pypdf: one page per string (empty string: a page without text)."""
    writer = pypdf.PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=300, height=200)
        if not text:
            continue
        font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                                 NameObject("/Subtype"): NameObject("/Type1"),
                                 NameObject("/BaseFont"): NameObject("/Helvetica")})
        page[NameObject("/Resources")] = DictionaryObject({
            NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})
        })
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 20 150 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    with path.open("wb") as f:
        writer.write(f)


def test_pdf_text_per_page_and_pdf_without_text(tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    make_pdf(pdf, ["", "Quarterly revenue grew", "Churn fell sharply"])
    rows = rows_of(pdf)
    assert [r["page"] for r in rows] == [1, 2, 3]
    assert rows[0]["content"] == "" and "revenue" in rows[1]["content"]
    assert rows[2]["id"] == "report.pdf#page3"
    scanned = tmp_path / "scan.pdf"
    make_pdf(scanned, ["", ""])
    with pytest.raises(InvalidInput, match="no extractable text.*OCR"):
        rows_of(scanned)
    garbage = tmp_path / "fake.pdf"
    garbage.write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(InvalidInput, match="not a readable PDF"):
        rows_of(garbage)


def test_empty_file_header_only_and_missing_content_column(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput, match="empty"):
        rows_of(empty)
    header = tmp_path / "header.csv"
    header.write_text("id,content\n")
    with pytest.raises(InvalidInput, match="no rows"):
        preview_rows(header)
    data = tmp_path / "data.csv"
    data.write_text("id,body\n1,x\n")
    with pytest.raises(InvalidInput, match="no column 'content'.*id, body"):
        check_mapping(ColumnMapping(content="content"), ["id", "body"])
    with pytest.raises(InvalidInput, match="no column 'text'"):
        list(file_records(data, ColumnMapping(content="text")))
    with pytest.raises(InvalidInput, match="unknown file type"):
        rows_of(tmp_path / "x.docx")


def test_rows_with_empty_content_nan_and_bad_vectors(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text('id,content,vec\na,alpha,"[1, 2]"\nb,,"[1, 2]"\nc,gamma,not a vector\n'
                    'd,delta,\ne,eps,"[1, NaN]"\n')
    mapping = ColumnMapping(content="content", id="id", embedding="vec")
    records = {r.external_id: r for r in file_records(path, mapping)}
    assert records["a"].error is None and list(records["a"].embedding) == [1, 2]  # type: ignore[arg-type]
    assert records["b"].content == ""  # fails as "empty content" in ingestion
    assert records["c"].error == "the vector column is not a list of numbers"
    assert records["d"].error == "the vector column is empty"
    assert records["e"].error is None  # NaN is caught by ingestion's vector check


def test_fifty_megabyte_csv_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    line = b"x" * 1000
    with path.open("wb") as f:
        f.write(b"id,content\n")
        for i in range(50_000):
            f.write(b"%d,%s %d\n" % (i, line, i))
        f.write(b"50000,caf\xe9 at the very end\n")  # a non-UTF-8 byte after 50 MB
    assert path.stat().st_size > 50_000_000
    tracemalloc.start()
    try:
        n = 0
        last: Any = None
        for rec in file_records(path, ColumnMapping(content="content", id="id")):
            n += 1
            last = rec
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 50_001 and last.content == "café at the very end"  # read as cp1252
    assert peak < 20_000_000  # streamed: far less than the file's 50 MB was held at once
