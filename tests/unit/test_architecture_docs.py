"""The Client's state diagram in the documentation is the one the code runs.

``docs/client_states.inc`` is generated from ``txxmppnode.client.TRANSITIONS`` by
``docs/client_states.py`` and checked in; regenerate it with
``PYTHONPATH=. python docs/client_states.py`` after changing the table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from txxmppnode.client import TRANSITIONS, ClientInput, ClientState

DOCS = Path(__file__).resolve().parents[2] / "docs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("client_states", DOCS / "client_states.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_diagram_is_up_to_date() -> None:
    checked_in = (DOCS / "client_states.inc").read_text(encoding="utf-8")
    assert checked_in == generator().render(), (
        "docs/client_states.inc is out of date: run PYTHONPATH=. python docs/client_states.py"
    )


def test_the_diagram_shows_every_declared_transition_and_the_table_every_pair() -> None:
    text = generator().render()
    for (state, event), after in TRANSITIONS.items():
        if after is not state:
            assert f"--{event.value}--" in text and after.value in text
    rows = [
        line.split()
        for line in text.splitlines()
        if line.split()[:1] in ([state.value] for state in ClientState)
    ]
    assert [row[0] for row in rows] == [state.value for state in ClientState]
    for row in rows:
        state = ClientState(row[0])
        for event, cell in zip(ClientInput, row[1:], strict=True):
            after = TRANSITIONS[state, event]
            assert cell == ("·" if after is state else after.value)


def test_the_architecture_page_includes_it_and_is_in_the_toctree() -> None:
    assert ".. include:: client_states.inc" in (DOCS / "architecture.rst").read_text()
    assert "   architecture\n" in (DOCS / "index.rst").read_text()
