"""Wait for replicas of a document to converge, and explain it when they do not.

    await converged([alice, bob, carol], timeout=5)     # returns the common text
    assert_converged([alice, bob])                      # the same, right now

A replica is a ``collab.client.Session`` (or anything with a ``.doc``) or a
pycrdt ``Doc``.  Replicas have converged when they hold the same state vector
(the same edits integrated) and the same *view*: by default the text of the
root ``"text"``; pass ``view=`` to compare maps, XML or several roots.

Waiting never sleeps: the check runs again after every change to any of the
documents, so it returns as soon as the replicas agree.  On failure the
``ConvergenceError`` (an ``AssertionError``) shows each replica that differs
from the majority as a diff, line by line for multi-line views and as
missing/extra fragments for single-line ones.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias

from pycrdt import Array, Doc, Map, Text

__all__ = [
    "ConvergenceError",
    "Replica",
    "assert_converged",
    "converged",
    "describe_divergence",
    "doc_of",
    "json_view",
    "state_vector",
    "text_view",
]


class HasDoc(Protocol):
    @property
    def doc(self) -> Doc[Any]: ...


Replica: TypeAlias = HasDoc | Doc[Any]
View: TypeAlias = Callable[[Doc[Any]], str]

#: At most this many differing replicas are shown in full in a failure message.
MAX_SHOWN = 5
#: At most this many missing/extra fragments are listed per replica.
MAX_FRAGMENTS = 8
#: Differences fewer than this many equal characters apart are shown as one.
MERGE_GAP = 4


class ConvergenceError(AssertionError):
    """Replicas that should hold the same document do not; the message shows how."""

    def __init__(self, message: str, views: list[str]) -> None:
        super().__init__(message)
        self.views = views


def doc_of(replica: Replica) -> Doc[Any]:
    """The pycrdt ``Doc`` of a session or of a ``Doc``."""
    if isinstance(replica, Doc):
        return replica
    return replica.doc


def text_view(key: str = "text") -> View:
    """A view showing the text of root ``key``."""

    def view(doc: Doc[Any]) -> str:
        return str(doc.get(key, type=Text))

    view.__name__ = f"text of {key!r}"
    return view


def json_view(**roots: type[Text] | type[Map[Any]] | type[Array[Any]]) -> View:
    """A view of several roots as indented JSON, e.g. ``json_view(text=Text, meta=Map)``.

    One line per entry, so a failure's diff shows which key differs.
    """

    def view(doc: Doc[Any]) -> str:
        shown: dict[str, Any] = {}
        for key, kind in roots.items():
            root = doc.get(key, type=kind)
            shown[key] = str(root) if isinstance(root, Text) else root.to_py()
        return json.dumps(shown, indent=1, sort_keys=True, ensure_ascii=False)

    view.__name__ = "JSON of " + ", ".join(repr(k) for k in roots)
    return view


def state_vector(doc: Doc[Any]) -> dict[int, int]:
    """The decoded state vector of ``doc``: client id -> number of its items integrated."""
    data = doc.get_state()
    pos = 0

    def var_uint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    return {var_uint(): var_uint() for _ in range(var_uint())}


def _labels(replicas: Sequence[Replica], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(replicas):
            raise ValueError(f"{len(labels)} labels for {len(replicas)} replicas")
        return list(labels)
    return [f"replica {i}" for i in range(len(replicas))]


def _agree(docs: Sequence[Doc[Any]], view: View) -> tuple[bool, list[str]]:
    views = [view(d) for d in docs]
    if len(set(views)) > 1:
        return False, views
    vectors = [state_vector(d) for d in docs]
    return all(v == vectors[0] for v in vectors), views


def assert_converged(
    replicas: Sequence[Replica], *, view: View | None = None, labels: Sequence[str] | None = None
) -> str:
    """Fail with a readable diff unless every replica holds the same document now."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    view = view or text_view()
    docs = [doc_of(r) for r in replicas]
    same, views = _agree(docs, view)
    if not same:
        raise ConvergenceError(
            describe_divergence(docs, views, _labels(replicas, labels), view=view), views
        )
    return views[0] if views else ""


