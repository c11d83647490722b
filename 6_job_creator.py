"""Task 6 — a job creator.

Teaches: putting a job on a queue and hearing back how it went.
Run:     python 6_job_creator.py     (with python 6_job_processor.py running somewhere)
Prints:  Notification job created: <id>
         then Notification job completed (or Notification job failed) when a processor is done with it.
"""

from queuing_system.console import run_once, say
from queuing_system.events import JobEvent, JobEvents
from queuing_system.jobs import enqueue, job_queue, queue_connection
from queuing_system.keys import PROCESS_6, QUEUE_6

JOB_DATA = {
    "phoneNumber": "4153518780",
    "message": "This is the code to verify your account",
}


def main() -> None:
    connection = queue_connection()
    connection.ping()
    queue = job_queue(QUEUE_6, connection)

    # Listen first, then enqueue: no event can slip by.
    with JobEvents(connection, serializer=queue.serializer) as events:
        job = enqueue(queue, PROCESS_6, JOB_DATA)
        say(f"Notification job created: {job.id}")

        events.on(job.id, JobEvent.COMPLETED, lambda _: say("Notification job completed"))
        events.on(job.id, JobEvent.FAILED, lambda _: say("Notification job failed"))
        events.wait_until_ended([job.id])


if __name__ == "__main__":
    run_once(main, interrupted_exit=0)  # Ctrl+C before the job ends is a normal way to leave
