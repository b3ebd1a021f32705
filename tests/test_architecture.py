"""The package's layering: no import cycles among dekc modules, no private names across them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dekc"


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def _imports(name: str, tree: ast.Module):
    """``(imported module, imported names, is private use)`` for every relative import of ``name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x, y
                for alias in node.names:
                    yield alias.name, ()
            else:
                yield node.module.split(".")[0], tuple(alias.name for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target, _ in _imports(name, tree) if target in modules and target != name}
        for name, tree in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_among_dekc_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_names_imported_across_modules():
    modules = _modules()
    private = [
        f"{name} <- {target}.{imported}"
        for name, tree in modules.items()
        for target, names in _imports(name, tree)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    # whole private modules (``._version``, ``._jax``) are shared on purpose; private *names* are not
    assert private == []


@pytest.mark.parametrize("name", sorted(path.stem for path in PACKAGE.glob("*.py")))
def test_no_private_attributes_of_other_modules(name):
    """``module._name`` on another dekc module (the way around the import rule) is refused too."""
    tree = _modules()[name]
    aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
        for alias in node.names
    }
    used = [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert used == []


def _public_callables():
    import inspect

    import dekc
    import dekc.blocks
    import dekc.nystrom
    import dekc.plot
    import dekc.sklearn

    for module in (dekc, dekc.sklearn, dekc.plot, dekc.blocks, dekc.nystrom):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__module__.startswith("dekc") and not issubclass(obj, BaseException):
                for method, fn in vars(obj).items():
                    if (not method.startswith("_") or method in ("__init__", "__call__")) and inspect.isfunction(fn):
                        yield f"{module.__name__}.{name}.{method}", fn
            elif inspect.isfunction(obj) and obj.__module__.startswith("dekc"):
                yield f"{module.__name__}.{name}", obj


def test_the_public_api_is_annotated():
    """Every parameter and return value of the public functions and methods carries a type hint."""
    import inspect

    missing = []
    for name, fn in _public_callables():
        signature = inspect.signature(fn)
        missing += [
            f"{name}({p})"
            for p, v in signature.parameters.items()
            if p not in ("self", "cls") and v.annotation is inspect.Parameter.empty
        ]
        if signature.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
            missing.append(f"{name} -> ?")
    assert len(list(_public_callables())) > 30
    assert missing == []


def test_names_are_specific_and_do_not_shadow_modules():
    """``dekc.verify`` is the function and its module is ``dekc.verification``; the report types
    carry their subject in their names; a kernel's ``family`` is a Family like a link's."""
    import importlib

    import dekc

    module = importlib.import_module("dekc.verification")
    assert dekc.verify is module.verify and callable(dekc.verify)
    assert not hasattr(dekc, "Item") and not hasattr(dekc, "Report")
    assert dekc.VerificationReport is module.VerificationReport
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    assert isinstance(ker.family, dekc.Family) and ker.family == ker.link.family
    assert ker.family_name == ker.family.name == "gaussian"
