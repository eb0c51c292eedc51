""""Update model": train.py --update on the new images marked good, export, guard, swap in; and rollback.

The new images are those marked good that the serving version does not hold yet (deploy.service.feedback:
an update consumes what it used); the guard (deploy.service.guard) checks them before anything runs
and checks the new version on the images marked defect before it is swapped in. The deploy layer
never imports the trainer: the job copies the new images to <staging>/good and runs the very
commands a user would,
    python train.py --update <training file> --data_path <staging>/good --save_path <staging>/train
    python export_model.py --model_path <staging>/train/<category>.pdparams --save_dir <staging>/export
in a hidden staging folder beside the export (.update-<model>.pid<N>.*.tmp), reading their progress
bars for the page. Only when both succeeded, the new export loads and the guard passes it:
  1. the current export and training file are copied to <parent>/.versions/<model>/previous/,
  2. the staging export and the export folder are exchanged in one step (deploy.service.swap), then
     the training files,
  3. the model is reloaded (hot swap), and the images used are recorded in the feedback's ledger.
A server killed before step 2 leaves the old export untouched and only a staging folder of a dead
process, which the next start removes; the update subprocesses die with the server (PR_SET_PDEATHSIG).
Rollback exchanges the export and training file with .versions/<model>/previous (so a second
rollback restores the update again).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.inferencer import Prediction
from deploy.service.batching import QueueFull
from deploy.service.errors import ServiceError
from deploy.service.feedback import FeedbackStore
from deploy.service.guard import Scorer, check_defect_images, check_good_images, refusal_line
from deploy.service.security import without_paths
from deploy.service.served_models import LoadedVersion, ModelEntry, load_version
from deploy.service.swap import exchange
from models.runtimes import STATS_FILE
from utils.errors import UserError
from utils.io import remove_stale_temporaries, temp_prefix

ROOT = Path(__file__).resolve().parents[2]
_PERCENT = re.compile(r"(\d{1,3})%\|")
# (first command's share of the progress bar, second command's share); the swap is the rest.
STEP_SHARES = (0.75, 0.2)


@dataclass
class UpdateJob:
    model: str
    state: str = "running"            # running | done | failed | refused (by the guard)
    stage: str = "starting"
    progress: float = 0.0
    message: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)          # the SHA-256 of the new good images it adds
    forced: bool = False
    refused: list[dict[str, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        # Unauthenticated readers see this: messages of failed commands lose their server paths.
        return {"model": self.model, "state": self.state, "stage": self.stage, "progress": round(self.progress, 3),
                "message": without_paths(self.message), "before": self.before, "after": self.after,
                "added": len(self.images), "forced": self.forced, "refused": self.refused}


def _die_with_parent() -> None:
    # The update's commands must not outlive a killed server (they would write into a folder the
    # next start removes): the kernel sends them SIGKILL when the server dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _summary(entry: ModelEntry) -> dict[str, Any]:
    info = entry.current.describe()
    return {"version": info["version"], "thresholds": info["thresholds"]}


def serving_scorer(entry: ModelEntry) -> Scorer:
    """Score through the model's batcher with the version serving now (the predictor is not shared)."""
    version = entry.current

    def score(data: bytes) -> Prediction:
        try:
            image = version.inferencer.preprocess(data, "feedback image")
            return entry.batcher.submit(version.inferencer, image).result(timeout=600)
        except QueueFull:
            raise ServiceError(503, f"model '{entry.name}' is busy: retry the update shortly") from None
        except UserError as err:
            raise ServiceError(400, str(err)) from None

    return score


def staged_scorer(staged: LoadedVersion) -> Scorer:
    return lambda data: staged.inferencer.predict(data)


