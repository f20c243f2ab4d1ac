import json

import pytest

from keras_hourglass.fileio import atomic_path, complete_directory, partial_directory, replace_directory, write_json


def test_replace_directory_keeps_a_complete_copy(tmp_path):
    final, new = tmp_path / "model", tmp_path / "model.partial"
    final.mkdir()
    (final / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    replace_directory(str(new), str(final))
    assert (final / "v").read_text() == "new" and not (tmp_path / "model.old").exists()
    # A crash between the two renames leaves only model.old: still found.
    final.rename(tmp_path / "model.old")
    assert complete_directory(str(final)) == str(tmp_path / "model.old")


def test_atomic_path_writes_whole_or_nothing(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_json(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), atomic_path(str(target)) as temporary:
        with open(temporary, "w") as f:
            f.write("{half")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no temporary left


def test_temporaries_keep_the_extension_when_asked_and_stale_ones_are_replaced(tmp_path):
    with atomic_path(str(tmp_path / "plot.png"), keep_extension=True) as temporary:
        assert temporary.endswith("plot.partial.png")
        open(temporary, "wb").close()
    stale = tmp_path / "run.partial"
    stale.mkdir()
    (stale / "junk").write_text("left by a kill")
    assert list((tmp_path / "run.partial").iterdir())
    assert partial_directory(str(tmp_path / "run")) == str(stale) and not list(stale.iterdir())
