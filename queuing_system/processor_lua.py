"""The processor's Redis steps, each one atomic Lua script (see processor.py for the story).

Keys are built inside the scripts from the names RQ gives them (`rq:job:<id>`,
`rq:queue:<name>`, `rq:wip:<queue>`, …), so, like RQ itself, this needs a
standalone Redis (not Cluster). The processor's own keys:

    queuing:claimed:<worker>   list: jobs this worker took from their queues and has not started
    queuing:running:<worker>   "<job id>:<execution id>" of the job it runs now
    queuing:claimers           set: workers that may hold claims (looked at by the recovery sweep)

A worker is alive while its RQ worker key `rq:worker:<name>` exists: each step
below re-arms that key's expiry (the lease), and a steward thread re-arms it
during a long job. When it expires, `RECOVER` hands the worker's claims back.
"""

# Shared by GIVE_BACK and RECOVER: put a claim list back at the front of each job's queue, in order.
_GIVE_BACK_FUNCTION = """
local function give_back(claimed_key)
  local ids = redis.call('LRANGE', claimed_key, 0, -1)
  for i = #ids, 1, -1 do
    local origin = redis.call('HGET', 'rq:job:' .. ids[i], 'origin')
    if origin then
      redis.call('LPUSH', 'rq:queue:' .. origin, ids[i])
    end
  end
  redis.call('DEL', claimed_key)
  return #ids
end
"""

