"""``cnnkit bench MODEL.onnx [MORE.onnx ...]``: latency and throughput per model, provider and batch size."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization
from cnnkit.cli.options import (
    address_option,
    engine_option,
    parse_batch_sizes,
    parse_concurrency,
    parse_provider_options,
)
from cnnkit.cli.render import (
    JSON_HELP,
    check_json_target,
    console,
    emit_json,
    err_console,
    json_to_stdout,
    notice,
)


def bench_command(
    models: list[Path] = typer.Argument(..., help="One or more .onnx models."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda, tensorrt, any provider this onnxruntime lists, or one "
                                 "from an installed onnxruntime-ep-* plugin (e.g. openvino)."),
    provider_option: list[str] = typer.Option(None, "--provider-option", help="KEY=VALUE passed to the provider (an "
                                              "accelerator or an onnxruntime-ep-* plugin); repeatable."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="Comma-separated: onnxruntime, openvino, openvino:bf16, litert; "
                                "several are measured interleaved in the same rounds."),
    tflite: Path = typer.Option(None, "--tflite", help="LiteRT's .tflite (cnnkit export --format tflite). Default: beside the .onnx."),
    recommend: bool = typer.Option(False, "--recommend", help="Name the fastest runtime x precision per batch size whose "
                                   "accuracy stays within --max-accuracy-drop, where the rounds confirm its lead."),
    max_accuracy_drop: float = typer.Option(0.1, "--max-accuracy-drop", help="--recommend: accuracy a candidate may lose "
                                            "against the default, in points."),
    dataset: str = typer.Option(None, "--dataset", help="--recommend, --scenario: the labelled data to run on. Default: the model's."),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CNNKIT_DATA_DIR"),
    batch_sizes: str = typer.Option(None, "--batch-sizes", show_default=False,
                                    help="Comma-separated. Default: fitted to the model's MACs (1,8,32,64,128,256 for a small model); a fixed-batch model adds its own."),
    warmup: int = typer.Option(None, "--warmup", show_default=False, help="Warm-up runs per input shape. Default: 10, fewer for a heavy model."),
    min_time: float = typer.Option(None, "--min-time", show_default=False, help="Seconds of timed runs per shape, at least. Default: 1. --scenario: LoadGen's "
                                  "min duration per test. Default: 5."),
    min_iterations: int = typer.Option(None, "--min-iterations", show_default=False,
                                       help="Timed runs per shape, at least. Default: 50, fewer for a heavy model. "
                                       "--scenario: LoadGen's min query count (default: 256 single-stream, 662 "
                                       "multi-stream and server)."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads; 0: ONNX Runtime's default."),
    inter_op_threads: int = typer.Option(0, "--inter-op-threads", help="Inter-op threads (parallel execution mode); 0: default."),
    graph_optimization: GraphOptimization = typer.Option(GraphOptimization.ALL, "--graph-optimization",
                                                         case_sensitive=False, help="ONNX Runtime's graph optimisation level."),
    execution_mode: ExecutionMode = typer.Option(ExecutionMode.SEQUENTIAL, "--execution-mode", case_sensitive=False),
    spinning: bool = typer.Option(None, "--spinning/--no-spinning",
                                  help="Let idle pool threads spin before sleeping; default: ONNX Runtime's, which spins.",
                                  show_default=False),
    cudnn_conv_algo_search: CudnnConvAlgoSearch = typer.Option(CudnnConvAlgoSearch.EXHAUSTIVE, "--cudnn-conv-algo-search",
                                                               case_sensitive=False, help="CUDA: how cuDNN conv algorithms are chosen."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="CUDA: capture the run once and replay it as a CUDA graph."),
    include_copies: bool = typer.Option(False, "--include-copies", help="On CUDA, time host<->device copies too."),
    tune: bool = typer.Option(False, "--tune", help="Search the session options per batch size and keep the fastest."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU if the provider does not load, and say so."),
    device_id: int = typer.Option(0, "--device-id", help="CUDA device."),
    arena: bool = typer.Option(True, "--arena/--no-arena", help="ONNX Runtime's CPU memory arena (on by default)."),
    profile: bool = typer.Option(False, "--profile", help="ONNX Runtime's operator profile per model and batch size, "
                                 "on a separate untimed session."),
    profile_runs: int = typer.Option(10, "--profile-runs", help="Profiled runs per model and batch size."),
    memory: bool = typer.Option(False, "--memory", help="RSS before/after session creation and peak during runs, "
                                "in fresh processes, arena on and off."),
    cold_start: bool = typer.Option(False, "--cold-start", help="Session creation and first inference in fresh processes."),
    cold_start_runs: int = typer.Option(5, "--cold-start-runs", help="Fresh processes for --cold-start (median reported)."),
    concurrency: str = typer.Option(None, "--concurrency", help="Requests in flight on one session, e.g. 2 or 1,2,4, "
                                    "or 'sweep' (1 up to the cores): images/s and latency under that load."),
    scenario: str = typer.Option(None, "--scenario", help="MLPerf LoadGen scenarios instead of the latency "
                                 "loop: single-stream, multi-stream, server, offline (comma-separated). Needs "
                                 "pip install \"cnnkit[loadgen]\"."),
    target_qps: float = typer.Option(None, "--target-qps", help="--scenario server: one run at this Poisson "
                                     "arrival rate. Default: search for the highest valid QPS."),
    latency_bound: str = typer.Option(None, "--latency-bound", help="--scenario server: the bound LoadGen "
                                      "judges, e.g. p99=20ms (the default)."),
    max_batch: int = typer.Option(None, "--max-batch", show_default=False, help="--scenario: the largest "
                                  "batch a worker serves. Default: 8 where a probe shows it pays, else 1."),
    workers: int = typer.Option(None, "--workers", show_default=False, help="--scenario server/offline: "
                                "worker threads. Default: as many as the runtime wants (OpenVINO: its infer "
                                "requests; others: one per usable core)."),
    samples: int = typer.Option(None, "--samples", show_default=False, help="--scenario: images held in "
                                "memory. Default: 1024; --accuracy: every labelled one."),
    accuracy: bool = typer.Option(False, "--accuracy", help="--scenario: LoadGen's accuracy mode over the "
                                  "labelled set, checked against cnnkit eval's accuracy."),
    out_dir: Path = typer.Option(None, "--out-dir", help="--scenario: the folder for the result and "
                                 "LoadGen's logs. Default: loadgen-MODEL."),
    wide: bool = typer.Option(False, "--wide", help="All latency columns (mean, sd, min, precision, provider)."),
    json_out: Path = typer.Option(None, "--json", help=JSON_HELP + " Raw samples included."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    engine: str = engine_option,
    address: str = address_option,
    nodes: str = typer.Option(None, "--nodes", help="With --engine ray: all, or LABEL=VALUE (node labels, "
                              "ray start --labels). One benchmark per node, none sharing a node. Default: all."),
) -> None:
    """Time every inference on its own after a warm-up per shape; report percentiles and images/s.

    With --scenario, MLPerf LoadGen drives the model instead (see docs/commands/bench.md)."""
    if scenario is not None:
        scenario_command(models, scenario, runtime=runtime, tflite=tflite, provider=provider, threads=threads,
                         allow_fallback=allow_fallback, dataset=dataset, data_dir=data_dir, target_qps=target_qps,
                         latency_bound=latency_bound, max_batch=max_batch, workers=workers, samples=samples,
                         accuracy=accuracy, min_time=min_time, min_queries=min_iterations, out_dir=out_dir,
                         json_out=json_out, force=force,
                         others={"--batch-sizes": batch_sizes is not None, "--recommend": recommend, "--tune": tune,
                                 "--profile": profile, "--memory": memory, "--cold-start": cold_start,
                                 "--concurrency": concurrency is not None, "--warmup": warmup is not None,
                                 "--engine ray": engine == "ray"})
        return
    asked = [flag for flag, on in (("--target-qps", target_qps is not None), ("--latency-bound", latency_bound),
                                   ("--max-batch", max_batch is not None), ("--workers", workers is not None),
                                   ("--samples", samples is not None), ("--accuracy", accuracy),
                                   ("--out-dir", out_dir is not None)) if on]
    if asked:
        from cnnkit.errors import CnnkitError

        raise CnnkitError(f"{', '.join(asked)} set LoadGen scenarios, but no --scenario was given",
                          hint="add --scenario single-stream|multi-stream|server|offline")
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from cnnkit.bench.config import BenchConfig, RecommendConfig
    from cnnkit.distributed.engine import run_bench
    from cnnkit.envinfo import cpu_info
    from cnnkit.runtimes.registry import parse_runtimes
    from cnnkit.runtimes.sessions import SessionConfig

    config = BenchConfig(
        models=tuple(models), batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes is not None else None,
        session=SessionConfig(provider=provider, provider_options=parse_provider_options(provider_option), intra_op_threads=threads, inter_op_threads=inter_op_threads,
                              graph_optimization=graph_optimization, execution_mode=execution_mode, allow_spinning=spinning,
                              device_id=device_id, cudnn_conv_algo_search=cudnn_conv_algo_search, cuda_graph=cuda_graph,
                              allow_fallback=allow_fallback, cpu_mem_arena=arena),
        warmup=warmup, min_time_s=min_time, min_iterations=min_iterations, include_copies=include_copies, tune=tune,
        runtimes=parse_runtimes(runtime), tflite=tflite, profile=profile, profile_runs=profile_runs, memory=memory,
        cold_start=cold_start, cold_start_runs=cold_start_runs,
        concurrency=parse_concurrency(concurrency, cpu_info()["usable_cores"] or 1) if concurrency is not None else (),
        recommend=RecommendConfig(max_accuracy_drop, dataset, data_dir) if recommend else None,
        engine=engine, address=address, nodes=nodes,
    )
    check_json_target(json_out, force)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None)

        result = run_bench(config, progress, notice)
    if not json_to_stdout(json_out):
        if config.engine == "ray":
            render_fleet(result)
        else:
            render_bench(result, wide)
    emit_json(json_out, result.to_dict(), force)


def scenario_command(models: list[Path], scenario: str, *, runtime: str, tflite: Path | None, provider: str,
                     threads: int, allow_fallback: bool, dataset: str | None, data_dir: Path | None,
                     target_qps: float | None, latency_bound: str | None, max_batch: int | None,
                     workers: int | None, samples: int | None, accuracy: bool, min_time: float | None,
                     min_queries: int | None, out_dir: Path | None, json_out: Path | None, force: bool,
                     others: dict[str, bool]) -> None:
    """``bench --scenario``: parse, run :func:`cnnkit.bench.scenarios.run_scenarios`, render."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from cnnkit.bench.loadgen import LatencyBound, parse_scenarios
    from cnnkit.bench.scenarios import ScenarioConfig, run_scenarios
    from cnnkit.cli.render import print_section
    from cnnkit.report.scenarios import scenario_section
    from cnnkit.errors import CnnkitError
    from cnnkit.runtimes.registry import parse_one_runtime
    from cnnkit.runtimes.sessions import SessionConfig

    clash = [flag for flag, on in others.items() if on]
    if clash:
        raise CnnkitError(f"--scenario runs LoadGen; {', '.join(clash)} belong to the latency loop",
                          hint="run them in a separate cnnkit bench without --scenario")
    if len(models) != 1:
        raise CnnkitError(f"--scenario runs one model at a time, got {len(models)}",
                          hint="run cnnkit bench --scenario once per model, then cnnkit compare the results")
    model = models[0]
    config = ScenarioConfig(
        model=model, scenarios=parse_scenarios(scenario), out_dir=out_dir or Path(f"loadgen-{model.stem}"),
        runtime=parse_one_runtime(runtime, "bench --scenario"), tflite=tflite,
        session=SessionConfig(provider=provider, intra_op_threads=threads, allow_fallback=allow_fallback),
        dataset=dataset, data_dir=data_dir, samples=samples, target_qps=target_qps,
        bound=LatencyBound.parse(latency_bound) if latency_bound is not None else None, max_batch=max_batch,
        workers=workers, min_duration_s=min_time, min_queries=min_queries, accuracy=accuracy, force=force)
    check_json_target(json_out, force)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("starting", total=None)
        result = run_scenarios(config, lambda what, _d, _t: bar.update(task, description=what), notice)
    if not json_to_stdout(json_out):
        print_section(scenario_section(result))
    emit_json(json_out, result.to_dict(), force)
    if result.accuracy_failed:
        raise CnnkitError("LoadGen's accuracy differs from cnnkit eval's on the same runtime "
                          f"(result kept in {config.out_dir})", hint="the SUT answered some samples wrongly")


