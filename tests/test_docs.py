"""The documentation site: it builds with no warning, and every example on its pages runs.

`make docs` builds `docs/` with Sphinx (warnings are errors); here the same build runs into a temporary folder.

Each page runs in a fresh temporary folder holding copies of the repository's commands (`train.py`,
`predict.py`, ...) and of the files under `tests/` that the page names (the demo model, the reference
checkpoints), and `photo.jpg` (a real MPII photo from the shared data), as a user in a clone with a photo of
theirs would run it:

* every ```python block, in order, in one namespace per page;
* a ```sh block runs in `bash` (the environment's Python first on `PATH`) when the paragraph before it says
  "the suite runs them" (or "it"); otherwise that paragraph must say what the block needs that the suite does
  not have, and "so the suite does not run them" (or "it"); either ends with a colon. A fenced block is
  ```python, ```sh, ``` (output) or a directive, so that no shell example escapes the rule under another name;
  a shell block runs in its own process group, killed when it ends;
* a page whose examples talk to `http://127.0.0.1:8080` gets `serve.py tests/data/synthetic_small.keras` on a
  free port, and its examples are pointed at that port.

So a page whose example breaks fails the suite.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
# a fenced block, at any indentation (inside a list too), with ``` or ~~~
BLOCK = re.compile(r"^(?P<indent>[ ]*)(?P<fence>```|~~~)(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=indent)(?P=fence)[ ]*$",
                   re.M | re.S)
KINDS = {"python", "sh", "", "{toctree}", "{eval-rst}"}  # "": output, shown as it is
RUN_MARK = re.compile(r"the suite runs (them|it)\b", re.I)
SKIP_MARK = re.compile(r"so the\s+suite does not\s+run (them|these|it)\b", re.I)
SERVER_ADDRESS = "127.0.0.1:8080"
PHOTO = "052475643.jpg"  # two men seated, 854x480


def blocks(text: str) -> list[tuple[str, str, str]]:
    """`(language, code, the paragraph before the block, on one line)` in page order."""
    found = []
    for match in BLOCK.finditer(text):
        paragraph = text[:match.start()].rstrip().rsplit("\n\n", 1)[-1]
        code = textwrap.dedent(match["code"]) if match["indent"] else match["code"]
        found.append((match["info"].strip(), code, " ".join(paragraph.split())))
    return found


def test_the_site_builds_with_no_warning(tmp_path):
    built = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                            str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    html = tmp_path / "html"
    for page in PAGES:
        assert (html / page.relative_to(DOCS).with_suffix(".html")).is_file(), page.name
    api = (html / "api.html").read_text()
    for name in ("build_stacked_hourglass", "HeatmapCodec", "AssociativeEmbeddingCodec", "load_pose_model"):
        assert name in api, name
    assert "PCKh&#64;0.5" in api and "mailto:" not in api  # a metric's name, not an e-mail link
    for figure in re.findall(r"\]\((_static/[^)]+)\)", (DOCS / "index.md").read_text()):
        assert (html / figure).is_file(), figure


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_shell_example_is_run_or_says_why_not(page: pathlib.Path):
    for language, _, before in blocks(page.read_text()):
        assert language in KINDS, f"{page.name}: a ```{language} block (shell examples are ```sh, Python ```python)"
        if language == "sh":
            marked = before.endswith(":") and (RUN_MARK.search(before) or SKIP_MARK.search(before))
            assert marked, f"{page.name}: a shell block after {before[-200:]!r}"


def run_shell(code: str, environment: dict) -> subprocess.CompletedProcess:
    """`bash` on a block in its own process group, which is killed afterwards: nothing it starts outlives it."""
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "the block ran for more than 120 s"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    """`serve.py` on the demo model, started for the first page that needs it."""
    from tests.test_serving import KERAS_MODEL, Server

    servers = []

    def start():
        if not servers:
            servers.append(Server(str(KERAS_MODEL), tmp_path_factory.mktemp("docs-server") / "server.log", grpc=False))
        return servers[0]

    yield start
    for server in servers:
        assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture
def page_server(request, docs_server):
    """The server's address for a page whose examples talk to `SERVER_ADDRESS`, else None (started at setup)."""
    text = request.node.callspec.params["page"].read_text()
    if SERVER_ADDRESS in "".join(code for language, code, _ in blocks(text) if language in ("python", "sh")):
        return docs_server().url.removeprefix("http://")
    return None


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_example_of_a_page_runs(page: pathlib.Path, tmp_path, shared_data, page_server, monkeypatch):
    text = page.read_text()
    if page_server:
        text = text.replace(SERVER_ADDRESS, page_server)
    for script in ROOT.glob("*.py"):  # copies, so that an example cannot change the repository through them
        shutil.copy(script, tmp_path / script.name)
    for name in sorted(set(re.findall(r"\btests/[\w./-]+\.\w+", text))):  # the repository files it names
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(shared_data / "mpii" / "images" / PHOTO, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    namespace = {"__name__": f"docs_{page.stem}"}
    for index, (language, code, before) in enumerate(blocks(text)):
        where = f"{page.name}, block {index + 1}"
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        elif language == "sh" and RUN_MARK.search(before) and not SKIP_MARK.search(before):
            ran = run_shell(code, environment)
            assert ran.returncode == 0, f"{where}: exit status {ran.returncode}\n{ran.stderr[-3000:]}"
            assert '"error"' not in ran.stdout, f"{where}: {ran.stdout[-3000:]}"


def test_the_figures_are_made_from_a_run(tiny_run, shared_data, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    monkeypatch.setenv("KERAS_HOURGLASS_SHARED_DATA", str(shared_data))
    assert make_figures.main(["--run", tiny_run[0], "--output", str(tmp_path)]) == 0
    for name in ("front.png", "training_curves.png", "pixel_centres.png", "centre_scale.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*.png")}
    assert make_figures.main(["--run", str(tmp_path), "--output", str(tmp_path)]) == 2  # no training log
    (tmp_path / "file").write_text("")
    assert make_figures.main(["--run", tiny_run[0], "--output", str(tmp_path / "file")]) == 2  # not a folder
    monkeypatch.setenv("KERAS_HOURGLASS_SHARED_DATA", str(tmp_path / "nowhere"))
    assert make_figures.main(["--run", tiny_run[0], "--output", str(tmp_path)]) == 2  # no photo: nothing replaced
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*.png")} == before


def test_readme_links_and_pictures_exist():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert "docs/_static/front.png" in targets
    for target in targets:
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert len(readme.splitlines()) <= 150
