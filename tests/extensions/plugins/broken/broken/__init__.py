"""A plugin whose module cannot be imported."""
