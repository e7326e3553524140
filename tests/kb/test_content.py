"""Knowledge-base file formats: round trips, encodings and the validation report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge_base.content import (
    FORMATS,
    ContentError,
    EntryData,
    TranslationData,
    decode_bytes,
    dump_content,
    parse_content,
    read_content,
)
from knowledge_base.service import SAMPLE_KB

STACKFAQ = Path("/work/shared/data/faq/stackfaq/faq.jsonl")


def _content(entries: list[EntryData]) -> list[dict]:
    return [
        {
            "key": e.key,
            "language": e.language,
            "tags": e.tags,
            "category": e.category,
            "image_url": e.image_url,
            "active": e.active in (None, True),
            "translations": {lang: tr.content() for lang, tr in sorted(e.translations.items())},
        }
        for e in entries
    ]


def _messages(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(i) for i in result.issues]


@pytest.fixture(scope="module")
def sample_entries() -> list[EntryData]:
    result = read_content(SAMPLE_KB)
    assert result.ok, result.report()
    return result.entries


def _rich_entry() -> EntryData:
    return EntryData(
        key="gift-wrapping",
        language="ja",
        tags=["gifts", "orders"],
        category="orders",
        image_url="https://img.example/gift.png",
        active=False,
        translations={
            "ja": TranslationData(
                language="ja",
                question="ギフトラッピングはできますか？",
                answer="1注文330円です。\nメッセージカードは無料です。",
                alternatives=["プレゼント用に包んで", "ラッピング代は？"],
                buttons=[
                    {"text": "注文履歴", "url": "https://shop.example/orders?a=1&b=2"},
                    {"text": "相談する", "callback": "handoff:advisor"},
                ],
                links=[{"title": "ギフト", "url": "https://shop.example/gift"}],
            ),
            "en": TranslationData(
                language="en",
                question='Do you offer "gift" wrapping, e.g. for birthdays?',
                answer="Yes, 330 yen per order, card free | no extra fees",
                alternatives=["Can you wrap my order?"],
                buttons=[{"text": "Label = with equals", "url": "https://shop.example/x"}],
                links=[{"url": "https://shop.example/en/gift"}],
            ),
        },
    )


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_sample_kb(fmt: str, sample_entries: list[EntryData]) -> None:
    text = dump_content(sample_entries, fmt)  # type: ignore[arg-type]
    again = parse_content(text, fmt)  # type: ignore[arg-type]
    assert again.ok, again.report()
    assert _content(again.entries) == _content(sample_entries)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_rich_entry(fmt: str) -> None:
    entry = _rich_entry()
    text = dump_content([entry], fmt)  # type: ignore[arg-type]
    again = parse_content(text, fmt)  # type: ignore[arg-type]
    assert again.ok, again.report()
    assert _content(again.entries) == _content([entry])


def test_csv_round_trip_through_files_in_every_encoding(tmp_path: Path) -> None:
    entry = _rich_entry()
    text = dump_content([entry], "csv")
    for encoding in ("utf-8", "utf-8-sig", "cp932", "utf-16"):
        path = tmp_path / f"kb-{encoding}.csv"
        path.write_bytes(text.encode(encoding))
        result = read_content(path)
        assert result.ok, (encoding, result.report())
        assert _content(result.entries) == _content([entry])


def test_stackfaq_jsonl_reads_as_english_entries() -> None:
    if not STACKFAQ.exists():
        pytest.skip("shared StackFAQ data not present")
    result = read_content(STACKFAQ)
    assert result.ok, result.report()
    assert result.format == "jsonl"
    assert len(result.entries) == 100
    assert {e.language for e in result.entries} == {"en"}
    assert result.entries[0].key == "sfaq-001"


def test_sample_kb_has_three_languages_and_enough_phrasings(
    sample_entries: list[EntryData],
) -> None:
    assert 38 <= len(sample_entries) <= 50
    for entry in sample_entries:
        assert set(entry.translations) == {"ja", "en", "zh"}, entry.key
        for tr in entry.translations.values():
            assert 3 <= len(tr.alternatives) <= 5, (entry.key, tr.language)
            assert tr.answer and tr.question


# ------------------------------------------------------------------------------ encodings


def test_shift_jis_csv_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "sjis.csv"
    path.write_bytes(
        "id,language,question,answer\n"
        "shipping,ja,送料はいくらですか？,全国一律550円です。\n".encode("cp932")
    )
    result = read_content(path)
    assert result.ok, result.report()
    assert result.encoding == "shift_jis (cp932)"
    assert result.entries[0].primary.answer == "全国一律550円です。"


def test_gb18030_csv_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "gb.csv"
    path.write_bytes(
        "id,language,question,answer\n"
        "shipping,zh,运费是多少？,日本国内运费统一为550日元。\n"
        "returns,zh,可以退货吗？,未开封的商品在收货后30天内可以退货。\n".encode("gb18030")
    )
    result = read_content(path)
    assert result.ok, result.report()
    assert result.encoding == "gb18030"
    assert result.entries[1].primary.question == "可以退货吗？"


def test_bom_csv_header_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("id,question,answer\nk1,How much?,¥550\n".encode("utf-8-sig"))
    result = read_content(path)
    assert result.ok, result.report()
    assert result.encoding == "utf-8-sig"
    assert result.entries[0].key == "k1"


def test_undecodable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"id,question,answer\nk1,caf\xe9 ol\xe9,price \xff\xfe\xfd\n")
    with pytest.raises(ContentError, match="cannot tell the text encoding.*line 2"):
        read_content(path)


def test_explicit_encoding_errors_name_the_line() -> None:
    with pytest.raises(ContentError, match="not valid utf-8.*line 2"):
        decode_bytes(b"id,question,answer\n\xff\n", "utf-8")
    with pytest.raises(ContentError, match="unknown encoding"):
        decode_bytes(b"x", "no-such-encoding")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "Excel"),
    ],
)
def test_empty_and_binary_files_are_clear_errors(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "kb.csv"
    path.write_bytes(data)
    with pytest.raises(ContentError, match=message):
        read_content(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="file not found"):
        read_content(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------ validation


def test_broken_quotes_report_the_line() -> None:
    text = 'id,question,answer\nk1,"How much?,¥550\nk2,Returns?,30 days\n'
    result = parse_content(text, "csv")
    assert not result.ok
    assert any("line 2" in m and "broken quotes" in m for m in _messages(result))


def test_stray_quote_reports_the_line() -> None:
    text = 'id,question,answer\nk1,ok,fine\nk2,"quoted"tail,x\n'
    result = parse_content(text, "csv")
    assert not result.ok
    assert any(m.startswith("line 3") and "broken quotes" in m for m in _messages(result))


def test_missing_and_unknown_columns() -> None:
    result = parse_content("id,question,anwser,colour\nk1,q,a,red\n", "csv")
    messages = _messages(result)
    assert any("line 1" in m and "unknown column(s): anwser, colour" in m for m in messages)
    assert any("line 1" in m and "missing required column(s): answer" in m for m in messages)
    assert not result.entries


def test_wrong_field_count_is_reported() -> None:
    result = parse_content("id,question,answer\nk1,q,a,extra, stuff\n", "csv")
    assert any("line 2" in m and "expected 3 fields, found 5" in m for m in _messages(result))


def test_duplicates_empty_fields_languages_and_buttons_with_line_numbers() -> None:
    text = (
        "id,language,question,answer,buttons\n"
        "shipping,en,How much is shipping?,¥550,Track=https://x.example/t\n"  # line 2
        "shipping,en,Shipping cost?,¥550,\n"  # 3: same id + language
        "fees,en,how much is SHIPPING ?,¥550,\n"  # 4: same question as line 2
        "returns,en,Can I return?,,\n"  # 5: empty answer
        "empty-q,en,   ,Something,\n"  # 6: empty question
        "french,fr,Bonjour?,Salut,\n"  # 7: bad language
        "btn,en,Buttons?,Yes,Track\n"  # 8: button without target
        "btn2,en,Buttons 2?,Yes,Go=ftp://x.example\n"  # 9: bad url
        "btn3,en,Buttons 3?,Yes,Go=callback:"
        + "x" * 70
        + "\n"  # 10: callback too long
        '"bad id",en,Key?,Yes,\n'  # 11: bad id
    )
    result = parse_content(text, "csv")
    messages = _messages(result)
    expected = {
        3: "duplicate id 'shipping' (en): already on line 2",
        4: "duplicate question",
        5: "empty answer for 'returns'",
        6: "empty question for 'empty-q'",
        7: "bad language code 'fr'",
        8: "malformed buttons",
        9: "bad url 'ftp://x.example'",
        10: "over 64 bytes",
        11: "bad id 'bad id'",
    }
    for line, fragment in expected.items():
        assert any(m.startswith(f"line {line}:") and fragment in m for m in messages), (
            line,
            messages,
        )
    assert not result.ok
    assert not any(m.startswith("line 2:") for m in messages)


def test_good_buttons_and_links_parse_to_structured_values() -> None:
    text = (
        "id,question,answer,buttons,links\n"
        "k,Q?,A,Track=https://x.example/t?a=b|Talk=callback:advisor,"
        "Help=https://x.example/help|https://x.example/plain\n"
    )
    result = parse_content(text, "csv", default_language="en")
    assert result.ok, result.report()
    tr = result.entries[0].primary
    assert tr.buttons == [
        {"text": "Track", "url": "https://x.example/t?a=b"},
        {"text": "Talk", "callback": "advisor"},
    ]
    assert tr.links == [
        {"title": "Help", "url": "https://x.example/help"},
        {"url": "https://x.example/plain"},
    ]


def test_language_is_detected_or_taken_from_the_default() -> None:
    text = "id,question,answer\nja1,送料はいくらですか,550円\nzh1,运费多少,550日元\nen1,Price?,550\n"
    result = parse_content(text, "csv")
    assert result.ok, result.report()
    assert [e.language for e in result.entries] == ["ja", "zh", "en"]
    result = parse_content("id,question,answer\nk,😀,x\n", "csv")
    assert any("cannot tell the language" in m for m in _messages(result))
    result = parse_content("id,question,answer\nk,😀,x\n", "csv", default_language="zh-hans")
    assert result.ok and result.entries[0].language == "zh"


def test_csv_rows_of_one_entry_must_agree_on_entry_fields() -> None:
    text = "id,language,question,answer,tags\nk,en,Q?,A,a|b\nk,ja,質問ですか,答え,c\n"
    result = parse_content(text, "csv")
    assert any("line 3" in m and "tags" in m for m in _messages(result))


def test_yaml_errors_have_line_numbers() -> None:
    text = (
        "entries:\n"
        "  - id: a\n"
        "    translations:\n"
        "      en: {question: Hi?, answer: Hello}\n"
        "      xx: {question: Q, answer: A}\n"  # line 5
        "  - id: a\n"  # line 6
        "    translations:\n"
        "      en: {question: Other?, answer: B}\n"
        "  - id: b\n"  # line 9
        "    anwser: oops\n"
        "    translations:\n"
        "      en: {question: Q2?, answer: B}\n"
        "  - id: c\n"
        "    translations:\n"
        "      en:\n"  # line 15
        "        question: Q3?\n"
        "        answer: C\n"
        "      en:\n"  # line 18 duplicate key
        "        question: Q4?\n"
        "        answer: D\n"
    )
    result = parse_content(text, "yaml")
    messages = _messages(result)
    assert any(m.startswith("line 5:") and "bad language code 'xx'" in m for m in messages)
    assert any(m.startswith("line 6:") and "duplicate id 'a'" in m for m in messages)
    assert any(m.startswith("line 9:") and "unknown field(s): anwser" in m for m in messages)
    assert any(m.startswith("line 18:") and "duplicate key 'en'" in m for m in messages)


def test_yaml_syntax_error_reports_the_line() -> None:
    result = parse_content("entries:\n  - id: a\n    translations: [\n", "yaml")
    assert not result.ok
    assert result.errors[0].line is not None and "not valid YAML" in result.errors[0].message


def test_json_errors_have_line_numbers() -> None:
    doc = {
        "entries": [
            {"id": "a", "translations": {"en": {"question": "Q?", "answer": "A"}}},
            {"id": "b", "translations": {"en": {"question": "Q2?", "answer": ""}}},
        ]
    }
    text = json.dumps(doc, indent=2)
    lines = text.splitlines()
    line_of_b = next(n for n, line in enumerate(lines, 1) if '"id": "b"' in line) - 1
    result = parse_content(text, "json")
    assert not result.ok
    assert result.errors[0].line == line_of_b  # the line where entry b's object opens
    assert "empty answer for 'b'" in result.errors[0].message
    broken = parse_content('{"entries": [\n  {"id": "a",,}\n]}', "json")
    assert broken.errors[0].line == 2 and "not valid JSON" in broken.errors[0].message


def test_jsonl_reports_each_bad_line() -> None:
    text = (
        '{"id": "a", "question": "Q?", "answer": "A", "language": "en"}\n'
        "not json\n"
        '{"id": "b", "question": "Q2?", "answer": "B", "language": "en", "extra": 1}\n'
    )
    result = parse_content(text, "jsonl")
    messages = _messages(result)
    assert any(m.startswith("line 2:") and "not valid JSON" in m for m in messages)
    assert any(m.startswith("line 3:") and "unknown field(s): extra" in m for m in messages)


def test_absent_optional_fields_are_not_marked_provided() -> None:
    result = parse_content('{"id": "a", "question": "Q?", "answer": "A"}\n', "jsonl")
    entry = result.entries[0]
    assert entry.provided == set()
    assert entry.primary.provided == frozenset()
    result = parse_content("id,question,answer,tags,alternatives\na,Q?,A,,\n", "csv")
    assert result.entries[0].provided == {"tags"}
    assert result.entries[0].primary.provided == frozenset({"alternatives"})


def test_report_is_sorted_and_limited() -> None:
    rows = "".join(f"k{i},en,,\n" for i in range(60))
    result = parse_content("id,language,question,answer\n" + rows, "csv")
    report = result.report(limit=5)
    assert report.splitlines()[0].startswith("line 2:")
    assert report.splitlines()[-1].startswith("... and")
