"""``quantize --auto``: build every candidate worth trying, evaluate and benchmark each with FP32, keep the
fastest one within the accuracy budget that the samples confirm faster — or FP32."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cnnkit.choices import ActivationType, CalibrationMethod, QuantFix, QuantFormat, QuantMode
from cnnkit.data.datasets import Dataset
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.accuracy import accuracy_change_pp
from cnnkit.graph.info import describe_onnx
from cnnkit.io import atomic_path, check_not_input, check_writable
from cnnkit.quantize.config import (
    AUTO_SCHEMA,
    AutoCandidate,
    AutoResult,
    QuantizeConfig,
    QuantizeError,
    QuantizeResult,
)
from cnnkit.quantize.data import QuantData, prepare_quant_data
from cnnkit.quantize.loop import quantize_model
from cnnkit.quantize.speed import speed_batches


# static-qdq-u8s8-minmax with the Conv/MatMul/Gemm around its float-only ops kept in float (tried where it has any)
ISLANDS = "static-qdq-float-islands"

def auto_candidates(base: QuantizeConfig, device: str, isa: list[str]) -> list[tuple[str, QuantizeConfig]]:
    """The variants worth trying: dynamic, static QDQ/QOperator with sensible types and calibrations, FP16
    (``device``: where the FP32 model runs, a :attr:`cnnkit.runtimes.base.RunnerInfo.device`)."""
    r = dataclasses.replace
    static = r(base, mode=QuantMode.STATIC)
    out = [
        ("dynamic-int8", r(base, mode=QuantMode.DYNAMIC)),
        ("static-qdq-u8s8-minmax", static),
        ("static-qdq-u8s8-minmax-perchannel", r(static, per_channel=True)),
        ("static-qdq-s8s8-minmax", r(static, activation_type=ActivationType.INT8)),
        ("static-qdq-u8s8-entropy", r(static, calibration_method=CalibrationMethod.ENTROPY)),
        ("static-qoperator-u8s8-minmax", r(static, format=QuantFormat.QOPERATOR)),
    ]
    # FP16 pays only where the device has fast FP16 kernels: accelerators, or CPUs with AVX-512 FP16.
    if device != "cpu" or "avx512_fp16" in isa:
        out.append(("fp16", r(base, mode=QuantMode.FP16)))
    return out


def auto_quantize(base: QuantizeConfig, batch_sizes: tuple[int, int] = (1, 64), min_time_s: float = 0.5,
                  progress: Callable[[str], None] | None = None, dataset: Dataset | QuantData | None = None) -> AutoResult:
    """Build every candidate, evaluate and benchmark it with the FP32 model, save the fastest within budget. The
    candidates share ``base.max_time_s``; one not started by then is listed as not tried. Engine local only."""
    import shutil

    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig
    from cnnkit.envinfo import cpu_info
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    if base.engine == "ray":
        raise CnnkitError("--engine ray checks the accuracy of one quantize run, not --auto's candidates",
                          hint="drop --auto, or --engine ray")
    started = time.perf_counter()
    out = Path(base.output)
    check_not_input(out, base.model)
    check_writable(out, base.force)
    info = describe_onnx(base.model)
    if info.precision != "fp32":
        raise QuantizeError(f"{base.model} is already quantized ({info.precision})", hint="quantize the FP32 model")
    ran = create_runner(DEFAULT_RUNTIME, base.model, base.session).info  # where the FP32 model really runs
    try:  # the images once, for every candidate: with calibration images where there are any
        data = prepare_quant_data(dataclasses.replace(base, mode=QuantMode.STATIC), info, dataset)
    except QuantizeError as exc:
        if "names no dataset" not in exc.message:
            raise
        data = prepare_quant_data(dataclasses.replace(base, mode=QuantMode.FP16), info, dataset)
    say = progress or (lambda _m: None)
    for line in data.notes:
        say(f"note: {line}")
    batch_sizes = speed_batches(info, batch_sizes)
    objective = batch_sizes[-1]
    with tempfile.TemporaryDirectory(prefix="cnnkit-auto-") as tmp:
        work = Path(tmp)
        built: list[tuple[str, QuantizeConfig, QuantizeResult | None, str | None]] = []
        candidates = auto_candidates(base, ran.device, cpu_info()["isa"])
        for i, (name, cfg) in enumerate(candidates):
            left = base.max_time_s - (time.perf_counter() - started)
            say(f"candidate {name} [{base.max_time_s - left:.0f} s of {base.max_time_s:g} s]")
            # Each candidate is its named settings: only nodes kept in float may rescue it (its own fixes would
            # turn it into another candidate). The time left is shared among the candidates still to build.
            cfg = dataclasses.replace(cfg, output=work / f"{name}.onnx", force=True, max_attempts=min(base.max_attempts, 3),
                                      measure_speed=False, keep_failed=False, fixes=(QuantFix.FLOAT,), explain=False,
                                      max_time_s=max(left / (len(candidates) - i), 1e-3))
            if left <= 0:
                built.append((name, cfg, None, f"not tried: the {base.max_time_s:g} s time budget (--max-time) was spent"))
                continue
            try:
                built.append((name, cfg, quantize_model(cfg, data), None))
            except CnnkitError as exc:
                built.append((name, cfg, None, exc.one_line()))
                continue
            if name == "static-qdq-u8s8-minmax":
                island = _float_island_candidate(base, cfg, work)
                if island is not None:
                    say(f"note: {name} runs {island[2]} in float between Q/DQ nodes: trying "
                        f"{', '.join(island[1].exclude_nodes)} in float around them too")
                    candidates.append(island[:2])
        models = [Path(base.model)] + [Path(cfg.output) for _, cfg, res, _ in built if res is not None]
        say(f"benchmarking {len(models)} models at batch sizes {batch_sizes}")
        bench = run_benchmark(BenchConfig(models=tuple(models), batch_sizes=batch_sizes, session=base.session,
                                          min_time_s=min_time_s, min_iterations=20, warmup=10))
        lat = {(c.model, c.batch_size): c.stats for c in bench.cases}
        rounds = {(c.model, c.batch_size): c.round_p50_ms for c in bench.cases}  # the same interleaved rounds
        fp32_lat = {b: lat[(str(base.model), b)].p50_ms for b in batch_sizes}
        fp32_acc = next((res.fp32_accuracy for _, _, res, _ in built if res is not None), None)
        cands = [AutoCandidate("fp32", {"mode": "none"}, fp32_acc, 0.0, 1.0, info.size_bytes, (),
                               fp32_lat, {b: lat[(str(base.model), b)].images_per_s for b in batch_sizes})]
        for name, cfg, res, err in built:
            if res is None:
                cands.append(AutoCandidate(name, cfg.settings(), error=err, verdict=f"failed: {err}"))
                continue
            key = str(cfg.output)
            cands.append(AutoCandidate(name, res.settings, res.accuracy, res.drop_pp, res.top1_agreement, res.size_bytes,
                                       res.excluded_nodes, {b: lat[(key, b)].p50_ms for b in batch_sizes},
                                       {b: lat[(key, b)].images_per_s for b in batch_sizes}))
        usable = [c for c in cands[1:] if c.error is None]
        # Faster only when the rounds confirm it: the 95 % bootstrap interval of the paired latency ratio lies below 1.
        from cnnkit.stats import ratio_interval

        fp32_rounds = rounds[(str(base.model), objective)]
        confirmed = {}
        for c, (_, cfg, _, _) in zip(cands[1:], built, strict=True):
            if c.error is None:
                confirmed[c.name] = ratio_interval(fp32_rounds, rounds[(str(cfg.output), objective)], paired=True)
        faster = sorted((c for c in usable if confirmed[c.name].confirmed_faster), key=lambda c: c.latency_ms[objective])
        winner = faster[0] if faster else cands[0]
        final = []
        for c in cands:
            if c.error is not None:
                final.append(c)
                continue
            ratio = c.latency_ms[objective] / fp32_lat[objective]
            if c is winner:
                why = ("chosen: fastest within the budget, confirmed by the samples" if c.name != "fp32" else
                       "chosen: no variant within the budget is confirmed faster than FP32 here")
            elif c.name == "fp32":
                why = f"slower than {winner.name}"
            elif ratio >= 1:
                why = f"slower than FP32 at batch {objective} ({ratio:.2f}x its latency)"
            elif not confirmed[c.name].confirmed_faster:
                why = (f"not confirmed faster than FP32 at batch {objective} ({ratio:.2f}x its latency, 95 % interval "
                       f"{confirmed[c.name].low:.2f}-{confirmed[c.name].high:.2f} includes 1)")
            else:
                why = f"slower than {winner.name} at batch {objective} ({c.latency_ms[objective]:.3f} vs {winner.latency_ms[objective]:.3f} ms)"
            if c.name == ISLANDS:
                why += f"; {len(c.excluded_nodes)} node(s) kept in float around ops with no integer kernel"
            elif c.excluded_nodes:
                why += f"; {len(c.excluded_nodes)} node(s) kept in float to meet the budget"
            final.append(dataclasses.replace(c, verdict=why))
        if winner.name == "fp32":
            summary = (f"no quantized variant is confirmed faster than FP32 at batch {objective} on {ran.active} "
                       f"within the {base.max_accuracy_drop:g} pp budget: FP32 is kept")
            with atomic_path(out, force=base.force) as tmp_out:
                shutil.copyfile(base.model, tmp_out)
        else:
            summary = (f"{winner.name}: {fp32_lat[objective] / winner.latency_ms[objective]:.2f}x FP32's speed at batch "
                       f"{objective}, " + ("accuracy not checked" if winner.accuracy is None or cands[0].accuracy is None
                                           else f"accuracy {accuracy_change_pp(cands[0].accuracy, winner.accuracy):+.2f} pp "
                                                f"vs FP32 (drop budget {base.max_accuracy_drop:g} pp)"))
            with atomic_path(out, force=base.force) as tmp_out:
                shutil.copyfile(work / f"{winner.name}.onnx", tmp_out)
    return AutoResult(AUTO_SCHEMA, str(base.model), str(out), winner.name, objective, base.max_accuracy_drop,
                      ran.provider_record(), tuple(final), summary, bench.environment, data.provenance | {"metric": data.metric})


def _float_island_candidate(base: QuantizeConfig, built: QuantizeConfig, work: Path
                            ) -> tuple[str, QuantizeConfig, str] | None:
    """Where the built QDQ variant runs ops with no integer kernel in float between Q/DQ nodes (read from the graph
    ONNX Runtime runs), the same settings with their quantizable neighbours kept in float, so the graph converts
    once around them: (name, config, the ops in words); None where there are none."""
    from cnnkit.quantize.slowdown import count_graph, float_island, optimized_graph

    counts = count_graph(optimized_graph(Path(built.output), base.session, work / "island-probe.optimized.onnx"))
    if not counts.float_ops:
        return None
    neighbours = float_island(Path(base.model), counts.float_nodes)
    if not neighbours:
        return None
    ops = ", ".join(f"{t} x{k}" for t, k in counts.float_ops.items())
    cfg = dataclasses.replace(built, exclude_nodes=tuple(dict.fromkeys((*built.exclude_nodes, *neighbours))))
    return ISLANDS, cfg, ops
