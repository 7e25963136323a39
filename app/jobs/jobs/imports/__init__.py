"""The `import` job: users or content from an uploaded CSV file, row by row.

- *Upload.* `POST /api/v1/jobs/import` (multipart: `kind` = users | content, `file`) or the
  import form on /admin/jobs. The file is read at once (`upload.submit_import`):
  UTF-8 with or without a BOM, at most IMPORT_MAX_BYTES and IMPORT_MAX_ROWS, a header
  naming known columns (the required ones included). A file that fails any of that is
  refused there (4xx, or the form again with the message); one that passes is stored as
  `<JOB_FILES_DIR>/<job id>/input/upload.csv` and the job is enqueued in the same
  transaction (the file is removed if it rolls back). The generic enqueue refuses `import`.
- *Users* (`email` required; `name`; `role`, viewer when empty; `active`, yes when empty):
  the account rules of `app.accounts.services` (address format and uniqueness, roles; an
  editor imports roles below admin only). Usernames come from the address (`-2`, `-3`...
  when taken). Accounts get no usable password: each active one is e-mailed a one-time
  "set your password" link (three days) by a `notify` job enqueued with the rows.
- *Content* (`kind` page|post and `title` required; `slug`, made from the title when
  empty; `body` Markdown; `excerpt`; `meta_description`; `tags` separated by commas, as
  in the editor; `status` draft (default) | published | scheduled | archived;
  `publish_at` ISO 8601, UTC when it has no offset, required and in the future for
  scheduled, not in the future for published (now when empty), empty otherwise;
  `nav_order`, pages only): each row is saved as the editor saves (sanitized HTML, first
  revision, tags, audit entry), then published, scheduled or archived. The author is the
  user who uploaded the file; public changes drop the page cache after the commit.
- *Rows.* Each row gets every reason it is refused for: the services' rules, rows of the
  file sharing an address or (kind, slug) (all of them are refused), clashes with the
  database. A cell written as Keel's exports escape formulas (`'=...`) imports as `=...`;
  other text is stored as data and only ever shown escaped.
- *Once.* The valid rows, their audit entries, the e-mails' jobs and an `import_runs` row
  keyed by the job id commit in one transaction; any failure rolls all of it back (and
  the attempt is retried). A run that finds its `import_runs` row (the worker died after
  the commit) returns the stored outcome and writes and sends nothing.
- *Result.* Counts (`rows`, `imported`, `rejected`) and every rejected row (`line`, the
  main values cut to 120 characters, `reasons`); the rejected rows whole, with an
  `import_errors` column, as a CSV file (formulas escaped) to fix and upload again. Files
  expire after EXPORT_RETENTION_HOURS like exports.
"""

from app.jobs.jobs.imports.csvfile import ImportFileError, read_csv
from app.jobs.jobs.imports.job import IMPORTERS, INPUT_NAME, ImportPayload, run_import

__all__ = ("IMPORTERS", "INPUT_NAME", "ImportFileError", "ImportPayload", "read_csv", "run_import")
