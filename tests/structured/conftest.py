import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.set_num_threads(1)  # the CI box has 2 cores shared with other jobs
    torch.manual_seed(0)
