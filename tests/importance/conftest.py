import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every importance test runs on one torch thread (see tests/conftest.py)."""
