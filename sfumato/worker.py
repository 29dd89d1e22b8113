"""The worker's entry point: ``python -m sfumato.worker`` serves every job kind (``kinds.py``) as JSON lines on
stdin/stdout (the protocol is ``core/worker.py``'s)."""

from __future__ import annotations

import os
import sys

from .core.worker import main
from .kinds import KINDS

if __name__ == "__main__":
    sys.exit(main(KINDS, os.environ.get("SFUMATO_WORKER_DEVICE", "auto"),
                  os.environ.get("SFUMATO_WORKER_DTYPE", "auto"),
                  int(os.environ.get("SFUMATO_WORKER_THREADS", "0")) or None))
