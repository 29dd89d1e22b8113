"""The house's rooms and arrows, read from the source: no import circles, core knows no head, the add-on knows no
engine code, and every field's default and bounds are written once, in the request schema."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from sfumato.core import schema

ROOT = Path(__file__).resolve().parent.parent
# package folder -> module prefix (pyproject's package-dir)
ROOMS = {"sfumato": "sfumato", "core": "sfumato.core", "video": "sfumato.video", "threed": "sfumato.threed"}
# which rooms each room may import (the top assembles the kinds; the turntable head uses the 3-D head's meshes)
ARROWS = {"sfumato": {"sfumato", "core", "video", "threed"}, "core": {"core"}, "video": {"core", "threed", "video"},
          "threed": {"core", "threed"}}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, prefix in ROOMS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((prefix, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every engine module ``name`` imports, at module level or inside functions, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "sfumato"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_relative_imports():
    graph = _graph()
    assert "sfumato.core.schema" in graph["sfumato.core.jobs"]  # from . import schema
    assert "sfumato.core.jobs" in graph["sfumato.video.jobs"]  # from ..core.jobs import ...
    assert "sfumato.video.jobs" in graph["sfumato.kinds"]  # a lazy import inside a function


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_rooms_import_only_along_their_arrows():
    wrong = [(m, t) for m, targets in _graph().items() for t in targets
             if t != "sfumato" and _room(t) not in ARROWS[_room(m)]]  # the top package's __init__: the version
    assert wrong == []


def test_the_schema_and_the_addon_import_no_engine_code():
    graph = _graph()
    assert graph["sfumato.core.schema"] == set()  # the add-on loads this file in Blender's Python
    for path in (ROOT / "addon").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("sfumato", "core", "torch", "diffusers") for n in names), path


# ---- each default and bound written once ---------------------------------------------------------------------
COMMON = {0, 1, 2, 3, 4, 8, 16, 32, 64, 0.5, 100, 1000}  # too common to tell a restated limit from anything else


def _field_values() -> dict[str, set[float]]:
    """Each schema field's default and bounds, the distinctive ones."""
    values: dict[str, set[float]] = {}
    for cls in schema.KINDS.values():
        for f in schema.fields(cls):
            s = schema.spec_of(f)
            for v in (f.default, s.lo, s.hi):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v not in COMMON:
                    values.setdefault(f.name, set()).add(v)
    return values


def _restated(path: Path, values: dict[str, set[float]]) -> list[str]:
    """Lines of ``path`` where a field's name (as a name, or inside a string such as a flag) and one of its
    distinctive values (as a number) meet."""
    hits = []
    by_line: dict[int, list[tokenize.TokenInfo]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        by_line.setdefault(tok.start[0], []).append(tok)
    for line, toks in by_line.items():
        numbers = set()
        for t in toks:
            if t.type == tokenize.NUMBER:
                try:
                    numbers.add(float(t.string.replace("_", "")))
                except ValueError:
                    pass
        words = {w for t in toks if t.type in (tokenize.NAME, tokenize.STRING)
                 for w in re.findall(r"[A-Za-z_]\w*", t.string.replace("-", "_"))}
        for name, vals in values.items():
            if name in words and numbers & {float(v) for v in vals}:
                hits.append(f"{path.relative_to(ROOT)}:{line}: {name} {sorted(numbers & set(map(float, vals)))}")
    return hits


def test_each_default_and_bound_is_written_once():
    """A field's default or bound written as a number beside the field's name anywhere in the engine or the
    add-on is a second copy of the schema's (``guidance`` 7.5, ``steps`` 500, ``frames`` 720, ...)."""
    values = _field_values()
    assert values["guidance"] >= {7.5, 50} and 500 in values["steps"] and 720 in values["frames"]
    files = [p for folder in ("core", "video", "threed", "sfumato", "addon") for p in (ROOT / folder).rglob("*.py")
             if p.name not in ("schema.py", "train.py") and "train" not in p.parts]  # training has its own configs
    hits = [hit for path in files for hit in _restated(path, values)]
    assert hits == []
