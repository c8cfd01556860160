"""Rebuilds inside a running server: background jobs, watching seeds/, and picking up builds
published by any process (so every replica on a shared index folder swaps on its own)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from service.builds import IndexHolder
from service.config import Settings
from service.embedding.background import lower_thread_priority
from service.errors import BuildInProgressError, GroundQAError
from service.indexing import Builder, BuildPlan, seeds_plan

Clock = Callable[[], float]

log = logging.getLogger("groundqa.rebuild")

JobState = Literal["running", "succeeded", "failed"]


@dataclass(slots=True)
class Job:
    """A background rebuild and what became of it."""

    job_id: str
    state: JobState = "running"
    stage: str = "queued"
    progress: float = 0.0
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress, 3),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


class RebuildManager:
    """Runs at most one incremental build at a time and swaps the served index after it."""

    def __init__(self, settings: Settings, builder: Builder, holder: IndexHolder) -> None:
        self.settings = settings
        self.builder = builder
        self.holder = holder
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._running: Job | None = None
        self.last_build_seconds = 0.0
        self.on_finish: list[Callable[[Job], None]] = []  # called with each finished job

    @property
    def running(self) -> Job | None:
        """The job in progress, if any."""
        return self._running

    def start(self) -> Job:
        """Start a background build; BuildInProgressError when one is running."""
        with self._lock:
            if self._running is not None:
                raise BuildInProgressError(
                    f"rebuild {self._running.job_id} is already running; poll its status"
                )
            job = Job(job_id=secrets.token_hex(8))
            self.jobs[job.job_id] = job
            self._running = job
            # Keep the registry bounded: forget the oldest finished jobs.
            for old in [j for j in self.jobs.values() if j.state != "running"][:-50]:
                del self.jobs[old.job_id]
        threading.Thread(
            target=self._run, args=(job,), name="groundqa-rebuild", daemon=True
        ).start()
        return job

    def run(self) -> Job:
        """Start a build, or join the one running, and wait for it to finish."""
        try:
            job = self.start()
        except BuildInProgressError:
            running = self._running
            if running is None:
                return self.run()
            running.done.wait()
            return self.run()
        job.done.wait()
        return job

    def _run(self, job: Job) -> None:
        if self.settings.rebuild_priority == "low":
            lower_thread_priority()  # this thread is the job's alone: queries keep the cores
        started = time.perf_counter()

        def progress(stage: str, fraction: float) -> None:
            job.stage, job.progress = stage, fraction

        state: JobState = "failed"
        try:
            report = self.builder.build(progress=progress)
            self.holder.refresh()
            job.result = report.as_dict()
            state = "succeeded"
        except GroundQAError as exc:
            job.error = str(exc)
        except Exception as exc:  # a failed build must never take the server down
            log.exception("rebuild %s failed", job.job_id)
            job.error = f"unexpected error: {exc}"
        finally:
            self.last_build_seconds = time.perf_counter() - started
            job.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
            # The state changes last, as the slot frees: whoever sees the job finished sees
            # its finish time and result, and can start the next rebuild at once.
            with self._lock:
                self._running = None
                job.state = state
            for callback in self.on_finish:
                callback(job)
            job.done.set()


def watch_seeds(settings: Settings, manager: RebuildManager, stop: threading.Event) -> None:
    """Rebuild incrementally whenever seeds/ changes, until stop is set; bursts are debounced."""
    import watchfiles

    for changes in watchfiles.watch(
        settings.seeds_dir,
        stop_event=stop,
        debounce=settings.watch_debounce_ms,
        raise_interrupt=False,
    ):
        log.info("seeds changed (%d paths); rebuilding", len(changes))
        job = manager.run()
        if job.state == "failed":
            log.error("rebuild after change failed: %s", job.error)


@dataclass
class FollowHealth:
    """How the thread following published builds is doing: /readyz and /metrics read it."""

    error: str | None = None  # why the last check failed; None when it succeeded
    failures: int = 0  # checks that failed, ever
    on_failure: list[Callable[[str], None]] = field(default_factory=list)

    def failed(self, error: str) -> None:
        self.error = error
        self.failures += 1
        for callback in self.on_failure:
            callback(error)


def follow_published(
    holder: IndexHolder,
    interval: float,
    stop: threading.Event,
    health: FollowHealth | None = None,
) -> None:
    """Swap to builds published by other processes (CLI builds, other replicas' builds).
    No error ends the thread: it is logged, recorded in health, and the check runs again."""
    health = health or FollowHealth()
    while not stop.wait(interval):
        try:
            if holder.refresh():
                log.info("now serving build %s", holder.current.build_id)
        except GroundQAError as exc:
            log.error("cannot load the published build, still serving the previous one: %s", exc)
            health.failed(str(exc))
        except Exception as exc:  # never let the follower die silently
            log.exception("following published builds failed; retrying")
            health.failed(f"unexpected error: {exc}")
        else:
            health.error = None


class StaleCheck:
    """The plan a build of seeds/ would follow now, from a scan cached for `interval` seconds:
    many callers share one scan (hashing the folder), never one scan each. While one caller
    refreshes it, the others get the previous answer at once."""

    def __init__(
        self, settings: Settings, model_id: str, interval: float, clock: Clock = time.monotonic
    ) -> None:
        self.settings = settings
        self.model_id = model_id
        self.interval = interval
        self.clock = clock
        self.scans = 0  # scans run, for tests
        self._lock = threading.Lock()
        # (build id, when, plan); no plan when seeds/ could not be scanned
        self._value: tuple[str, float, BuildPlan | None] | None = None

    def _fresh(self, build_id: str) -> tuple[BuildPlan | None] | None:
        value = self._value
        if value is not None and value[0] == build_id and self.clock() - value[1] < self.interval:
            return (value[2],)
        return None

    def stale(self, build_id: str) -> bool:
        """Whether seeds/ differs from what build_id was built from (cached)."""
        plan = self.plan(build_id)
        return plan is None or plan.changed

    def plan(self, build_id: str) -> BuildPlan | None:
        """The plan of a build now against build_id (cached); None when seeds/ is unreadable."""
        if (known := self._fresh(build_id)) is not None:
            return known[0]
        if not self._lock.acquire(blocking=self._value is None or self._value[0] != build_id):
            return self._value[2] if self._value is not None else None  # another is scanning
        try:
            if (known := self._fresh(build_id)) is not None:
                return known[0]
            try:
                plan: BuildPlan | None = seeds_plan(self.settings, self.model_id)
            except Exception:  # a missing or unreadable seeds folder: stale, never an error
                plan = None
            self.scans += 1
            self._value = (build_id, self.clock(), plan)
            return plan
        finally:
            self._lock.release()

    def invalidate(self) -> None:
        """Forget the cached answer (a rebuild finished, the watcher saw a change)."""
        self._value = None
