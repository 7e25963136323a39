"""HTML of the jobs domain: `admin` (/admin/jobs) and `forms` (the enqueue form read off a
job type's payload schema)."""
