"""The queue and its rules: `queue` (enqueue, claim, outcomes, leases), `registry` (job
types and the handler API), `schedules`, `worker` (the `keel worker` loop), `metrics` (the
job figures) and `jobs` (who sees and runs which jobs, uploads and downloads)."""
