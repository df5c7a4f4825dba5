"""Character-index text helpers over pycrdt's UTF-8 byte positions, and their diff."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab import text as ytext
from tests.conftest import ClientFactory
from tests.jsclient import JsClientFactory, utf16_len


def new_text(content: str = "") -> Text:
    doc: Doc[Any] = Doc()
    text: Text = doc.get("text", type=Text)
    if content:
        text += content
    return text


@pytest.mark.parametrize(
    ("s", "index", "offset"),
    [
        ("", 0, 0),
        ("abc", 2, 2),
        ("😀😀", 1, 4),
        ("😀😀", 2, 8),
        ("日本語", 2, 6),
        ("e\u0301x", 1, 1),
        ("e\u0301x", 2, 3),
        ("naïve", 3, 4),
    ],
)
def test_utf8_offset_counts_the_bytes_before_a_character(s: str, index: int, offset: int) -> None:
    assert ytext.utf8_offset(s, index) == offset
    assert ytext.char_index(s, offset) == index


@pytest.mark.parametrize("index", [-1, 4])
def test_utf8_offset_refuses_an_index_outside_the_text(index: int) -> None:
    with pytest.raises(IndexError):
        ytext.utf8_offset("abc", index)


def test_char_index_refuses_an_offset_inside_a_character() -> None:
    with pytest.raises(ValueError, match="inside a character"):
        ytext.char_index("😀", 2)


def test_insert_between_two_emoji_lands_between_them() -> None:
    text = new_text("😀😀")
    ytext.insert(text, 1, "x")
    assert str(text) == "😀x😀"
    ytext.insert(text, 3, "!")
    assert str(text) == "😀x😀!"
    assert ytext.length(text) == 4


def test_insert_in_cjk_and_after_combining_characters() -> None:
    text = new_text("日本語")
    ytext.insert(text, 2, "の")
    assert str(text) == "日本の語"
    accented = new_text("e\u0301t\u00e9")  # é as e + combining accent, then t, then é
    ytext.insert(accented, 2, "-")
    assert str(accented) == "e\u0301-t\u00e9"


def test_delete_removes_whole_characters() -> None:
    text = new_text("a😀b日c")
    ytext.delete(text, 1, 1)
    assert str(text) == "ab日c"
    ytext.delete(text, 2, 2)
    assert str(text) == "ab"
    ytext.delete(text, 0, 0)
    assert str(text) == "ab"


def test_delete_past_the_end_is_refused_and_changes_nothing() -> None:
    text = new_text("😀😀")
    with pytest.raises(IndexError):
        ytext.delete(text, 1, 2)
    with pytest.raises(ValueError):
        ytext.delete(text, 0, -1)
    assert str(text) == "😀😀"


def test_edits_on_the_empty_text() -> None:
    text = new_text()
    ytext.insert(text, 0, "")
    ytext.delete(text, 0, 0)
    ytext.replace(text, "")
    assert str(text) == ""
    ytext.replace(text, "新しい 😀")
    assert str(text) == "新しい 😀"
    ytext.replace(text, "")
    assert str(text) == ""


def test_edits_keep_the_common_prefix_and_suffix() -> None:
    assert ytext.edits("hello world", "hello brave world") == [ytext.Edit(6, 6, "brave ")]
    assert ytext.edits("same", "same") == []
    assert ytext.edits("abc", "") == [ytext.Edit(0, 3, "")]


def test_edits_touch_only_the_changed_word_of_a_long_text() -> None:
    lines = [f"line {i} with some words in it\n" for i in range(2000)]
    old = "".join(lines)
    lines[700] = lines[700].replace("some", "many")
    lines[1500] = "an entirely new line\n"
    changes = ytext.edits(old, "".join(lines))
    assert sum(e.end - e.start + len(e.insert) for e in changes) < 60


# Emoji, CJK, combining marks and line breaks: where byte, UTF-16 and code-point counts differ.
ALPHABET = st.sampled_from(["a", "b", " ", "\n", "é", "e\u0301", "日", "😀", "👍🏽"])
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)


@given(old=TEXTS, new=TEXTS)
def test_replace_makes_the_text_equal_any_new_value(old: str, new: str) -> None:
    text = new_text(old)
    ytext.replace(text, new)
    assert str(text) == new


def test_replace_keeps_a_concurrent_edit_from_another_doc() -> None:
    base = "# Title 😀\n\nfirst paragraph\nsecond paragraph\n"
    mine, theirs = new_text(base), new_text()
    theirs.doc.apply_update(mine.doc.get_update())
    # Someone types at the end of the second paragraph ...
    ytext.insert(theirs, len(base) - 1, " (their note 👍)")
    # ... while we rewrite the title from a stale copy.
    ytext.replace(mine, base.replace("Title 😀", "Better title 😀"))
    mine.doc.apply_update(theirs.doc.get_update())
    theirs.doc.apply_update(mine.doc.get_update())
    expected = "# Better title 😀\n\nfirst paragraph\nsecond paragraph (their note 👍)\n"
    assert str(mine) == str(theirs) == expected


def test_replace_is_one_transaction_inside_the_callers_own() -> None:
    text = new_text("one two three")
    updates: list[bytes] = []
    text.doc.observe(lambda event: updates.append(event.update))
    ytext.replace(text, "one 2 three 4")
    assert str(text) == "one 2 three 4"
    assert len(updates) == 1
    with text.doc.transaction(origin="api"):  # nested: joins the caller's transaction
        ytext.replace(text, "1 2 3 4")
    assert len(updates) == 2


async def test_a_yjs_peer_sees_python_character_edits_in_place(
    make_client: ClientFactory, make_js_client: JsClientFactory
) -> None:
    py = await make_client("text-interop")
    js = await make_js_client("text-interop")
    text = py.doc.get("text", type=Text)
    text += "😀😀"
    await js.wait_text("😀😀")
    ytext.insert(text, 1, "x")
    await js.wait_text("😀x😀")
    # The JS peer counts UTF-16 code units: after "😀x" is 3.
    await js.insert(utf16_len("😀x"), "日")
    await py.wait_for(lambda: str(text) == "😀x日😀")
    ytext.replace(text, "😀 e\u0301 日😀")
    await js.wait_text("😀 e\u0301 日😀")
    ytext.delete(text, 0, 2)
    await js.wait_text("e\u0301 日😀")
