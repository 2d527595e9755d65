"""client, use_connected, presence_server and presence import each other in one direction only.

``Client.connected()`` returns a ``UseConnected``, which may summon the ``PresenceServer``, and
``presence`` builds the ``PresenceManagedClient`` on ``Client``: the modules form the layers
``presence`` → ``client`` → ``use_connected`` → ``presence_server``, with no import going back
up, at module level or inside a function (imports under ``TYPE_CHECKING`` are annotations
only and do not count).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import txxmppnode

PACKAGE = Path(txxmppnode.__file__).parent
LAYERS = ("presence", "client", "use_connected", "presence_server")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_siblings(module: str) -> set[str]:
    """The modules of the package that *module* imports at run time, anywhere in its code."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "txxmppnode" and len(parts) > 1:
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "txxmppnode" and len(parts) > 1:
                    found.add(parts[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("module", LAYERS)
def test_no_import_goes_back_up_the_layers(module: str) -> None:
    above = set(LAYERS[: LAYERS.index(module)])
    assert imported_siblings(module) & above == set()


def test_the_parser_sees_function_level_imports() -> None:
    # presence imports use_connected; client imports it too (for connected())
    assert {"client", "presence_server", "use_connected"} <= imported_siblings("presence")
    assert "use_connected" in imported_siblings("client")


@pytest.mark.parametrize("first", LAYERS)
def test_each_module_imports_first_in_a_fresh_interpreter(first: str) -> None:
    code = f"import txxmppnode.{first}; from txxmppnode.presence import PresenceServer; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_presence_server_is_still_importable_from_presence() -> None:
    from txxmppnode import presence, presence_server

    assert presence.PresenceServer is presence_server.PresenceServer
    assert txxmppnode.PresenceServer is presence_server.PresenceServer
