"""Reference pages the code already knows, generated at each build.

``docs/_generated/*.md`` is written when Sphinx starts and included by the
reference pages, so the command options, check ids, setting defaults and the
HTTP API's parameters cannot drift from the code: the management commands'
argument parsers, ``project_stats/checks.py``, ``project_stats/conf.py`` and
the OpenAPI schema drf-spectacular builds.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"
COMMANDS = (
    "project_stats_token",
    "project_stats_flush",
    "project_stats_backfill",
    "project_stats_prune",
    "project_stats_demo",
)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def commands() -> str:
    from django.core.management import load_command_class

    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal: a fixed width
    parts = []
    for name in COMMANDS:
        command = load_command_class("project_stats", name)
        help_text = command.create_parser("manage.py", name).format_help()
        parts += [f"### `{name}` options", "", "```text", help_text.rstrip(), "```", ""]
    return "\n".join(parts)


def _message(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(v.value) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"  # type: ignore[attr-defined]
            for v in node.values
        )
    if isinstance(node, ast.BinOp):
        return _message(node.left) + _message(node.right)
    return "{" + ast.unparse(node) + "}"


ID = re.compile(r"project_stats\.[EW]\d{3}")
CHECK_SOURCES = ("checks.py", "tsdb/redis_config.py")


def _const(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _found_in(tree: ast.Module) -> dict[str, tuple[str, list[str]]]:
    """``Error(message, id="...")``, ``Problem(level, "id", message, hint)``, and a
    module function's ``Error(..., id=check_id)`` called with the id as an argument."""
    found: dict[str, tuple[str, list[str]]] = {}
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def add(check_id: str, level: str, message: str) -> None:
        messages = found.setdefault(check_id, (level, []))[1]
        if message not in messages:
            messages.append(message)

    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        name = node.func.id
        keyword = next((k.value for k in node.keywords if k.arg == "id"), None)
        if name in ("Error", "Warning") and keyword is not None and _const(keyword):
            add(str(_const(keyword)), name.lower(), _message(node.args[0]))
        elif name == "Problem" and len(node.args) >= 3 and _const(node.args[1]):
            add(str(_const(node.args[1])), str(_const(node.args[0])), _message(node.args[2]))
        elif name in functions and any(ID.fullmatch(_const(a) or "") for a in node.args):
            function = functions[name]
            bound = {
                param.arg: _const(arg) or ""
                for param, arg in zip(function.args.args, node.args, strict=False)
            }
            for inner in ast.walk(function):
                if (
                    isinstance(inner, ast.Call)
                    and isinstance(inner.func, ast.Name)
                    and (inner.func.id in ("Error", "Warning"))
                ):
                    message = _message(inner.args[0])
                    for param, value in bound.items():
                        message = message.replace("{" + param + "}", value)
                    check_id = next(v for v in bound.values() if ID.fullmatch(v))
                    add(check_id, inner.func.id.lower(), message)
    return found


def checks() -> str:
    found: dict[str, tuple[str, list[str]]] = {}
    mentioned: set[str] = set()
    for source in CHECK_SOURCES:
        text = (ROOT / "project_stats" / source).read_text()
        mentioned |= set(ID.findall(text))
        for check_id, (level, messages) in _found_in(ast.parse(text)).items():
            found.setdefault(check_id, (level, []))[1].extend(messages)
    missing = mentioned - set(found)
    if missing:  # a new way of raising a check: teach this module to read it
        raise RuntimeError(f"check ids without a message found: {sorted(missing)}")
    lines = [
        "| id | level | message (`{...}`: filled in when it is reported) |",
        "| --- | --- | --- |",
    ]
    for check_id in sorted(found, key=lambda i: (i[14], int(i[15:]))):
        level, messages = found[check_id]
        text = "<br>".join(_cell(m) for m in messages)
        lines.append(f"| `{check_id}` | {level} | {text} |")
    return "\n".join(lines) + "\n"


def settings() -> str:
    from project_stats.conf import BUFFER_DEFAULTS, DEFAULTS

    def table(defaults: dict[str, Any], prefix: str) -> list[str]:
        rows = ["| key | default |", "| --- | --- |"]
        rows += [f"| `{prefix}{k}` | `{_cell(repr(v))}` |" for k, v in defaults.items()]
        return rows

    return "\n".join(
        [
            "### `PROJECT_STATS` defaults",
            "",
            *table(DEFAULTS, ""),
            "",
            '### `PROJECT_STATS["BUFFER"]` defaults',
            "",
            *table(BUFFER_DEFAULTS, ""),
            "",
        ]
    )


def http_api() -> str:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator(patterns=None, urlconf="project_stats.urls").get_schema(
        request=None, public=True
    )
    lines = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            lines += [f"### `{method.upper()} /api/0{path}`", ""]
            lines += [f"Operation `{operation['operationId']}`.", ""]
            if operation.get("description"):
                lines += [operation["description"].strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += [
                    "| parameter | in | required | type | description |",
                    "| --- | --- | --- | --- | --- |",
                ]
                for p in parameters:
                    kind = p.get("schema", {})
                    kind = kind.get("type") or kind.get("$ref", "").rsplit("/", 1)[-1] or "-"
                    if p.get("schema", {}).get("enum"):
                        kind += ": " + ", ".join(f"`{e}`" for e in p["schema"]["enum"])
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} "
                        f"| {_cell(kind)} | {_cell(p.get('description', ''))} |"
                    )
                lines.append("")
            lines += ["| status | meaning |", "| --- | --- |"]
            for status, response in operation.get("responses", {}).items():
                lines.append(f"| {status} | {_cell(response.get('description', '')) or '-'} |")
            lines.append("")
    return "\n".join(lines)


def write_all() -> None:
    OUT.mkdir(exist_ok=True)
    for name, render in (
        ("commands", commands),
        ("checks", checks),
        ("settings", settings),
        ("http_api", http_api),
    ):
        text = render()
        path = OUT / f"{name}.md"
        if not path.exists() or path.read_text() != text:  # unchanged: no rebuild
            path.write_text(text)
