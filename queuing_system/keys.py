"""Every Redis key, channel and queue name the port uses, in one place."""

# Tasks 1, 2 and 4 (the curriculum's own keys).
SCHOOL_HASH = "HolbertonSchools"

# Task 5.
SCHOOL_CHANNEL = "holberton school channel"
KILL_MESSAGE = "KILL_SERVER"

# Tasks 6, 7, 8 and 100: queues.
QUEUE_6 = "push_notification_code"
QUEUE_7 = "push_notification_code_2"
QUEUE_8 = "push_notification_code_3"
SEAT_QUEUE = "reserve_seat"

# Kue-style job ids and events (shared by every queue, like Kue's `q:ids`).
JOB_ID_COUNTER = "queuing:job_id"
JOB_EVENTS_CHANNEL = "queuing:job_events"
# hash: the ids each chunk of one creator run reserved (so a repeated reservation reserves nothing new)
JOB_CREATION_RECORD = "queuing:creation:{token}"

# Task 9: reserved units of product <id>; its reservations (id -> pending | confirmed); the pending ones' deadlines.
STOCK_RESERVED = "item.{item_id}"
STOCK_RECORDS = "item.{item_id}.reservations"
STOCK_PENDING = "item.{item_id}.pending"

# Task 100.
AVAILABLE_SEATS = "available_seats"

# The functions RQ runs for each queue's jobs (dotted paths the processors import).
PROCESS_6 = "6_job_processor.process_job"
PROCESS_7 = "7_job_processor.process_job"
