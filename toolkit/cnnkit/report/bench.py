"""The report's plots of benchmarks, training curves and accuracy vs size, and its accuracy-vs-size table, from
the typed results. The benchmark's tables are :mod:`cnnkit.report.sections` (shared with the terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.bench.result import BenchCase, BenchResult
from cnnkit.bench.concurrency import ConcurrencyPoint
from cnnkit.quantize.config import metric_name
from cnnkit.report.sections import md_table
from cnnkit.runtimes.sessions import provider_label

Result = tuple[Path, Any]  # (file, its typed result)


def case_label(c: BenchCase) -> str:
    """``model.onnx (fp32, CPU)``, with the runtime first where it is not ONNX Runtime (a plot's series)."""
    parts = [c.precision, provider_label(c.provider)]
    if c.runtime != "onnxruntime":
        parts.insert(0, c.runtime)
    return f"{Path(c.model).name} ({', '.join(p for p in parts if p)})"


def _name(model: str) -> str:
    return Path(model).name


# --- plots ------------------------------------------------------------------------------------------------


def batch_ticks(ax: Any, sizes: list[int]) -> None:
    """Ticks at the measured batch sizes, labelled as plain numbers (not 10^n) on a log axis."""
    from matplotlib.ticker import NullFormatter, NullLocator

    sizes = sorted(set(sizes))
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(b) for b in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def concurrency_plot(benches: list[tuple[Path, BenchResult]]) -> Any | None:
    points = [p for _, r in benches for p in r.concurrency]
    if not points:
        return None
    groups: dict[tuple[str, int], list[ConcurrencyPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.batch_size), []).append(p)

    def draw(ax: Any) -> None:
        for (model, b), group in groups.items():
            group = sorted(group, key=lambda p: p.streams)
            ax.plot([p.streams for p in group], [p.images_per_s for p in group], marker="o",
                    label=f"{_name(model)} batch {b}")
        ax.set_xticks(sorted({p.streams for p in points}))
        ax.set(xlabel="requests in flight", ylabel="images/s (done / wall time)", title="Throughput vs concurrency")
        ax.legend(fontsize=7)

    return draw


def training_plot(trains: list[Result]) -> Any | None:
    hists = [(t.spec.get("name", path.stem), t.history) for path, t in trains if t.history]
    if not hists:
        return None

    def draw(ax: Any) -> None:
        for name, h in hists:
            for key, style in (("loss", "-"), ("val_loss", "--"), ("accuracy", "-"), ("val_accuracy", "--")):
                if key in h:
                    ax.plot(range(1, len(h[key]) + 1), h[key], style, marker="o", markersize=3, label=f"{name} {key}")
        ax.set(xlabel="epoch", ylabel="loss / accuracy", title="Training curves")
        epochs = max(len(v) for _, h in hists for v in h.values())
        ax.set_xticks(range(1, epochs + 1))
        ax.legend(fontsize=7)

    return draw


def accuracy_points(evals: list[Result], autos: list[Result]) -> list[dict[str, Any]]:
    """Every evaluated model: eval's, and every candidate quantize --auto evaluated (chosen or not)."""
    points = [{"label": f"{_name(m.model)} ({m.precision})", "size_kib": m.size_bytes / 1024,
               "accuracy": m.accuracy, "kind": "eval"} for _, e in evals for m in e.models]
    for _, q in autos:
        if metric_name(q.dataset) != "accuracy":  # agreement with FP32 on unlabelled images: not accuracy
            continue
        for c in q.candidates:
            if c.accuracy is None or c.size_bytes is None:
                continue
            chosen = c.name == q.chosen
            points.append({"label": f"{c.name}{' (chosen)' if chosen else ''}", "size_kib": c.size_bytes / 1024,
                           "accuracy": c.accuracy, "kind": "chosen" if chosen else "candidate"})
    return points


def accuracy_section(points: list[dict[str, Any]]) -> list[str]:
    """Every evaluated model and quantize --auto candidate, smallest first."""
    if not points:
        return []
    kinds = {"eval": "evaluated", "candidate": "quantize --auto candidate", "chosen": "quantize --auto, chosen"}
    rows = [[p["label"], f"{p['size_kib']:,.1f}", f"{100 * p['accuracy']:.2f} %", kinds[p["kind"]]]
            for p in sorted(points, key=lambda p: (p["size_kib"], p["label"]))]
    return ["## Accuracy vs size", "", md_table(["model", "size KiB", "accuracy", "from"], rows), ""]


def accuracy_plot(points: list[dict[str, Any]]) -> Any | None:
    if not points:
        return None

    def draw(ax: Any) -> None:
        styles = {"eval": ("o", "C0"), "candidate": ("s", "C1"), "chosen": ("*", "C3")}
        for kind, (marker, color) in styles.items():
            pts = [p for p in points if p["kind"] == kind]
            if pts:
                ax.scatter([p["size_kib"] for p in pts], [100 * p["accuracy"] for p in pts], marker=marker, color=color,
                           s=60 if kind == "chosen" else 40,
                           label={"eval": "evaluated", "candidate": "quantize --auto candidate", "chosen": "chosen"}[kind])
        for p in points:
            ax.annotate(p["label"], (p["size_kib"], 100 * p["accuracy"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="model size, KiB", ylabel="top-1 accuracy, %", title="Accuracy vs model size")
        ax.legend(fontsize=7)

    return draw