def render_fleet(fleet) -> None:  # noqa: ANN001 (FleetResult, imported lazily)
    """One row per device and case; nodes that gave no result are listed with the reason."""
    from cnnkit.cli.report import render_devices
    from cnnkit.report.devices import device_rows

    render_devices(device_rows([(e.device, e.result) for e in fleet.entries]), fleet.missing)


def render_bench(result, wide: bool = False) -> None:  # noqa: ANN001 (BenchResult, imported lazily)
    """What the run was and where, then its sections (:mod:`cnnkit.report.sections`; 80 columns unless ``wide``)."""
    from cnnkit.bench.tune import session_flags
    from cnnkit.cli.render import print_section
    from cnnkit.report.sections import (
        cold_start_section,
        concurrency_section,
        latency_section,
        memory_section,
        profile_section,
        recommendation_section,
    )

    env = result.environment
    cpu = env["cpu"]
    console.print(f"{cpu['model']}, {cpu['usable_cores']} cores ({', '.join(cpu['isa']) or 'no ISA flags read'}); "
                  f"onnxruntime {env['packages'].get('onnxruntime-gpu') or env['packages'].get('onnxruntime')}"
                  + (f"; GPU {env['gpu'][0]['name']}" if env.get("gpu") else ""))
    fallbacks = {c.provider["fallback_reason"] for c in result.cases if c.provider.get("fallback")}
    for reason in fallbacks:
        console.print(f"[bold red]FALLBACK:[/] {result.config['session']['provider']} did not load ({reason}); these figures are from the CPU")
    fitted = result.config.get("fitted_defaults")
    if fitted and fitted.get("applied"):
        chosen = {"batch_sizes": f"batch sizes {','.join(map(str, fitted['batch_sizes']))}",
                  "warmup": f"{fitted['warmup']} warm-up runs", "min_iterations": f">= {fitted['min_iterations']} runs",
                  "min_time_s": f">= {fitted['min_time_s']:g} s"}
        console.print(f"chosen for the model: {', '.join(chosen[f] for f in fitted['applied'])} per shape "
                      f"({fitted['reason']}); give the options to override")
    by_model: dict[str, list] = {}
    for skip in result.skipped:
        by_model.setdefault(skip.model, []).append(skip)
    for model, skips in by_model.items():
        reason = skips[0].reason.rsplit(", not ", 1)[0]
        console.print(f"[yellow]skipped:[/] {Path(model).name} at batch {', '.join(str(s.batch_size) for s in skips)}: "
                      f"{reason} (hint: {skips[0].hint})")
    print_section(latency_section([result], compact=not wide))
    first = {}
    for c in result.cases:
        first.setdefault(c.model, c)
    for model, c in first.items():
        console.print(f"{Path(model).name}: session created in {c.session_create_ms:.1f} ms, first inference "
                      f"{c.first_inference_ms:.2f} ms (batch {c.batch_size}); process peak RSS {max(x.peak_rss_mb for x in result.cases):.0f} MiB")
    if result.trials:
        failed = [t for t in result.trials if t.error]
        console.print(f"session options chosen by --tune ({len(result.trials)} trials"
                      + (f", {len(failed)} could not run" if failed else "")
                      + "; another set replaces the given one only when the samples confirm it is faster):")
        from cnnkit.runtimes.onnxruntime import recorded_info

        for c in result.cases:
            pick = result.chosen_trial(c.model, c.batch_size) if c.runtime == "onnxruntime" else None
            if pick is None:
                continue
            if pick.ratio_to_base is None:
                vs = "the options given could not run"
            elif pick.ratio_to_base == 1.0:
                vs = "the options given"
            else:
                vs = f"{1 - pick.ratio_to_base:.0%} faster than the options given"
            on_gpu = recorded_info(c.provider).on_gpu
            console.print(f"  {Path(c.model).name} batch {c.batch_size}: {session_flags(pick.options, on_gpu)} "
                          f"({vs}) -> p50 {c.stats.p50_ms:.4g} ms")
    # --wide widens the latency and profile tables; the others fit 80 columns only in their compact form.
    for section in (profile_section([result], not wide), memory_section([result], True),
                    cold_start_section([result], True), concurrency_section([result], True),
                    recommendation_section([result], True)):
        if section is not None:
            print_section(section)
