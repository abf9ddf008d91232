"""The sections of a benchmark result (and of an evaluation, a comparison of two, a parity check, a verify run
and ``quantize --auto``), drawn once for the terminal (``cnnkit bench``, ``eval``, ``compare``, ``parity``,
``verify``, ``quantize --auto``) and the report alike.

Each section is one function from the typed result (:class:`~cnnkit.bench.result.BenchResult`,
:class:`~cnnkit.evaluate.accuracy.EvalResult`, :class:`~cnnkit.results.compare.CompareResult`,
:class:`~cnnkit.parity.check.ParityResult`, :class:`~cnnkit.verify.check.VerifyResult`,
:class:`~cnnkit.quantize.config.AutoResult`) to a neutral :class:`Section` (title, tables of headers and rows,
notes); two thin formatters draw it: Rich in :mod:`cnnkit.cli.render`, Markdown (and so HTML) here. ``compact``: the terminal's 80-column layout (short
headers and names, the columns that fit); otherwise every column, as ``--wide`` and the report show them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.bench.result import BenchCase, BenchResult
from cnnkit.bench.concurrency import ConcurrencyPoint, saturation
from cnnkit.evaluate.accuracy import EvalResult, accuracy_change_pp
from cnnkit.finite import number
from cnnkit.results.compare import CompareResult
from cnnkit.runtimes.registry import runtime_label
from cnnkit.runtimes.sessions import provider_label
from cnnkit.stats import ADVICE, noise_reasons

if TYPE_CHECKING:
    from cnnkit.parity.check import ParityResult
    from cnnkit.parity.compare import OutputDiff
    from cnnkit.parity.tolerance import Tolerance
    from cnnkit.quantize.config import AutoResult
    from cnnkit.verify.check import VerifyResult

NARROW_NAME = 18  # characters of a model's file name in the compact layout
NARROW_NODE = 36  # characters of a node's name in the compact layout


@dataclass(frozen=True)
class Table:
    """Rows of text under headers. ``align``: "l" or "r" per column (default: the first ``left`` columns left,
    the others, numbers, right); ``title``: a sub-heading; ``lines``: text between it and the table."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: int = 1
    title: str = ""
    lines: tuple[str, ...] = ()
    align: str = ""
    verdict: int | None = None  # the column that holds each row's verdict, which a formatter may colour ...
    outcomes: tuple[bool | None, ...] = ()  # ... per row: True good, False bad, None neither

    def aligned_left(self, column: int) -> bool:
        return self.align[column] == "l" if self.align else column < self.left


@dataclass(frozen=True)
class Section:
    """``title`` (none: the terminal's latency table, which opens the output), ``intro``: what the figures are,
    the tables, then ``notes`` (one line each; "NOISY:" and "note:" lead the ones that warn)."""

    title: str
    intro: str = ""
    tables: tuple[Table, ...] = ()
    notes: tuple[str, ...] = ()
    commands: tuple[tuple[str, str], ...] = ()  # (what it does, a shell command): never wrapped; code in the report


# --- shared labels ----------------------------------------------------------------------------------------


def rate(images_per_s: float) -> str:
    """Images/s with thousands separators, and three significant digits below 100 (a ResNet50 on 2 cores is ~1.2)."""
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


def model_name(model: str, compact: bool) -> str:
    """The model's file name, cut to ``NARROW_NAME`` characters in the compact layout."""
    name = Path(model).name
    return name if not compact or len(name) <= NARROW_NAME else name[: NARROW_NAME - 1] + "…"


def runs_on(c: BenchCase, several_runtimes: bool) -> str:
    """``CPU``, ``ORT CPU`` (beside other runtimes), ``OpenVINO CPU``: where a case ran."""
    label = provider_label(c.provider)
    return f"ORT {label}" if several_runtimes and c.runtime == "onnxruntime" else label


# --- the sections -----------------------------------------------------------------------------------------