class Updater:
    """At most one update job per model; the last job of each model stays readable."""

    def __init__(self, feedback_dir: str | None):
        self.feedback_dir = feedback_dir
        self.jobs: dict[str, UpdateJob] = {}
        self.lock = threading.Lock()

    def running(self, name: str) -> bool:
        job = self.jobs.get(name)
        return job is not None and job.state == "running"

    def _refuse_if_running(self, entry: ModelEntry) -> None:
        if self.running(entry.name):
            raise ServiceError(409, f"an update of model '{entry.name}' is already running: wait for it to finish")

    def store(self, entry: ModelEntry) -> FeedbackStore:
        return FeedbackStore(self.feedback_dir, entry.name)

    def new_good_images(self, entry: ModelEntry) -> dict[str, str]:
        """{sha256: path} of the images marked good that the serving version does not hold yet."""
        store = self.store(entry)
        used = store.used_by(entry.current.version)
        good = store.paths("good")
        if not good:
            raise ServiceError(400, f"no images marked good for model '{entry.name}' yet")
        new = {sha: path for sha, path in good.items() if sha not in used}
        if not new:
            raise ServiceError(400, f"nothing to update: the {len(good)} image(s) marked good for model "
                                    f"'{entry.name}' are already in its version {entry.current.version}")
        return new

    def start(self, entry: ModelEntry, force: bool = False) -> UpdateJob:
        """Check and start an update (blocking: the guard scores the new good images first)."""
        if not self.feedback_dir:
            raise ServiceError(400, "updates need feedback: start serve.py with --feedback_dir")
        if not os.path.isfile(entry.training_file):
            raise ServiceError(400, f"model '{entry.name}' cannot be updated: its training file "
                                    f"{os.path.basename(entry.training_file)} is not beside the export folder")
        self._refuse_if_running(entry)
        new = self.new_good_images(entry)
        refused = check_good_images(new, serving_scorer(entry), entry.current.inferencer.thresholds.image)
        if refused and not force:
            raise ServiceError(409, refusal_line(entry.name, refused), refused=[r.as_dict() for r in refused])
        with self.lock:
            self._refuse_if_running(entry)   # again: another request may have started one while this one checked
            job = self.jobs[entry.name] = UpdateJob(entry.name, before=_summary(entry), images=sorted(new),
                                                    forced=force, refused=[r.as_dict() for r in refused])
        threading.Thread(target=self._run, args=(entry, job, new), name=f"update-{entry.name}", daemon=True).start()
        return job

    def _run(self, entry: ModelEntry, job: UpdateJob, new: dict[str, str]) -> None:
        staging = tempfile.mkdtemp(dir=entry.parent, prefix=temp_prefix(f"update-{entry.name}"), suffix=".tmp")
        try:
            category = entry.current.inferencer.model.category
            trained = os.path.join(staging, "train", f"{category}.pdparams")
            images = os.path.join(staging, "good")
            os.makedirs(images)
            for sha, path in new.items():   # exactly the images checked above, even if feedback changes meanwhile
                shutil.copy(path, os.path.join(images, sha + os.path.splitext(path)[1]))
            self._step(job, "updating the memory bank", 0.0, STEP_SHARES[0],
                       ["train.py", "--update", entry.training_file, "--data_path", images,
                        "--save_path", os.path.join(staging, "train")])
            self._step(job, "exporting", STEP_SHARES[0], STEP_SHARES[1],
                       ["export_model.py", "--model_path", trained, "--save_dir", os.path.join(staging, "export")])
            job.stage = "checking the images marked defect"
            staged = load_version(os.path.join(staging, "export"), entry.settings)   # refuse an export that does not load
            refused, known_misses = check_defect_images(self.store(entry).paths("defect"), staged_scorer(staged),
                                                        serving_scorer(entry))
            job.refused += [r.as_dict() for r in refused]
            if refused and not job.forced:
                job.state, job.stage = "refused", "refused"
                job.message = refusal_line(entry.name, refused)
                return
            job.stage = "swapping in"
            with entry.lock:
                keep_previous(entry)
                exchange(os.path.join(staging, "export"), entry.export_dir)
                exchange(trained, entry.training_file)
            entry.reload_if_changed(force=True)
            job.after, job.progress, job.stage, job.state = _summary(entry), 1.0, "done", "done"
            self.store(entry).record_update(job.before["version"], job.after["version"], job.images)
            job.message = f"now serving version {job.after['version']} ({len(job.images)} image(s) added)"
            if job.forced and job.refused:
                job.message += f"; forced past the guard, which refused {len(job.refused)} image(s)"
            if known_misses:
                job.message += (f"; known misses (passed before and after): "
                                f"{', '.join(sha[:12] for sha in known_misses)}")
        except ServiceError as err:
            job.state, job.message = "failed", err.message
        except (UserError, OSError) as err:
            job.state, job.message = "failed", str(err)
        except Exception as err:   # keep the server up and say what happened
            job.state, job.message = "failed", f"{type(err).__name__}: {err}"
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _step(job: UpdateJob, stage: str, start: float, share: float, args: list[str]) -> None:
        job.stage, job.progress = stage, start
        env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent)
        last_error, pending = "", b""
        while chunk := process.stderr.read1(4096):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in (raw.decode("utf-8", "replace") for raw in lines):
                percents = _PERCENT.findall(line)
                if percents:
                    job.progress = start + share * min(int(percents[-1]), 100) / 100.0
                elif line.startswith("error:"):
                    last_error = line[len("error:"):].strip()
        if process.wait() != 0:
            raise UserError(f"{stage} failed: {last_error or f'exit code {process.returncode}'}")


def keep_previous(entry: ModelEntry) -> None:
    """Copy the current export and training file to .versions/<model>/previous (replacing the older one)."""
    os.makedirs(entry.versions_dir, exist_ok=True)
    remove_stale_temporaries(entry.versions_dir)
    copy = tempfile.mkdtemp(dir=entry.versions_dir, prefix=temp_prefix("previous"), suffix=".tmp")
    os.chmod(copy, 0o755)   # mkdtemp's 0700 would hide the kept version from the other users of the line PC
    shutil.copytree(entry.export_dir, os.path.join(copy, "export"))
    shutil.copy2(entry.training_file, os.path.join(copy, "model.pdparams"))
    if os.path.isdir(entry.previous_dir):
        exchange(copy, entry.previous_dir)
        shutil.rmtree(copy)
    else:
        os.rename(copy, entry.previous_dir)


def rollback(entry: ModelEntry, updater: Updater) -> dict[str, Any]:
    """Serve the previous version again (and keep the current one as the new previous)."""
    previous_export = os.path.join(entry.previous_dir, "export")
    if not os.path.isfile(os.path.join(previous_export, STATS_FILE)):
        raise ServiceError(400, f"model '{entry.name}' has no previous version to roll back to")
    if updater.running(entry.name):
        raise ServiceError(409, f"an update of model '{entry.name}' is running: roll back when it is done")
    before = _summary(entry)
    load_version(previous_export, entry.settings)   # refuse a previous version that does not load
    with entry.lock:
        exchange(previous_export, entry.export_dir)
        previous_training = os.path.join(entry.previous_dir, "model.pdparams")
        if os.path.isfile(previous_training) and os.path.isfile(entry.training_file):
            exchange(previous_training, entry.training_file)
    entry.reload_if_changed(force=True)
    return {"model": entry.name, "before": before, "after": _summary(entry)}
