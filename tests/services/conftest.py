"""The service tests' impatient driver (`services` itself is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Api, Services
from tests.testbed import Testbed


@pytest.fixture
def impatient(impatient_api: Api, bed: Testbed) -> Iterator[Services]:
    """`services` whose converge operations give up after `IMPATIENT_DEADLINE_S`."""
    helper = Services(impatient_api, bed)
    yield helper
    helper.cleanup()