def latency_section(results: Sequence[BenchResult], compact: bool) -> Section:
    """One row per case. Compact: what every row shares is said above the table and the columns that would
    not fit 80 columns are left out; otherwise every column."""
    cases = [c for r in results for c in r.cases]
    if not cases:
        return Section("Latency and throughput")
    several = len({c.runtime for c in cases}) > 1
    noisy = {i: reasons for i, c in enumerate(cases)
             if (reasons := noise_reasons(c.samples_ns, c.stats.p50_ms, c.stats.p99_ms, c.round_p50_ms))}
    cols = ["model", "precision", "provider", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± sd ms", "min ms",
            "images/s", "runs", "noise"]
    intro = ""
    if compact:
        cols = ["model", "runs on", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "runs", "noise"]
        shared = []
        models = {c.model for c in cases}
        labels = {(runs_on(c, several), c.precision) for c in cases}
        if len(models) == 1:
            cols.remove("model")
            shared.append(Path(next(iter(models))).name)
        if len(labels) == 1:
            cols.remove("runs on")
            where, precision = next(iter(labels))
            shared.append(f"{precision} on {where}")
        if "model" in cols and "runs on" in cols:
            cols.remove("p90 ms")
            cols.remove("runs")
        intro = ", ".join(shared) + ("; " if shared else "") + "--wide: every column"
    rows = []
    for i, c in enumerate(cases):
        s = c.stats
        where = runs_on(c, several)
        values = {"model": model_name(c.model, compact), "precision": c.precision, "provider": where,
                  "runs on": f"{where} {c.precision}", "batch": str(c.batch_size), "p50 ms": f"{s.p50_ms:.4g}",
                  "p90 ms": f"{s.p90_ms:.4g}", "p99 ms": f"{s.p99_ms:.4g}",
                  "mean ± sd ms": f"{s.mean_ms:.4g} ± {s.std_ms:.2g}", "min ms": f"{s.min_ms:.4g}",
                  "images/s": rate(s.images_per_s), "runs": f"{s.count:,}",
                  "noise": "NOISY" if i in noisy else ""}
        rows.append(tuple(values[col] for col in cols))
    notes = []
    precisions = {c.precision for c in cases}
    if len(precisions) > 1:
        notes.append(f"note: the rows differ in precision ({', '.join(sorted(precisions))}): they are not the same "
                     "computation; compare speed only with the accuracy of each (cnnkit bench --recommend)")
    notes += [f"NOISY: {Path(cases[i].model).name} ({runs_on(cases[i], several)} {cases[i].precision}) batch "
              f"{cases[i].batch_size}: {'; '.join(reasons)}" for i, reasons in noisy.items()]
    if noisy:
        notes.append(f"advice: {ADVICE}")
    left = sum(col in ("model", "runs on", "precision", "provider") for col in cols)
    return Section("" if compact else "Latency and throughput", intro,
                   (Table(tuple(cols), tuple(rows), left),), tuple(notes))


def runtime_section(results: Sequence[BenchResult]) -> Section | None:
    """p50 per batch size side by side, one column per runtime x precision x provider, where there are several."""
    cases = [c for r in results for c in r.cases]

    def key(c: BenchCase) -> tuple[str, str, str]:
        return c.runtime, c.precision, provider_label(c.provider)

    if len({key(c) for c in cases}) < 2:
        return None
    by_model: dict[str, dict[tuple[str, str, str], dict[int, float]]] = {}
    for c in cases:
        by_model.setdefault(Path(c.model).name, {}).setdefault(key(c), {})[c.batch_size] = c.stats.p50_ms
    tables = []
    for model, groups in by_model.items():
        if len(groups) < 2:
            continue
        labels = sorted(groups)
        rows = []
        for b in sorted({b for g in groups.values() for b in g}):
            values = [groups[lab].get(b) for lab in labels]
            best = min((v for v in values if v is not None), default=None)
            rows.append((str(b), *("" if v is None else f"{v:.4g}{' *' if v == best else ''}" for v in values)))
        lines = (("Note: the precisions differ; a faster lower precision is only a win if its accuracy holds.",)
                 if len({lab[1] for lab in labels}) > 1 else ())
        headers = (f"{runtime_label(runtime, precision, model_precision=True)} {provider}"
                   for runtime, precision, provider in labels)
        tables.append(Table(("batch", *headers), tuple(rows), title=model, lines=lines))
    if not tables:
        return None
    return Section("Runtime comparison", "Median latency (ms) per batch size, grouped by runtime, precision and "
                   "provider; the fastest is marked *.", tuple(tables))


