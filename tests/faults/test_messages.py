"""Issue 19: messages that mislead, and the reliability items found by fault injection. Each case fails on the
code before the fix: the wrong word, a missing hint, a wrong exit code, or a file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.models import tiny_cnn
from tests.faults.test_faults import assert_clean, assert_fails, cli


# --- 8. outputs in folders that do not exist; the pipeline's lock file ------------------------------------


@pytest.mark.parametrize("kind", ["json", "onnx", "maps"])
def test_output_in_a_missing_folder_is_refused(model: Path, data: Path, tmp_path: Path, kind: str) -> None:
    missing = tmp_path / "no" / "such"
    target = {"json": missing / "e.json", "onnx": missing / "q.onnx", "maps": missing / "maps"}[kind]
    args = {
        "json": ("eval", model, "--data-dir", data, "--json", target),
        "onnx": ("quantize", model, "-o", target, "--data-dir", data),
        "maps": ("featuremaps", model, "--index", "0", "--data-dir", data, "-o", target),
    }[kind]
    assert_fails(cli(*args), str(target), f"the folder {target.parent} does not exist", f"mkdir -p {target.parent}")
    assert not (tmp_path / "no").exists()  # nothing made on the way


def test_pipeline_lock_is_removed_on_every_exit(tmp_path: Path) -> None:
    from cnnkit.errors import CnnkitError
    from cnnkit.pipeline import LOCK_FILE, PipelineConfig, _run_lock, run_pipeline

    out = tmp_path / "run"
    out.mkdir()
    with _run_lock(out):
        assert (out / LOCK_FILE).exists()
    assert not (out / LOCK_FILE).exists()
    with pytest.raises(KeyboardInterrupt), _run_lock(out):
        raise KeyboardInterrupt
    assert not (out / LOCK_FILE).exists()
    # A run that fails after taking the lock (its data cannot be loaded) leaves no lock behind either.
    with pytest.raises(CnnkitError, match="does not exist"):
        run_pipeline(PipelineConfig(dataset="mnist", data_dir=tmp_path / "nothing", out_dir=out, report_dir=tmp_path / "r"))
    assert (out / "pipeline.json").exists() and not (out / LOCK_FILE).exists()
    assert_clean(out)


# --- 6. a file of the wrong kind is named for what it is ---------------------------------------------------


def _keras_file(path: Path) -> Path:
    """A .keras file as Keras writes it: a zip archive holding config.json (no TensorFlow needed to make one)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Sequential"}')
        zf.writestr("metadata.json", "{}")
    return path


