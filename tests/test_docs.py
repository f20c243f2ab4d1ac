"""The documentation site: it builds with no warning, and every example on its pages runs.

`make docs` builds `docs/` with Sphinx (warnings are errors); here the same build runs into a temporary folder.
Every ```python block of a page runs, the page's blocks in order in one namespace, so a page whose example breaks
fails the suite. A ```sh block needs data or a trained model that the page does not make: the line before it says
so ("so the suite does not run them:"), and the test holds every shell block to that mark.
"""

import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
SHELL_MARK = "so the suite does not run them:"


def test_the_site_builds_with_no_warning(tmp_path):
    built = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                            str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "html" / "api.html").is_file() and (tmp_path / "html" / "index.html").is_file()
    api = (tmp_path / "html" / "api.html").read_text()
    for name in ("build_stacked_hourglass", "HeatmapCodec", "AssociativeEmbeddingCodec", "load_pose_model"):
        assert name in api, name


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_example_of_a_page_runs(page: pathlib.Path):
    text = page.read_text()
    namespace = {"__name__": f"docs_{page.stem}"}
    for language, code in BLOCK.findall(text):
        if language == "python":
            exec(compile(code, f"{page.name} example", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_shell_example_is_marked_as_not_run(page: pathlib.Path):
    lines = page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("```sh"):
            before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            assert before.endswith(SHELL_MARK), f"{page.name}:{index + 1}: a shell block without the mark"
