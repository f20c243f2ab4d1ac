"""The layering rule: the package is the whole library, the top level is thin entry points into it.

* `keras_hourglass` imports nothing from the top-level folders and scripts,
  and its modules import one another without a cycle;
* no module anywhere imports a script;
* the scripts and the `datasets`/`callbacks` folders hold no logic;
* `pip install .` gives the console command and the data, callback and
  evaluation modules in any directory.
"""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "keras_hourglass"
SCRIPTS = {path.stem for path in ROOT.glob("*.py")}
TOP_LEVEL = SCRIPTS | {"datasets", "callbacks", "bench", "tests"}
COMMANDS = ("train", "evaluate", "predict", "convert", "serve")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an import statement in `path` names, at any depth (lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from keras_hourglass.data import pipeline` imports the submodule.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files():
    for path in ROOT.rglob("*.py"):
        if not any(part.startswith(".") or part in ("build", "runs", "data") for part in path.relative_to(ROOT).parts[:-1]):
            yield path


def test_library_never_imports_the_top_level():
    for path in PACKAGE.rglob("*.py"):
        for name in imported_modules(path):
            assert name.split(".")[0] not in TOP_LEVEL, f"{path.relative_to(ROOT)} imports {name}"


def test_no_module_imports_a_script():
    for path in python_files():
        for name in imported_modules(path):
            assert name not in SCRIPTS, f"{path.relative_to(ROOT)} imports the script {name}"


def test_the_package_has_no_import_cycle():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}
    state = {}

    def visit(name, stack):
        state[name] = "active"
        for other in sorted(graph[name]):
            assert state.get(other) != "active", "import cycle: " + " -> ".join([*stack, name, other])
            if other not in state:
                visit(other, [*stack, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("path", sorted(SCRIPTS | {"datasets/__init__", "callbacks/__init__"}))
def test_top_level_entry_points_hold_no_logic(path):
    source = (ROOT / f"{path}.py").read_text()
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))], path
    assert len(source.splitlines()) <= 10, path


@pytest.mark.slow
def test_installed_package_works_from_any_directory(tmp_path):
    """`pip install .` (no editable link, no repository on the path), then the commands from an empty folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "keras_hourglass", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # The dependencies come from the test environment's site-packages (appended to sys.path, after the
    # new venv's own), not from a second download; the package itself is installed for real.
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    pathlib.Path(site, "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", str(source)], check=True, capture_output=True, cwd=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    environment = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for command in COMMANDS:
        result = subprocess.run([str(venv / "bin" / "keras-hourglass"), command, "--help"], cwd=empty,
                                capture_output=True, text=True, env=environment, timeout=120)
        assert result.returncode == 0 and "usage: keras-hourglass " + command in result.stdout, result.stderr[-2000:]
    check = ("import keras_hourglass, keras_hourglass.data, keras_hourglass.callbacks, keras_hourglass.evaluation; "
             "print(keras_hourglass.__file__); print(keras_hourglass.data.load_records.__module__, "
             "keras_hourglass.callbacks.PCKCallback.__name__, keras_hourglass.evaluation.evaluate_model.__name__)")
    result = subprocess.run([str(python), "-c", check], cwd=empty, capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    location, names = result.stdout.split("\n")[:2]
    assert location.startswith(site), location  # the installed copy, not the repository
    assert names == "keras_hourglass.data.loaders PCKCallback evaluate_model"
    # package data: the server's web page ships with the package
    assert sorted(p.name for p in (pathlib.Path(location).parent / "web").iterdir()) == ["app.js", "index.html",
                                                                                        "style.css"]
