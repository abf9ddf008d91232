"""The deployment card: what a deploying engineer needs about one model, in Markdown and JSON (``cnnkit.card/1``).

Built from typed results only (:mod:`cnnkit.results.load`) and bundles (:func:`cnnkit.verify.bundle.open_bundle`,
every hash checked): the model's identity, its input contract, the parity verdict and tolerances, accuracy per
precision with a 95 % interval, latency and throughput per runtime × precision × device, memory and cold start,
load (requests in flight), the quantization recipe, where it was verified, and the command that reproduces each
figure. A section with no result behind it is listed under "Missing" with the command that would fill it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.runtimes.registry import runtime_label
from cnnkit.stats import wilson_interval

SCHEMA = "cnnkit.card/1"
CARD_SCHEMAS = ("cnnkit.train/1", "cnnkit.parity/1", "cnnkit.eval/1", "cnnkit.bench/1", "cnnkit.fleet-bench/1",
                "cnnkit.quantize/1", "cnnkit.bundle/1", "cnnkit.verify/1", "cnnkit.fleet-verify/1", "cnnkit.scenario/1")
SECTIONS = ("identity", "input_contract", "parity", "accuracy", "latency", "memory", "cold_start", "load",
            "quantization", "verified")
_FILL = {
    "identity": "cnnkit bundle MODEL.onnx --reference MODEL.keras --data-dir DIR -o model.cnnkit",
    "input_contract": "cnnkit bundle MODEL.onnx ... -o model.cnnkit (or a parity result)",
    "parity": "cnnkit parity MODEL.keras MODEL.onnx --json parity.json",
    "accuracy": "cnnkit eval MODEL.onnx [VARIANT.onnx ...] --data-dir DIR --json eval.json",
    "latency": "cnnkit bench MODEL.onnx [VARIANT.onnx ...] --runtime onnxruntime,openvino,litert --json bench.json",
    "memory": "cnnkit bench MODEL.onnx --memory --json bench.json",
    "cold_start": "cnnkit bench MODEL.onnx --cold-start --json bench.json",
    "load": "cnnkit bench MODEL.onnx --concurrency 1,2,4 --json bench.json, or --scenario server,offline",
    "quantization": "cnnkit quantize MODEL.onnx -o MODEL.int8.onnx --json quantize.json",
    "verified": "cnnkit verify model.cnnkit [--runtime ...] --json verify.json (on each device)",
}


@dataclass(frozen=True)
class Card:
    schema: str
    created: str
    title: str
    sources: tuple[dict[str, str], ...]  # path, schema
    identity: tuple[dict[str, Any], ...]
    input_contract: dict[str, Any] | None
    parity: tuple[dict[str, Any], ...]
    accuracy: tuple[dict[str, Any], ...]
    latency: tuple[dict[str, Any], ...]
    memory: tuple[dict[str, Any], ...]
    cold_start: tuple[dict[str, Any], ...]
    load: tuple[dict[str, Any], ...]
    quantization: tuple[dict[str, Any], ...]
    verified: tuple[dict[str, Any], ...]
    missing: tuple[dict[str, str], ...] = ()  # section, and the command that would fill it
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_card(paths: list[Path], title: str | None = None) -> Card:
    """The card from result files (``*.json``, a run folder) and bundles (``*.cnnkit``)."""
    from cnnkit.report.build import ReportInputs, collect_results

    bundles = [Path(p) for p in paths if Path(p).suffix == ".cnnkit"]
    others = [Path(p) for p in paths if Path(p).suffix != ".cnnkit"]
    inputs = collect_results(others, CARD_SCHEMAS, "a card") if others else ReportInputs()
    sources = [{"path": str(p), "schema": s} for s, items in inputs.by_schema.items() for p, _ in items]
    identity: list[dict[str, Any]] = []
    contract: dict[str, Any] | None = None
    manifests = []
    for b in bundles:
        from cnnkit.verify.bundle import open_bundle

        with open_bundle(b) as opened:
            manifests.append((b, opened.sha256, opened.manifest))
        sources.append({"path": str(b), "schema": "cnnkit.bundle/1"})
    for path, m in inputs.of("cnnkit.bundle/1"):
        manifests.append((path, None, m))
    for path, sha, m in manifests:
        identity.append({"model": m.model["name"], "sha256": m.model["sha256"], "precision": m.model["precision"],
                         "opset": m.model.get("opset"), "tflite_sha256": (m.model.get("tflite") or {}).get("sha256"),
                         "bundle": str(path), "bundle_sha256": sha, "reference": m.reference["name"],
                         "reference_sha256": m.reference["sha256"]})
        if contract is None:
            from cnnkit.data.preprocess import PreprocessRecord

            i = m.input
            contract = {"input": i["name"], "shape": list(i["shape"]), "layout": i["layout"], "dtype": i["dtype"],
                        "height": i["height"], "width": i["width"], "channels": i["channels"],
                        "batch": "dynamic" if i["batch"] is None else i["batch"],
                        "preprocess": PreprocessRecord.from_dict(m.preprocess).describe(),
                        "outputs": list(m.output_names), "source": str(path)}
    for path, ev in inputs.of("cnnkit.eval/1"):
        for me in ev.models:
            if not any(x["sha256"] == me.sha256 for x in identity):
                identity.append({"model": me.model, "sha256": me.sha256, "precision": me.precision,
                                 "size_bytes": me.size_bytes, "source": str(path)})

    parity = []
    for path, p in inputs.of("cnnkit.parity/1"):
        worst = max((d.max_abs for d in p.outputs if d.max_abs is not None), default=None)
        agree = min((d.top1_agreement for d in p.outputs), default=None)
        parity.append({"reference": p.reference, "candidate": p.candidate, "mode": p.mode, "passed": p.passed,
                       "atol": p.tolerance.atol, "rtol": p.tolerance.rtol,
                       "min_top1_agreement": p.tolerance.min_top1_agreement, "max_abs": worst, "top1_agreement": agree,
                       "inputs": p.inputs.get("total"), "runtime": p.provider.get("runtime", "onnxruntime"),
                       "provider": p.provider.get("active"), "reason": p.tolerance.reason,
                       "command": f"cnnkit parity {p.reference} {p.candidate} --runtime "
                                  f"{runtime_label(p.provider.get('runtime', 'onnxruntime'), p.provider.get('precision', 'model'))}"
                                  " --json parity.json",
                       "source": str(path)})
        if contract is None and p.inputs.get("candidate_input"):
            from cnnkit.data.preprocess import PreprocessRecord

            i = p.inputs["candidate_input"]
            contract = {"input": i["name"], "shape": list(i["shape"]), "layout": i["layout"], "dtype": i["dtype"],
                        "height": i["height"], "width": i["width"], "channels": i["channels"],
                        "batch": "dynamic" if i["batch"] is None else i["batch"],
                        "preprocess": PreprocessRecord.from_dict(p.inputs["preprocess"]).describe()
                        if p.inputs.get("preprocess") else None, "outputs": [d.output for d in p.outputs[:1]],
                        "source": str(path)}

    accuracy = []
    for path, ev in inputs.of("cnnkit.eval/1"):
        n = int(ev.dataset.get("evaluated_samples", 0))
        for me in ev.models:
            low, high = wilson_interval(round(me.accuracy * me.samples), me.samples)
            accuracy.append({"model": me.model, "precision": me.precision, "runtime": me.runtime,
                             "provider": me.provider.get("active"), "samples": me.samples, "accuracy": me.accuracy,
                             "ci95": [low, high], "top5_accuracy": me.top5_accuracy, "dataset": ev.dataset.get("name"),
                             "command": f"cnnkit eval {' '.join(m.model for m in ev.models)} --dataset "
                                        f"{ev.dataset.get('name')} --data-dir DIR --json eval.json",
                             "source": str(path), "dataset_samples": n})
    evaluated = {Path(a["model"]).name for a in accuracy}
    for path, q in inputs.of("cnnkit.quantize/1"):
        if q.accuracy is not None and Path(q.output).name not in evaluated:  # eval's figure, where there is one
            n = int(q.dataset.get("evaluated_samples", 0))
            low, high = wilson_interval(round(q.accuracy * n), n) if n else (None, None)
            accuracy.append({"model": q.output, "precision": q.settings.get("mode"), "runtime": "onnxruntime",
                             "provider": (q.parity.get("provider") or {}).get("active") if isinstance(q.parity, dict) else None,
                             "samples": n, "accuracy": q.accuracy, "ci95": [low, high], "top5_accuracy": None,
                             "dataset": q.dataset.get("name"), "command": _quantize_command(q), "source": str(path),
                             "dataset_samples": n})

    latency, memory, cold, load = [], [], [], []
    bench_results = [(path, b, None) for path, b in inputs.of("cnnkit.bench/1")]
    for path, fleet in inputs.of("cnnkit.fleet-bench/1"):
        bench_results += [(path, e.result, e.device) for e in fleet.entries]  # typed BenchResults
    for path, b, node in bench_results:
        device = node or _device(b.environment)
        batches: dict[tuple[str, str], list[int]] = {}  # (model, the --runtime item) -> its batch sizes
        for c in b.cases:
            batches.setdefault((c.model, runtime_label(c.runtime, c.precision)), []).append(c.batch_size)
        for c in b.cases:
            item = runtime_label(c.runtime, c.precision)
            sizes = ",".join(map(str, dict.fromkeys(batches[(c.model, item)])))
            latency.append({"model": c.model, "sha256": c.model_sha256, "runtime": c.runtime, "precision": c.precision,
                            "provider": c.provider.get("active"), "device": device, "batch_size": c.batch_size,
                            "p50_ms": c.stats.p50_ms, "p99_ms": c.stats.p99_ms, "images_per_s": c.stats.images_per_s,
                            "samples": c.stats.count,
                            "command": f"cnnkit bench {c.model} --runtime {item} --batch-sizes {sizes}"
                                       f"{_provider_flag(c.runtime, c.provider)} --json bench.json",
                            "source": str(path)})
        for mem in b.memory:
            memory.append({"model": mem.model, "device": device, "cpu_mem_arena": mem.cpu_mem_arena,
                           "rss_after_session_mb": mem.rss_after_session_mb,
                           "peak_rss_mb": {str(k): v for k, v in mem.peak_rss_mb.items()}, "gpu_mb": mem.gpu_mb,
                           "command": f"cnnkit bench {mem.model} --memory --json bench.json", "source": str(path)})
        for cs in b.cold_start:
            cold.append({"model": cs.model, "device": device, "import_ms": cs.import_ms,
                         "session_create_ms": cs.session_create_ms, "first_inference_ms": cs.first_inference_ms,
                         "processes": cs.processes, "command": f"cnnkit bench {cs.model} --cold-start --json bench.json",
                         "source": str(path)})
        for pt in b.concurrency:
            load.append({"model": pt.model, "device": device, "batch_size": pt.batch_size, "streams": pt.streams,
                         "images_per_s": pt.images_per_s, "p50_ms": pt.p50_ms, "p90_ms": pt.p90_ms,
                         "command": f"cnnkit bench {pt.model} --concurrency {pt.streams} --batch-sizes "
                                    f"{pt.batch_size} --json bench.json", "source": str(path)})

    for path, sc in inputs.of("cnnkit.scenario/1"):
        for run in sc.runs:
            if run.mode != "performance":
                continue
            load.append({"model": sc.model, "device": _device(sc.environment), "scenario": run.scenario,
                         "valid": run.valid, "images_per_s": run.qps, "percentile": run.percentile,
                         "latency_ms": run.latency_ms(), "target_qps": run.target_qps,
                         "runtime": sc.runtime, "command": f"cnnkit bench {sc.model} --scenario {run.scenario} "
                                                           f"--runtime {sc.runtime}", "source": str(path)})

    quantization = []
    for path, q in inputs.of("cnnkit.quantize/1"):
        quantization.append({"source": q.source, "output": q.output, "settings": q.settings, "passed": q.passed,
                             "fp32_accuracy": q.fp32_accuracy, "accuracy": q.accuracy, "drop_pp": q.drop_pp,
                             "top1_agreement": q.top1_agreement, "budget_pp": q.budget_pp,
                             "size_ratio": q.size_bytes / q.fp32_size_bytes if q.fp32_size_bytes else None,
                             "excluded_nodes": list(q.excluded_nodes), "command": _quantize_command(q),
                             "source_file": str(path)})

    verified = []
    rows: list[tuple[Path, Any, str | None]] = [(p, v, None) for p, v in inputs.of("cnnkit.verify/1")]
    for path, fleet in inputs.of("cnnkit.fleet-verify/1"):
        for row in fleet.rows:
            if row.result is None:
                verified.append({"device": row.device, "passed": False, "error": row.error, "source": str(path)})
            else:
                rows.append((path, row.result, row.device))
    for path, v, node in rows:
        worst = max((d.max_abs for d in v.outputs if d.max_abs is not None), default=None)
        agree = min((d.top1_agreement for d in v.outputs), default=None)
        model_arg = "" if v.model["same_as_bundle"] and ":" in v.model["path"] else f" --model {v.model['path']}"
        verified.append({"device": node or _device(v.environment), "runtime": v.runtime["label"],
                         "provider": v.provider.get("active"), "runtime_version": v.provider.get("version"),
                         "model": v.model["path"], "model_sha256": v.model["sha256"], "precision": v.model["precision"],
                         "gate": v.gate_kind, "passed": v.passed, "max_abs": worst, "top1_agreement": agree,
                         "failures": list(v.failures), "bundle_sha256": v.bundle["sha256"],
                         "command": f"cnnkit verify {v.bundle['path']} --runtime {v.runtime['label']}"
                                    f"{_provider_flag(v.runtime['runtime'], v.provider)}{model_arg} --json verify.json",
                         "source": str(path)})

    sections = {"identity": identity, "input_contract": contract, "parity": parity, "accuracy": accuracy,
                "latency": latency, "memory": memory, "cold_start": cold, "load": load, "quantization": quantization,
                "verified": verified}
    if not sources:
        raise CnnkitError("no results to make a card from",
                          hint="pass result files (--json of parity, eval, bench, quantize, verify) and the bundle")
    missing = tuple({"section": s, "fill_with": _FILL[s]} for s in SECTIONS if not sections[s])
    name = identity[0]["model"] if identity else "model"
    return Card(SCHEMA, datetime.now(UTC).isoformat(timespec="seconds"), title or f"Deployment card: {name}",
                tuple(sources), tuple(identity), contract, tuple(parity), tuple(accuracy), tuple(latency),
                tuple(memory), tuple(cold), tuple(load), tuple(quantization), tuple(verified), missing)


def _provider_flag(runtime: str, provider: dict[str, Any]) -> str:
    """`` --provider X`` for ONNX Runtime off the CPU (other runtimes and the CPU need none)."""
    requested = str(provider.get("requested") or "cpu")
    if runtime != "onnxruntime" or requested.lower() in ("cpu", "cpuexecutionprovider"):
        return ""
    return f" --provider {requested}"


def _quantize_command(q: Any) -> str:
    s = q.settings
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s.items()
                     if k in ("mode", "format", "calibration_method", "activation_type") and v is not None)
    return f"cnnkit quantize {q.source} -o {q.output} {flags} --json quantize.json".replace("  ", " ")


def _device(env: dict[str, Any]) -> str:
    cpu = (env.get("cpu") or {}).get("model") or env.get("machine") or "?"
    gpus = env.get("gpus") or []
    return f"{cpu}" + (f" + {gpus[0].get('name')}" if gpus and isinstance(gpus[0], dict) else "")


# --- Markdown ------------------------------------------------------------------------------------


def _n(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, int | float) else str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def card_markdown(card: Card) -> str:
    """The card as Markdown: one section per subject, each with the commands behind its figures."""
    md = [f"# {card.title}", "", f"Made {card.created} from {len(card.sources)} result(s).", ""]
    md += ["## Model identity", ""]
    if card.identity:
        md += _table(["model", "precision", "SHA-256", "bundle", "reference"],
                     [[i["model"], i["precision"], f"`{i['sha256'][:16]}…`",
                       f"`{i['bundle_sha256'][:16]}…`" if i.get("bundle_sha256") else i.get("bundle", "-"),
                       i.get("reference", "-")] for i in card.identity])
    else:
        md += ["Missing.", ""]
    md += ["## Input contract", ""]
    c = card.input_contract
    if c:
        md += [f"- input `{c['input']}`: {c['height']}×{c['width']}×{c['channels']}, {c['layout']}, {c['dtype']}, "
               f"batch {c['batch']}", f"- preprocessing: {c['preprocess']}",
               f"- outputs: {', '.join(f'`{o}`' for o in c['outputs'])}", ""]
    else:
        md += ["Missing.", ""]
    md += ["## Parity", ""]
    if card.parity:
        md += _table(["reference → candidate", "runtime", "verdict", "max \\|diff\\|", "atol / rtol", "top-1 agreement"],
                     [[f"{Path(p['reference']).name} → {Path(p['candidate']).name}", f"{p['runtime']} ({p['provider']})",
                       "pass" if p["passed"] else "**FAIL**", _n(p["max_abs"]), f"{_n(p['atol'], 'g')} / {_n(p['rtol'], 'g')}",
                       _n(p["top1_agreement"], ".4f")] for p in card.parity])
        md += [f"Tolerance: {card.parity[0]['reason']}", ""] + _commands(card.parity)
    else:
        md += ["Missing.", ""]
    md += ["## Accuracy per precision", ""]
    if card.accuracy:
        md += _table(["model", "precision", "runtime", "images", "top-1", "95 % interval", "dataset"],
                     [[Path(a["model"]).name, a["precision"], a["runtime"], a["samples"], _pct(a["accuracy"]),
                       f"{_pct(a['ci95'][0])} – {_pct(a['ci95'][1])}" if a["ci95"][0] is not None else "-", a["dataset"]]
                      for a in card.accuracy])
        md += ["The interval is Wilson's score interval for a proportion (95 %).", ""] + _commands(card.accuracy)
    else:
        md += ["Missing.", ""]
    md += ["## Latency and throughput", ""]
    if card.latency:
        md += _table(["model", "runtime", "precision", "device", "provider", "batch", "p50 ms", "p99 ms", "images/s"],
                     [[Path(r["model"]).name, r["runtime"], r["precision"], r["device"], r["provider"], r["batch_size"],
                       _n(r["p50_ms"]), _n(r["p99_ms"]), _n(r["images_per_s"], ",.0f")] for r in card.latency])
        md += _commands(card.latency)
    else:
        md += ["Missing.", ""]
    md += ["## Memory and cold start", ""]
    if card.memory:
        md += _table(["model", "device", "arena", "RSS after session MB", "peak RSS MB by batch"],
                     [[Path(m["model"]).name, m["device"], "on" if m["cpu_mem_arena"] else "off",
                       _n(m["rss_after_session_mb"], ".1f"), ", ".join(f"{k}: {v:.1f}" for k, v in m["peak_rss_mb"].items())]
                      for m in card.memory]) + _commands(card.memory)
    if card.cold_start:
        md += _table(["model", "device", "import ms", "session ms", "first inference ms"],
                     [[Path(s["model"]).name, s["device"], _n(s["import_ms"]), _n(s["session_create_ms"]),
                       _n(s["first_inference_ms"])] for s in card.cold_start]) + _commands(card.cold_start)
    if not card.memory and not card.cold_start:
        md += ["Missing.", ""]
    streams = [p for p in card.load if "streams" in p]
    scenarios = [p for p in card.load if "scenario" in p]
    if streams:
        md += ["## Load: requests in flight", ""]
        md += _table(["model", "device", "batch", "in flight", "images/s", "p50 ms", "p90 ms"],
                     [[Path(p["model"]).name, p["device"], p["batch_size"], p["streams"], _n(p["images_per_s"], ",.0f"),
                       _n(p["p50_ms"]), _n(p["p90_ms"])] for p in streams]) + _commands(streams)
    if scenarios:
        md += ["## Load: MLPerf LoadGen scenarios", ""]
        md += _table(["model", "device", "runtime", "scenario", "LoadGen", "samples/s", "latency ms (percentile)"],
                     [[Path(p["model"]).name, p["device"], p["runtime"], p["scenario"] + (
                         f" @ {p['target_qps']:g} QPS" if p.get("target_qps") else ""),
                       "VALID" if p["valid"] else "INVALID", _n(p["images_per_s"], ",.1f"),
                       f"{_n(p['latency_ms'])} (p{_n(p['percentile'], 'g')})"] for p in scenarios]) + _commands(scenarios)
    md += ["## Quantization recipe", ""]
    if card.quantization:
        md += _table(["variant", "settings", "verdict", "accuracy (FP32)", "drop pp", "top-1 agreement", "size"],
                     [[Path(q["output"]).name, ", ".join(f"{k}={v}" for k, v in q["settings"].items() if v is not None),
                       "pass" if q["passed"] else "**FAIL**", f"{_pct(q['accuracy'])} ({_pct(q['fp32_accuracy'])})",
                       _n(q["drop_pp"], ".2f"), _n(q["top1_agreement"], ".4f"),
                       f"{q['size_ratio']:.2f}× FP32" if q["size_ratio"] else "-"] for q in card.quantization])
        md += _commands(card.quantization)
    else:
        md += ["Missing.", ""]
    md += ["## Where it was verified", ""]
    if card.verified:
        md += _table(["device", "runtime", "model", "gate", "verdict", "max \\|diff\\|", "top-1 agreement"],
                     [[v["device"], f"{v.get('runtime', '-')} ({v.get('provider', '-')} {v.get('runtime_version') or ''})".replace(" )", ")"),
                       f"{Path(v.get('model', '-')).name} ({v.get('precision', '-')})", v.get("gate", "-"),
                       "pass" if v["passed"] else f"**FAIL** {v.get('error') or '; '.join(v.get('failures', [])[:1])}",
                       _n(v.get("max_abs")), _n(v.get("top1_agreement"), ".4f")] for v in card.verified])
        md += _commands([v for v in card.verified if "command" in v])
    else:
        md += ["Missing.", ""]
    md += ["## Missing", ""]
    if card.missing:
        md += [f"- **{m['section'].replace('_', ' ')}**: no result given; `{m['fill_with']}`" for m in card.missing]
    else:
        md += ["Nothing: every section has a result behind it."]
    md += ["", "## Sources", ""] + [f"- `{s['path']}` ({s['schema']})" for s in card.sources]
    return "\n".join(md) + "\n"


def _commands(rows: list[dict[str, Any]]) -> list[str]:
    cmds = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    return (["Reproduce:", "", "```console"] + [f"$ {c}" for c in cmds] + ["```", ""]) if cmds else []


def write_card(paths: list[Path], out: Path, title: str | None = None, force: bool = False) -> tuple[Card, Path, Path]:
    """Write ``out`` (Markdown) and the JSON beside it (same name, ``.json``), each atomically."""
    from cnnkit.io import check_writable, write_json_atomic, write_text_atomic

    out = Path(out)
    json_path = out.with_suffix(".json")
    if json_path == out:
        raise CnnkitError(f"-o {out}: the card's Markdown file needs a .md name (the JSON goes beside it)")
    for p in (out, json_path):
        check_writable(p, force)
    card = build_card(paths, title)
    write_text_atomic(out, card_markdown(card), force=force)
    write_json_atomic(json_path, card.to_dict(), force=force)
    return card, out, json_path
