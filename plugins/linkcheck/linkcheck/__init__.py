"""Link check: a plugin shipped with Keel (see plugin.py)."""
