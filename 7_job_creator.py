"""Task 7 — creating many jobs and following each one.

Teaches: one creator, many jobs, and the events each job sends back.
Run:     python 7_job_processor.py in one terminal, python 7_job_creator.py in another
Prints:  Notification job created: <id>                 for each of the 11 jobs
         Notification job <id> <n>% complete           as a processor reports progress
         Notification job <id> completed | failed: <error>
"""

from queuing_system.console import run_once, say
from queuing_system.events import JobEvents
from queuing_system.jobs import enqueue, job_queue, queue_connection
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.notifications import follow_notification_job

JOBS = [
    {"phoneNumber": "4153518780", "message": "This is the code 1234 to verify your account"},
    {"phoneNumber": "4153518781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4153538781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153118782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4153718781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4159518782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4158718781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153818782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4154318781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4151218782", "message": "This is the code 4321 to verify your account"},
]


def main() -> None:
    connection = queue_connection()
    connection.ping()
    queue = job_queue(QUEUE_7, connection)

    with JobEvents(connection, serializer=queue.serializer) as events:
        job_ids = []
        for data in JOBS:
            job = enqueue(queue, PROCESS_7, data)
            say(f"Notification job created: {job.id}")
            follow_notification_job(events, job.id)
            job_ids.append(job.id)
        events.wait_until_ended(job_ids)


if __name__ == "__main__":
    run_once(main, interrupted_exit=0)
