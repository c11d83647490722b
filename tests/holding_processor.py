"""6_job_processor that also offers the tests' slow jobs (`tests.jobs_for_tests`). Used by tests only.

HOLDING_CONCURRENCY=N runs N jobs at once, over HOLDING_PROCESSES worker processes (default: N, one job
each, like 7_job_processor.py's default).
"""

import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.worker import run_processor
from tests.jobs_for_tests import FINALIZE_SLOWLY, HOLD, HOLD_UNTIL_RELEASED, finalize_slowly, hold, hold_until_released

lesson = importlib.import_module("6_job_processor")

if __name__ == "__main__":
    concurrency = int(os.environ.get("HOLDING_CONCURRENCY") or 1)
    processes = int(os.environ.get("HOLDING_PROCESSES") or concurrency)
    offered = {
        PROCESS_6: lesson.process_job,
        HOLD: hold,
        HOLD_UNTIL_RELEASED: hold_until_released,
        FINALIZE_SLOWLY: finalize_slowly,
    }
    sys.exit(run_processor(QUEUE_6, offered, concurrency=concurrency, processes=processes))
