"""The layout the architecture promises: experiment modules depend on jaxemb and the report
helpers only (never on each other), benchmarks are leaves, and the library never imports
experiments. Read from the source with ast, so nothing is executed."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"experiments.report", "experiments.benchkit"}


def _imports(path: Path) -> set[str]:
    """Modules imported by ``path`` (absolute names; ``from experiments.study import q1`` gives
    both ``experiments.study`` and ``experiments.study.q1``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _experiment_modules():
    return sorted((ROOT / "experiments").rglob("*.py"))


def test_experiment_modules_import_only_jaxemb_the_helpers_and_the_study_package():
    existing = {_module(p) for p in _experiment_modules()}
    for path in _experiment_modules():
        name = _module(path)
        if name == "experiments.run":  # the entry point names every experiment's config
            continue
        for dep in _imports(path) & existing:
            ok = dep in HELPERS or dep == "experiments" or (
                name.startswith("experiments.study") and dep.startswith("experiments.study"))
            assert ok, f"{name} imports {dep}"


def test_benchmarks_are_leaves_and_the_library_never_imports_experiments():
    benches = {_module(p) for p in _experiment_modules() if p.name.startswith("bench_")}
    assert benches, "no benchmark scripts found"
    for path in _experiment_modules():  # (tests may import the benchmark they test)
        assert not _imports(path) & benches, f"{path.name} imports a benchmark script"
    for path in sorted((ROOT / "jaxemb").glob("*.py")):
        assert not any(d.startswith("experiments") for d in _imports(path)), path.name
