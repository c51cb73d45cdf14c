"""Fixtures shared by several test files."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small batch-1 networks: one torch thread avoids OpenMP spin-waits when the CPU is shared (tens of times
    faster there). A test file opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """The Catch learning run first: it is most of the suite's time, and with `-n 2 --dist worksteal` (the
    README's test command) the other worker takes every other test meanwhile."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/test_learning.py"))
