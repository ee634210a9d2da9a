"""``python -m transformerkit`` (and ``torchrun … -m transformerkit``)."""

from torch.distributed.elastic.multiprocessing.errors import record

from transformerkit.cli import main

# under torchrun, a process that dies of an uncaught exception reports its traceback to the launcher
raise SystemExit(record(main)())
