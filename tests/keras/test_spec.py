from pathlib import Path

import pytest

from cnnkit.errors import SpecError
from cnnkit.keras.spec import Padding, PoolKind, list_presets, load_spec, parse_spec


def test_presets_ship() -> None:
    assert {"mnist-cnn", "mnist-cnn-70"} <= set(list_presets())


def test_mnist_cnn_preset_is_the_seed_architecture() -> None:
    spec = load_spec("mnist-cnn")
    assert spec.input.shape == (28, 28, 1)
    assert spec.input.scale == pytest.approx(1 / 255)
    assert [c.filters for c in spec.conv] == [32, 64, 64]
    assert all(c.kernel == (3, 3) and c.padding is Padding.VALID for c in spec.conv)
    assert [c.pool.kind if c.pool else None for c in spec.conv] == [PoolKind.MAX, PoolKind.MAX, None]
    assert [d.units for d in spec.dense] == [64]
    assert (spec.output.classes, spec.output.activation) == (10, "softmax")


def test_spec_round_trips_through_dict() -> None:
    spec = load_spec("mnist-cnn-70")
    again = parse_spec(spec.to_dict(), source="dict")
    assert again.to_dict() == spec.to_dict()


def test_user_spec_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        'name = "mine"\n[input]\nshape = [32, 32, 3]\n'
        '[[conv]]\nfilters = 8\nkernel = [5, 3]\npadding = "same"\nbatch_norm = true\npool = { kind = "avg", size = 2 }\n'
        '[[dense]]\nunits = 16\ndropout = 0.5\n[output]\nclasses = 4\n'
    )
    spec = load_spec(f)
    assert spec.conv[0].kernel == (5, 3) and spec.conv[0].pool.kind is PoolKind.AVG
    assert spec.dense[0].dropout == 0.5 and spec.output.classes == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "x"\nlayers = 3\n', "unknown key(s) layers"),
        ('name = "x"\n[[conv]]\nkernel = 3\n', "missing 'filters'"),
        ('name = "x"\n[[conv]]\nfilters = -1\n', "positive integer"),
        ('name = "x"\n[[conv]]\nfilters = 4\nactivation = "wiggle"\n', "unknown activation 'wiggle'"),
        ('name = "x"\n[[conv]]\nfilters = 4\npadding = "full"\n', "'full' is not one of valid, same"),
        ('name = "x"\n[input]\nshape = [28, 28]\n', "expected [height, width, channels]"),
        ('name = "x"\n[output]\nclasses = 1\n', "at least 2 classes"),
        ('name = "x"\n' + '[[conv]]\nfilters = 4\nkernel = 9\n' * 4, "shrinks"),
        ('name = ', "not valid TOML"),
    ],
)
def test_bad_specs_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(SpecError) as info:
        load_spec(f)
    assert message in info.value.one_line()
    assert str(f) in info.value.one_line()


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SpecError, match="unknown spec 'nope'") as info:
        load_spec("nope")
    assert "mnist-cnn" in info.value.one_line()
