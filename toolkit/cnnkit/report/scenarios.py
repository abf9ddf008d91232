"""LoadGen scenario results (``cnnkit.scenario/1``) as sections, drawn once for the terminal (``bench --scenario``)
and the report alike, and the server sweep's plot: latency against offered QPS.

Every figure is LoadGen's own, as :class:`cnnkit.bench.scenarios.ScenarioRun` read it from the summary log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnnkit.bench.scenarios import ScenarioResult, ScenarioRun
from cnnkit.report.sections import Section, Table, rate


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def verdict(run: ScenarioRun) -> str:
    """LoadGen's word for a performance run; an accuracy run's check against eval."""
    if run.mode == "accuracy":
        return "matches eval" if run.valid else "DIFFERS"
    return "VALID" if run.valid else "INVALID"


def run_label(run: ScenarioRun) -> str:
    return run.scenario + (f" at {run.target_qps:g} QPS" if run.target_qps is not None else "")


def scenario_section(result: ScenarioResult, compact: bool = True) -> Section:
    """One row per LoadGen test (scenario, target, verdict, latency at the scenario's percentile and LoadGen's
    early-stopping estimate of it, samples/s), then why each INVALID run is, the accuracy checks, the server
    search and the settings used."""
    r = result
    rows = []
    for run in r.runs:
        p = run.percentile
        rows.append((run.scenario, "acc" if run.mode == "accuracy" else "perf",
                     f"{run.target_qps:g}" if run.target_qps is not None else "-", verdict(run),
                     f"p{p:g} {_ms(run.latency_ms())}" if p is not None else "-", _ms(run.early_stopping_ms()),
                     rate(run.qps) if run.qps else "-"))
    table = Table(("scenario", "mode", "target QPS", "verdict", "latency ms", "ES est. ms", "samples/s"),
                  tuple(rows), left=2, align="llrlrrr")
    notes: list[str] = []
    for run in r.runs:
        if not run.valid and run.reasons:
            notes.append(f"{run_label(run)}: {verdict(run)}: {'; '.join(run.reasons)}")
        if run.accuracy is not None:
            a = run.accuracy
            notes.append(f"{run.scenario} accuracy mode: LoadGen {100 * a['loadgen_accuracy']:.2f} % "
                         f"({a['loadgen_correct']}/{a['samples']}), cnnkit eval {100 * a['eval_accuracy']:.2f} % "
                         f"({a['eval_correct']}/{a['eval_samples']}): {'matches' if a['matches'] else 'DIFFERS'}")
    for s in r.searches:
        bound = f"p{s.bound['percentile']:g} <= {s.bound['ms']:g} ms"
        tried = ", ".join(f"{r.runs[i].target_qps:g}" + ("" if r.runs[i].valid else " (INVALID)") for i in s.runs)
        best = f"{s.best_qps:g} QPS, VALID" if s.best_qps is not None else "no QPS was VALID"
        notes.append(f"server search at {bound}: {best}; tried {tried}; stopped: {s.stopped}")
    settings = r.runs[0].point if r.runs else {}
    queries = ", ".join(f"{run.scenario} {run.point['min_query_count']}"
                        for run in {run.scenario: run for run in r.runs}.values())
    notes.append(f"LoadGen {r.loadgen_version}, min duration {settings.get('min_duration_ms', 0) / 1000:g} s per "
                 f"test, min queries {queries} (LoadGen's own minimum duration is 600 s)")
    kind = "synthetic " if r.samples.get("kind") == "synthetic" else ""
    b = r.batching
    intro = (f"{Path(r.model).name} on {r.runtime}; {r.samples.get('samples', '?')} {kind}samples in memory; "
             f"{r.serving['how']}; max batch {b['max_batch']} ({b['why']})")
    return Section("" if compact else f"LoadGen scenarios: {Path(r.model).name} on {r.runtime}", intro, (table,),
                   tuple(notes))


def sweep_points(result: ScenarioResult) -> list[tuple[float, float | None, bool]]:
    """(offered QPS, LoadGen's latency at the bound's percentile in ms, VALID) per server run, by QPS."""
    return sorted((run.target_qps, run.latency_ms(), run.valid) for run in result.runs
                  if run.scenario == "server" and run.mode == "performance" and run.target_qps is not None)


def sweep_plot(results: Sequence[ScenarioResult]) -> Callable[[Any], None] | None:
    """Draws latency (at the bound's percentile, LoadGen's figure) against offered QPS for every server run, one
    line per result, the bound across, INVALID points hollow; None when no result has server runs."""
    series = [(r, sweep_points(r)) for r in results]
    series = [(r, pts) for r, pts in series if pts]
    if not series:
        return None

    def draw(ax: Any) -> None:
        bounds: set[tuple[float, float]] = set()
        for r, pts in series:
            (line,) = ax.plot([p[0] for p in pts], [p[1] if p[1] is not None else float("nan") for p in pts], "-",
                              alpha=0.6, label=f"{Path(r.model).name} on {r.runtime}")
            for valid, style in ((True, {"color": line.get_color()}),
                                 (False, {"facecolors": "none", "edgecolors": line.get_color()})):
                chosen = [p for p in pts if p[2] == valid and p[1] is not None]
                ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], **style)
            bounds |= {(run.point["bound"]["percentile"], run.point["bound"]["ms"]) for run in r.runs
                       if run.scenario == "server" and run.point.get("bound")}
        for percentile, ms in sorted(bounds):
            ax.axhline(ms, color="grey", linestyle="--", linewidth=1, label=f"bound: p{percentile:g} = {ms:g} ms")
        ax.set(yscale="log", xlabel="offered load, QPS (Poisson arrivals)",
               ylabel="latency at the bound's percentile, ms", title="Server scenario: latency vs offered QPS "
                                                                       "(LoadGen; hollow: INVALID)")
        ax.legend(fontsize=7)

    return draw
