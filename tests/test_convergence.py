"""Many clients editing one document at once converge, and no surviving insert is lost."""

from __future__ import annotations

import asyncio
import itertools
import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ClientFactory
from tests.helpers import converged, random_marker_edits

MARKER = re.compile(r"\[\d+\.\d+\]")
CLIENTS = 10
_docs = itertools.count()


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
        *(
            random_marker_edits(
                s, str(i), ops, random.Random(seed * 100 + i), MARKER, pauses=(0, 0, 0.001, 0.005)
            )
            for i, s in enumerate(sessions)
        )
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
