"""The "assistant": a summary appended to a note by server code (no AI needed).

It shows ``server.open_document``: the edit joins the live room, so it merges
with whatever people type meanwhile, appears in every open editor at once,
and is stored before the block ends.
"""

from __future__ import annotations

import re

import collab

from .hooks import count_words

MARKER = "Summary:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def summarize(text: str) -> str:
    """The first sentence of the first paragraph that is not a heading or a summary."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    body = [p for p in paragraphs if p and not p.startswith(("#", MARKER))]
    words = count_words("\n".join(body))
    if not body:
        return f"{MARKER} (nothing written yet)"
    first = _SENTENCE_END.split(body[0], maxsplit=1)[0]
    if len(first) > 200:
        first = first[:199].rstrip() + "…"
    return f"{MARKER} {first} ({words} word{'' if words == 1 else 's'})"


async def append_summary(server: collab.Server, doc: str) -> str:
    """Append a summary of ``doc`` to its end; the summary line."""
    async with server.open_document(doc, origin="assistant") as handle:
        text = str(handle)
        summary = summarize(text)
        # One blank line before the summary, whatever the text ends with.
        trailing = len(text) - len(text.rstrip("\n"))
        handle.append(("\n" * max(0, 2 - trailing) if text else "") + summary)
    return summary
