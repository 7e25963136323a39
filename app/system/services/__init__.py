"""Operations: `health` (readiness probes), `metrics` (the build and queue gauges of
/metrics) and `navigation` (the admin menu registry)."""
