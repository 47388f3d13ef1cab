import os

import torch

# Two shared cores: keep torch from oversubscribing them in the tests that train flows.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
