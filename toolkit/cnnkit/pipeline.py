"""The one-command pipeline: train -> export -> parity -> quantize (auto) -> eval -> bench -> report.

Every stage writes its outputs into the run folder through the same library calls the commands use. The run's
state (``pipeline.json``, replaced atomically before and after every stage) records, per stage, a content hash
of its inputs (files by SHA-256, settings, data, and the versions of the libraries that shape the outputs); a
re-run reuses a finished stage whose inputs hash the same and whose outputs are intact, and redoes the rest.
A failing stage stops the run with its reason and keeps what the finished stages made. A run killed by SIGKILL,
SIGTERM, Ctrl-C or a closed stdout is resumed by the next run, which first removes the temporary files and
staging folders it left. One run at a time per run folder (a lock file says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.io import check_output_dir, is_leftover, remove_leftovers, sha256_file, write_json_atomic
from cnnkit.runtimes.sessions import SessionConfig

SCHEMA = "cnnkit.pipeline/1"
STAGES = ("train", "export", "parity", "quantize", "eval", "bench", "report")
STATE_FILE, LOCK_FILE = "pipeline.json", ".pipeline.lock"


class PipelineStageError(CnnkitError):
    """A stage that failed; the stages before it are kept."""


@dataclass(frozen=True)
class PipelineConfig:
    """Defaults: the seed spec and training setup on the default dataset, CPU, batch sizes 1..256."""

    spec: str = "mnist-cnn"
    dataset: str | None = None
    data_dir: Path | None = None
    provider: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
    out_dir: Path | None = None  # None: runs/<spec name>/
    report_dir: Path | None = None  # None: reports/<run folder name>/
    epochs: int = 5
    seed: int = 0
    max_accuracy_drop: float = 0.1
    bench_min_time_s: float = 1.0
    allow_fallback: bool = False
    force: bool = False  # use folders that hold files but no cnnkit run (their files may be replaced)


@dataclass
class StageRecord:
    status: str = "pending"  # pending | running | done | reused | failed | interrupted
    input_hash: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # file -> sha256
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None


@dataclass
class PipelineResult:
    out_dir: Path
    report_dir: Path
    stages: dict[str, StageRecord]

    versions: dict[str, str | None] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "out_dir": str(self.out_dir), "report_dir": str(self.report_dir),
                "dataset": self.dataset, "versions": self.versions,
                "stages": {k: asdict(v) for k, v in self.stages.items()}}


StageCallback = Callable[[str, str, str], None]  # (stage, event: start|progress|done|reused|failed, detail)


def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(sha256_file(part).encode() if part.is_file() else f"missing:{part}".encode())
        elif isinstance(part, np.ndarray):
            h.update(part.tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


def _load_state(path: Path) -> dict[str, StageRecord]:
    try:
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            return {k: StageRecord(**v) for k, v in data["stages"].items() if k in STAGES}
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable or foreign state: every stage is redone
        pass
    return {}


def _ours(name: str) -> bool:
    """Files a pipeline run itself leaves in its folders besides its outputs."""
    return name in (STATE_FILE, LOCK_FILE) or is_leftover(Path(name))


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.pipeline.lock`` for the run; the kernel releases it when the process dies, SIGKILL included."""
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CnnkitError(f"another cnnkit pipeline is running in {out}",
                              hint="wait for it to finish, or choose another --out") from None
        # A run that just finished removed the file we opened: lock the new one, or two runs would hold two files.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        # Removed while still held, so no other run can lock this file after we are gone; SIGKILL leaves it (harmless).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def run_pipeline(config: PipelineConfig, on_stage: StageCallback | None = None) -> PipelineResult:
    from cnnkit.keras.spec import load_spec

    spec = load_spec(config.spec)
    out = Path(config.out_dir) if config.out_dir is not None else Path("runs") / spec.name
    report_dir = Path(config.report_dir) if config.report_dir is not None else Path("reports") / out.name
    # The default folders' parents (runs/, reports/) are cnnkit's to make; a folder the user names must be in one that exists.
    for default, folder in ((config.out_dir, out), (config.report_dir, report_dir)):
        if default is None:
            folder.parent.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    for folder in (out, report_dir):
        check_output_dir(folder, force=True)  # not a file; non-empty is judged below
    if not state_path.exists() and not config.force:
        for folder in (out, report_dir):
            if folder.is_dir() and any(not _ours(p.name) for p in folder.iterdir()):
                raise CnnkitError(f"{folder} holds files but no cnnkit run (no {state_path.name} in {out})",
                                  hint="choose an empty or new folder, or pass --force to let the pipeline replace its files")
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):
        return _run_locked(config, spec, out, report_dir, state_path, on_stage)


