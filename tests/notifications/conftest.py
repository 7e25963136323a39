"""The jobs tests' fixtures (a sessionmaker per leg, the in-process worker) serve here too."""

from tests.jobs.conftest import sessionmaker

__all__ = ("sessionmaker",)
