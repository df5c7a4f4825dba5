"""The ``collab`` pytest plugin, used by a test suite written the way an app team would.

``pytester`` writes a small suite into a temporary folder and runs it in a
fresh pytest process, where the plugin is loaded from its ``pytest11`` entry
point like in any project that installed collab.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from collab.testing import ConvergenceError, assert_converged, json_view
from collab.testing.server import free_port

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

#: A small collaborative "app" and its tests, as a user of collab.testing writes them.
APP_TESTS = '''
import pytest
from pycrdt import Map, Text

from collab.testing import converged


class TodoList:
    """The app under test: a shared to-do list on top of a synced document."""

    def __init__(self, session):
        self.items = session.doc.get("todo", type=Map)

    def add(self, key, title):
        self.items[key] = title

    def titles(self):
        return sorted(self.items.values())


def view(doc):
    return "\\n".join(sorted(f"{k}: {v}" for k, v in doc.get("todo", type=Map).items()))


@pytest.mark.parametrize("collab_store", ["memory", "sqlite"], indirect=True)
async def test_two_users_see_each_others_items(collab_client, collab_store):
    alice, bob = await collab_client("list"), await collab_client("list")
    TodoList(alice).add("a", "milk")
    TodoList(bob).add("b", "bread")
    await converged([alice, bob], view=view, timeout=5)
    assert TodoList(alice).titles() == ["bread", "milk"]


async def test_an_offline_user_catches_up_after_a_partition(collab_client, collab_proxy):
    alice = await collab_client("list", proxy=collab_proxy, label="alice")
    bob = await collab_client("list", proxy=collab_proxy, label="bob")
    async with collab_proxy.partition(["bob"]):
        TodoList(alice).add("a", "milk")
        TodoList(bob).add("b", "eggs")
    collab_proxy.set_latency(0.05, jitter=0.02)
    await converged([alice, bob], view=view, timeout=10)
    assert TodoList(bob).titles() == ["eggs", "milk"]


async def test_edits_survive_a_server_restart(collab_client, collab_proxy):
    alice = await collab_client("list", proxy=collab_proxy, label="alice")
    TodoList(alice).add("a", "milk")
    await collab_proxy.restart_server()
    late = await collab_client("list")
    await converged([alice, late], view=view, timeout=10)


async def test_text_too(collab_client):
    alice, bob = await collab_client("notes"), await collab_client("notes")
    alice.doc.get("text", type=Text).insert(0, "shared")
    assert await converged([alice, bob]) == "shared"
'''

#: A scenario that cannot converge: bob's updates are held by the network.
DIVERGING_TEST = """
from pycrdt import Text

from collab.testing import Direction, converged


async def test_held_updates_never_arrive(collab_client, collab_proxy):
    alice = await collab_client("doc", proxy=collab_proxy, label="alice")
    bob = await collab_client("doc", proxy=collab_proxy, label="bob")
    alice.doc.get("text", type=Text).insert(0, "shared line\\n")
    await converged([alice, bob], timeout=5)
    collab_proxy.hold("bob", Direction.UP)
    bob.doc.get("text", type=Text).insert(0, "bob's unsent line\\n")
    await converged([alice, bob], timeout=0.5, labels=["alice", "bob"])
"""


def test_a_suite_using_the_fixtures_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_a_diverging_scenario_fails_with_a_readable_diff(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_diverge=DIVERGING_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collab-seed", "42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ConvergenceError: 2 replicas did not converge within 0.5s*",
            "*bob differs from the reference*",
            "*+bob's unsent line*",
            "*state vectors (client id: clock):*",
            "*collab_seed was 42: replay with --collab-seed 42*",
        ]
    )


def files_of_the_docs_example() -> dict[str, str]:
    text = (Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, re.S))


def test_the_worked_example_of_docs_testing_md_passes(pytester: pytest.Pytester) -> None:
    files = files_of_the_docs_example()
    assert set(files) == {"todo.py", "test_todo.py"}
    pytester.makeini(INI)
    pytester.makepyfile(**{name.removesuffix(".py"): source for name, source in files.items()})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


@pytest.fixture
def external_server() -> Iterator[str]:
    """A `collab serve` process that the inner suite did not start."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collab", "serve", "--port", str(port), "--store", "memory://"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "collab serve exited at start"
                assert time.monotonic() < deadline, "collab serve did not listen"
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_same_suite_runs_against_another_server_with_collab_url(
    pytester: pytest.Pytester, external_server: str
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--collab-url", external_server, "-k", "not restart"
    )
    # The sqlite parameter is about collab_server's own store; against an
    # external server both parameters run against it.
    result.assert_outcomes(passed=4, deselected=1)
    result.stdout.fnmatch_lines([f"collab: against {external_server}"])


def two_docs(a: str, b: str) -> tuple[Doc[Text], Doc[Text]]:
    first: Doc[Text] = Doc()
    first.get("text", type=Text).insert(0, a)
    second: Doc[Text] = Doc()
    second.apply_update(first.get_update())
    text = second.get("text", type=Text)
    del text[0 : len(text)]
    text.insert(0, b)
    return first, second


def test_assert_converged_names_missing_and_extra_fragments() -> None:
    a, b = two_docs("[1.0][1.1][1.2]", "[1.0][9.9][1.2]")
    c: Doc[Text] = Doc()
    c.apply_update(a.get_update())
    with pytest.raises(ConvergenceError) as failure:
        assert_converged([a, c, b], labels=["a", "c", "b"])
    message = str(failure.value)
    assert "majority (2 of 3: a, c): '[1.0][1.1][1.2]'" in message
    assert "b differs from the majority" in message
    assert "- missing at 6: '1.1'" in message
    assert "+ extra at 6: '9.9'" in message


def test_same_text_but_different_edits_is_not_converged() -> None:
    a: Doc[Map[str]] = Doc()
    b: Doc[Map[str]] = Doc()
    a.get("meta", type=Map)["k"] = "v"
    with pytest.raises(ConvergenceError, match="state vectors"):
        assert_converged([a, b])  # the text view agrees, the documents do not
    with pytest.raises(ConvergenceError, match='"k": "v"'):
        assert_converged([a, b], view=json_view(text=Text, meta=Map))
    b.apply_update(a.get_update())
    assert assert_converged([a, b]) == ""
