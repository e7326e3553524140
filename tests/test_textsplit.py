from __future__ import annotations

from bot.core.textsplit import split_text, utf16_len


def test_short_text_is_one_part():
    assert split_text("hello", 4096) == ["hello"]
    assert split_text("", 4096) == []


def test_splits_at_paragraphs_first():
    para = "a" * 3000
    parts = split_text(f"{para}\n\n{para}", 4096)
    assert parts == [para, para]


def test_splits_at_sentence_ends_in_japanese():
    text = "これは文です。" * 1000
    parts = split_text(text, 4096)
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert all(p.endswith("。") for p in parts)
    assert "".join(parts) == text


def test_counts_utf16_and_never_breaks_surrogates():
    text = "😀" * 5000  # each is 2 UTF-16 units
    parts = split_text(text, 4096)
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "".join(parts) == text


def test_hard_cut_keeps_every_character():
    text = "x" * 10000
    parts = split_text(text, 4096)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


def test_words_are_not_cut():
    words = " ".join(f"word{i}" for i in range(3000))
    parts = split_text(words, 4096)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)
    assert " ".join(parts).split() == words.split()