def profile_section(results: Sequence[BenchResult], compact: bool, top: int = 5) -> Section | None:
    """ONNX Runtime's operator profile: per model and batch size, the slowest nodes and the time per op type."""
    profiles = [p for r in results for p in r.profiles]
    if not profiles:
        return None
    tables = []
    for p in profiles:
        lines = [f"{p.kernel_us:,.0f} µs of kernels per run over {p.runs} profiled runs on {p.provider}"]
        nodes = Table(("node", "op type", "µs", "share"),
                      tuple((o.node if not compact or len(o.node) <= NARROW_NODE else o.node[: NARROW_NODE - 1] + "…",
                             o.op_type, f"{o.us:,.1f}", f"{o.share:.1%}") for o in p.top_operators[:top]),
                      left=2, title=f"{model_name(p.model, compact)}, batch {p.batch_size}")
        if compact:  # the op types as one line: a second table would not add much at 80 columns
            lines.append("by type: " + ", ".join(f"{t.op_type} {t.share:.0%} ({t.us:,.0f} µs)" for t in p.by_type[:4]))
            tables.append(Table(nodes.headers, nodes.rows, 2, nodes.title, tuple(lines)))
            continue
        tables.append(Table(nodes.headers, nodes.rows, 2, nodes.title, tuple(lines)))
        tables.append(Table(("op type", "nodes", "µs", "share"),
                            tuple((t.op_type, str(t.nodes), f"{t.us:,.1f}", f"{t.share:.1%}") for t in p.by_type)))
    intro = ("ONNX Runtime's profiler on a separate session; kernel µs per run, each node's median; not part of the "
             "latency figures" if compact else
             "ONNX Runtime's profiler on a separate session (its runs are not in the latency figures); kernel time "
             "per run: each node's median over the profiled runs, an op type's the sum of its nodes'")
    return Section("Operator profile", intro, tuple(tables))


def memory_section(results: Sequence[BenchResult], compact: bool) -> Section | None:
    """Resident memory in fresh processes, ONNX Runtime's arena on and off."""
    mems = [m for r in results for m in r.memory]
    if not mems:
        return None
    rows = []
    for m in mems:
        for b, peak in m.peak_rss_mb.items():
            row = (model_name(m.model, compact), "on" if m.cpu_mem_arena else "off", str(b),
                   f"{m.rss_before_session_mb:,.0f}" if compact else f"{m.rss_before_session_mb:,.1f}",
                   f"{m.session_mb:+,.1f}", f"{peak:,.0f}" if compact else f"{peak:,.1f}",
                   "" if m.gpu_mb is None else f"{m.gpu_mb:,.0f}")
            rows.append(row if compact else (*row, str(m.processes)))
    headers = (("model", "arena", "batch", "before", "session", "peak", "GPU") if compact else
               ("model", "arena", "batch", "RSS before", "session adds", "peak", "GPU MiB", "processes"))
    methods = ", ".join(sorted({m.peak_method for m in mems}))
    if compact:
        return Section("Memory", "ONNX Runtime, MiB, in a fresh process per setting: RSS before and after session "
                       "creation, peak during the runs at each batch size", (Table(headers, tuple(rows), left=2),),
                       (f"peak: {methods}; {mems[0].runs_per_batch} runs per batch size; medians over the processes",))
    intro = (f"ONNX Runtime, measured in fresh processes, so nothing else is counted: resident memory (RSS, MiB) "
             f"before and after session creation and the peak during {mems[0].runs_per_batch} runs at each batch size "
             f"({methods}); medians over the processes; ONNX Runtime's CPU memory arena on and off")
    return Section("Memory", intro, (Table(headers, tuple(rows), left=2),))


