"""The library stays free of script concerns."""

import ast
import pathlib

LIBRARY = pathlib.Path(__file__).resolve().parents[1] / "keras_hourglass"
SCRIPT_PACKAGES = {"datasets", "callbacks", "train", "evaluate", "predict", "convert", "bench", "tests"}


def test_library_never_imports_scripts_or_data_code():
    for path in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in SCRIPT_PACKAGES, f"{path.name} imports {name}"
