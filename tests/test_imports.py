"""The package's modules import each other without a cycle (module-level and function-level imports alike), and
`validation`, the checks every module uses, imports none of them."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ddpm_jax")


def package_imports() -> dict[str, set[str]]:
    """{module: the package's modules it imports anywhere in its file}, names like "ddpm_jax.models.unet"."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                dotted = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    graph = {}
    for module, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[module] = {m for m in imported if m in modules and m != module and m != "ddpm_jax"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    graph = package_imports()
    assert len(graph) > 40 and "ddpm_jax.diffusion" in graph["ddpm_jax.sampling"]  # the graph is read
    assert "ddpm_jax.train" in graph["ddpm_jax.__main__"]  # function-level imports count too
    assert cycles(graph) == []


def test_validation_is_at_the_bottom():
    assert package_imports()["ddpm_jax.validation"] == set()