# Settle the job this worker just ran, claim more jobs if it holds none, start the next one.
# KEYS: none (see the module docstring).
# ARGV[1]  worker name                 ARGV[2]  lease, seconds
# ARGV[3]  now, RQ's utcformat          ARGV[4]  now, unix seconds (a float, as RQ writes it)
# ARGV[5]  settle: '' (nothing) | 'finished' (record success here) | 'released' (RQ already recorded the end)
# ARGV[6]  settled job id              ARGV[7]  its execution id
# ARGV[8]  its start, unix seconds     ARGV[9]  its end, RQ's utcformat     ARGV[10] its end, unix seconds
# ARGV[11] its return value, base64 of the serialized value ('' for None)
# ARGV[12] job event to publish once settled ('' for none)   ARGV[13] the job-event channel
# ARGV[14] claim up to this many jobs when this worker holds none (0: claim nothing)
# ARGV[15] '1' to start the next claimed job   ARGV[16] the execution id to give it
# ARGV[17] job timeout to assume when a job has none, seconds
# ARGV[18..] the queue names, served first to last
# Returns {settled, job id, job hash (flat), execution id} for the job to run now (nil, nil, nil: none), where
#   settled is ''     nothing to settle
#              'ok'   settled (or found settled: a step whose reply was lost had done it)
#              'lost' the job was no longer this worker's (its lease lapsed and a sweep took it): nothing written
#              'rq'   left to RQ's own code (the job has dependents, or keeps no result): nothing done at all
# or {'no worker'} when this worker's key is gone (presumed dead): nothing was done at all.
# Every step can be repeated when its reply is lost: a job a lost step started is returned again.
ADVANCE = """
local worker, lease = ARGV[1], tonumber(ARGV[2])
local now_text, now_float = ARGV[3], ARGV[4]
local now = math.floor(tonumber(now_float))
local worker_key = 'rq:worker:' .. worker
if redis.call('EXISTS', worker_key) == 0 or redis.call('HEXISTS', worker_key, 'death') == 1 then
  return {'no worker'}
end
local running_key = 'queuing:running:' .. worker
local claimed_key = 'queuing:claimed:' .. worker
local executions_key = worker_key .. ':executions'

-- 1. settle
local settled = ''
if ARGV[5] ~= '' then
  local job_id, execution_id = ARGV[6], ARGV[7]
  local composite = job_id .. ':' .. execution_id
  local job_key = 'rq:job:' .. job_id
  if redis.call('GET', running_key) ~= composite then
    -- Not (or no longer) in hand: settled already by a step whose reply was lost, or taken by a sweep.
    local status = redis.call('HGET', job_key, 'status')
    if ARGV[5] == 'released' or status == 'finished' then
      settled = 'done before'
    else
      settled = 'lost'
    end
  elseif ARGV[5] == 'released' then
    settled = 'ok'
  else
    local origin = redis.call('HGET', job_key, 'origin')
    local result_ttl = tonumber(redis.call('HGET', job_key, 'result_ttl') or '500')  -- RQ's DEFAULT_RESULT_TTL
    if not origin or result_ttl == 0 or redis.call('EXISTS', job_key .. ':dependents') == 1 then
      return {'rq', false, false}
    end
    -- RQ's Job._handle_success: status, end time, a Result in the job's results stream, the finished registry
    local ended_text, ended = ARGV[9], tonumber(ARGV[10])
    redis.call('HSET', job_key, 'status', 'finished', 'ended_at', ended_text, 'last_heartbeat', ended_text)
    local result = {'type', '1', 'worker_name', worker}
    if ARGV[11] ~= '' then
      table.insert(result, 'return_value')
      table.insert(result, ARGV[11])
    end
    for _, field in ipairs({'execution_id', execution_id, 'execution_started_at', ARGV[8],
                            'execution_ended_at', ARGV[10]}) do
      table.insert(result, field)
    end
    local results_key = 'rq:results:' .. job_id
    redis.call('XADD', results_key, 'MAXLEN', '~', '10', '*', unpack(result))
    if result_ttl == -1 then
      redis.call('PERSIST', results_key)
    else
      redis.call('EXPIRE', results_key, result_ttl)
    end
    local score = now + result_ttl
    if result_ttl == -1 then score = '+inf' elseif result_ttl < 0 then score = result_ttl end
    redis.call('ZADD', 'rq:finished:' .. origin, score, job_id)
    -- RQ's Job.cleanup(result_ttl): the job is kept as long as its result
    if result_ttl > 0 then
      redis.call('EXPIRE', job_key, result_ttl)
      redis.call('EXPIRE', job_key .. ':dependents', result_ttl)
      redis.call('EXPIRE', job_key .. ':dependencies', result_ttl)
    end
    -- RQ's cleanup_execution, and the worker's counters
    redis.call('DEL', 'rq:execution:' .. composite)
    redis.call('ZREM', 'rq:wip:' .. origin, composite)
    redis.call('ZREM', 'rq:executions:' .. job_id, execution_id)
    redis.call('SREM', executions_key, composite)
    redis.call('HINCRBY', worker_key, 'successful_job_count', 1)
    redis.call('HINCRBYFLOAT', worker_key, 'total_working_time', ended - tonumber(ARGV[8]))
    settled = 'ok'
  end
  if settled == 'ok' then
    redis.call('DEL', running_key)
    if ARGV[12] ~= '' then
      redis.call('PUBLISH', ARGV[13], ARGV[12])
    end
  end
end

-- 2. claim: when this worker holds no claims, take its fair share of the backlog (at most ARGV[14])
local queues = {}
for i = 18, #ARGV do
  queues[#queues + 1] = ARGV[i]
end
local claim_max = tonumber(ARGV[14])
if claim_max > 0 and redis.call('LLEN', claimed_key) == 0 then
  local backlog = 0
  for _, name in ipairs(queues) do
    backlog = backlog + redis.call('LLEN', 'rq:queue:' .. name)
  end
  local workers = math.max(1, redis.call('SCARD', 'rq:workers:' .. queues[1]))
  local wanted = math.min(claim_max, math.ceil(backlog / workers))
  for _, name in ipairs(queues) do
    if wanted <= 0 then
      break
    end
    local queue_key = 'rq:queue:' .. name
    local ids = redis.call('LRANGE', queue_key, 0, wanted - 1)
    if #ids > 0 then
      redis.call('LTRIM', queue_key, #ids, -1)
      redis.call('RPUSH', claimed_key, unpack(ids))
      wanted = wanted - #ids
    end
  end
end

-- 3. start the next claimed job: RQ's prepare_execution and prepare_job_execution
local started_id, started_hash, started_execution = false, false, false
local in_hand = redis.call('GET', running_key)
if in_hand then
  -- A job a step started whose reply never reached us (Redis went away): that job runs now.
  local job_id, execution_id = string.match(in_hand, '^(.*):([^:]*)$')
  if redis.call('EXISTS', 'rq:job:' .. job_id) == 1 then
    started_id, started_execution = job_id, execution_id
    started_hash = redis.call('HGETALL', 'rq:job:' .. job_id)
  else
    redis.call('DEL', running_key)
  end
end
if ARGV[15] == '1' and not started_id then
  while true do
    local job_id = redis.call('LPOP', claimed_key)
    if not job_id then
      break
    end
    local job_key = 'rq:job:' .. job_id
    local origin = redis.call('HGET', job_key, 'origin')
    if origin then  -- a job whose hash is gone is skipped, as RQ's dequeue skips it
      local execution_id = ARGV[16]
      local composite = job_id .. ':' .. execution_id
      local timeout = tonumber(redis.call('HGET', job_key, 'timeout') or '') or tonumber(ARGV[17])
      local ttl = timeout + 60  -- RQ's SimpleWorker.get_heartbeat_ttl
      if timeout == -1 then
        ttl = 420  -- RQ's DEFAULT_WORKER_TTL, for jobs that never time out
      end
      redis.call('SET', running_key, composite)
      redis.call('HSET', job_key, 'status', 'started', 'started_at', now_text, 'last_heartbeat', now_text,
                 'worker_name', worker)
      redis.call('PERSIST', job_key)
      local execution_key = 'rq:execution:' .. composite
      redis.call('HSET', execution_key, 'id', execution_id, 'job_id', job_id, 'created_at', now_float,
                 'last_heartbeat', now_float, 'worker_name', worker)
      redis.call('EXPIRE', execution_key, ttl)
      redis.call('ZADD', 'rq:executions:' .. job_id, now + ttl + 60, execution_id)
      redis.call('EXPIRE', 'rq:executions:' .. job_id, ttl + 60)
      redis.call('ZADD', 'rq:wip:' .. origin, now + ttl, composite)
      redis.call('SADD', executions_key, composite)
      redis.call('EXPIRE', executions_key, ttl)  -- created for ttl + 60, then RQ's heartbeat sets ttl
      started_id, started_execution = job_id, execution_id
      started_hash = redis.call('HGETALL', job_key)
      break
    end
  end
end

-- 4. the worker's state and its lease
redis.call('HSET', worker_key, 'state', started_id and 'busy' or 'idle', 'last_heartbeat', now_text)
redis.call('EXPIRE', worker_key, lease)
if settled == 'done before' then
  settled = 'ok'
end
return {settled, started_id, started_hash, started_execution}
"""

