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
