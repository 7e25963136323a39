"""Keel's public interfaces for code outside Keel: `keel.plugin` is the one a plugin imports."""
