"""``cnnkit bench MODEL.onnx [MORE.onnx ...]``: latency and throughput per model, provider and batch size."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization
from cnnkit.cli.options import parse_batch_sizes
from cnnkit.cli.render import console, err_console


def bench_command(
    models: list[Path] = typer.Argument(..., help="One or more .onnx models."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda, tensorrt, or any provider this onnxruntime lists."),
    batch_sizes: str = typer.Option("1,8,32,64,128,256", "--batch-sizes"),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up runs per input shape."),
    min_time: float = typer.Option(1.0, "--min-time", help="Seconds of timed runs per shape, at least."),
    min_iterations: int = typer.Option(50, "--min-iterations", help="Timed runs per shape, at least."),
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
    json_out: Path = typer.Option(None, "--json", help="Write the full result, raw samples included, here."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
) -> None:
    """Time every inference on its own after a warm-up per shape; report percentiles and images/s."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cnnkit.bench import BenchConfig, run_benchmark
    from cnnkit.errors import CnnkitError
    from cnnkit.io import check_writable, write_json_atomic
    from cnnkit.sessions import SessionConfig

    for flag, value in (("--threads", threads), ("--inter-op-threads", inter_op_threads)):
        if value < 0:
            raise CnnkitError(f"{flag} must be >= 0, got {value}")
    if json_out is not None:
        check_writable(json_out, force)
    config = BenchConfig(
        models=tuple(models), batch_sizes=parse_batch_sizes(batch_sizes),
        session=SessionConfig(provider=provider, intra_op_threads=threads, inter_op_threads=inter_op_threads,
                              graph_optimization=graph_optimization, execution_mode=execution_mode, allow_spinning=spinning,
                              device_id=device_id, cudnn_conv_algo_search=cudnn_conv_algo_search, cuda_graph=cuda_graph,
                              allow_fallback=allow_fallback),
        warmup=warmup, min_time_s=min_time, min_iterations=min_iterations, include_copies=include_copies, tune=tune,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_benchmark(config, progress)
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict(), force=force)
    render_bench(result)
    if json_out is not None:
        console.print(f"wrote {json_out}")


def render_bench(result) -> None:  # noqa: ANN001 (BenchResult, imported lazily)
    from rich.table import Table

    from cnnkit.sessions import provider_label

    env = result.environment
    cpu = env["cpu"]
    console.print(f"{cpu['model']}, {cpu['usable_cores']} cores ({', '.join(cpu['isa']) or 'no ISA flags read'}); "
                  f"onnxruntime {env['packages'].get('onnxruntime-gpu') or env['packages'].get('onnxruntime')}"
                  + (f"; GPU {env['gpu'][0]['name']}" if env.get("gpu") else ""))
    fallbacks = {c.provider["fallback_reason"] for c in result.cases if c.provider.get("fallback")}
    for reason in fallbacks:
        console.print(f"[bold red]FALLBACK:[/] {result.config['session']['provider']} did not load ({reason}); these figures are from the CPU")
    precisions = {c.precision for c in result.cases}
    if len(precisions) > 1:
        console.print(f"[yellow]note:[/] the models differ in precision ({', '.join(sorted(precisions))}); compare with that in mind")
    table = Table(title_justify="left")
    cols = ("model", "precision", "provider", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± sd ms", "min ms", "images/s", "runs")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "precision", "provider") else "right", no_wrap=True)
    for c in result.cases:
        s = c.stats
        table.add_row(Path(c.model).name, c.precision, provider_label(c.provider), str(c.batch_size), f"{s.p50_ms:.4g}", f"{s.p90_ms:.4g}",
                      f"{s.p99_ms:.4g}", f"{s.mean_ms:.4g} ± {s.std_ms:.2g}", f"{s.min_ms:.4g}", f"{s.images_per_s:,.0f}",
                      f"{s.count:,}")
    console.print(table)
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
        on_gpu = result.config["session"]["provider"] not in ("cpu", "CPUExecutionProvider")
        for c in result.cases:
            pick = result.chosen_trial(c.model, c.batch_size)
            if pick is None:
                continue
            if pick.ratio_to_base is None:
                vs = "the options given could not run"
            elif pick.ratio_to_base == 1.0:
                vs = "the options given"
            else:
                vs = f"{1 - pick.ratio_to_base:.0%} faster than the options given"
            console.print(f"  {Path(c.model).name} batch {c.batch_size}: {session_flags(pick.options, on_gpu)} "
                          f"({vs}) -> p50 {c.stats.p50_ms:.4g} ms")


def session_flags(options: dict, on_gpu: bool) -> str:
    """The ``cnnkit bench`` flags that select these session options (a tune trial's ``options``)."""
    flags = [f"--threads {options['intra_op_threads']}"]
    if options.get("inter_op_threads"):
        flags.append(f"--inter-op-threads {options['inter_op_threads']}")
    if options.get("allow_spinning") is not None:
        flags.append("--spinning" if options["allow_spinning"] else "--no-spinning")
    flags += [f"--graph-optimization {options['graph_optimization']}", f"--execution-mode {options['execution_mode']}"]
    if on_gpu:
        flags.append(f"--cudnn-conv-algo-search {str(options['cudnn_conv_algo_search']).lower()}")
        if options.get("cuda_graph"):
            flags.append("--cuda-graph")
    return " ".join(flags)
