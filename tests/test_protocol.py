"""The wire protocol: round trips, and every malformed frame is a ProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Awareness, Doc, Text, create_sync_message

from collab import protocol
from collab.closecodes import CloseCode
from collab.protocol import ProtocolError


def sample_update() -> bytes:
    doc = Doc()
    doc.get("text", type=Text).insert(0, "hello")
    return doc.get_update()


def awareness_payload(state: dict[str, object] | None = None) -> bytes:
    doc = Doc()
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
    doc = Doc()
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
