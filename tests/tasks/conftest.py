"""What every task test shares: one torch thread (the CPU cores are shared), restored after each
test, so a verb run with ``--threads`` cannot change the next test's speed."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
