"""The backend's arrows point one way: the Label Studio layer never reaches up into the jobs, the
jobs never into the served model or the HTTP layer, and the settings never into the jobs (read
from the import statements, nothing run)."""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``from a import b`` counts
    as ``a`` and ``a.b``, since ``b`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module file → the imports of it that are, or lie under, one of ``forbidden``."""
    hits = {}
    for path in paths:
        bad = sorted(
            name
            for name in imported_modules(path)
            if any(name == root or name.startswith(root + ".") for root in forbidden)
        )
        if bad:
            hits[str(path.relative_to(BACKEND.parent))] = bad
    return hits


def test_the_probe_sees_every_kind_of_import(tmp_path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import backend.model\nfrom backend import server\n"
        "def later():\n    from backend.server.app import create_app\n"
    )
    assert imported_modules(probe) >= {"backend.model", "backend.server", "backend.server.app"}


def test_no_job_module_imports_the_model_or_the_server() -> None:
    jobs = sorted((BACKEND / "jobs").glob("*.py"))
    assert len(jobs) > 5, "the test should have found the job modules"
    assert offending(jobs, ("backend.model", "backend.server")) == {}


def test_the_label_studio_layer_imports_no_job_model_or_server() -> None:
    modules = sorted((BACKEND / "labelstudio").glob("*.py"))
    assert len(modules) > 5, "the test should have found the Label Studio modules"
    forbidden = ("backend.jobs", "backend.model", "backend.interactive", "backend.server")
    assert offending(modules, forbidden) == {}


def test_the_settings_do_not_import_the_jobs() -> None:
    assert offending([BACKEND / "config.py"], ("backend.jobs",)) == {}