def cold_start_section(results: Sequence[BenchResult], compact: bool) -> Section | None:
    """Import, session creation and first run in fresh processes, beside the run's own warm figures."""
    rows = []
    first_batch = None
    for r in results:
        for c in r.cold_start:
            first_batch = c.first_batch_size
            cases = [x for x in r.cases if x.model == c.model and x.runtime == "onnxruntime"]
            warm = next((x for x in cases if x.batch_size == c.first_batch_size), None)
            rows.append((model_name(c.model, compact), str(c.processes), f"{c.import_ms:,.0f}",
                         f"{c.session_create_ms:,.1f}", f"{c.first_inference_ms:,.2f}",
                         f"{min(x.session_create_ms for x in cases):,.1f}" if cases else "",
                         "" if warm is None else f"{warm.stats.p50_ms:.4g}"))
    if not rows:
        return None
    headers = (("model", "procs", "import", "session", "1st run", "in-run session", "warm p50") if compact else
               ("model", "processes", "import", "session", "first run", "in-run session", "warm p50"))
    if compact:
        return Section("Cold start", "ONNX Runtime, ms; median over fresh processes, beside the warm figures of this run",
                       (Table(headers, tuple(rows)),),
                       ((f"cold: import onnxruntime, create the session, first run at batch {first_batch}; in-run: "
                         "the fastest session creation of the benchmark's own; warm p50: its steady-state median"),))
    intro = ("a fresh process imports ONNX Runtime, creates the session and runs once (median over the processes, ms), "
             "beside the benchmark's own fastest session creation and its warm median at the same batch size")
    return Section("Cold start", intro, (Table(headers, tuple(rows)),))


def concurrency_section(results: Sequence[BenchResult], compact: bool) -> Section | None:
    """Images/s and latency with N requests in flight on one session, and where the throughput stops growing."""
    points = [p for r in results for p in r.concurrency]
    if not points:
        return None
    rows = []
    for p in points:
        threads = f"{p.intra_op_threads or 'default'}{'!' if p.oversubscribed else ''}"
        row = (model_name(p.model, compact), str(p.batch_size), str(p.streams), threads, rate(p.images_per_s),
               f"{p.p50_ms:.4g}")
        rows.append((*row, f"{p.p99_ms:.4g}") if compact else (*row, f"{p.p90_ms:.4g}", f"{p.p99_ms:.4g}", str(p.requests)))
    headers = (("model", "batch", "in flight", "threads", "images/s", "p50 ms", "p99 ms") if compact else
               ("model", "batch", "in flight", "threads", "images/s", "p50 ms", "p90 ms", "p99 ms", "requests"))
    notes = []
    if any(p.oversubscribed for p in points):
        notes.append("threads marked ! oversubscribe the cores (in flight x threads > cores)")
    groups: dict[tuple[str, int], list[ConcurrencyPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.batch_size), []).append(p)
    for (model, b), group in groups.items():
        if len(group) < 2:
            continue
        knee = saturation(group)
        best = max(group, key=lambda p: p.images_per_s)
        what = (f"stops growing after {knee} in flight" if knee is not None
                else f"still grows at {max(p.streams for p in group)} in flight (the most measured)")
        notes.append(f"{Path(model).name} batch {b}: throughput {what}; best {rate(best.images_per_s)} images/s "
                     f"at {best.streams} in flight")
    intro = ("ONNX Runtime; N requests in flight on one session; images/s: done over wall time; latency in ms"
             if compact else
             "N requests kept in flight on one ONNX Runtime session (threads: intra-op threads per session, so that "
             "N x threads stays within the cores; default: ONNX Runtime's, one per physical core); images/s is images "
             "completed over wall time")
    title = "Throughput under load" if compact else "Throughput vs concurrency"
    return Section(title, intro, (Table(headers, tuple(rows), left=1),), tuple(notes))