def _png(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


def test_a_keras_file_where_an_onnx_model_belongs(model: Path, tmp_path: Path) -> None:
    keras_file = _keras_file(tmp_path / "x.keras")
    line = assert_fails(cli("predict", keras_file, _png(tmp_path / "img.png")), "x.keras is a Keras model",
                        "not an ONNX model", "cnnkit export")
    assert "DecodeError" not in line
    assert_fails(cli("bench", keras_file, "--batch-sizes", "1"), "x.keras is a Keras model", "not an ONNX model")


def test_swapped_parity_arguments(model: Path, data: Path, tmp_path: Path) -> None:
    keras_file = _keras_file(tmp_path / "x.keras")
    line = assert_fails(cli("parity", model, keras_file, "--data-dir", data), "the candidate", "x.keras is a Keras model",
                        f"the reference comes first: cnnkit parity {keras_file} {model}")
    assert "DecodeError" not in line


def test_a_folder_where_a_model_belongs(model: Path, data: Path) -> None:
    folder = model.parent
    assert_fails(cli("bench", folder, "--batch-sizes", "1"), f"{folder} is a folder, not a model file",
                 f"{folder}/*.onnx")
    assert_fails(cli("eval", folder, "--data-dir", data), "is a folder, not a model file")


def test_text_and_other_files_are_named(model: Path, data: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\n")
    assert_fails(cli("summary", notes), "notes.txt is a text file, but not a cnnkit spec",
                 "summary takes a spec preset")
    assert_fails(cli("eval", notes, "--data-dir", data), "notes.txt is a text file, not an ONNX model")
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert_fails(cli("summary", tmp_path / "x.zip"), "x.zip is a zip archive, not a cnnkit spec")
    # An ONNX model under another suffix is still summarised as one; a truncated one is named as such.
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(model.read_bytes())
    result = cli("summary", renamed)
    assert result.exit_code == 0 and "opset 17" in result.stdout, result.output
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model.read_bytes()[:300])
    assert_fails(cli("eval", cut, "--data-dir", data), "cut.onnx", "not a complete ONNX model", "truncated")


def test_sniff_names_each_kind(model: Path, tmp_path: Path) -> None:
    from cnnkit.filekind import sniff

    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (tmp_path / "m.tflite").write_bytes(b"\x1c\0\0\0TFL3" + bytes(100))
    (tmp_path / "noise").write_bytes(bytes(range(256)) * 4)
    assert sniff(model) == "an ONNX model"
    assert sniff(_keras_file(tmp_path / "x.keras")) == "a Keras model (.keras zip archive)"
    assert sniff(tmp_path) == "a folder" and sniff(tmp_path / "missing") is None
    assert sniff(tmp_path / "empty") == "an empty file"
    assert sniff(tmp_path / "weights.h5").startswith("an HDF5 file")
    assert sniff(tmp_path / "m.tflite") == "a TFLite model"
    assert sniff(_png(tmp_path / "i.png")) == "an image"
    assert sniff(tmp_path / "noise") == "binary data"


# --- 9. found by fault injection ---------------------------------------------------------------------------


def test_export_with_one_name_for_input_and_output(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert_fails(cli("export", _keras_file(tmp_path / "x.keras"), "-o", out, "--input-name", "x", "--output-name", "x"),
                 "--input-name and --output-name are both 'x'", "--output-name probabilities")
    assert_fails(cli("export", _keras_file(tmp_path / "x.keras"), "-o", out, "--input-name", " "), "--input-name is empty")
    assert_clean(tmp_path, out)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("eval", "{model}", "--batch-size", "abc"), ("--batch-size", "'abc' is not a whole number")),
        (("export", "{model}", "-o", "m.onnx", "--opset", "abc"), ("--opset", "'abc' is not a whole number")),
        (("bench", "{model}", "--min-time", "soon"), ("--min-time", "'soon' is not a number")),
    ],
    ids=["batch-size-text", "opset-text", "min-time-text"],
)
def test_a_mistyped_number_is_named(model: Path, args, fragments) -> None:
    assert_fails(cli(*[str(a).format(model=model) for a in args]), *fragments, code=2)


@pytest.mark.parametrize("what", ["model", "data-dir", "image-folder"])
def test_an_unreadable_input_is_a_one_line_error(model: Path, data: Path, tmp_path: Path, monkeypatch, what: str) -> None:
    """Mode 000 as a user other than root. Root reads whatever the mode, so os.access is made to answer as for such a
    user; Typer's own path check asked it too, and stopped with a usage error (exit 2) where a missing file is exit 1."""
    import os

    folder = tmp_path / "images" / "3"
    folder.mkdir(parents=True)
    _png(folder / "a.png")
    locked = {"model": model, "data-dir": data, "image-folder": tmp_path / "images"}[what]
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked and mode & os.R_OK
                        else real_access(p, mode, **kw))
    line = assert_fails(cli("eval", model, "--data-dir", data if what != "image-folder" else locked), str(locked),
                        "permission denied", "check its permissions")
    assert "cannot read" in line or "cannot list" in line


def test_parity_of_models_with_different_inputs_says_what_to_do(model: Path, data: Path, tmp_path: Path) -> None:
    other = tiny_cnn(tmp_path / "m32.onnx", size=32)
    assert_fails(cli("parity", model, other, "--data-dir", data), "input shapes differ", "28x28x1", "32x32x1",
                 "cnnkit eval REFERENCE CANDIDATE")


