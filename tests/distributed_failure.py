"""`transformerkit train` whose rank 1 raises at its third optimizer step (run by tests/test_distributed.py
under torchrun): the job must stop with that error instead of hanging in rank 0's next collective."""

import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from transformerkit.cli import main
from transformerkit.training.trainer import Trainer

_step = Trainer._step


def failing_step(self: Trainer, batches: list) -> tuple[float, int]:
    if os.environ.get("RANK") == "1" and self.progress.step == 2:
        raise RuntimeError("deliberate failure on rank 1 at step 3")
    return _step(self, batches)


Trainer._step = failing_step  # type: ignore[method-assign]
sys.exit(record(main)())