def recommendation_section(results: Sequence[BenchResult], compact: bool) -> Section | None:
    """What ``bench --recommend`` named per batch size, with its accuracy evidence and the command."""
    from cnnkit.bench.recommend import Recommendation

    recs = [Recommendation.from_dict(r.recommendation) for r in results if r.recommendation]
    if not recs:
        return None
    tables, notes, commands = [], [], []
    for rec in recs:
        d = rec.dataset
        tables.append(Table(
            ("model", "runtime", "precision", "accuracy", "vs default", "admitted"),
            tuple((model_name(a.model, compact), a.runtime, a.precision, f"{100 * a.accuracy:.2f} %",
                   f"{0.0 - a.drop_pp + 0.0:+.2f} pp", "yes" if a.admissible else "no (over budget)")
                  for a in rec.accuracy),
            align="lllrrl", title=f"accuracy on {d.get('name')} ({d.get('evaluated_samples', '?'):,} test images), budget "
                          f"{rec.max_accuracy_drop_pp:g} points below the default"))
        tables.append(Table(
            ("model", "batch", "deploy", "p50 ms", "default p50", "lead"),
            tuple((model_name(b.model, compact), str(b.batch_size), b.recommended, f"{b.p50_ms:.4g}",
                   f"{b.default_p50_ms:.4g}", "confirmed" if b.confirmed else "default is fastest"
                   if b.fastest == b.default else "not confirmed")
                  for b in rec.batches),
            title=f"the deployment per batch size ({rec.rounds} interleaved round{'' if rec.rounds == 1 else 's'})",
            align="lrlrrl"))
        notes += [f"batch {b.batch_size}: {b.note}" for b in rec.batches]
        commands += [(f"batch {b.batch_size}", b.command) for b in rec.batches]
    intro = ("a lead counts only where the interleaved rounds confirm it" if compact else
             "the fastest runtime x precision per batch size whose accuracy stays within the budget, where the "
             "interleaved rounds confirm its lead over the default (ONNX Runtime); otherwise the default")
    return Section("Recommended deployment", intro, tuple(tables), tuple(notes), tuple(commands))


def eval_section(result: EvalResult, compact: bool) -> Section:
    """``cnnkit eval``: per model its precision, size and provider, top-1 and top-5, and its change against the
    first model given. Compact: two-line headers, and the dataset left to the line the terminal prints before."""
    base = result.models[0].accuracy
    rows = tuple((Path(m.model).name, m.precision, f"{m.size_bytes / 1024:,.0f} KiB", provider_label(m.provider),
                  f"{100 * m.accuracy:.2f} %", "-" if m.top5_accuracy is None else f"{100 * m.top5_accuracy:.2f} %",
                  f"{accuracy_change_pp(base, m.accuracy):+.2f} pp", f"{100 * m.agreement_with_first:.2f} %")
                 for m in result.models)
    change, agrees = ("Δ vs\nfirst", "agrees\nwith first") if compact else ("Δ vs first", "agrees with first")
    table = Table(("model", "precision", "size", "provider", "top-1", "top-5", change, agrees), rows, align="llrlrrrr")
    d = result.dataset
    return Section("" if compact else "Accuracy", "" if compact else f"{d['evaluated_samples']:,} test images of {d['name']}",
                   (table,))


def compare_section(result: CompareResult, compact: bool) -> Section:
    """``cnnkit compare``: per row the change and its verdict, "(differs)" where the two were measured differently
    (said in a note), and the rows only one result has."""
    def verdict(v: str, differs: tuple[str, ...]) -> str:
        return v + (" (differs)" if differs else "")

    if result.kind == "latency":
        table = Table(("model | provider | batch", "baseline p50 ms", "new p50 ms", "change", "95 % CI", "verdict"),
                      tuple((c.key, f"{c.baseline_p50_ms:.4g}", f"{c.new_p50_ms:.4g}", f"{100 * (c.ratio - 1):+.1f} %",
                             f"{100 * (c.ci_low - 1):+.1f} … {100 * (c.ci_high - 1):+.1f} %", verdict(c.verdict, c.differs))
                            for c in result.latency), align="lrrrrl")
        differs = [(c.key, c.differs) for c in result.latency if c.differs]
    elif result.kind == "scenario":
        return scenario_compare_section(result, compact)
    else:
        table = Table(("model", "baseline", "new", "drop", "verdict"),
                      tuple((a.model, f"{100 * a.baseline:.2f} %", f"{100 * a.new:.2f} %", f"{a.drop_pp:+.2f} pp",
                             verdict(a.verdict, a.differs)) for a in result.accuracy), align="lrrrl")
        differs = [(a.model, a.differs) for a in result.accuracy if a.differs]
    notes = [f"differs: {key}: {'; '.join(how)}" for key, how in differs]
    notes += [f"only in one result: {key}" for key in result.unmatched]
    return Section("" if compact else f"{result.kind.capitalize()} against the baseline", "", (table,), tuple(notes))


