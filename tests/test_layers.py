"""The package's layers: imports only point down (docs/architecture.md).

Parsed from the source (no imports run), so a new module in the wrong place, or an import
that points up a layer, fails here with the module and the import named.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "curation_spark"

#: What each layer may import from the package (its own layer included).
ALLOWED = {
    "base": {"base"},
    "method": {"base", "method"},
    "io": {"base", "io"},
    "engine": {"base", "method", "io", "engine"},
    "curation": {"base", "method", "io", "engine", "curation"},
    "report": {"base", "method", "io", "report"},
    "top": {"base", "method", "io", "engine", "curation", "report", "top"},
}
#: Modules at the package root: the base every layer may use, and the entry points on top.
BASE = {"config", "errors", "version", "synth", "recipes"}


def layer_of(module: str) -> str:
    """``curation_spark.method.kernels`` -> ``method``; root modules -> ``base`` or ``top``."""
    parts = module.split(".")[1:]
    if not parts:
        return "top"
    if parts[0] in ALLOWED and parts[0] not in {"base", "top"}:
        return parts[0]
    return "base" if parts[0] in BASE else "top"


def package_imports(path: Path) -> list[str]:
    """Every ``curation_spark...`` module a file imports (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("curation_spark"):
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found += [s for s in subs if (PACKAGE.parent / (s.replace(".", "/") + ".py")).exists()
                      or (PACKAGE.parent / s.replace(".", "/")).is_dir()] or [node.module]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("curation_spark")]
    return found


def test_layer_rules_are_known():
    assert layer_of("curation_spark.method.kernels") == "method"
    assert layer_of("curation_spark.config") == "base"
    assert layer_of("curation_spark.cli") == "top"
    assert layer_of("curation_spark.report") == "report"


def test_imports_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        mine = layer_of(module)
        for imported in package_imports(path):
            if layer_of(imported) not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {imported} ({layer_of(imported)})")
    assert not wrong, "imports that point up a layer:\n" + "\n".join(wrong)


def test_method_layer_has_no_spark():
    offenders = [p.name for p in (PACKAGE / "method").glob("*.py")
                 if any(isinstance(n, (ast.Import, ast.ImportFrom))
                        and any((getattr(n, "module", None) or a.name).startswith("pyspark") for a in n.names)
                        for n in ast.walk(ast.parse(p.read_text())))]
    assert not offenders, f"method modules importing pyspark: {offenders}"
