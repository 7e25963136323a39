"""Imports a module that does not exist."""

from keel.plugin import Plugin

from .missing import nothing  # noqa: F401


class Broken(Plugin):
    pass
