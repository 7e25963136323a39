"""Background jobs: a durable queue in the primary database and the `keel worker` mode.

For another domain, the whole API is:
- `app.jobs.services.registry`: `@job_handler("type", timeout=…, max_attempts=…, payload=Schema,
  role=Role.editor)` and the `JobContext` a handler receives (its docstring has an example);
- `app.jobs.services.queue.enqueue(session, "type", payload, ...)` (and `enqueue_many`) inside the
  caller's transaction;
- `app.jobs.services.schedules.schedule(name, "type", every=… | daily_at=…)` for periodic jobs.
A new module of handlers goes into `registry.BUILTIN_MODULES` (or the JOB_MODULES setting).
"""
