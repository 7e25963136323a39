"""Site settings: what an admin changes while Keel runs (the site title, open registration,
the API rate limit, retention), typed by the `SETTINGS` registry and stored in the
`system_settings` table. The lowest domain: every other one reads them, and it reads none."""
