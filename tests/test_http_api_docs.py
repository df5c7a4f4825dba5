"""docs/http-api.md keeps up with the code: every API route and every error code is in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from collab.app import create_app
from collab.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "http-api.md").read_text()


def test_every_api_route_is_documented() -> None:
    app = create_app(Settings(store="memory://"))
    routes = {
        (route.method, re.sub(r"\{doc:[^}]*\}", "{doc}", route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method not in ("HEAD", "*")  # "*": the JSON 404/405 for unknown paths
    }
    assert routes, "no API routes found"
    missing = [f"{m} {p}" for m, p in sorted(routes) if f"`{m} {p}`" not in DOC]
    assert not missing, f"docs/http-api.md does not describe {missing}"


def _codes_in(path: Path) -> set[str]:
    """Error codes the module raises: ApiError(status, code), json_error(cls, code),
    AuthError(status, reason, metric, code) and ``code = "..."`` on error classes."""
    codes = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            position = {"ApiError": 1, "json_error": 1, "AuthError": 3}.get(node.func.id)
            if position is not None and len(node.args) > position:
                arg = node.args[position]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    codes.add(arg.value)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and [getattr(t, "id", None) for t in item.targets] == ["code"]
                    and isinstance(item.value, ast.Constant)
                ):
                    codes.add(str(item.value.value))
    return codes


def test_every_error_code_of_the_api_is_in_the_table() -> None:
    modules = ["http_api", "tokens_api", "ratelimit", "apierror", "render", "auth", "guard", "ws"]
    codes = set().union(*(_codes_in(ROOT / "collab" / f"{m}.py") for m in modules))
    assert {"not_found", "rate_limited", "too_deep", "token_required"} <= codes
    table = set(re.findall(r"^\| \d{3} \| `(\w+)` \|", DOC, re.M))
    assert not codes - table, f"undocumented error codes: {sorted(codes - table)}"
