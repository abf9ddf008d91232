"""``cnnkit eval --engine ray``: the image folder as a Ray Dataset, decoded and scored on the workers.

The driver lists the folder (paths and labels, as the local eval does), hands Ray Data a table of
``(index, path)`` rows, and ``map_batches`` runs :class:`EvalWorker` on an actor pool: one ONNX Runtime session
per model per worker, Pillow decoding and the preprocessing record applied there (the same code the local eval
uses). Workers send back each image's index, top-1 class and top-5 hit per model; the driver checks that every
index came back exactly once (a retried batch must not count twice, a lost one is an error), then ends in the
same summary as the local eval (:func:`cnnkit.evaluate.accuracy.summarise_predictions`).

Every node must see the folder and the models at the same paths (a shared file system), and have cnnkit.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, DatasetError, shorten

MAX_BLOCKS = 2000  # Ray Data blocks the file list is cut into (at least one batch each)
KILL_ONCE_ENV = "CNNKIT_RAY_KILL_WORKER_ONCE"  # fault injection for tests: a marker file; the worker that claims it dies


class EvalWorker:
    """One Ray actor: a runner per model, built once; ``__call__`` scores one batch of ``(index, path, label)``."""

    def __init__(self, root: str, models: list[str], records: list[dict[str, Any]], session: dict[str, Any],
                 runtime: dict[str, str], tflite: str | None) -> None:
        from cnnkit.data.preprocess import PreprocessRecord
        from cnnkit.runtimes.registry import RuntimeChoice, create_runner
        from cnnkit.runtimes.sessions import SessionConfig

        self.root = Path(root)
        self.records = [PreprocessRecord.from_dict(r) for r in records]
        config = SessionConfig.from_dict(session)
        self.runners = [create_runner(RuntimeChoice(**runtime), m, config, tflite) for m in models]
        self.meta = json.dumps({"node": _node_id(), "pid": os.getpid(), "ran": [r.info.to_dict() for r in self.runners]})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cnnkit.data.folders import BadImageError, ImageFolder
        from cnnkit.topk import top1_and_top5

        _maybe_die()
        n = len(batch["index"])
        files = tuple(str(p) for p in batch["path"])
        folder = ImageFolder(self.root, files, np.asarray(batch["label"], np.int64), (), None)
        bad = np.full(n, "", dtype=object)
        out: dict[str, Any] = {"index": np.asarray(batch["index"], np.int64)}
        n_outputs = []
        groups: dict[tuple[Any, ...], list[int]] = {}
        for k, r in enumerate(self.records):  # one decoding per geometry, as the local eval does
            groups.setdefault((r.size, r.channels, r.crop_fraction), []).append(k)
        for ks in groups.values():
            record = self.records[ks[0]]
            pixels, ok = [], []
            for i in range(n):
                try:
                    pixels.append(folder.read(i, record))
                    ok.append(i)
                except BadImageError as exc:
                    bad[i] = exc.reason
            x = np.stack(pixels) if pixels else None
            for k in ks:
                preds, top5, nonfinite = np.full(n, -1, np.int64), np.zeros(n, bool), np.zeros(n, np.int64)
                if x is not None:
                    runner = self.runners[k]
                    scores = next(iter(runner.infer({runner.input_name: self.records[k].normalize(x)}).values()))
                    scores = scores.reshape(len(x), -1)
                    preds[ok], top5[ok] = top1_and_top5(scores, folder.labels[ok])
                    if scores.dtype.kind in "fc":
                        nonfinite[ok] = (~np.isfinite(scores)).sum(axis=1)
                    n_outputs.append((k, scores.shape[1]))
                out[f"pred_{k}"], out[f"top5_{k}"], out[f"nonfinite_{k}"] = preds, top5, nonfinite
        out["bad"] = bad
        meta = np.full(n, "", dtype=object)
        meta[0] = json.dumps(json.loads(self.meta) | {"n_outputs": dict(n_outputs)})
        out["meta"] = meta
        return out


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _maybe_die() -> None:
    """Fault injection (tests): the first worker to claim the marker file named by the variable exits hard."""
    marker = os.environ.get(KILL_ONCE_ENV)
    if not marker:
        return
    try:
        os.rename(marker, f"{marker}.claimed-by-{os.getpid()}")
    except OSError:
        return  # absent, or another worker claimed it
    os._exit(1)


def evaluate_on_ray(config: Any, address: str | None = None, workers: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    notify: Callable[[str], None] | None = None) -> Any:
    """:func:`cnnkit.evaluate.accuracy.evaluate_models` on a Ray cluster: the same :class:`EvalResult`, plus ``engine``.

    ``config``: an :class:`EvalConfig` whose ``data_dir`` is an image folder. ``workers``: actors in the pool,
    one CPU each (default: the cluster's CPUs). Each worker's ONNX Runtime uses one thread unless the session
    config says otherwise.
    """
    from dataclasses import replace

    from cnnkit._deps import require_ray
    from cnnkit.data.folders import BadImageError, SkippedImages
    from cnnkit.distributed.cluster import ray_cluster
    from cnnkit.envinfo import environment
    from cnnkit.evaluate.accuracy import (SCHEMA, EvalResult, ModelPredictions, label_mismatch_warnings, model_records,
                                          open_eval_source, summarise_predictions)
    from cnnkit.graph.info import describe_onnx

    if workers is not None and workers <= 0:
        raise CnnkitError(f"--workers must be positive, got {workers}", hint="leave it out to use every CPU of the cluster")
    require_ray()  # before any other output
    say = notify or (lambda _m: None)
    infos = [describe_onnx(m) for m in config.models]
    records = model_records(config, infos, say)
    source = open_eval_source(config, infos, None, say)
    if source.folder is None:
        raise DatasetError(f"--engine ray evaluates image folders; {source.name} is a dataset held in memory",
                           hint="pass --data-dir with a folder of class subfolders of images, or drop --engine")
    folder = source.folder
    session = config.session if config.session.intra_op_threads else replace(config.session, intra_op_threads=1)
    tflite = str(Path(config.tflite).resolve()) if config.tflite else None
    if session.provider == "cpu":  # what the workers will build, built once here: a bad model or runtime is one line
        from cnnkit.runtimes.registry import create_runner  # now, not a Ray traceback per worker retry

        for m in config.models:
            create_runner(config.runtime, m, session, config.tflite)
    with ray_cluster(address) as ray:
        scored = score_on_ray(ray, folder, list(config.models), records, session, config.runtime.to_dict(), tflite,
                              config.batch_size, workers, config.skip_bad_images, progress)
    total, metas, pool, seconds, first = len(folder), scored.metas, scored.pool, scored.seconds, scored.first
    bad = scored.columns["bad"]
    skipped = SkippedImages()
    for i in np.flatnonzero(bad != ""):
        skipped.add(BadImageError(folder.root / folder.files[int(i)], str(bad[i])))
    keep = bad == ""
    if not keep.any():
        raise DatasetError(f"{source.provenance.get('source')}: every image was skipped as unreadable")
    y = folder.labels[keep]
    broken = [f"{Path(m).name}: {bad_scores.describe('output value', 'image')}" for k, m in enumerate(config.models)
              if (bad_scores := _nonfinite(scored.columns[f"nonfinite_{k}"][keep])) is not None]
    if broken:  # as the local eval: every model checked, one error lists all
        from cnnkit.finite import NonFiniteError

        raise NonFiniteError("; ".join(broken), hint="the model is broken for these inputs; no accuracy is reported")
    from cnnkit.runtimes.base import RunnerInfo

    n_outputs: dict[int, int] = {}
    providers: list[list[dict[str, Any]]] = []  # each distinct set the workers report
    for m in metas:
        n_outputs |= {int(k): int(v) for k, v in m["n_outputs"].items()}
        ran = [RunnerInfo.from_dict(r).provider_record() for r in m["ran"]]
        if ran not in providers:
            providers.append(ran)
    first_ran = [RunnerInfo.from_dict(r) for r in metas[0]["ran"]]
    predictions = []
    for k, (model, info, record) in enumerate(zip(config.models, infos, records, strict=True)):
        preds = scored.columns[f"pred_{k}"][keep]
        hits = int(scored.columns[f"top5_{k}"][keep].sum())
        provider = providers[0][k] if len(providers) == 1 else {"workers": [p[k] for p in providers]}
        predictions.append(ModelPredictions.ran_by(first_ran[k], Path(model), info, record, preds, hits, n_outputs[k],
                                                   provider))
    results, class_names = summarise_predictions(predictions, y, source)
    n = int(keep.sum())
    engine = {
        "engine": "ray", "ray_version": ray.__version__, "address": address or os.environ.get("RAY_ADDRESS") or "local",
        "nodes": scored.nodes, "nodes_used": len({m["node"] for m in metas}), "cluster_cpus": scored.cpus,
        "workers": pool, "worker_processes_seen": len({(m["node"], m["pid"]) for m in metas}),
        "batch_size": config.batch_size, "images_expected": total, "images_returned": scored.returned,
        "images_per_s": n / seconds if seconds > 0 else None, "wall_s": seconds,
        # Start-up (actors importing ONNX Runtime, building sessions) is paid once; the rate after it is what
        # more images would run at.
        "first_batch_s": first[0] if first else None,
        "steady_images_per_s": ((scored.returned - first[1]) / (seconds - first[0])
                                if first and seconds > first[0] and scored.returned > first[1] else None),
    }
    for line in label_mismatch_warnings(results, source):
        say(line)
    described = source.describe() | {"evaluated_samples": n, "split": "test"}
    return EvalResult(SCHEMA, described, class_names, tuple(results), environment(),
                      skipped.to_dict() if config.skip_bad_images else {"count": 0, "examples": []},
                      n / seconds if seconds > 0 else None, engine)


@dataclass
class RayScores:
    """What the workers sent back, in the folder's order (``columns``: ``bad``, ``pred_k``, ``top5_k``)."""

    columns: dict[str, np.ndarray]
    metas: list[dict[str, Any]]  # one per batch: node, pid, ran (each model's RunnerInfo.to_dict()), n_outputs
    pool: int
    nodes: int
    cpus: int
    seconds: float
    first: tuple[float, int] | None  # (seconds, images) when the first batch came back
    returned: int


def score_on_ray(ray: Any, folder: Any, models: list[Any], records: list[Any], session: Any, runtime: dict[str, str],
                 tflite: str | None, batch_size: int, workers: int | None, skip_bad_images: bool,
                 progress: Callable[[str, int, int], None] | None = None) -> RayScores:
    """Every image of ``folder`` through every model on an actor pool of the connected cluster; each index must
    come back exactly once. A bad image raises unless ``skip_bad_images`` (then it is marked in ``bad``)."""
    import pyarrow as pa

    from cnnkit.data.folders import BadImageError
    from cnnkit.distributed.cluster import alive_nodes, worker_env

    total = len(folder)
    nodes = alive_nodes(ray)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = workers or max(1, cpus)
    rows = max(batch_size, math.ceil(total / MAX_BLOCKS))
    table = pa.table({"index": np.arange(total, dtype=np.int64), "path": list(folder.files), "label": folder.labels})
    ds = ray.data.from_arrow([table.slice(s, rows) for s in range(0, total, rows)])
    scored = ds.map_batches(
        EvalWorker, batch_size=batch_size, batch_format="numpy", num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=pool),
        fn_constructor_kwargs={"root": str(folder.root.resolve()), "models": [str(Path(m).resolve()) for m in models],
                               "records": [r.to_dict() for r in records], "session": session.to_dict(),
                               "runtime": runtime, "tflite": tflite},
        runtime_env={"env_vars": worker_env()} if worker_env() else None,
    )
    parts: dict[str, list[np.ndarray]] = {}
    metas: list[dict[str, Any]] = []
    done = 0
    first: tuple[float, int] | None = None
    started = time.perf_counter()
    try:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            if not skip_bad_images:
                for i, reason in zip(batch["index"], batch["bad"], strict=True):
                    if reason:
                        raise BadImageError(folder.root / folder.files[int(i)], str(reason))
            for key, value in batch.items():
                if key != "meta":
                    parts.setdefault(key, []).append(value)
            metas += [json.loads(m) for m in batch["meta"] if m]
            done += len(batch["index"])
            if first is None:
                first = (time.perf_counter() - started, done)
            if progress:
                progress(f"eval on Ray ({pool} workers)", done, total)
    except ray.exceptions.RayError as exc:
        raise CnnkitError(f"distributed eval failed: {_one_line(exc)}",
                          hint="rerun with --debug for the workers' traceback") from exc
    seconds = time.perf_counter() - started
    index = np.concatenate(parts["index"]) if parts else np.empty(0, np.int64)
    _check_every_image_once(index, total, folder)
    order = np.argsort(index, kind="stable")
    columns = {k: np.concatenate(v)[order] for k, v in parts.items() if k not in ("index", "label")}
    return RayScores(columns, metas, pool, len(nodes), cpus, seconds, first, int(len(index)))


