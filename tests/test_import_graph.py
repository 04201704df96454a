"""The repository's modules import each other without circles, lazy imports (inside functions)
included: each file's imports are read from its syntax tree, so a circle hidden in a function body
counts as much as one at the top of a file."""
import ast
import os

from fixtures import REPO

SKIPPED_FOLDERS = {".git", "tests", "output", "__pycache__"}


def module_files(root):
    """Dotted module name -> file, for every ``.py`` file under ``root`` (packages by their ``__init__.py``)."""
    modules = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_FOLDERS and not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, name)
    return modules


def imported_modules(path, module, modules):
    """The repository modules that ``path`` (module ``module``) imports anywhere in its code."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    edges = set()
    for name in found:
        while name and name not in modules:  # `import a.b.c` of a name inside a module: its module
            name = name.rpartition(".")[0]
        if name and name != module:
            edges.add(name)
    return edges


def import_circles(root):
    """The circles of the import graph under ``root``: lists of modules that import each other
    (Tarjan's strongly connected components with more than one module)."""
    modules = module_files(root)
    graph = {m: imported_modules(path, m, modules) for m, path in modules.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_of_the_repository_imports_itself_through_others():
    assert import_circles(REPO) == []


def test_a_circle_closed_by_an_import_inside_a_function_is_found(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg.low import helper\n")
    (tmp_path / "pkg" / "low.py").write_text("def helper():\n    from top import run  # lazy\n    return run\n")
    (tmp_path / "top.py").write_text("import pkg\n\ndef run():\n    return 1\n")
    (tmp_path / "apart.py").write_text("from . import nothing\nimport os\n")
    assert import_circles(str(tmp_path)) == [["pkg", "pkg.low", "top"]]