# --- 7. every refusal has a hint; nothing is cut mid-word ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("bench", "{model}", "--min-time", "-1"), ("--min-time", "-1", "hint: ", "--min-time 1")),
        (("quantize", "{model}", "-o", "{tmp}/q.onnx", "--data-dir", "{data}", "--calibration-samples", "0"),
         ("--calibration-samples", "got 0", "hint: ", "--calibration-samples 256")),
        (("featuremaps", "{model}", "--index", "99999", "--data-dir", "{data}", "-o", "{tmp}/maps"),
         ("--index 99999", "20 images", "hint: pass --index 0..19")),
        (("eval", "{model}", "--data-dir", "{data}", "--batch-size", "0"), ("--batch-size", "got 0", "hint: ")),
        (("predict", "{model}", "{tmp}/x.png", "--top-k", "0"), ("--top-k", "got 0", "hint: ")),
        (("featuremaps", "{model}", "-o", "{tmp}/maps"), ("exactly one input", "hint: e.g. cnnkit featuremaps")),
        (("featuremaps", "{model}", "--index", "0", "--data-dir", "{data}", "-o", "{tmp}/maps", "--max-layers", "-1"),
         ("--max-layers", "hint: e.g. --max-layers 0")),
        (("parity", "{model}", "{model}", "--min-agreement", "2"), ("--min-agreement", "hint: ")),
        (("eval", "{model}", "--data-dir", "{data}", "--json", "{tmp}"), ("is a directory", "hint: name a file in it")),
        (("report", "{tmp}/none.json", "-o", "{tmp}/r"), ("none.json not found", "hint: pass cnnkit result files")),
        (("eval", "{tmp}/none.onnx", "--data-dir", "{data}"), ("none.onnx not found", "hint: check the path")),
    ],
    ids=["min-time-negative", "calibration-samples-zero", "index-out-of-range", "batch-size-zero", "top-k-zero",
         "featuremaps-no-input", "max-layers-negative", "min-agreement-over-1", "json-is-a-folder", "report-missing",
         "model-missing"],
)
def test_refusals_carry_a_hint(model: Path, data: Path, tmp_path: Path, args, fragments) -> None:
    assert_fails(cli(*[str(a).format(model=model, data=data, tmp=tmp_path) for a in args]), *fragments)


def test_compare_of_two_kinds_of_result_says_what_to_do(model: Path, data: Path, tmp_path: Path) -> None:
    bench, ev = tmp_path / "b.json", tmp_path / "e.json"
    assert cli("bench", model, "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3", "--warmup", "1",
               "--json", bench).exit_code == 0
    assert cli("eval", model, "--data-dir", data, "--json", ev).exit_code == 0
    assert_fails(cli("compare", bench, ev), "cannot compare a cnnkit.bench/1 result", "cnnkit.eval/1",
                 "hint: compare two results of one kind", "cnnkit report")


def test_long_errors_are_cut_at_a_word_boundary() -> None:
    from cnnkit.errors import shorten

    text = "Unable to find data type for weight_name='conv1/Conv_quantized' " * 10
    short = shorten(ValueError(text), 200)
    assert len(short) <= 200 and short.endswith("…")
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " "  # whole words: the cut falls on a space
    assert shorten("a  short\n message", 200) == "a short message"
    assert shorten("x" * 500, 100) == "x" * 99 + "…"  # one long word: cut, and marked as cut


def test_the_quantizers_error_is_kept_whole_or_cut_at_a_word(model: Path, tmp_path: Path, monkeypatch) -> None:
    """onnxruntime's quantizer failing with a long message: the line ends in a whole word and "…", not mid-word."""
    import onnxruntime.quantization as q

    from cnnkit.errors import CnnkitError
    from cnnkit.quantize.build import build_variant
    from cnnkit.quantize.config import QuantizeConfig

    detail = "The quantizer could not find a data type for tensor conv1_output_quantized " * 8

    def failing(*_a, **_k):
        raise RuntimeError(detail)

    monkeypatch.setattr(q, "quantize_static", failing)
    import numpy as np

    out = tmp_path / "q.onnx"
    with pytest.raises(CnnkitError) as info:
        build_variant(model, out, QuantizeConfig(model, out), np.zeros((4, 28, 28, 1), np.float32),
                               "images", [])
    line = info.value.one_line()
    assert line.endswith("…") and detail.startswith(line.split("RuntimeError: ", 1)[1][:-1])


# --- 3. quantize says on which images it measured accuracy -------------------------------------------------


