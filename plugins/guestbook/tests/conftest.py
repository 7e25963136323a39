"""The guestbook's tests run on Keel's test kit: each test gets a Keel with the guestbook
installed and active (`site`), on each storage leg."""

from pathlib import Path

from keel.testing import site_fixture

site = site_fixture(Path(__file__).parents[1])
