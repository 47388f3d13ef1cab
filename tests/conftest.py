import os

import pytest
import torch

# Two shared cores: keep torch from oversubscribing them in the tests that train flows.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def float64_default():
    """torch's default dtype float64 for one test, restored afterwards (other modules expect float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
