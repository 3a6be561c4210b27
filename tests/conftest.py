"""Suite-wide settings: one torch thread (CI has 2 shared cores; OpenMP spin-waits otherwise)."""

import torch

torch.set_num_threads(1)
