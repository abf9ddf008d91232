"""The report's benchmark sections: settings, latency with the noise flag, runtime comparison, operator
profile, memory, cold start, throughput vs concurrency; plus the plots of training curves, concurrency
and accuracy vs size (every evaluated candidate). Reads result dictionaries (the JSON), writes markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.bench.concurrency import saturation
from cnnkit.stats import ADVICE, noise_reasons
from cnnkit.quantize.variants import metric_name
from cnnkit.runtimes.sessions import provider_label

Result = tuple[Path, dict[str, Any]]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def case_label(c: dict[str, Any]) -> str:
    """``model.onnx (fp32, CPU)``, with the runtime first where the result names one other than ONNX Runtime."""
    runtime = c.get("runtime")
    parts = [c.get("precision", "?"), provider_label(c["provider"]) if isinstance(c.get("provider"), dict) else str(c.get("provider", ""))]
    if runtime and runtime != "onnxruntime":
        parts.insert(0, str(runtime))
    return f"{Path(c['model']).name} ({', '.join(p for p in parts if p)})"


def _name(model: str) -> str:
    return Path(model).name


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    if isinstance(value, list | tuple):
        return [(prefix, ", ".join(str(v) for v in value) or "none")]
    return [(prefix, "default" if value is None else str(value))]


def settings_section(benches: list[Result]) -> list[str]:
    parts: list[str] = []
    for path, data in benches:
        cfg = data.get("config", {})
        parts += [f"## Benchmark settings ({path.name})", "", f"- run date: {data.get('created', 'unknown')}"]
        parts += [f"- {k}: {v}" for k, v in _flat("", cfg) if k != "models"]
        parts += [f"- model: {m}" for m in cfg.get("models", [])]
        parts.append("")
    return parts


def latency_section(benches: list[Result]) -> list[str]:
    rows, noisy = [], []
    cases = [c for _, d in benches for c in d.get("cases", [])]
    for c in sorted(cases, key=lambda c: (case_label(c), c["batch_size"])):
        s = c["stats"]
        reasons = noise_reasons(c.get("samples_ns", ()), s["p50_ms"], s["p99_ms"], c.get("round_p50_ms", ()))
        if reasons:
            noisy.append(f"- {case_label(c)} batch {c['batch_size']}: {'; '.join(reasons)}")
        rows.append([case_label(c), str(c["batch_size"]), f"{s['p50_ms']:.4g}", f"{s['p90_ms']:.4g}", f"{s['p99_ms']:.4g}",
                     f"{s['images_per_s']:,.0f}", str(s["count"]), "NOISY" if reasons else ""])
    if not rows:
        return []
    parts = ["## Latency and throughput", "",
             md_table(["model (precision, provider)", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "samples", "noise"],
                      rows), ""]
    precisions = {c["precision"] for c in cases}
    if len(precisions) > 1:
        parts += [f"Note: these models differ in precision ({', '.join(sorted(precisions))}).", ""]
    if noisy:
        parts += ["Noise flag: these cases' spread is too wide to trust;", "", *noisy, "", f"Advice: {ADVICE}.", ""]
    return parts


def runtime_section(benches: list[Result]) -> list[str]:
    """p50 per batch size side by side, one column per runtime x precision x provider, where there are several."""
    cases = [c for _, d in benches for c in d.get("cases", [])]
    combos = sorted({(c.get("runtime", "onnxruntime"), c["precision"], provider_label(c["provider"])) for c in cases})
    if len(combos) < 2:
        return []
    key = lambda c: (c.get("runtime", "onnxruntime"), c["precision"], provider_label(c["provider"]))  # noqa: E731
    by_model: dict[str, dict[tuple, dict[int, float]]] = {}
    for c in cases:
        by_model.setdefault(_name(c["model"]), {}).setdefault(key(c), {})[c["batch_size"]] = c["stats"]["p50_ms"]
    parts = ["## Runtime comparison", "",
             "Median latency (ms) per batch size, grouped by runtime, precision and provider; the fastest is marked *.",
             ""]
    for model, groups in by_model.items():
        if len(groups) < 2:
            continue
        labels = sorted(groups)
        sizes = sorted({b for g in groups.values() for b in g})
        rows = []
        for b in sizes:
            vals = {lab: groups[lab].get(b) for lab in labels}
            best = min((v for v in vals.values() if v is not None), default=None)
            rows.append([str(b)] + ["" if v is None else f"{v:.4g}{' *' if v == best else ''}" for v in vals.values()])
        parts += [f"### {model}", "", md_table(["batch"] + [" ".join(lab) for lab in labels], rows), ""]
        if len({lab[1] for lab in labels}) > 1:
            parts += ["Note: the precisions differ; a faster lower precision is only a win if its accuracy holds.", ""]
    return parts if len(parts) > 4 else []


def recommendation_section(benches: list[Result]) -> list[str]:
    """What ``cnnkit bench --recommend`` named per batch size, with its accuracy evidence and the command."""
    recs = [d["recommendation"] for _, d in benches if d.get("recommendation")]
    if not recs:
        return []
    parts = ["## Recommended deployment", "",
             "The fastest runtime x precision per batch size whose accuracy stays within the budget, where the "
             "interleaved rounds confirm its lead over the default (ONNX Runtime); otherwise the default.", ""]
    for rec in recs:
        parts += [f"Accuracy on {rec['dataset'].get('name')} ({rec['dataset'].get('evaluated_samples', '?')} test images), "
                  f"budget {rec['max_accuracy_drop_pp']:g} points:", "",
                  md_table(["model", "runtime", "precision", "accuracy", "vs default", "admitted"],
                           [[_name(a["model"]), a["runtime"], a["precision"], f"{100 * a['accuracy']:.2f} %",
                             f"{0.0 - a['drop_pp'] + 0.0:+.2f} pp", "yes" if a["admissible"] else "no (over budget)"]
                            for a in rec["accuracy"]]), "",
                  md_table(["model", "batch", "deploy", "p50 ms", "default p50 ms", "lead"],
                           [[_name(b["model"]), str(b["batch_size"]), b["recommended"], f"{b['p50_ms']:.4g}",
                             f"{b['default_p50_ms']:.4g}", "confirmed" if b["confirmed"] else "default is fastest"
                             if b["fastest"] == b["default"] else f"not confirmed ({b['fastest']} had the lowest median)"]
                            for b in rec["batches"]]), ""]
        parts += [f"- batch {b['batch_size']}: `{b['command']}`" for b in rec["batches"]] + [""]
    return parts


def profile_section(benches: list[Result], top: int = 5) -> list[str]:
    profiles = [p for _, d in benches for p in d.get("profiles", [])]
    if not profiles:
        return []
    parts = ["## Operator profile", "",
             "ONNX Runtime's profiler on a separate session (its runs are not in the latency figures); kernel time "
             "per run: each node's median over the profiled runs, an op type's the sum of its nodes'.", ""]
    for p in profiles:
        parts += [f"### {_name(p['model'])}, batch {p['batch_size']}", "",
                  f"{p['kernel_us']:,.0f} µs of kernels per run over {p['runs']} profiled runs on {p['provider']}.", "",
                  md_table(["node", "op type", "µs", "share"],
                           [[o["node"], o["op_type"], f"{o['us']:,.1f}", f"{o['share']:.1%}"] for o in p["top_operators"][:top]]),
                  "",
                  md_table(["op type", "nodes", "µs", "share"],
                           [[t["op_type"], str(t["nodes"]), f"{t['us']:,.1f}", f"{t['share']:.1%}"] for t in p["by_type"]]),
                  ""]
    return parts


def memory_section(benches: list[Result]) -> list[str]:
    mems = [m for _, d in benches for m in d.get("memory", [])]
    if not mems:
        return []
    rows = []
    for m in mems:
        for b, peak in m["peak_rss_mb"].items():
            rows.append([_name(m["model"]), "on" if m["cpu_mem_arena"] else "off", str(b),
                         f"{m['rss_before_session_mb']:,.1f}", f"{m['rss_after_session_mb'] - m['rss_before_session_mb']:+,.1f}",
                         f"{peak:,.1f}", "" if m.get("gpu_mb") is None else f"{m['gpu_mb']:,.0f}", str(m["processes"])])
    methods = ", ".join(sorted({m["peak_method"] for m in mems}))
    return ["## Memory", "",
            "ONNX Runtime, measured in fresh processes, so nothing else is counted: resident memory (RSS, MiB) before and after "
            f"session creation and the peak during {mems[0]['runs_per_batch']} runs at each batch size "
            f"({methods}); medians over the processes; ONNX Runtime's CPU memory arena on and off.", "",
            md_table(["model", "arena", "batch", "RSS before", "session adds", "peak", "GPU MiB", "processes"], rows), ""]


def cold_start_section(benches: list[Result]) -> list[str]:
    rows = []
    for _, d in benches:
        for c in d.get("cold_start", []):
            cases = [x for x in d.get("cases", []) if x["model"] == c["model"] and x.get("runtime", "onnxruntime") == "onnxruntime"]
            warm = next((x for x in cases if x["batch_size"] == c["first_batch_size"]), None)
            rows.append([_name(c["model"]), str(c["processes"]), f"{c['import_ms']:,.0f}", f"{c['session_create_ms']:,.1f}",
                         f"{c['first_inference_ms']:,.2f}",
                         f"{min(x['session_create_ms'] for x in cases):,.1f}" if cases else "",
                         "" if warm is None else f"{warm['stats']['p50_ms']:.4g}"])
    if not rows:
        return []
    return ["## Cold start", "",
            "A fresh process imports ONNX Runtime, creates the session and runs once (median over the processes, ms), "
            "beside the benchmark's own fastest session creation and its warm median at the same batch size.", "",
            md_table(["model", "processes", "import", "session", "first run", "in-run session", "warm p50"], rows), ""]


def concurrency_section(benches: list[Result]) -> list[str]:
    points = [p for _, d in benches for p in d.get("concurrency", [])]
    if not points:
        return []
    rows = [[_name(p["model"]), str(p["batch_size"]), str(p["streams"]),
             f"{p['intra_op_threads'] or 'default'}{' (oversubscribed)' if p['oversubscribed'] else ''}",
             f"{p['images_per_s']:,.0f}", f"{p['p50_ms']:.4g}", f"{p['p90_ms']:.4g}", f"{p['p99_ms']:.4g}", str(p["requests"])]
            for p in points]
    parts = ["## Throughput vs concurrency", "",
             "N requests kept in flight on one ONNX Runtime session (threads; intra-op threads per session so that N x threads "
             "stays within the cores; default: ONNX Runtime's, one per physical core); images/s is images completed "
             "over wall time.", "",
             md_table(["model", "batch", "in flight", "intra-op threads", "images/s", "p50 ms", "p90 ms", "p99 ms", "requests"],
                      rows), ""]
    for (model, b), group in _concurrency_groups(points).items():
        if len(group) < 2:
            continue
        knee = saturation(group)
        what = (f"stops growing after {knee} in flight" if knee is not None
                else f"still grows at {max(p['streams'] for p in group)} in flight (the most measured)")
        parts.append(f"- {_name(model)} batch {b}: throughput {what}")
    return parts + [""]


def _concurrency_groups(points: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["model"], p["batch_size"]), []).append(p)
    return groups


# --- plots ------------------------------------------------------------------------------------------------


def batch_ticks(ax: Any, sizes: list[int]) -> None:
    """Ticks at the measured batch sizes, labelled as plain numbers (not 10^n) on a log axis."""
    from matplotlib.ticker import NullFormatter, NullLocator

    sizes = sorted(set(sizes))
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(b) for b in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def concurrency_plot(benches: list[Result]) -> Any | None:
    points = [p for _, d in benches for p in d.get("concurrency", [])]
    if not points:
        return None

    def draw(ax: Any) -> None:
        for (model, b), group in _concurrency_groups(points).items():
            group = sorted(group, key=lambda p: p["streams"])
            ax.plot([p["streams"] for p in group], [p["images_per_s"] for p in group], marker="o",
                    label=f"{_name(model)} batch {b}")
        levels = sorted({p["streams"] for p in points})
        ax.set_xticks(levels)
        ax.set(xlabel="requests in flight", ylabel="images/s (done / wall time)", title="Throughput vs concurrency")
        ax.legend(fontsize=7)

    return draw


def training_plot(trains: list[Result]) -> Any | None:
    hists = [(t.get("spec", {}).get("name", path.stem), t["history"]) for path, t in trains if t.get("history")]
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
    points = [{"label": f"{_name(m['model'])} ({m['precision']})", "size_kib": m["size_bytes"] / 1024,
               "accuracy": m["accuracy"], "kind": "eval"} for _, d in evals for m in d.get("models", [])]
    for _, q in autos:
        if metric_name(q.get("dataset") or {}) != "accuracy":  # agreement with FP32 on unlabelled images: not accuracy
            continue
        for c in q.get("candidates", []):
            if c.get("accuracy") is None or c.get("size_bytes") is None:
                continue
            chosen = c["name"] == q.get("chosen")
            points.append({"label": f"{c['name']}{' (chosen)' if chosen else ''}", "size_kib": c["size_bytes"] / 1024,
                           "accuracy": c["accuracy"], "kind": "chosen" if chosen else "candidate"})
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