def _run_locked(config: PipelineConfig, spec: Any, out: Path, report_dir: Path, state_path: Path,
                on_stage: StageCallback | None) -> PipelineResult:
    from cnnkit.data.datasets import load_dataset
    from cnnkit.envinfo import package_versions
    from cnnkit.keras.spec import resolve_spec_path

    # What a killed run left: its temporary files and staging folders (the lock says no run is using them).
    remove_leftovers(out)
    remove_leftovers(report_dir)
    remove_leftovers(report_dir.parent, prefix=report_dir.name)
    previous = _load_state(state_path)
    # Until a stage runs again, its record from the last run stays: pipeline.json always describes the folder.
    stages: dict[str, StageRecord] = {name: previous.get(name, StageRecord()) for name in STAGES}
    versions = package_versions()
    result = PipelineResult(out, report_dir, stages, versions)
    _save(state_path, result)
    user_notify = on_stage or (lambda _s, _e, _d: None)

    def notify(stage: str, event: str, detail: str) -> None:
        # Reporting progress never stops the run: a closed stdout must not cost finished work.
        with contextlib.suppress(OSError, ValueError):
            user_notify(stage, event, detail)

    dataset = load_dataset(config.dataset, config.data_dir)
    if dataset.notice:
        notify("data", "note", dataset.notice)
    result.dataset = dataset.describe()
    data_hash = _hash(dataset.name.value, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    session = SessionConfig(provider=config.provider, allow_fallback=config.allow_fallback)
    from cnnkit.keras.train import CURVES_FILE, HISTORY_FILE, MODEL_FILE
    from cnnkit.results.load import TRAIN_RECORD_FILE

    keras_path, onnx_path, best_path = out / MODEL_FILE, out / "model.onnx", out / "model.best.onnx"
    # The results the report is made of, each written by its stage.
    report_inputs = [out / n for n in (TRAIN_RECORD_FILE, "parity.json", "quantize.json", "eval.json", "bench.json")]

    def run(name: str, input_hash: str, outputs: list[Path], work: Callable[[], str]) -> None:
        input_hash = _hash(input_hash, versions)  # an upgraded stack redoes every stage
        before = previous.get(name)
        intact = before is not None and before.status in ("done", "reused") and before.input_hash == input_hash and all(
            p.is_file() and before.outputs.get(p.name) == sha256_file(p) for p in outputs)
        if intact:
            assert before is not None
            stages[name] = StageRecord("reused", input_hash, before.outputs, 0.0, before.summary)
            _save(state_path, result)
            notify(name, "reused", before.summary)
            return
        stages[name] = StageRecord("running", input_hash)
        _save(state_path, result)
        notify(name, "start", "")
        started = time.perf_counter()
        try:
            summary = work()
        except CnnkitError as exc:
            stages[name] = StageRecord("failed", input_hash, {}, time.perf_counter() - started, "", exc.one_line())
            _save(state_path, result)
            notify(name, "failed", exc.one_line())
            kept = [s for s in STAGES[: STAGES.index(name)] if stages[s].status in ("done", "reused")]
            raise PipelineStageError(
                f"stage {name} failed: {exc.message}",
                hint=f"finished stages ({', '.join(kept) or 'none'}) are kept in {out}; fix the cause and re-run to continue",
            ) from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say so in the state, then stop
            stages[name] = StageRecord("interrupted", input_hash, {}, time.perf_counter() - started, "", "interrupted")
            with contextlib.suppress(Exception):
                _save(state_path, result)
            raise
        stages[name] = StageRecord("done", input_hash, {p.name: sha256_file(p) for p in outputs if p.is_file()},
                                   time.perf_counter() - started, summary)
        _save(state_path, result)
        notify(name, "done", summary)

    def progress(stage: str) -> Callable[[str], None]:
        """What a stage is doing now, for a stage that takes more than a few seconds."""
        return lambda message: notify(stage, "progress", message)

    def train() -> str:
        from cnnkit.keras.train import TrainConfig, train_model

        r = train_model(TrainConfig(spec=config.spec, out_dir=out, epochs=config.epochs, seed=config.seed, force=True),
                        dataset=dataset)
        return f"test accuracy {100 * r.metrics['test_accuracy']:.2f} % on {r.dataset['test_samples']:,} {r.dataset['name']} images"

    run("train", _hash("train", resolve_spec_path(config.spec), data_hash, config.epochs, config.seed),
        [keras_path, out / TRAIN_RECORD_FILE, out / HISTORY_FILE, out / CURVES_FILE], train)

    def export() -> str:
        from cnnkit.export.onnx import ExportConfig, export_onnx

        r = export_onnx(ExportConfig(keras_path, onnx_path, force=True), progress=progress("export"))
        return f"{r.onnx_params:,} parameters ({r.params_note}); {r.simplification}"

    run("export", _hash("export", keras_path), [onnx_path], export)

    def parity() -> str:
        from cnnkit.parity.check import ParityConfig, check_parity

        r = check_parity(ParityConfig(keras_path, onnx_path, session=session), dataset=dataset,
                         progress=progress("parity"))
        write_json_atomic(out / "parity.json", r.to_dict())
        if not r.passed:
            raise CnnkitError(f"Keras and ONNX disagree: {r.failures[0]}" + (f"; {r.divergence}" if r.divergence else ""))
        worst = max(o.max_abs or 0.0 for o in r.outputs)
        return f"pass: max |diff| {worst:.2g} at batch sizes {list(r.batch_sizes)}"

    run("parity", _hash("parity", keras_path, onnx_path, data_hash, session.to_dict()), [out / "parity.json"], parity)

    def quantize() -> str:
        from cnnkit.quantize.auto import auto_quantize
        from cnnkit.quantize.config import QuantizeConfig

        large = max(config.batch_sizes)
        r = auto_quantize(QuantizeConfig(onnx_path, best_path, dataset=config.dataset, data_dir=config.data_dir,
                                         max_accuracy_drop=config.max_accuracy_drop, session=session, force=True),
                          batch_sizes=(1, large), dataset=dataset, progress=progress("quantize"))
        write_json_atomic(out / "quantize.json", r.to_dict())
        return r.summary

    run("quantize", _hash("quantize", onnx_path, data_hash, config.max_accuracy_drop, max(config.batch_sizes),
                          session.to_dict()), [best_path, out / "quantize.json"], quantize)

    def models() -> tuple[Path, ...]:
        same = best_path.is_file() and sha256_file(best_path) == sha256_file(onnx_path)
        return (onnx_path,) if same or not best_path.is_file() else (onnx_path, best_path)

    def evaluate() -> str:
        from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models

        r = evaluate_models(EvalConfig(models(), session=session), dataset=dataset)
        write_json_atomic(out / "eval.json", r.to_dict())
        return "; ".join(f"{Path(m.model).name} {100 * m.accuracy:.2f} %" for m in r.models)

    run("eval", _hash("eval", *models(), data_hash, session.to_dict()), [out / "eval.json"], evaluate)

    def bench() -> str:
        from cnnkit.bench.benchmark import run_benchmark
        from cnnkit.bench.config import BenchConfig

        r = run_benchmark(BenchConfig(models=models(), batch_sizes=config.batch_sizes, session=session,
                                      min_time_s=config.bench_min_time_s))
        write_json_atomic(out / "bench.json", r.to_dict())
        c1 = next(c for c in r.cases if c.batch_size == min(config.batch_sizes))
        return f"{len(r.cases)} cases; {Path(c1.model).name} p50 {c1.stats.p50_ms:.3g} ms at batch {c1.batch_size}"

    run("bench", _hash("bench", *models(), list(config.batch_sizes), session.to_dict(), config.bench_min_time_s),
        [out / "bench.json"], bench)

    def report() -> str:
        from cnnkit.report.build import write_report

        r = write_report(report_inputs, report_dir, title=f"cnnkit pipeline: {spec.name}", force=True)
        return f"{report_dir}/: {', '.join(r['files'])}"

    run("report", _hash("report", *report_inputs, str(report_dir)), [report_dir / "report.html", report_dir / "report.md"], report)
    return result


def _save(path: Path, result: PipelineResult) -> None:
    write_json_atomic(path, result.to_dict())
