"""The wire protocol: round trips, and every malformed frame is a ProtocolError."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import (
    Array,
    Awareness,
    Doc,
    IdSet,
    Map,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    create_sync_message,
    get_state,
    get_update,
)

from collab import protocol
from collab.closecodes import CloseCode
from collab.protocol import ProtocolError


def sample_update() -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "hello")
    return doc.get_update()


def awareness_payload(state: dict[str, object] | None = None) -> bytes:
    doc: Doc[Any] = Doc()
    aw = Awareness(doc)
    aw.set_local_state(state if state is not None else {"user": {"name": "ada"}})
    return aw.encode_awareness_update([doc.client_id])


def valid_frames() -> list[bytes]:
    update = sample_update()
    return [
        protocol.sync_step1(Doc().get_state()),
        protocol.sync_step2(update),
        protocol.sync_update(update),
        protocol.awareness(awareness_payload()),
        protocol.query_awareness(),
        protocol.permission_denied("read-only connection"),
    ]


def test_frames_round_trip_to_typed_messages() -> None:
    update = sample_update()
    assert protocol.decode(protocol.sync_step2(update)) == protocol.SyncStep2(update)
    assert protocol.decode(protocol.sync_update(update)) == protocol.SyncUpdate(update)
    assert protocol.decode(protocol.query_awareness()) == protocol.QueryAwareness()
    assert protocol.decode(protocol.permission_denied("no")) == protocol.PermissionDenied("no")
    payload = awareness_payload()
    assert protocol.decode(protocol.awareness(payload)) == protocol.AwarenessUpdate(payload)


def test_our_step1_is_what_pycrdt_sends() -> None:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "x")
    assert protocol.sync_step1(doc.get_state()) == create_sync_message(doc)


@pytest.mark.parametrize("frame", valid_frames(), ids=lambda f: f"type{f[0]}")
def test_every_truncation_is_a_protocol_error(frame: bytes) -> None:
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError) as info:
            protocol.decode(frame[:cut])
        assert info.value.code in (CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA)


@pytest.mark.parametrize("frame", valid_frames(), ids=lambda f: f"type{f[0]}")
def test_trailing_bytes_are_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        protocol.decode(frame + b"\x00")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty frame"),
        (b"\x07", "unknown message type 7"),
        (b"\x00\x09\x00", "unknown sync message type 9"),
        (b"\x02\x05\x00", "unknown auth message type 5"),
        (b"\x00\x01\x05ab", "truncated sync payload"),
        (b"\x80" * 12, "oversized varint"),
    ],
)
def test_malformed_frames_name_what_is_wrong(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as info:
        protocol.decode(frame)
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_awareness_state_that_is_not_json_is_invalid_data() -> None:
    bad = protocol.encode_awareness_entries([protocol.AwarenessEntry(1, 1, "{nope")])
    with pytest.raises(ProtocolError) as info:
        protocol.decode(protocol.awareness(bad))
    assert info.value.code == CloseCode.INVALID_DATA


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        protocol.decode(data)


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 6), st.none() | st.integers(0, 99)),
        min_size=1,
        max_size=20,
    )
)
def test_merged_awareness_equals_applying_updates_in_order(
    records: list[tuple[int, int, int | None]],
) -> None:
    payloads = [
        protocol.encode_awareness_entries(
            [protocol.AwarenessEntry(cid, clock, "null" if v is None else f'{{"v":{v}}}')]
        )
        for cid, clock, v in records
    ]
    one_by_one = Awareness(Doc())
    merged = Awareness(Doc())
    for payload in payloads:
        one_by_one.apply_awareness_update(payload, "test")
    merged.apply_awareness_update(protocol.merge_awareness(payloads), "test")
    own = one_by_one.client_id
    assert {k: v for k, v in one_by_one.states.items() if k != own} == {
        k: v for k, v in merged.states.items() if k != merged.client_id
    }


# -- scan_update: reading what an update holds ---------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "text",
                "text-del",
                "format",
                "embed",
                "map",
                "map-nest",
                "array",
                "array-del",
                "array-nest",
                "xml",
                "any",
                "other-client",
            ]
        ),
        st.integers(0, 50),
        st.text(max_size=6),
    ),
    max_size=25,
)


def random_docs(ops: list[tuple[str, int, str]]) -> list[bytes]:
    """Updates of two clients editing every kind of shared type, plus the merged state."""
    docs: list[Doc[Any]] = [Doc(), Doc()]
    updates = []
    who = 0
    for op, n, word in ops:
        if op == "other-client":
            other = docs[1 - who]
            updates.append(docs[who].get_update(other.get_state()))
            other.apply_update(updates[-1])
            who = 1 - who
            continue
        doc = docs[who]
        before = doc.get_state()
        text = doc.get("text", type=Text)
        mapping = doc.get("map", type=Map)
        array = doc.get("array", type=Array)
        xml = doc.get("xml", type=XmlFragment)
        with doc.transaction():
            if op == "text":
                # pycrdt positions are UTF-8 bytes: ASCII here, the rest appended.
                text.insert(n % (len(text) + 1), word.encode("ascii", "ignore").decode())
                doc.get("unicode", type=Text).insert(0, word + "é😀")
            elif op == "text-del" and len(text):
                del text[n % len(text) : n % len(text) + 1]
            elif op == "format" and len(text):
                text.format(0, len(text), {"bold": True, "n": [n, {"k": word}]})
            elif op == "embed":
                text.insert_embed(n % (len(text) + 1), {"image": word, "size": [n, n]})
            elif op == "map":
                mapping[word] = [n, word, {"deep": {"er": [1.5, None, True]}}, b"\x01"]
            elif op == "map-nest":
                mapping[word] = Map({"inner": Array([Map({"x": n})])})
            elif op == "array":
                array.insert(n % (len(array) + 1), word)
            elif op == "array-del" and len(array):
                del array[n % len(array)]
            elif op == "array-nest":
                array.insert(n % (len(array) + 1), Array([Text(word), Map({"k": n})]))
            elif op == "xml":
                xml.children.append(XmlElement("p", {"class": word}, [XmlText(word)]))
            elif op == "any":
                array.append({"list": [[n]], "s": word, "i": -n, "f": n / 3, "big": 2**40})
        updates.append(doc.get_update(before))
    updates.append(docs[0].get_update())
    updates.append(docs[1].get_update())
    return updates


@given(OPS)
def test_scan_reads_every_valid_update_to_its_delete_set(ops: list[tuple[str, int, str]]) -> None:
    for update in random_docs(ops):
        shape = protocol.scan_update(update)
        # Parsing ended exactly where the delete set starts...
        rest = update[shape.end :]
        assert IdSet.decode(rest).encode() == rest or rest == b"\x00"
        # ...and counted every client's clock as yrs does.
        probe: Doc[Any] = Doc()
        probe.apply_update(update)
        if get_update(update, probe.get_state())[0] == 0:  # nothing pending
            clocks = protocol.decode_state_vector(get_state(update))
            assert {c: k for c, k in shape.ends.items() if k} == clocks


def nested_maps(depth: int) -> bytes:
    doc: Doc[Any] = Doc()
    level = doc.get("map", type=Map)
    with doc.transaction():
        for _ in range(depth):
            inner: Map[Any] = Map()
            level["k"] = inner
            level = inner
    return doc.get_update()


def test_scan_measures_nesting_and_refuses_it_beyond_the_bound() -> None:
    assert protocol.scan_update(nested_maps(10)).level == 11
    with pytest.raises(ProtocolError, match="nested deeper than 64") as info:
        protocol.scan_update(nested_maps(70))
    assert info.value.code == CloseCode.INVALID_DATA


def test_scan_refuses_values_nested_beyond_the_bound() -> None:
    doc: Doc[Any] = Doc()
    value: object = 1
    for _ in range(70):
        value = [value]
    doc.get("array", type=Array).append(value)
    with pytest.raises(ProtocolError, match="value nested deeper") as info:
        protocol.scan_update(doc.get_update())
    assert info.value.code == CloseCode.INVALID_DATA


def test_json_depth_is_checked_without_recursion() -> None:
    protocol.check_json("[" * 32 + "]" * 32, 32)
    for depth in (33, 100_000):
        with pytest.raises(ProtocolError, match="nested deeper"):
            protocol.check_json("[" * depth + "]" * depth, 32)
    assert protocol.json_depth({"a": [{"b": [1]}], "c": 2}) == 4
