"""The library stands alone: no ``sugfw`` module imports the backend or the Label Studio SDK."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("backend", "label_studio_sdk")

PROBE = """
import importlib, json, pkgutil, sys
import sugfw
found = {}
for info in pkgutil.walk_packages(sugfw.__path__, "sugfw."):
    if info.name == "sugfw.__main__":
        continue  # running it would start the command line
    before = set(sys.modules)
    importlib.import_module(info.name)
    found[info.name] = sorted(set(sys.modules) - before)
print(json.dumps(found))
"""


def test_no_sugfw_module_imports_the_backend_or_label_studio() -> None:
    # A fresh interpreter: the test session itself has the backend loaded already.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    imported = json.loads(out.stdout.splitlines()[-1])
    assert len(imported) > 30, "the probe should have walked every sugfw module"
    offenders = {
        module: [name for name in new if name.split(".")[0] in FORBIDDEN]
        for module, new in imported.items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_python_dash_m_sugfw_runs_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sugfw", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: sugfw" in out.stdout and "score" in out.stdout
