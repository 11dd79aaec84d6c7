"""The package layout: no import circle between the lab's modules, and each layer imports only the layers below."""

import ast
from pathlib import Path

import lab

ROOT = Path(lab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every ``lab.*`` module each module imports, at its top or inside a function."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_modules():
    graph = {m: {t for t in ts if not graph_is_package(t)} for m, ts in _imports().items()}
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def graph_is_package(name: str) -> bool:
    return (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()


def test_core_layers_never_import_the_experiments_or_the_faces():
    """Trainers, losses, models, data and evaluation sit below the experiments, benchmarks, lessons and app."""
    upper = ("lab.experiments", "lab.bench", "lab.lessons", "lab.app", "lab.cli", "lab.lesson")
    core = ("lab.train", "lab.losses", "lab.models", "lab.data", "lab.eval", "lab.runs", "lab.config")
    bad = [(m, t) for m, ts in _imports().items() if m.startswith(core) for t in ts if t.startswith(upper)]
    assert not bad, bad
