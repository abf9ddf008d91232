"""Any ONNX image classifier: layout, batch and dtype detection, feeding, summary, fitted bench defaults,
--make-batch-dynamic and bounded feature maps, on graphs built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.graph.info import describe_onnx
from tests.onnx_graphs import reference_probs, same_padding_classifier, tiny_classifier

MODELS = [("NCHW", 1, "float32"), ("NCHW", 4, "float16"), ("NHWC", "N", "uint8"), ("NCHW", "batch", "int8"),
          ("NHWC", 1, "int8"), ("NCHW", 2, "uint8")]


@pytest.mark.parametrize(("layout", "batch", "dtype"), MODELS)
def test_describe_any_image_input(tmp_path: Path, layout, batch, dtype) -> None:
    path = tiny_classifier(tmp_path / "m.onnx", layout, batch, dtype, hw=12)
    info = describe_onnx(path)
    inp = info.input
    assert (inp.layout, inp.dtype, inp.hwc, inp.batch) == (layout, dtype, (12, 12, 3), batch if isinstance(batch, int) else None)
    assert info.image_shape == (12, 12, 3) and info.layout == layout
    assert ("Conv" in inp.layout_reason) if layout == "NCHW" else ("transposed" in inp.layout_reason)
    assert inp.model_shape(5) == ((5, 3, 12, 12) if layout == "NCHW" else (5, 12, 12, 3))
    assert inp.accepts_batch(7) == (not isinstance(batch, int))


def test_layout_from_metadata_and_from_shape(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # Nothing structural to go by (a Relu): the shape decides; metadata overrides it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, tmp_path / "a.onnx")
    inp = describe_onnx(tmp_path / "a.onnx").input
    assert inp.layout == "NCHW" and inp.hwc == (32, 32, 3) and "channel-like size second" in inp.layout_reason
    helper.set_model_props(model, {"input_layout": "NHWC"})
    onnx.save(model, tmp_path / "b.onnx")
    inp = describe_onnx(tmp_path / "b.onnx").input
    assert inp.layout == "NHWC" and inp.hwc == (3, 32, 32) and "metadata" in inp.layout_reason


def test_feeding_converts_layout_and_dtype(tmp_path: Path) -> None:
    info = describe_onnx(tiny_classifier(tmp_path / "m.onnx", "NCHW", 1, "int8", hw=4))
    x = np.zeros((2, 4, 4, 3), np.float32)
    x[0, 1, 2, 0] = 255.0
    x[1, 0, 0, 2] = 127.6
    fed = info.input.to_model(x)
    assert fed.shape == (2, 3, 4, 4) and fed.dtype == np.int8
    assert fed[0, 0, 1, 2] == 127 and fed[0, 1, 0, 0] == -128 and fed[1, 2, 0, 0] == 0  # pixel - 128, rounded
    u8 = describe_onnx(tiny_classifier(tmp_path / "u.onnx", "NHWC", "N", "uint8", hw=4)).input
    got = u8.to_model(np.full((1, 4, 4, 3), 300.0))
    assert got.dtype == np.uint8 and got.shape == (1, 4, 4, 3) and got.max() == 255
    with pytest.raises(CnnkitError, match=r"takes \(4, 4, 3\)"):
        u8.to_model(np.zeros((1, 5, 5, 3)))


@pytest.mark.parametrize(("layout", "batch", "dtype"), MODELS)
def test_runner_takes_any_batch_and_matches_onnxruntime(tmp_path: Path, layout, batch, dtype) -> None:
    from cnnkit.runtimes.base import ImageRunner, run_batched
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    path = tiny_classifier(tmp_path / "m.onnx", layout, batch, dtype, hw=10)
    images = np.random.default_rng(1).integers(0, 256, (7, 10, 10, 3)).astype(np.float32)
    runner = OnnxRuntimeRunner(path)
    native = run_batched(runner, runner.image.to_model(images), 3)["probs"]  # the model's own input, any count
    got = run_batched(ImageRunner(runner, runner.image), images, 3)["probs"]
    np.testing.assert_array_equal(got, native)
    want = reference_probs(path, images)
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len({int(i) for i in got.argmax(axis=1)}) > 1 or np.ptp(got, axis=0).max() > 1e-3  # outputs vary


def test_more_than_one_input_or_no_image_is_one_line(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 8, 8])
    b = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    two = helper.make_model(helper.make_graph([helper.make_node("Add", ["pixels", "mask"], ["y"])], "g", [a, b], [y]),
                            opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(two, tmp_path / "two.onnx")
    with pytest.raises(ModelFileError, match=r"one input; this one has 2: pixels \[1, 3, 8, 8\] float32, mask"):
        describe_onnx(tmp_path / "two.onnx")
    vec = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 16])
    out = helper.make_tensor_value_info("o", TensorProto.INT64, ["batch", 16])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["tokens"], ["o"])], "g", [vec], [out]),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "vec.onnx")
    with pytest.raises(ModelFileError, match=r"input tokens \['batch', 16\] int64 is not an image tensor"):
        describe_onnx(tmp_path / "vec.onnx")
    hw = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["o"])], "g", [hw],
                                                  [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)]),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "hw.onnx")
    with pytest.raises(ModelFileError, match="no fixed height and width") as err:
        describe_onnx(tmp_path / "hw.onnx")
    assert "make_dynamic_shape_fixed --dim_param H" in err.value.one_line()


def test_onnx_summary_counts_params_and_macs(tmp_path: Path) -> None:
    from cnnkit.graph.summary import summarize_onnx

    s = summarize_onnx(tiny_classifier(tmp_path / "m.onnx", "NHWC", "N", "uint8", hw=8, classes=5))
    by = {layer.name: layer for layer in s.layers}
    # conv1: 8x8x8 outputs x 3x3x3; conv2 (stride 2): 8x4x4 outputs x 8x3x3; dense: 128 -> 5.
    assert (by["conv1"].macs, by["conv1"].params) == (8 * 8 * 8 * 27, 8 * 27 + 8)
    assert (by["conv2"].macs, by["conv2"].params) == (8 * 4 * 4 * 72, 8 * 72)
    assert (by["dense"].macs, by["dense"].params) == (128 * 5, 128 * 5 + 5)
    assert s.total_macs == 8 * 8 * 8 * 27 + 8 * 4 * 4 * 72 + 128 * 5 and s.unknown_macs == 0
    assert s.total_params == 224 + 576 + 645  # the rank-0 scale is not a parameter
    assert s.op_histogram["Conv"] == 2 and s.op_histogram["Transpose"] == 1 and s.nodes == 10
    assert s.inputs[0].dtype == "uint8" and s.inputs[0].layout.startswith("NHWC") and s.image_input["batch"] is None
    assert s.producer == "onnx.helper" and s.opset == 17


def test_onnx_summary_convtranspose_and_matmul(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnkit.graph.summary import summarize_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "wt"),
             numpy_helper.from_array(np.ones((98, 6), np.float32), "wm"),
             numpy_helper.from_array(np.array([1, 98], np.int64), "shape")]
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2], name="up"),  # -> 1x2x11x11
             helper.make_node("Slice", ["t", "s0", "s1", "ax"], ["u"], name="crop"),
             helper.make_node("Reshape", ["u", "shape"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "wm"], ["y"], name="mm")]
    inits += [numpy_helper.from_array(np.array([0, 0], np.int64), "s0"), numpy_helper.from_array(np.array([7, 7], np.int64), "s1"),
              numpy_helper.from_array(np.array([2, 3], np.int64), "ax")]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), tmp_path / "t.onnx")
    s = summarize_onnx(tmp_path / "t.onnx")
    by = {layer.name: layer for layer in s.layers}
    assert by["up"].macs == 4 * 5 * 5 * 2 * 9 and by["up"].output_shape == (1, 2, 11, 11)
    assert by["mm"].macs == 6 * 98 and by["mm"].params == 98 * 6
    assert s.total_params == 4 * 2 * 9 + 98 * 6  # int64 shape and slice constants are not parameters


@pytest.mark.parametrize("ir_version", [9, 3])
def test_onnx_summary_folds_a_computed_same_padding(tmp_path: Path, ir_version: int) -> None:
    """TF "same" padding computed at run time (a TorchScript EfficientNet): shape inference alone leaves the
    Conv and the Gemm after it unknown; with the shape chain constant-folded both are counted."""
    import onnx

    from cnnkit.graph.fold import infer_shapes_folded
    from cnnkit.graph.summary import summarize_onnx

    path = same_padding_classifier(tmp_path / "same.onnx", hw=8, classes=5, ir_version=ir_version)
    plain = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    padded = next(vi for vi in plain.graph.value_info if vi.name == "padded")
    assert not all(d.HasField("dim_value") for d in padded.type.tensor_type.shape.dim)  # what made summary say 0 MACs
    folded = infer_shapes_folded(onnx.load(str(path)))
    assert folded.shapes["padded"] == (1, 3, 9, 9) and folded.shapes["flat_out"] == (1, 128) and folded.folded > 10
    s = summarize_onnx(path)
    by = {layer.name: layer for layer in s.layers}
    # 8 -> pad 0+1 -> 9 -> 3x3 stride 2 -> 4: 8x4x4 outputs x 3x3x3; then 128 -> 5.
    assert by["/conv/Conv"].macs == 8 * 4 * 4 * 27 and by["/conv/Conv"].output_shape == (1, 8, 4, 4)
    assert by["/fc/Gemm"].macs == 128 * 5
    assert s.total_macs == 8 * 4 * 4 * 27 + 128 * 5 and s.unknown_macs == 0 and s.shapes_folded == folded.folded
    assert summarize_onnx(tiny_classifier(tmp_path / "plain.onnx")).shapes_folded == 0  # folding only where needed


def test_onnx_summary_of_unknowable_shapes_says_unknown(tmp_path: Path) -> None:
    """A custom op before a convolution: no shape after it, folded or not; those MACs are unknown, not 0, and
    bench's fitted defaults say the count is short."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnkit.bench.config import BenchConfig
    from cnnkit.bench.defaults import resolve_defaults
    from cnnkit.graph.summary import summarize_onnx

    def save(name: str, nodes: list) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        w = numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), "w")
        model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), ir_version=9,
                                  opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
        onnx.save(model, tmp_path / name)
        return tmp_path / name

    mystery = helper.make_node("Mystery", ["x"], ["m"], domain="com.example", name="mystery")
    s = summarize_onnx(save("custom.onnx", [mystery, helper.make_node("Conv", ["m", "w"], ["y"], name="conv")]))
    assert (s.total_macs, s.unknown_macs, s.layers[0].macs, s.shapes_folded) == (0, 1, None, 0)
    half = save("half.onnx", [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="known"),
                              helper.make_node("Mystery", ["c"], ["m"], domain="com.example", name="mystery"),
                              helper.make_node("Conv", ["m", "w"], ["y"], name="unknown")])
    s = summarize_onnx(half)
    assert (s.total_macs, s.unknown_macs) == (3 * 8 * 8 * 27, 1)
    _, fitted = resolve_defaults(BenchConfig(models=(half,)))
    assert fitted.macs_per_image == 3 * 8 * 8 * 27 and "1 layer(s) of unknown shape not counted" in fitted.reason


