"""Reports rendered from JSON results, which stay the source of truth.

Reads any of cnnkit's results (train, parity, eval, bench, quantize, quantize --auto), from files or a run
folder, and writes ``report.md``, a self-contained ``report.html`` (plots embedded, no network needed),
the plots as PNG files and ``results.csv``. The folder is built beside the target and swapped in at the end.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.evaluate.accuracy import accuracy_change_pp
from cnnkit.quantize.config import metric_name, size_change
from cnnkit.io import check_output_dir, staged_dir
from cnnkit.report.bench import (
    accuracy_plot,
    accuracy_points,
    accuracy_section,
    batch_ticks,
    case_label,
    concurrency_plot,
    training_plot,
)
from cnnkit.report.sections import (
    auto_section, bench_sections, eval_section, parity_section, settings_lines, to_markdown,
)
from cnnkit.results.load import from_dict, read_json, schema_of

SCHEMAS = ("cnnkit.train/1", "cnnkit.parity/1", "cnnkit.eval/1", "cnnkit.bench/1", "cnnkit.scenario/1", "cnnkit.quantize/1",
           "cnnkit.quantize-auto/1", "cnnkit.fleet-bench/1")


@dataclass
class ReportInputs:
    """The typed results (:mod:`cnnkit.results.load`) by schema, each with its file."""

    by_schema: dict[str, list[tuple[Path, Any]]] = field(default_factory=dict)

    def of(self, schema: str) -> list[tuple[Path, Any]]:
        return self.by_schema.get(schema, [])


def collect_results(paths: list[Path], schemas: Any = None, reader: str = "a report") -> ReportInputs:
    """Read result files, or every ``*.json`` of a run folder; a schema outside ``schemas`` (default: those a
    report renders) is a one-line error naming ``reader``."""
    schemas = SCHEMAS if schemas is None else schemas
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.glob("*.json") if not q.name.startswith("."))
            if not found:
                raise CnnkitError(f"{p} holds no cnnkit results (*.json)", hint="run cnnkit pipeline, or pass result files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise CnnkitError(f"{p} not found", hint="pass cnnkit result files (--json of bench, eval, parity, ...) or a run folder")
    inputs = ReportInputs()
    for f in files:
        data = read_json(f)
        schema = schema_of(data, str(f))
        if schema == "cnnkit.pipeline/1":
            continue  # the pipeline's own state, not a result
        if schema not in schemas:
            raise CnnkitError(f"{f} has schema {schema!r}, which {reader} does not render", hint=f"known: {', '.join(schemas)}")
        # Rendered from the typed result: every field checked and defaults filled in (see cnnkit.results.load).
        inputs.by_schema.setdefault(schema, []).append((f, from_dict(data, str(f))))
    if not inputs.by_schema:
        raise CnnkitError("no results to report", hint="pass cnnkit result files (--json of bench, eval, parity, ...) or a run folder")
    return inputs


# --- plots ----------------------------------------------------------------------------------------------


def _plot_png(draw: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _bench_series(inputs: ReportInputs) -> dict[str, list[Any]]:
    """The benchmarks' cases (typed) by plot label, each series in batch-size order."""
    series: dict[str, list[Any]] = {}
    for _, result in inputs.of("cnnkit.bench/1"):
        for c in result.cases:
            series.setdefault(case_label(c), []).append(c)
    for cases in series.values():
        cases.sort(key=lambda c: c.batch_size)
    return series


PLOT_TITLES = {"training_curves.png": "Training curves", "latency.png": "Latency vs batch size",
               "throughput.png": "Throughput vs batch size", "concurrency.png": "Throughput vs concurrency",
               "accuracy_vs_size.png": "Accuracy vs model size", "device_latency.png": "Latency per device",
               "device_throughput.png": "Throughput per device",
               "server_sweep.png": "Server scenario: latency vs offered QPS"}


def _devices(inputs: ReportInputs) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    from cnnkit.report.devices import device_results

    return device_results(inputs.of("cnnkit.fleet-bench/1") + inputs.of("cnnkit.bench/1"))


def _accuracy_points(inputs: ReportInputs) -> list[dict[str, Any]]:
    return accuracy_points(inputs.of("cnnkit.eval/1"), inputs.of("cnnkit.quantize-auto/1"))


