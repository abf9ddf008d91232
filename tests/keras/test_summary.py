import pytest

from cnnkit.keras.spec import load_spec
from cnnkit.keras.geometry import LayerDesc, walk_layers
from cnnkit.keras.summary import summarize_spec


def test_mnist_cnn_reproduces_the_lecture_table() -> None:
    s = summarize_spec(load_spec("mnist-cnn"))
    rows = {r.name: r for r in s.layers}
    table = [(rows[n].output_shape, rows[n].params) for n in ("conv1", "pool1", "conv2", "pool2", "conv3")]
    assert table == [((26, 26, 32), 320), ((13, 13, 32), 0), ((11, 11, 64), 18_496), ((5, 5, 64), 0), ((3, 3, 64), 36_928)]
    assert s.total_params == 93_322
    conv3 = rows["conv3"]
    assert conv3.receptive_field == (18, 18) and conv3.jump == (4, 4)
    assert conv3.rf_pixels == 324
    assert round(100 * conv3.rf_share, 1) == 41.3


def test_mnist_cnn_70_parameter_count() -> None:
    assert summarize_spec(load_spec("mnist-cnn-70")).total_params == 96_844


def test_receptive_field_with_stride_dilation_and_same_padding() -> None:
    layers = [
        LayerDesc("a", "conv2d", 4, (3, 3), (2, 2), (1, 1), "same"),
        LayerDesc("b", "conv2d", 4, (3, 3), (1, 1), (2, 2), "valid"),
    ]
    a, b = walk_layers(layers, (32, 32, 1))
    assert a.output_shape == (16, 16, 4) and a.receptive_field == (3, 3) and a.jump == (2, 2)
    # dilation 2: effective kernel 5, each step of it is 2 input pixels apart
    assert b.output_shape == (12, 12, 4) and b.receptive_field == (3 + 4 * 2, 3 + 4 * 2)


def test_receptive_field_share_is_capped_at_the_input() -> None:
    layers = [LayerDesc(f"c{i}", "conv2d", 1, (5, 5), (1, 1), (1, 1), "same") for i in range(5)]
    last = walk_layers(layers, (8, 8, 1))[-1]
    assert last.receptive_field == (21, 21) and last.rf_share == pytest.approx(1.0)


@pytest.mark.integration
def test_receptive_field_of_a_functional_model_is_the_max_over_paths() -> None:
    """Branches of 3x3 and 5x5 joined by Add see 5x5; a stride-2 conv, a nested model, a bare op (x + y) and a
    Dense applied per position are followed; after global pooling every unit sees the whole image."""
    from cnnkit._deps import require_keras
    from cnnkit.keras.summary import summarize_keras

    keras = require_keras()
    L = keras.layers
    inp = keras.Input((32, 32, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 5, padding="same", name="b")(inp)
    x = L.Add(name="join")([a, b])
    x = L.Conv2D(4, 3, strides=2, padding="same", name="c")(x)
    inner = keras.Sequential([keras.Input((16, 16, 4)), L.Conv2D(4, 3, padding="same", name="ic")], name="inner")
    y = inner(x)
    x = x + L.Dense(4, name="pointwise")(y)  # a bare op, and a Dense on every position (a 1x1 conv)
    x = L.Conv2D(4, 3, dilation_rate=2, padding="same", name="dilated")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, name="d")(x)
    rows = {r.name: r for r in summarize_keras(keras.Model(inp, out)).layers}
    assert rows["a"].receptive_field == (3, 3) and rows["b"].receptive_field == (5, 5)
    assert rows["join"].receptive_field == (5, 5) and rows["join"].jump == (1, 1)
    assert rows["c"].receptive_field == (7, 7) and rows["c"].jump == (2, 2)
    assert rows["inner"].receptive_field == (11, 11) and rows["pointwise"].receptive_field == (11, 11)
    assert rows["dilated"].receptive_field == (19, 19) and rows["dilated"].jump == (2, 2)  # 11 + (5 - 1) * 2
    assert rows["gap"].receptive_field == (32, 32) and rows["gap"].jump is None and rows["d"].rf_share == 1.0
