"""The job figures of `/metrics`: runs by type and outcome, and how long jobs wait (the
gauges, read at scrape time, are registered by `app/system/services/metrics.py`).

Workers count what they finish and start in their own `Tally` and flush it with each
heartbeat. Changes made outside a worker's outcome path (a cancel in a request, a reap)
are emitted on the database session (`note_outcome`, the `JOB_ENDED` event) and counted
once it commits (`subscribe_outcomes`).
"""

from __future__ import annotations

from functools import partial

from app.core.events import Event, Events, emit
from app.core.metrics import Metric, Tally, stored
from app.core.registry import KEEL
from app.jobs.models import JobStatus

JOBS_PROCESSED = stored(
    Metric(
        "keel_jobs_processed_total",
        "counter",
        "Job runs that ended, by type and outcome: succeeded; failed (for good, no retry); "
        "retried (the attempt failed, another follows); dead (the last attempt failed or its "
        "lease expired); lease_expired (its worker stopped renewing it, queued again); "
        "cancelled; given_back (the worker did not know its type: queued again, the attempt "
        "not counted).",
        ("type", "outcome"),
    )
)
JOBS_WAIT = stored(
    Metric(
        "keel_jobs_wait_seconds",
        "histogram",
        "Seconds from a job becoming due (enqueued, or its delay or retry backoff over) to a "
        "worker starting it, by type.",
        ("type",),
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
    )
)
JOBS_QUEUE_DEPTH = Metric(
    "keel_jobs_queue_depth",
    "gauge",
    "Unfinished jobs by queue and status: queued (due, waiting for a worker), scheduled "
    "(queued for later: a delay or a retry backoff) and running.",
    ("queue", "status"),
)
JOBS_OLDEST_WAIT = Metric(
    "keel_jobs_oldest_wait_seconds",
    "gauge",
    "How long the oldest due job of each queue has been waiting (0 when none waits).",
    ("queue",),
)
WORKERS_LIVE = Metric(
    "keel_workers_live",
    "gauge",
    "Worker loops (`keel worker` processes and embedded in-process workers) whose "
    "heartbeat is current.",
)

OUTCOMES = {
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.queued: "retried",
    JobStatus.dead: "dead",
    JobStatus.cancelled: "cancelled",
}
"""The outcome label of a run that ended with the job in this status."""
LEASE_EXPIRED = "lease_expired"
GIVEN_BACK = "given_back"
JOB_ENDED = "jobs.run_ended"
"""Event (app/core/events.py): a run ended outside a worker's outcome path; the payload is
(type, outcome)."""


def note_outcome(session: object, type: str, outcome: str) -> None:
    """Count a run's end when the caller's transaction commits (never if it rolls back)."""
    emit(session, JOB_ENDED, (type, outcome))


async def count_outcome(tally: Tally, event: Event) -> None:
    """After a commit: one run's end into `tally`."""
    tally.add(JOBS_PROCESSED, event.payload)


def subscribe_outcomes(events: Events, tally: Tally) -> None:
    """Count the runs' ends that commits emit into `tally`."""
    events.subscribe(KEEL, JOB_ENDED, partial(count_outcome, tally), name="jobs.count_outcome")