def test_fitted_bench_defaults() -> None:
    from cnnkit.bench.defaults import DEFAULT_BATCH_SIZES, fit_defaults

    light = fit_defaults(20_000_000, 2)  # the seed CNN class
    assert light.batch_sizes == DEFAULT_BATCH_SIZES and (light.warmup, light.min_iterations) == (10, 50)
    resnet50 = fit_defaults(3_860_000_000, 2)
    assert resnet50.batch_sizes == (1, 8) and resnet50.warmup == 3 and 10 <= resnet50.min_iterations < 50
    assert "GMACs" in resnet50.reason and "guessed sweep" in resnet50.reason
    assert resnet50.guessed_sweep_s() <= 130  # about two minutes on 2 cores, at the slow rate assumed
    mobilenet = fit_defaults(300_000_000, 2)
    assert mobilenet.batch_sizes == (1, 8, 32, 64) and mobilenet.guessed_sweep_s() <= 130
    assert fit_defaults(0, 2).batch_sizes == DEFAULT_BATCH_SIZES  # MACs unknown


def test_make_batch_dynamic(tmp_path: Path) -> None:
    from cnnkit.export.batch import BatchRewriteError, make_batch_dynamic
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    src = tiny_classifier(tmp_path / "fixed.onnx", "NCHW", 1, "float32", hw=8, reshape_batch=True)
    done = make_batch_dynamic(src, tmp_path / "dyn.onnx")
    assert done.old_batch == 1 and done.reshapes_rewritten == ("flatten",) and done.max_abs_diff < 1e-5
    info = describe_onnx(tmp_path / "dyn.onnx")
    assert info.input.batch is None and "batch_made_dynamic" in info.metadata
    runner = OnnxRuntimeRunner(tmp_path / "dyn.onnx")
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype(np.float32)
    out = runner.session.run(None, {runner.input_name: info.input.to_model(x)})[0]
    np.testing.assert_allclose(out, reference_probs(src, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(BatchRewriteError, match="already dynamic"):
        make_batch_dynamic(tmp_path / "dyn.onnx", tmp_path / "again.onnx")
    with pytest.raises(CnnkitError, match="already exists"):
        make_batch_dynamic(src, tmp_path / "dyn.onnx")


def test_make_batch_dynamic_refuses_a_baked_in_batch(tmp_path: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    from cnnkit.export.batch import BatchRewriteError, make_batch_dynamic

    src = tiny_classifier(tmp_path / "fixed.onnx", "NCHW", 2, "float32", hw=8)
    model = onnx.load(str(src))
    # An Expand to a constant [2, 5] after the softmax: the batch is baked into a constant shape.
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 5], np.int64), "expand_to"))
    model.graph.node[-1].output[0] = "soft"
    model.graph.node.append(helper.make_node("Expand", ["soft", "expand_to"], ["probs"], name="baked"))
    onnx.save(model, tmp_path / "baked.onnx")
    with pytest.raises(BatchRewriteError, match="Expand node baked has the batch 2 baked into"):
        make_batch_dynamic(tmp_path / "baked.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    # bench offers --make-batch-dynamic only where this scan finds it safe.
    from cnnkit.export.batch import batch_rewrite_blocker

    assert "Expand node baked" in batch_rewrite_blocker(model, "baked.onnx")
    assert batch_rewrite_blocker(onnx.load(str(src)), "fixed.onnx") is None


def test_featuremaps_are_bounded_and_read_nchw(tmp_path: Path) -> None:
    from cnnkit.evaluate.featuremaps import mosaic, save_feature_maps, spread

    assert spread(52, 16)[0] == 0 and spread(52, 16)[-1] == 51 and len(spread(52, 16)) == 16
    assert spread(3, 16) == [0, 1, 2] and spread(5, None) == [0, 1, 2, 3, 4]
    grid = mosaic(np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3), [0, 2, 4])
    assert grid.shape == (2 * 2 + 1, 2 * 3 + 1) and np.nanmax(grid) == 1.0
    path = tiny_classifier(tmp_path / "m.onnx", "NCHW", 1, "float32", hw=16)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.float32)
    result = save_feature_maps(path, image, tmp_path / "maps", "random", max_layers=1, max_channels=3)
    assert [x.layer for x in result.layers] == ["conv2"] and result.layers[0].shape == (8, 8, 8)
    assert len(result.layers[0].channels_shown) == 3 and result.conv_layers_total == 2
    assert "1 of 2 convolution layers" in result.selection_note and "at most 3 channels" in result.selection_note
    assert (tmp_path / "maps" / result.layers[0].png).is_file()
    assert result.predicted == int(reference_probs(path, image[None])[0].argmax())
    full = save_feature_maps(path, image, tmp_path / "all", "random", max_layers=None, max_channels=None)
    assert len(full.layers) == 2 and full.selection_note is None


