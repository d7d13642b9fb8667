import os

import pytest
import torch

try:
    from hypothesis import settings
except ImportError:  # only the fuzz tests need it (the dev extra installs it)
    settings = None
if settings is not None:
    # The fuzz tests draw the same examples on every run (a gate or CI run cannot fail by the luck of the draw);
    # `make fuzz` (PRUNEKIT_FUZZ=1) draws fresh ones to look for new failures.
    settings.register_profile("fixed", derandomize=True)
    settings.register_profile("fuzz", derandomize=False)
    settings.load_profile("fuzz" if os.environ.get("PRUNEKIT_FUZZ") else "fixed")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    from prunekit.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def one_thread():
    """Runs a test on one torch thread (the CI box has 2 shared cores and pytest runs 2 workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def net(digits):
    """An untrained residual CNN for the 8×8 digits, in eval mode."""
    from prunekit.models import build_model

    torch.manual_seed(0)
    return build_model("resnet_mini", digits.input_shape, digits.num_classes).eval()