def scenario_compare_section(result: CompareResult, compact: bool) -> Section:
    """``cnnkit compare`` of two ``bench --scenario`` results: per scenario LoadGen's figure, the change as a
    slowdown (+: a higher latency or a lower rate), its interval and verdict; "*" where the two were measured
    differently (said in a note). Fits 80 columns: the model is said once, in the intro."""
    def value(v: float) -> str:
        return f"{v:,.0f}" if v >= 1000 else f"{v:.4g}"

    def pct(ratio: float) -> str:
        change = 100 * (ratio - 1)
        return "unbounded" if not math.isfinite(change) else f"{change:+.0f}" if abs(change) >= 100 else f"{change:+.1f}"

    rows = tuple((c.key.split(" | ")[-1], c.metric, value(c.baseline), value(c.new), f"{pct(c.ratio)} %",
                  f"{pct(c.ci_low)} … {pct(c.ci_high)} %", c.verdict + ("*" if c.differs else ""))
                 for c in result.scenarios)
    table = Table(("scenario", "metric", "baseline", "new", "change", "interval", "verdict"), rows, align="llrrrrl")
    notes = ["*: measured differently (differs:), so the change may not be the model's"] \
        if any(c.differs for c in result.scenarios) else []
    notes += [f"differs: {c.key}: {'; '.join(c.differs)}" for c in result.scenarios if c.differs]
    notes += [f"only in one result: {key}" for key in result.unmatched]
    model = result.scenarios[0].key.split(" | ")[0] if result.scenarios else ""
    return Section("" if compact else "LoadGen scenarios against the baseline",
                   f"LoadGen scenarios of {model} (change: + is slower)", (table,), tuple(notes))


def gate_text(tol: Tolerance) -> str:
    """A parity gate in one line: ``|diff| <= 1e-05 + 0.0001*|ref|; top-1 agreement >= 1``."""
    gates = []
    if tol.atol is not None:
        gates.append(f"|diff| <= {tol.atol:g} + {tol.rtol:g}*|ref|")
    gates.append(f"top-1 agreement >= {tol.min_top1_agreement:g}")
    if tol.max_accuracy_drop_pp is not None:
        gates.append(f"accuracy drop <= {tol.max_accuracy_drop_pp:g} pp")
    return "; ".join(gates)


def outputs_table(outputs: Sequence[OutputDiff], compact: bool) -> Table:
    """Parity's (and verify's) comparison: one row per output and batch size, the differences, top-1 agreement,
    the worst input and the verdict. One output is named in the title, not in every row. Compact: two-line
    headers."""
    names = list(dict.fromkeys(d.output for d in outputs))
    several = len(names) > 1
    headers = (("batch", "max\n|diff|", "mean\n|diff|", "max rel", "min atol", "top-1\nagree", "worst\ninput", "verdict")
               if compact else ("batch", "max abs diff", "mean abs diff", "max rel diff", "min passing atol",
                                "top-1 agreement", "worst input", "verdict"))
    rows = []
    for d in outputs:
        ties = f" ({d.near_ties} ties)" if d.near_ties else ""
        bad = d.nonfinite_reference + d.nonfinite_candidate
        rows.append(((d.output,) if several else ()) + (
            str(d.batch_size), number(d.max_abs), number(d.mean_abs), number(d.max_rel), number(d.min_passing_atol),
            f"{d.top1_agreement:.4f}{ties}", f"#{d.worst_index} {d.worst_kind}",
            "pass" if d.passed else f"FAIL{f' ({bad} NaN/Inf)' if bad else ''}"))
    return Table((("output",) if several else ()) + headers, tuple(rows), align=("l" if several else "") + "rrrrrrll",
                 title="" if several or not names else f"output {names[0]}", verdict=len(headers) - 1 + several,
                 outcomes=tuple(d.passed for d in outputs))


