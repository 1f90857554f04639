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
