"""The analytics rules: the roll-up of per-minute counts, the series charts read and the
site's counts."""