def layers_table(result: ParityResult, compact: bool) -> Table | None:
    """Keras vs ONNX per layer (on a failure, or asked for with ``--layers``): the difference at each layer's
    output, and where it diverges; "-": not compared (fused, unmatched, no tensor)."""
    if not result.layers:
        return None
    rows, outcomes = [], []
    for r in result.layers:
        rows.append((r.layer, r.onnx_tensor or "(none)", r.layout, "×".join(map(str, r.shape)),
                     "" if r.max_abs is None else f"{r.max_abs:.3g}", "" if r.rel is None else f"{r.rel:.2g}",
                     f"NaN/Inf ({r.nonfinite})" if r.nonfinite else "DIVERGES" if r.diverges
                     else "-" if r.max_abs is None else "ok"))
        outcomes.append(False if r.nonfinite or r.diverges else None)
    headers = ("layer", "ONNX tensor", "layout", "shape", "max |diff|" if compact else "max abs diff",
               "rel" if compact else "relative", "verdict")
    return Table(headers, tuple(rows), align="llllrrl", title="per layer (Keras output vs ONNX tensor)", verdict=6,
                 outcomes=tuple(outcomes))


def parity_section(result: ParityResult, compact: bool) -> Section:
    """``cnnkit parity``: the outputs table, the per-layer table where there is one, and what the gate left out
    and the accuracy as notes. Compact: no title (the terminal says the pair and the gate before, and the
    failures on stderr after); otherwise "Parity (mode): PASS|FAIL", the pair, the gate, the failures."""
    tables = [outputs_table(result.outputs, compact)]
    layers = layers_table(result, compact)
    if layers is not None:
        tables.append(layers)
    notes = []
    ungated = next((d for d in result.outputs if d.ungated_top1_agreement is not None), None)
    if ungated is not None:
        notes.append(f"not gated: top-1 agreement {ungated.ungated_top1_agreement:.4f} on the {ungated.ungated_inputs} "
                     "random and edge-case inputs (a static INT8 model is calibrated for real images; these clip)")
    d = next((d for d in result.outputs if d.reference_accuracy is not None), None)
    if d is not None:
        notes.append(f"accuracy on {result.inputs['counts'].get('dataset', 0)} labelled images: reference "
                     f"{100 * d.reference_accuracy:.2f} %, candidate {100 * d.candidate_accuracy:.2f} %")
    if compact:
        return Section("", "", tuple(tables), tuple(notes))
    notes += [f"fail: {failure}" for failure in result.failures]
    if result.divergence:
        notes.append(f"first divergent layer: {result.divergence}")
    tol = result.tolerance
    intro = (f"`{Path(result.reference).name}` vs `{Path(result.candidate).name}` on {result.provider['active']}; "
             f"gate: {gate_text(tol)} ({tol.reason})")
    return Section(f"Parity ({result.mode}): {'PASS' if result.passed else 'FAIL'}", intro, tuple(tables), tuple(notes))


def verify_section(result: VerifyResult, compact: bool) -> Section:
    """``cnnkit verify``: parity's outputs table against the golden outputs, and the accuracy as a note."""
    notes = []
    d = next((d for d in result.outputs if d.reference_accuracy is not None), None)
    if d is not None:
        notes.append(f"accuracy on {result.inputs['counts'].get('dataset', 0)} labelled golden images: reference "
                     f"{100 * d.reference_accuracy:.2f} %, here {100 * d.candidate_accuracy:.2f} %")
    return Section("" if compact else f"Verify: {'PASS' if result.passed else 'FAIL'}", "",
                   (outputs_table(result.outputs, compact),), tuple(notes))


