"""Run shell-free ``python -m handflow ...`` jobs side by side, each with its own log.

Long benchmark stages (training many models, sharded MultiHands) are independent
processes: a crash in one leaves the others and every finished output intact, and a rerun
of the same stage resumes (every command we launch is itself resumable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from handflow.errors import HandflowError

__all__ = ["Job", "JobFailed", "run_jobs", "handflow_command"]

#: seconds between polls of running jobs
POLL_S = 0.5
#: lines of a failed job's log shown in the error
LOG_TAIL_LINES = 30


class JobFailed(HandflowError, RuntimeError):
    """A job exited with a non-zero status; the message holds its command and log tail."""


@dataclass
class Job:
    """One command. ``threads``: OMP/MKL threads of the process (torch.set_num_threads is
    also applied by our commands from their own settings)."""

    name: str
    argv: list[str]
    log: Path
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)


def handflow_command(*args: str | os.PathLike) -> list[str]:
    """``[python, -m, handflow, *args]`` with the running interpreter."""
    return [sys.executable, "-m", "handflow", *map(str, args)]


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_jobs(jobs: list[Job], parallel: int = 1, desc: str = "jobs", progress: bool = True,
             on_finish: Callable[[], None] | None = None) -> float:
    """Run ``jobs`` with at most ``parallel`` at a time; raise :class:`JobFailed` after the
    running ones finish when any fails. ``on_finish()`` is called each time a job ends (e.g. to
    record the time spent so far, which a killed invocation would otherwise lose). Returns the
    wall time (s)."""
    t0 = time.perf_counter()
    pending, running, failed = list(jobs), [], []
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, unit="job")
    while pending or running:
        while pending and len(running) < max(1, parallel) and not failed:
            job = pending.pop(0)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads),
                   "PYTHONUNBUFFERED": "1", **job.env}
            fh = open(job.log, "w")
            fh.write("$ " + " ".join(job.argv) + "\n")
            fh.flush()
            running.append((job, subprocess.Popen(job.argv, stdout=fh, stderr=subprocess.STDOUT, env=env), fh))
        time.sleep(POLL_S)
        still = []
        for job, proc, fh in running:
            if proc.poll() is None:
                still.append((job, proc, fh))
                continue
            fh.close()
            bar.update(1)
            if on_finish is not None:
                on_finish()
            if proc.returncode != 0:
                failed.append((job, proc.returncode))
        running = still
        if failed and not running:
            break
    bar.close()
    if failed:
        job, rc = failed[0]
        raise JobFailed(f"{len(failed)} job(s) failed; first: {job.name} (exit {rc}), log {job.log}\n"
                        f"$ {' '.join(job.argv)}\n{_tail(job.log)}\nfix the cause and rerun: finished work is kept")
    return time.perf_counter() - t0
