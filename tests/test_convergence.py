"""Many clients editing one document at once converge, and no surviving insert is lost."""

from __future__ import annotations

import asyncio
import itertools
import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Text

from collab.client import Session
from tests.conftest import ClientFactory
from tests.helpers import converged

MARKER = re.compile(r"\[\d+\.\d+\]")
CLIENTS = 10
_docs = itertools.count()


def boundaries(text: str) -> list[int]:
    """Positions between markers: inserting there never splits one."""
    return [0, *(m.end() for m in MARKER.finditer(text))]


async def edit(
    session: Session, who: int, ops: int, rng: random.Random
) -> tuple[set[str], set[str]]:
    text = session.doc.get("text", type=Text)
    inserted: set[str] = set()
    deleted: set[str] = set()
    for k in range(ops):
        current = str(text)
        markers = list(MARKER.finditer(current))
        if markers and rng.random() < 0.3:
            m = rng.choice(markers)
            del text[m.start() : m.end()]
            deleted.add(m.group())
        else:
            marker = f"[{who}.{k}]"
            text.insert(rng.choice(boundaries(current)), marker)
            inserted.add(marker)
        # Yield to the network now and then, so edits cross in flight.
        await asyncio.sleep(rng.choice((0, 0, 0.001, 0.005)))
    return inserted, deleted


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), ops=st.integers(5, 40))
async def test_ten_clients_with_concurrent_random_edits_converge(
    make_client: ClientFactory, seed: int, ops: int
) -> None:
    name = f"convergence-{next(_docs)}"
    sessions = [await make_client(name) for _ in range(CLIENTS)]
    results = await asyncio.gather(
        *(edit(s, i, ops, random.Random(seed * 100 + i)) for i, s in enumerate(sessions))
    )
    final = await converged(sessions, timeout=30)
    inserted = set().union(*(r[0] for r in results))
    deleted = set().union(*(r[1] for r in results))
    survivors = MARKER.findall(final)
    assert len(survivors) == len(set(survivors)), "a marker appears twice"
    assert set(survivors) == inserted - deleted
    assert MARKER.sub("", final) == "", "text holds fragments of markers"
    for s in sessions:
        await s.close()