async def converged(
    replicas: Sequence[Replica],
    *,
    timeout: float = 10.0,
    view: View | None = None,
    labels: Sequence[str] | None = None,
) -> str:
    """Wait until every replica holds the same document and return its view.

    Re-checks after each change to any of the documents (no polling); raises
    ``ConvergenceError`` with a diff against the majority after ``timeout``.
    """
    __tracebackhide__ = True
    view = view or text_view()
    docs = [doc_of(r) for r in replicas]
    changed = asyncio.Event()

    def on_change(_event: object) -> None:
        changed.set()

    subscriptions = [(d, d.observe(on_change)) for d in docs]
    views: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                changed.clear()
                same, views = _agree(docs, view)
                if same:
                    return views[0] if views else ""
                await changed.wait()
    except TimeoutError:
        _, views = _agree(docs, view)
        message = describe_divergence(
            docs, views, _labels(replicas, labels), view=view, timeout=timeout
        )
        raise ConvergenceError(message, views) from None
    finally:
        for d, sub in subscriptions:
            d.unobserve(sub)


def describe_divergence(
    docs: Sequence[Doc[Any]],
    views: Sequence[str],
    labels: Sequence[str],
    *,
    view: View,
    timeout: float | None = None,
) -> str:
    """A report of how each replica differs from the majority view."""
    counts = Counter(views)
    majority, votes = counts.most_common(1)[0]  # on a tie, the first replica's
    word = "majority" if votes * 2 > len(views) else "reference"
    agreeing = [label for label, v in zip(labels, views, strict=True) if v == majority]
    within = f" within {timeout:g}s" if timeout is not None else ""
    name = getattr(view, "__name__", "view")
    lines = [
        f"{len(docs)} replicas did not converge{within} (comparing {name} and state vectors)",
        f"{word} ({votes} of {len(docs)}: {_names(agreeing)}): {_preview(majority)}",
    ]
    differing = [(label, v) for label, v in zip(labels, views, strict=True) if v != majority]
    for label, v in differing[:MAX_SHOWN]:
        lines.append(f"{label} differs from the {word}: {_preview(v)}")
        lines.extend("    " + line for line in _diff(majority, v, label, word))
    if len(differing) > MAX_SHOWN:
        lines.append(f"... and {len(differing) - MAX_SHOWN} more differing replicas")
    vectors = [state_vector(d) for d in docs]
    if len({_sv_key(v) for v in vectors}) > 1:
        lines.append("state vectors (client id: clock):")
        groups: dict[tuple[tuple[int, int], ...], list[str]] = {}
        for label, vector in zip(labels, vectors, strict=True):
            groups.setdefault(_sv_key(vector), []).append(label)
        for key, members in groups.items():
            shown = ", ".join(f"{c}: {k}" for c, k in key)
            lines.append(f"    {_names(members)}: {{{shown}}}")
    return "\n".join(lines)


def _sv_key(vector: dict[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(vector.items()))


def _names(labels: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _preview(text: str, limit: int = 60) -> str:
    if len(text) > limit and "\n" in text:
        return f"{text.count(chr(10)) + 1} lines, {len(text)} chars"
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{shown!r} ({len(text)} chars)"


def _diff(majority: str, other: str, label: str, word: str) -> list[str]:
    if "\n" in majority or "\n" in other:
        diff = difflib.unified_diff(
            majority.splitlines(),
            other.splitlines(),
            fromfile=word,
            tofile=label,
            lineterm="",
            n=1,
        )
        lines = list(diff)
        return lines[:60] + (["..."] if len(lines) > 60 else [])
    # One long line (typical of text edited by bots): list fragments instead.
    matcher = difflib.SequenceMatcher(None, majority, other, autojunk=False)
    # Changes separated by a few equal characters read better as one.
    spans: list[list[int]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if spans and i1 - spans[-1][1] < MERGE_GAP and j1 - spans[-1][3] < MERGE_GAP:
            spans[-1][1], spans[-1][3] = i2, j2
        else:
            spans.append([i1, i2, j1, j2])
    out: list[str] = []
    for i1, i2, j1, j2 in spans:
        if i2 > i1:
            out.append(f"- missing at {i1}: {majority[i1:i2]!r}")
        if j2 > j1:
            out.append(f"+ extra at {i1}: {other[j1:j2]!r}")
    if len(out) > MAX_FRAGMENTS:
        out = [*out[:MAX_FRAGMENTS], f"... {len(out) - MAX_FRAGMENTS} more fragments"]
    return out
