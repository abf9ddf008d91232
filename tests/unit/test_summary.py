import pytest

from cnnkit.spec import load_spec
from cnnkit.summary import LayerDesc, summarize_spec, walk_layers


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