# Is the job in hand still this worker's? Re-arms the lease when it is.
# ARGV[1] worker name   ARGV[2] lease, seconds   ARGV[3] "<job id>:<execution id>"
# Returns 1 (still this worker's) or 0 (a sweep took it: the worker was presumed dead).
STILL_MINE = """
local worker_key = 'rq:worker:' .. ARGV[1]
if redis.call('GET', 'queuing:running:' .. ARGV[1]) ~= ARGV[3] or redis.call('EXISTS', worker_key) == 0 then
  return 0
end
redis.call('EXPIRE', worker_key, ARGV[2])
return 1
"""

# Give every job a worker has claimed but not started back to the front of its queue, in order.
# ARGV[1] worker name. Returns how many were given back.
GIVE_BACK = (
    _GIVE_BACK_FUNCTION
    + """
return give_back('queuing:claimed:' .. ARGV[1])
"""
)

# The recovery sweep: for every claimer whose worker key is gone (or says it died), give its claims
# back, free the scheduler locks it held on these queues (RQ's would block retries and delayed jobs
# for a minute), and take over its job in hand (the caller then fails or retries it through RQ).
# ARGV: the queue names whose scheduler locks may be freed.
# Returns a flat list: worker name, "<job id>:<execution id>" of its job in hand or '', …
RECOVER = (
    _GIVE_BACK_FUNCTION
    + """
local recovered = {}
for _, name in ipairs(redis.call('SMEMBERS', 'queuing:claimers')) do
  local worker_key = 'rq:worker:' .. name
  if redis.call('EXISTS', worker_key) == 0 or redis.call('HEXISTS', worker_key, 'death') == 1 then
    give_back('queuing:claimed:' .. name)
    local running = redis.call('GET', 'queuing:running:' .. name) or ''
    redis.call('DEL', 'queuing:running:' .. name)
    redis.call('SREM', 'queuing:claimers', name)
    for _, queue in ipairs(ARGV) do
      local lock = 'rq:scheduler-lock:' .. queue
      if redis.call('GET', lock) == name then
        redis.call('DEL', lock)
      end
    end
    table.insert(recovered, name)
    table.insert(recovered, running)
  end
end
return recovered
"""
)

# Re-arm a worker's lease if its key still exists (the steward, during a long job).
# ARGV[1] worker name   ARGV[2] lease, seconds. Returns 1, or 0 when the key is gone.
KEEP_ALIVE = """
return redis.call('EXPIRE', 'rq:worker:' .. ARGV[1], ARGV[2])
"""
