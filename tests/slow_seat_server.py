"""100_seat.py whose seat job takes its seat, then dawdles (a test kills the server mid-job). Tests only."""

import sys
import time
from importlib import import_module
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queuing_system.console import arguments

seat = import_module("100_seat")
take_one_seat = seat.take_one_seat


def take_one_seat_slowly() -> int:
    seats_left = take_one_seat()
    time.sleep(60)
    return seats_left


seat.take_one_seat = take_one_seat_slowly  # what the server's processor offers as the seat job

if __name__ == "__main__":
    sys.exit(seat.main(arguments(seat.__doc__, seat.options)))
