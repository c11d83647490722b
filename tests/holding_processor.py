"""6_job_processor that also offers the tests' slow job (`tests.jobs_for_tests.hold`). Used by tests only.

HOLDING_CONCURRENCY=N runs N worker processes, like 7_job_processor.py.
"""

import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.worker import run_processor
from tests.jobs_for_tests import HOLD, hold

lesson = importlib.import_module("6_job_processor")

if __name__ == "__main__":
    concurrency = int(os.environ.get("HOLDING_CONCURRENCY") or 1)
    sys.exit(run_processor(QUEUE_6, {PROCESS_6: lesson.process_job, HOLD: hold}, concurrency=concurrency))
