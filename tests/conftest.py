import os

import pytest
import torch

# Tests run on the CPU with few threads: the CI machine has 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture()
def one_thread():
    """Tiny tensors and models: one thread is faster than two on the shared CI cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
