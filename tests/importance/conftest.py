import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box has 2 shared cores
    yield
    torch.set_num_threads(threads)