@pytest.mark.parametrize("ir_version", [9, 3])
def test_make_batch_dynamic_through_a_computed_same_padding(tmp_path: Path, ir_version: int) -> None:
    """A Reshape to [1, -1] after a Pad whose pads are computed at run time: shape inference cannot tell that its
    input's first dimension is the batch, the folded graph can. At IR 3 (initializers listed as graph inputs too)
    the new target is an input as well, the old one leaves both lists, and no constant gets a batch dimension."""
    import onnx
    import onnxruntime as ort

    from cnnkit.export.batch import batch_rewrite_blocker, make_batch_dynamic

    src = same_padding_classifier(tmp_path / "same.onnx", hw=8, classes=5, ir_version=ir_version)
    assert batch_rewrite_blocker(onnx.load(str(src)), "same.onnx") is None
    done = make_batch_dynamic(src, tmp_path / "dyn.onnx")
    assert done.reshapes_rewritten == ("/Reshape",) and done.max_abs_diff < 1e-5
    model = onnx.load(str(tmp_path / "dyn.onnx"))
    onnx.checker.check_model(model)
    assert model.ir_version == ir_version
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    assert [i.name for i in inputs] == ["image"] and inputs[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    listed = {i.name for i in model.graph.input} - {"image"}
    assert listed == (inits if ir_version < 4 else set()) and "batch_flat" not in inits
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "dyn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x.transpose(0, 3, 1, 2)})[0], reference_probs(src, x),
                               rtol=1e-5, atol=1e-6)
    # The same IR rule where plain shape inference sees the batch (no folding involved).
    plain = tiny_classifier(tmp_path / "plain.onnx", "NCHW", 1, hw=8, reshape_batch=True, ir_version=ir_version)
    assert make_batch_dynamic(plain, tmp_path / "plain_dyn.onnx").reshapes_rewritten == ("flatten",)
    onnx.checker.check_model(onnx.load(str(tmp_path / "plain_dyn.onnx")))