def predictions_on_ray(model: Path, source: Any, record: Any, session: Any, address: str | None,
                       skipped: Any = None, batch_size: int = 256, label: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 predictions of ``model`` over an image folder source, and its labels, scored on Ray (for the
    accuracy checks of quantize --engine ray). The connection stays open until the process ends, so that the
    accuracy-aware loop's rebuilds do not each start a cluster."""
    from dataclasses import replace

    from cnnkit.data.folders import BadImageError
    from cnnkit.distributed.cluster import connect_for_process
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME

    if source.folder is None:
        raise DatasetError(f"--engine ray reads image folders; {source.name} is a dataset held in memory",
                           hint="pass --data-dir with a folder of images, or drop --engine")
    session = session if session.intra_op_threads else replace(session, intra_op_threads=1)
    ray = connect_for_process(address)
    scored = score_on_ray(ray, source.folder, [model], [record], session, DEFAULT_RUNTIME.to_dict(), None,
                          batch_size, None, skipped is not None)
    bad = scored.columns["bad"]
    keep = bad == ""
    if skipped is not None:  # as the local pass does (each pass adds what it skipped)
        for i in np.flatnonzero(~keep):
            skipped.add(BadImageError(source.folder.root / source.folder.files[int(i)], str(bad[i])))
    bad_scores = _nonfinite(scored.columns["nonfinite_0"][keep])
    if bad_scores is not None:
        from cnnkit.finite import NonFiniteError

        raise NonFiniteError(f"{label or Path(model).name}: {bad_scores.describe('output value', 'image')}",
                             hint="the model is broken for these inputs; it is not written")
    return scored.columns["pred_0"][keep], source.folder.labels[keep]


def _nonfinite(counts: np.ndarray) -> Any:
    """Per-image counts of NaN/Inf scores (the kept images, in order) as a :class:`cnnkit.finite.NonFinite`."""
    from cnnkit.finite import NonFinite

    rows = np.flatnonzero(counts)
    return NonFinite(int(counts.sum()), int(len(rows)), int(rows[0])) if len(rows) else None


def _check_every_image_once(index: np.ndarray, total: int, folder: Any) -> None:
    """Every listed image came back exactly once; anything else is an error, never a silent figure."""
    counts = np.bincount(index, minlength=total) if len(index) else np.zeros(total, np.int64)
    missing, twice = np.flatnonzero(counts[:total] == 0), np.flatnonzero(counts[:total] > 1)
    if len(counts) > total or len(missing) or len(twice):
        example = folder.files[int(missing[0])] if len(missing) else (folder.files[int(twice[0])] if len(twice) else "")
        raise CnnkitError(
            f"distributed eval of {folder.root} returned {len(index)} results for {total} images: "
            f"{len(missing)} missing, {len(twice)} counted more than once" + (f" (e.g. {example})" if example else ""),
            hint="no figure is reported from an incomplete run; rerun it (a worker may have died past its retries)")


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return shorten(cause) or type(cause).__name__
