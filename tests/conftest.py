import pytest
import torch


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
