from pathlib import Path

import pytest

from cnnkit.errors import OutputExistsError
from cnnkit.io import atomic_path, write_text_atomic


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_suffix_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "m.keras"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        write_text_atomic(target, "theirs", force=False)
    assert target.read_text() == "mine"
    write_text_atomic(target, "theirs", force=True)
    assert target.read_text() == "theirs"
