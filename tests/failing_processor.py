"""6_job_processor with its SMS gateway down: every send fails. Used by tests only."""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queuing_system.keys import QUEUE_6
from queuing_system.worker import run_processor

lesson = importlib.import_module("6_job_processor")


def gateway_down(phone_number: str, message: str) -> None:
    raise ConnectionRefusedError("SMS gateway unreachable")


lesson.send_notification = gateway_down  # the module RQ imports to run process_job

if __name__ == "__main__":
    sys.exit(run_processor([QUEUE_6]))