def make_plots(inputs: ReportInputs) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    draw_training = training_plot(inputs.of("cnnkit.train/1"))
    if draw_training is not None:
        plots["training_curves.png"] = _plot_png(draw_training)
    series = _bench_series(inputs)
    sizes = sorted({c.batch_size for cases in series.values() for c in cases})
    if series:
        def latency(ax: Any) -> None:
            for label, cases in series.items():
                b = [c.batch_size for c in cases]
                p50 = [c.stats.p50_ms for c in cases]
                line = ax.plot(b, p50, marker="o", label=label)[0]
                p90, p99 = [c.stats.p90_ms for c in cases], [c.stats.p99_ms for c in cases]
                ax.fill_between(b, p50, p90, color=line.get_color(), alpha=0.3)
                ax.fill_between(b, p90, p99, color=line.get_color(), alpha=0.12)
            ax.set(xscale="log", yscale="log", xlabel="batch size",
                   ylabel="latency, ms (line p50; bands to p90 and p99)",
                   title="Latency vs batch size")
            batch_ticks(ax, sizes)
            ax.legend(fontsize=7)

        def throughput(ax: Any) -> None:
            for label, cases in series.items():
                ax.plot([c.batch_size for c in cases], [c.stats.images_per_s for c in cases], marker="o", label=label)
            ax.set(xscale="log", xlabel="batch size", ylabel="images/s (batch / p50)", title="Throughput vs batch size")
            batch_ticks(ax, sizes)
            ax.legend(fontsize=7)

        plots["latency.png"] = _plot_png(latency)
        plots["throughput.png"] = _plot_png(throughput)
    benches = inputs.of("cnnkit.bench/1")
    draw_concurrency = concurrency_plot(benches)
    if draw_concurrency is not None:
        plots["concurrency.png"] = _plot_png(draw_concurrency)
    draw_accuracy = accuracy_plot(_accuracy_points(inputs))
    if draw_accuracy is not None:
        plots["accuracy_vs_size.png"] = _plot_png(draw_accuracy)
    from cnnkit.report.devices import device_plots
    from cnnkit.report.scenarios import sweep_plot

    plots |= device_plots(_devices(inputs)[0], _plot_png)
    draw_sweep = sweep_plot([r for _, r in inputs.of("cnnkit.scenario/1")])
    if draw_sweep is not None:
        plots["server_sweep.png"] = _plot_png(draw_sweep)
    return plots


# --- tables ----------------------------------------------------------------------------------------------


def csv_rows(inputs: ReportInputs) -> list[dict[str, Any]]:
    rows = []
    for label, cases in _bench_series(inputs).items():
        for c in cases:
            s = c.stats
            rows.append({"kind": "latency", "model": Path(c.model).name, "precision": c.precision,
                         "provider": c.provider["active"], "fallback": c.provider.get("fallback", False),
                         "batch_size": c.batch_size, "p50_ms": s.p50_ms, "p90_ms": s.p90_ms, "p99_ms": s.p99_ms,
                         "mean_ms": s.mean_ms, "std_ms": s.std_ms, "images_per_s": s.images_per_s,
                         "samples": s.count, "accuracy": ""})
    for _, e in inputs.of("cnnkit.eval/1"):
        for m in e.models:
            rows.append({"kind": "accuracy", "model": Path(m.model).name, "precision": m.precision,
                         "provider": m.provider["active"], "fallback": m.provider.get("fallback", False),
                         "batch_size": "", "p50_ms": "", "p90_ms": "", "p99_ms": "", "mean_ms": "", "std_ms": "",
                         "images_per_s": "", "samples": m.samples, "accuracy": m.accuracy})
    return rows


