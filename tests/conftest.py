import pytest
import torch

import lse_fast

requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and lse_fast.built_with_cuda()),
    reason="needs a CUDA device and an lse_fast build with CUDA kernels",
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One compute thread for a whole module (`pytestmark =
    pytest.mark.usefixtures("one_thread")`): the same reductions in every
    process a test starts, and no thread contention on a small shared
    machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