def test_quantize_calibrating_on_every_image_does_not_call_them_held_out(model: Path, tmp_path: Path) -> None:
    from tests.imaging import write_digit_folder

    folder = tmp_path / "digits"
    write_digit_folder(folder, n=20)
    out = tmp_path / "q.onnx"
    result = cli("quantize", model, "-o", out, "--data-dir", folder, "--eval-samples", "8", "--max-accuracy-drop", "100")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "accuracy is measured on the calibration images themselves" in text
    assert "held-out" not in text and "on 8 image-folder images (calibration images: none held out)" in text, text
    # With more images than --calibration-samples, the rest measure accuracy and are called held-out.
    result = cli("quantize", model, "-o", out, "--force", "--data-dir", folder, "--calibration-samples", "12",
                 "--max-accuracy-drop", "100")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "on 8 held-out image-folder images" in text and "themselves" not in text, text
    # fp16 calibrates nothing: every image measures accuracy, and none is called held out.
    result = cli("quantize", model, "-o", out, "--force", "--mode", "fp16", "--data-dir", folder,
                 "--calibration-samples", "12", "--max-accuracy-drop", "100")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "on 20 image-folder images;" in text and "held-out" not in text, text


# --- 5. feature-map grids of different blocks carry different titles ----------------------------------------