def markdown(inputs: ReportInputs, plots: dict[str, bytes], title: str) -> str:
    parts = [f"# {title}", ""]
    env = next((r.environment for sch in SCHEMAS for _, r in inputs.of(sch) if getattr(r, "environment", None)), None)
    if env:
        cpu, pk = env.get("cpu", {}), env.get("packages", {})
        parts += ["## Environment", "",
                  f"- CPU: {cpu.get('model')}, {cpu.get('usable_cores')} cores; ISA: {', '.join(cpu.get('isa', [])) or 'unknown'}",
                  f"- GPU: {', '.join(g['name'] for g in env.get('gpu', [])) or 'none'}",
                  f"- cnnkit {pk.get('cnnkit')}, onnxruntime {pk.get('onnxruntime-gpu') or pk.get('onnxruntime')}, "
                  f"onnx {pk.get('onnx')}, tensorflow {pk.get('tensorflow')}, numpy {pk.get('numpy')}",
                  f"- platform {env.get('platform')}; git commit {env.get('git_commit')}", ""]
    for _, t in inputs.of("cnnkit.train/1"):
        m, d = t.metrics, t.dataset
        parts += ["## Model", "", f"- spec `{t.spec['name']}`, {t.params:,} parameters",
                  f"- trained on {d['name']} ({d['train_samples_used']:,} images, {d['validation_samples']:,} held out "
                  f"for validation), {t.epochs_run} epochs; test accuracy {100 * m['test_accuracy']:.2f} % on "
                  f"{d['test_samples']:,} images", ""]
    for _, p in inputs.of("cnnkit.parity/1"):
        parts += to_markdown(parity_section(p, compact=False))
    for _, e in inputs.of("cnnkit.eval/1"):
        parts += to_markdown(eval_section(e, compact=False))
    for _, q in inputs.of("cnnkit.quantize-auto/1"):
        parts += to_markdown(auto_section(q, compact=False))
    for _, q in inputs.of("cnnkit.quantize/1"):
        settings = ", ".join(f"{k}={v}" for k, v in q.settings.items())
        d = q.dataset
        if q.accuracy is None:
            checked = "accuracy not checked (no images)"
        elif metric_name(d) == "accuracy":
            checked = (f"accuracy {100 * q.accuracy:.2f} % vs FP32 {100 * q.fp32_accuracy:.2f} % "
                       f"({accuracy_change_pp(q.fp32_accuracy, q.accuracy):+.2f} pp, drop budget {q.budget_pp:g} pp)")
        else:  # unlabelled images: the figure is agreement with FP32, not accuracy (FP32's own would read 100 %)
            checked = (f"top-1 agreement with FP32 {100 * q.accuracy:.2f} % on {d.get('evaluated_samples', '?')} "
                       f"unlabelled images (no labels: accuracy not measured; drop budget {q.budget_pp:g} pp)")
        parts += [f"## Quantized variant `{Path(q.output).name}`", "",
                  f"{settings}: {checked}; {size_change(q.size_ratio)}"
                  + ("" if q.passed else f"; FAILED its gate, kept by --keep-failed: {'; '.join(q.failures)}"), ""]
    parts += accuracy_section(_accuracy_points(inputs))
    benches = inputs.of("cnnkit.bench/1")
    for path, result in benches:
        parts += settings_lines(path, result)
    for section in bench_sections([r for _, r in benches], compact=False, report=True):
        parts += to_markdown(section)
    from cnnkit.report.devices import device_section
    from cnnkit.report.scenarios import scenario_section

    parts += device_section(*_devices(inputs))
    for _, scenario in inputs.of("cnnkit.scenario/1"):
        parts += to_markdown(scenario_section(scenario, compact=False))
    for name in plots:
        parts += [f"## {PLOT_TITLES.get(name, name)} (plot)", "", f"![{name}]({name})", ""]
    return "\n".join(parts)


def html_page(md_text: str, plots: dict[str, bytes], title: str) -> str:
    """A self-contained page: the markdown's headings, tables and lists, plots embedded as data URIs."""
    body: list[str] = []
    lines = md_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append([html.escape(c.strip().strip("`")) for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, rows = table[0], table[2:]
            body.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")
            continue
        if line.startswith("![") and "](" in line:
            name = line[line.index("](") + 2 : -1]
            data = base64.b64encode(plots[name]).decode()
            body.append(f'<figure><img alt="{html.escape(name)}" data-plot="{html.escape(name)}" '
                        f'src="data:image/png;base64,{data}"></figure>')
        elif line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:].replace('`', ''))}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.replace('`', ''))}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
             "th{background:#f3f3f3}img{max-width:100%}")
    # Records, once loaded, how many plots rendered: a headless browser can check the page without guessing.
    script = ("window.addEventListener('load',function(){var a=document.querySelectorAll('img[data-plot]'),n=0;"
              "a.forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
              "document.body.setAttribute('data-plots',a.length);document.body.setAttribute('data-plots-loaded',n);});")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style><script>{script}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(paths: list[Path], out_dir: Path, title: str | None = None, force: bool = False) -> dict[str, Any]:
    """Render the results at ``paths`` into ``out_dir`` (replaced only with ``force``). Returns what was written."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    inputs = collect_results(paths)
    title = title or f"cnnkit report: {out_dir.name}"
    plots = make_plots(inputs)
    md_text = markdown(inputs, plots, title)
    with staged_dir(out_dir, force) as staging:
        for name, data in plots.items():
            (staging / name).write_bytes(data)
        (staging / "report.md").write_text(md_text)
        (staging / "report.html").write_text(html_page(md_text, plots, title))
        rows = csv_rows(inputs)
        with open(staging / "results.csv", "w", newline="") as fh:
            fields = ["kind", "model", "precision", "provider", "fallback", "batch_size", "p50_ms", "p90_ms", "p99_ms",
                      "mean_ms", "std_ms", "images_per_s", "samples", "accuracy"]
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return {"out_dir": str(out_dir), "files": sorted(p.name for p in out_dir.iterdir()),
            "sources": sorted(str(p) for s in inputs.by_schema.values() for p, _ in s)}
