"""The test plugin `hello` (tests/extensions/test_host.py)."""