def _blocks_model(path: Path, blocks: int = 3, scope: str = "/_blocks.{k}/_project_conv/Conv") -> Path:
    """NHWC input -> per block a 1x1 Conv -> Relu, named as PyTorch exports EfficientNet's blocks
    (/_blocks.K/_project_conv/Conv): the last scope is the same in every block."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["images"], ["x0"], perm=[0, 3, 1, 2], name="/Transpose")]
    inits = []
    for k in range(blocks):
        inits.append(numpy_helper.from_array(rng.normal(0, 1, (2, 1 if k == 0 else 2, 1, 1)).astype(np.float32), f"w{k}"))
        nodes += [helper.make_node("Conv", [f"x{k}", f"w{k}"], [f"c{k}"], name=scope.format(k=k)),
                  helper.make_node("Relu", [f"c{k}"], [f"x{k + 1}"], name=f"/_blocks.{k}/Relu")]
    nodes += [helper.make_node("GlobalAveragePool", [f"x{blocks}"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Softmax", ["f"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8, 8, 1])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_feature_map_titles_are_unique_and_say_where(tmp_path: Path) -> None:
    import json

    import numpy as np
    import onnx
    from PIL import Image

    from cnnkit.evaluate.featuremaps import _layer_name, conv_activation_tensors

    model = _blocks_model(tmp_path / "blocks.onnx")
    png = tmp_path / "img.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png)
    result = cli("featuremaps", model, "--image", png, "-o", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    layers = json.loads((tmp_path / "maps" / "featuremaps.json").read_text())["layers"]
    assert [x["layer"] for x in layers] == ["_blocks.0._project_conv", "_blocks.1._project_conv", "_blocks.2._project_conv"]
    titles = [x["title"] for x in layers]
    assert len(set(titles)) == 3 and titles[1].startswith("_blocks.1._project_conv (conv layer 2 of 3): 2 maps of 8x8")
    assert len({x["png"] for x in layers}) == 3
    # Scopes that repeat their parent's name are said once; names that still collide are numbered.
    assert _layer_name("/features/features.0/features.0.0/Conv") == "features.0.0"
    assert _layer_name("model/conv1/Conv2D") == "conv1"
    same = onnx.load(str(_blocks_model(tmp_path / "same.onnx", scope="/_project_conv/Conv")))
    assert [layer for layer, _ in conv_activation_tensors(same)] == ["_project_conv#1", "_project_conv#2", "_project_conv#3"]


# --- 4. the report: quantized variants in words, agreement not called accuracy --------------------------------


def test_report_of_quantize_on_an_unlabelled_folder(model: Path, tmp_path: Path) -> None:
    import json

    from cnnkit.quantize.auto import auto_quantize
    from cnnkit.quantize.config import QuantizeConfig
    from tests.imaging import write_digit_folder

    write_digit_folder(tmp_path / "labelled", n=20)
    write_digit_folder(tmp_path / "flat", n=20, labelled=False)
    results = tmp_path / "results"
    results.mkdir()
    assert cli("eval", model, "--data-dir", tmp_path / "labelled", "--json", results / "eval.json").exit_code == 0
    r = cli("quantize", model, "-o", tmp_path / "q.onnx", "--data-dir", tmp_path / "flat", "--max-accuracy-drop", "100",
            "--json", results / "quantize.json")
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.split())  # the command says it as the report does
    assert "no labels, accuracy not measured" in said and "vs FP32 100.00 %" not in said, said
    auto = auto_quantize(QuantizeConfig(model, tmp_path / "best.onnx", data_dir=tmp_path / "flat", max_accuracy_drop=100),
                         batch_sizes=(1, 4), min_time_s=0.01)
    (results / "auto.json").write_text(json.dumps(auto.to_dict()))
    r = cli("report", results, "-o", tmp_path / "report")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "report" / "report.md").read_text()
    variant = md[md.index("## Quantized variant"):].split("\n\n")[1]
    assert "{'" not in md and variant.startswith("mode=static, format=qdq, "), variant
    assert "top-1 agreement with FP32" in variant and "unlabelled images (no labels: accuracy not measured" in variant
    assert "accuracy 100.00 %" not in md
    assert "x larger" in variant  # this tiny model's INT8 variant is bigger than FP32, never "0.21x smaller"
    auto_table = md[md.index("## Quantization (--auto)"):].split("\n\n")[2]
    assert auto_table.splitlines()[0].startswith("| variant | top-1 agreement with FP32 |"), auto_table
    sized = md[md.index("## Accuracy vs size"):].split("\n\n")[1]  # eval's accuracy only, not agreement beside it
    assert "quantize --auto" not in sized and "m" in sized


# --- 2. a probe for the preprocessing a model without a record wants -----------------------------------------


@pytest.fixture(scope="module")
def tf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.onnx_graphs import tf_range_digit_classifier

    return tf_range_digit_classifier(tmp_path_factory.mktemp("probe") / "tf_range.onnx")


@pytest.mark.parametrize("labelled", [True, False], ids=["labelled", "unlabelled"])
def test_probe_names_the_preset_the_model_answers_to(tf_model: Path, tmp_path: Path, labelled: bool) -> None:
    import json

    from tests.imaging import write_digit_folder

    write_digit_folder(tmp_path / "digits", n=60, labelled=labelled)
    out = tmp_path / "probe.json"
    result = cli("predict", tf_model, "--probe-preprocess", "--data-dir", tmp_path / "digits", "--json", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "the model's preprocessing record: none" in text
    for name in ("raw", "unit", "tf", "torch", "caffe"):
        assert f"│ {name} " in result.stdout
    assert "suggestion: --preprocess tf (best " + ("agreement with the labels" if labelled else "margin x stability") in text
    assert ("no labels: a hint, not proof" in text) is not labelled
    assert "nothing was applied: pass --preprocess tf" in text
    probe = json.loads(out.read_text())
    scores = {s["preset"]: s for s in probe["scores"]}
    assert probe["suggestion"] == "tf" and probe["images"] == 32 and probe["labelled"] is labelled
    # Fed any other range, the model answers one class for every image, confidently: never suggested.
    assert all(scores[p]["note"] == "one class for every image" for p in ("raw", "unit", "torch", "caffe"))
    assert scores["tf"]["stability"] >= 0.9 and scores["tf"]["distinct_top1"] >= 5
    if labelled:
        assert scores["tf"]["label_agreement"] > 0.6 and scores["raw"]["label_agreement"] < 0.3


def test_probe_applies_nothing_and_is_offered_where_raw_pixels_are_guessed(tf_model: Path, tmp_path: Path) -> None:
    from tests.imaging import write_digit_folder

    write_digit_folder(tmp_path / "digits", n=20)
    result = cli("eval", tf_model, "--data-dir", tmp_path / "digits")
    assert result.exit_code == 0, result.output
    assert "cnnkit predict MODEL --probe-preprocess --data-dir DIR tries each" in " ".join(result.stderr.split())
    assert_fails(cli("predict", tf_model, "--probe-preprocess", "--preprocess", "tf", "--data-dir", tmp_path / "digits"),
                 "--probe-preprocess tries every preset itself", "drop")
    assert_fails(cli("predict", tf_model, "--probe-preprocess"), "needs images", "--data-dir DIR")
    one = next((tmp_path / "digits").rglob("*.png"))
    result = cli("predict", tf_model, one, "--probe-preprocess")  # image files work too; one image says little
    assert result.exit_code == 0 and "1 image(s) from 1 image file(s), unlabelled" in result.stdout, result.output


# --- 1. a failed gate names the missing preprocessing first; Keras advice only for Keras models --------------


def _with_record(src: Path, dst: Path, preset_name: str = "raw") -> Path:
    """``src`` carrying a preprocessing record in its metadata, as a cnnkit export does."""
    import onnx

    from cnnkit.data.preprocess import preset
    from cnnkit.graph import metadata as meta

    model = onnx.load(str(src))
    onnx.helper.set_model_props(model, {meta.PREPROCESS: preset(preset_name).to_json()})
    onnx.save(model, str(dst))
    return dst


def test_quantize_gate_names_the_missing_preprocessing_first(tmp_path: Path) -> None:
    """A model whose top-1 flips under sub-grey-level noise (as a pretrained model fed the wrong range does)."""
    from tests.imaging import write_digit_folder
    from tests.onnx_graphs import chaotic_classifier

    write_digit_folder(tmp_path / "digits", n=60, labelled=False)
    bare = chaotic_classifier(tmp_path / "bare.onnx")
    out = tmp_path / "q.onnx"
    line = assert_fails(cli("quantize", bare, "-o", out, "--mode", "fp16", "--data-dir", tmp_path / "digits"),
                        "most likely because it was fed raw pixels 0..255, as the model carries no preprocessing record "
                        "and none was given", "hint: pass --preprocess unit|tf|torch|caffe",
                        "--probe-preprocess", progress_ok=True)
    assert line.index("most likely because") < line.index("tried:")  # the cause before the figures
    assert_clean(tmp_path, out)
    # The same model with a record: its preprocessing was said, so the gate does not blame it.
    said = _with_record(bare, tmp_path / "said.onnx")
    line = assert_fails(cli("quantize", said, "-o", out, "--mode", "fp16", "--data-dir", tmp_path / "digits"),
                        "cannot meet the 0.1 pp accuracy budget", progress_ok=True)
    assert "raw pixels" not in line and "--probe-preprocess" not in line
    # parity names the cause where the reference's top-1 is unstable: first the guess, then untrained weights.
    failed = tmp_path / "kept.onnx"
    assert cli("quantize", bare, "-o", failed, "--mode", "fp16", "--data-dir", tmp_path / "digits",
               "--keep-failed").exit_code == 1
    result = cli("parity", bare, failed, "--data-dir", tmp_path / "digits")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "(likely cause: it was fed raw pixels 0..255" in text and "else untrained or random weights)" in text, text
    result = cli("parity", said, _with_record(failed, tmp_path / "kept_said.onnx"), "--data-dir", tmp_path / "digits")
    assert "(untrained or random weights?)" in " ".join(result.output.split()) and "likely cause" not in result.output


def _constant_model(path: Path) -> Path:
    """An image model whose output ignores its input (ReduceMean x 0 + a constant): what a model with uncalibrated
    BatchNorm statistics does."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero"),
             numpy_helper.from_array(np.array([[0.2, 0.8]], np.float32), "const"),
             numpy_helper.from_array(np.array([-1, 1], np.int64), "col")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Reshape", ["m", "col"], ["m2"]), helper.make_node("Mul", ["m2", "zero"], ["z"]),
             helper.make_node("Add", ["z", "const"], ["scores"])]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_constant_output_advice_fits_the_reference(tmp_path: Path) -> None:
    import numpy as np

    from cnnkit.parity.stability import constant_outputs_failure
    from cnnkit.parity.tolerance import Tolerance

    said = _with_record(_constant_model(tmp_path / "c.onnx"), tmp_path / "said.onnx")
    result = cli("parity", said, said, "--dataset", "none")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "parity on constant outputs proves nothing" in text and "calibrate_batchnorm" not in text, text
    result = cli("parity", tmp_path / "c.onnx", tmp_path / "c.onnx", "--dataset", "none")
    assert "Likely cause: it was fed raw pixels 0..255" in " ".join(result.output.split())
    # A Keras reference is offered cnnkit's Keras BatchNorm calibration; an ONNX one is not.
    constant = {"p": np.tile([[0.2, 0.8]], (10, 1))}
    tol = Tolerance(1e-5, 1e-4, 1.0, None, "test")
    assert "calibrate_batchnorm" in constant_outputs_failure(constant, tol, 10, keras_reference=True)
    assert "calibrate_batchnorm" not in constant_outputs_failure(constant, tol, 10, keras_reference=False)