def test_make_batch_dynamic_as_torch_dynamo_writes_it(tmp_path: Path) -> None:
    """Reshape with allowzero=1 and weights in an external .data file, as torch.onnx.export(dynamo=True) writes."""
    import onnx
    from onnx import helper

    from cnnkit.export.batch import make_batch_dynamic

    src = tiny_classifier(tmp_path / "t.onnx", "NCHW", 1, "float32", hw=8, reshape_batch=True)
    model = onnx.load(str(src))
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    reshape.attribute.append(helper.make_attribute("allowzero", 1))
    (tmp_path / "torchlike").mkdir()
    onnx.save(model, str(tmp_path / "torchlike" / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
              size_threshold=1024)  # the weights outside, small shape constants inline (as torch writes them)
    assert (tmp_path / "torchlike" / "m.onnx.data").stat().st_size > 2000
    (tmp_path / "elsewhere").mkdir()  # an output folder must exist (io.check_writable)
    done = make_batch_dynamic(tmp_path / "torchlike" / "m.onnx", tmp_path / "elsewhere" / "dyn.onnx")
    assert done.reshapes_rewritten == ("flatten",) and done.max_abs_diff < 1e-5
    x = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "elsewhere" / "dyn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x.transpose(0, 3, 1, 2)})[0], reference_probs(src, x), rtol=1e-5, atol=1e-6)