def auto_section(result: AutoResult, compact: bool) -> Section:
    """``quantize --auto``: per candidate its accuracy (on unlabelled images: top-1 agreement with FP32) and
    change against FP32, agreement, size, p50 at batch 1 and at the batch it was chosen by, images/s there, and
    the verdict. Compact: two-line headers, and the summary left to the line the terminal prints after."""
    from cnnkit.quantize.config import metric_name

    b = result.objective_batch
    fp32 = result.candidates[0].accuracy if result.candidates else None
    rows = []
    for c in result.candidates:
        if c.error:
            rows.append((c.name, "", "", "", "", "", "", "", c.verdict))
            continue
        rows.append((c.name, "" if c.accuracy is None else f"{100 * c.accuracy:.2f} %",
                     "" if c.accuracy is None or fp32 is None else f"{accuracy_change_pp(fp32, c.accuracy):+.2f}",
                     "" if c.top1_agreement is None else f"{100 * c.top1_agreement:.1f} %",
                     "" if c.size_bytes is None else f"{c.size_bytes / 1024:,.0f}",
                     f"{c.latency_ms[1]:.4f}" if 1 in c.latency_ms else "",
                     f"{c.latency_ms[b]:.3f}" if b in c.latency_ms else "",
                     f"{c.images_per_s[b]:,.0f}" if b in c.images_per_s else "", c.verdict))
    metric = metric_name(result.dataset)
    headers = ((metric.replace(" with ", "\nwith "), "Δ pp vs\nFP32", "agree", "size\nKiB", "p50 ms\nb=1",
                f"p50 ms\nb={b}", f"img/s\nb={b}") if compact else
               (metric, "Δ pp vs FP32", "top-1 agreement", "size KiB", "p50 batch 1 ms", f"p50 batch {b} ms",
                f"images/s batch {b}"))
    intro = f"provider {result.provider['active']}; accuracy budget {result.budget_pp:g} pp; chosen by latency at batch {b}"
    if compact:
        return Section("", intro, (Table(("variant", *headers, "verdict"), tuple(rows), align="lrrrrrrrl"),))
    # The summary as it is (it opens with a variant's name, which an intro would capitalise).
    table = Table(("variant", *headers, "verdict"), tuple(rows), align="lrrrrrrrl", lines=(result.summary,))
    return Section("Quantization (--auto)", "", (table,), (intro,))


def bench_sections(results: Sequence[BenchResult], compact: bool, report: bool = False) -> list[Section]:
    """Every section the results hold, in order; ``report``: with the runtime comparison the report adds."""
    found: list[Section | None] = [latency_section(results, compact)]
    if report:
        found.append(runtime_section(results))
    found += [recommendation_section(results, compact), profile_section(results, compact),
              memory_section(results, compact), cold_start_section(results, compact),
              concurrency_section(results, compact)]
    return [s for s in found if s is not None and (s.tables or s.notes)]


# --- Markdown -----------------------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def to_markdown(section: Section) -> list[str]:
    """The report's lines for one section: ``## title``, the intro, ``###`` sub-headings, tables, notes as a list."""
    parts = [f"## {section.title}", ""]
    if section.intro:
        intro = section.intro[0].upper() + section.intro[1:]
        parts += [intro if intro.endswith(".") else intro + ".", ""]
    for t in section.tables:
        if t.title:
            parts += [f"### {t.title}", ""]
        for line in t.lines:
            parts += [line, ""]
        parts += [md_table(t.headers, t.rows), ""]
    if section.notes:
        parts += [f"- {n}" for n in section.notes] + [""]
    if section.commands:
        parts += [f"- {what}: `{command}`" for what, command in section.commands] + [""]
    return parts


def settings_lines(path: Path, result: BenchResult) -> list[str]:
    """The report's settings of one benchmark: every config value, flattened (``session.provider: cpu``)."""
    parts = [f"## Benchmark settings ({path.name})", "", f"- run date: {result.created}"]
    parts += [f"- {k}: {v}" for k, v in _flat("", result.config) if k != "models"]
    parts += [f"- model: {m}" for m in result.config.get("models", [])]
    return parts + [""]


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    if isinstance(value, list | tuple):
        return [(prefix, ", ".join(str(v) for v in value) or "none")]
    return [(prefix, "default" if value is None else str(value))]
