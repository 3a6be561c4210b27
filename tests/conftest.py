"""Suite-wide settings: one torch thread (CI has 2 shared cores; OpenMP spin-waits otherwise),
restored after each test, so a verb run with ``--threads`` cannot change the next test's speed."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
