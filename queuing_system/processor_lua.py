"""The processor's Redis steps, each one atomic Lua script (see processor.py for the story).

Each script names its KEYS and ARGV as locals at its top and says what it
returns; `steps.py` builds those arguments and parses the reply, one type per
script, for the processor and the tests alike. Keys Python knows are passed as
KEYS. Keys of jobs a step only finds inside Redis (the next claimed job, the
workers a sweep finds dead) are built from key prefixes Python passes, taken
from RQ (`rq_keys.RQ`) and `keys.py` — as RQ's own `rate_limit.py` scripts do —
so `RQ_KEY_PREFIX` (with or without a hash tag) moves them all. Like RQ itself,
this needs a standalone Redis (not Cluster).

A worker is alive while its RQ worker key exists: each step below re-arms that
key's expiry (the lease), and the steward thread re-arms it during a long job.
When it expires, `RECOVER` hands the worker's claims back.
"""

# Shared by GIVE_BACK and RECOVER: put a claim list back at the front of each job's queue, in order.
_GIVE_BACK_FUNCTION = """
local function give_back(claimed_key, job_prefix, queue_prefix)
  local ids = redis.call('LRANGE', claimed_key, 0, -1)
  for i = #ids, 1, -1 do
    local origin = redis.call('HGET', job_prefix .. ids[i], 'origin')
    if origin then
      redis.call('LPUSH', queue_prefix .. origin, ids[i])
    end
  end
  redis.call('DEL', claimed_key)
  return #ids
end
"""

# Settle the job this worker just ran, claim more jobs if it holds none, start the next one.
# KEYS[1] the worker's RQ key           KEYS[2] its RQ executions set
# KEYS[3] its job in hand (queuing:running:<worker>)   KEYS[4] its claim list (queuing:claimed:<worker>)
# KEYS[5] the workers listening on the first queue (RQ's rq:workers:<queue>: the fair share's divisor)
# KEYS[6..] the queues, served first to last
# ARGV[1]  worker name                  ARGV[2]  lease, seconds
# ARGV[3]  now, RQ's utcformat           ARGV[4]  now, unix seconds (a float, as RQ writes it)
# ARGV[5]  settle: '' (nothing) | 'finished' (record success here) | 'released' (RQ already recorded the end)
# ARGV[6]  settled job id               ARGV[7]  its execution id
# ARGV[8]  its start, unix seconds      ARGV[9]  its end, RQ's utcformat     ARGV[10] its end, unix seconds
# ARGV[11] its return value, base64 of the serialized value ('' for None)
# ARGV[12] job event to publish once settled ('' for none)   ARGV[13] the job-event channel
# ARGV[14] claim up to this many jobs when this worker holds none (0: claim nothing)
# ARGV[15] '1' to start the next claimed job   ARGV[16] the execution id to give it
# ARGV[17] job timeout to assume when a job has none, seconds
# ARGV[18..23] RQ's key prefixes: job, started registry, finished registry, execution, executions, results
# ARGV[24] RQ's default result TTL   ARGV[25] RQ's heartbeat grace (SimpleWorker: timeout + 60)
# ARGV[26] RQ's worker TTL, for jobs that never time out
# Returns {settled, job id, job hash (flat), execution id} for the job to run now (false, false, false: none),
# where settled is ''     nothing to settle
#                  'ok'   settled (or found settled: a step whose reply was lost had done it)
#                  'lost' the job was no longer this worker's (its lease lapsed and a sweep took it): nothing written
#                  'rq'   left to RQ's own code (the job has dependents, or keeps no result): nothing done at all
# or {'no worker'} when this worker's key is gone (presumed dead): nothing was done at all.
# Every step can be repeated when its reply is lost: a job a lost step started is returned again.
ADVANCE = """
local worker_key, executions_key, running_key, claimed_key, workers_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, lease, now_text, now_float = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local settle_mode, settle_id, settle_execution = ARGV[5], ARGV[6], ARGV[7]
local settle_started, settle_ended_text, settle_ended = ARGV[8], ARGV[9], tonumber(ARGV[10])
local settle_value, settle_event, channel = ARGV[11], ARGV[12], ARGV[13]
local claim_max, start_next, next_execution, default_timeout = tonumber(ARGV[14]), ARGV[15], ARGV[16], ARGV[17]
local job_prefix, wip_prefix, finished_prefix = ARGV[18], ARGV[19], ARGV[20]
local execution_prefix, executions_prefix, results_prefix = ARGV[21], ARGV[22], ARGV[23]
local default_result_ttl, heartbeat_grace, worker_ttl = ARGV[24], tonumber(ARGV[25]), tonumber(ARGV[26])
local now = math.floor(tonumber(now_float))
if redis.call('EXISTS', worker_key) == 0 or redis.call('HEXISTS', worker_key, 'death') == 1 then
  return {'no worker'}
end

-- 1. settle
local settled = ''
if settle_mode ~= '' then
  local composite = settle_id .. ':' .. settle_execution
  local job_key = job_prefix .. settle_id
  if redis.call('GET', running_key) ~= composite then
    -- Not (or no longer) in hand: settled already by a step whose reply was lost, or taken by a sweep.
    local status = redis.call('HGET', job_key, 'status')
    if settle_mode == 'released' or status == 'finished' then
      settled = 'done before'
    else
      settled = 'lost'
    end
  elseif settle_mode == 'released' then
    settled = 'ok'
  else
    local origin = redis.call('HGET', job_key, 'origin')
    local result_ttl = tonumber(redis.call('HGET', job_key, 'result_ttl') or default_result_ttl)
    if not origin or result_ttl == 0 or redis.call('EXISTS', job_key .. ':dependents') == 1 then
      return {'rq', false, false}
    end
    -- RQ's Job._handle_success: status, end time, a Result in the job's results stream, the finished registry
    redis.call('HSET', job_key, 'status', 'finished', 'ended_at', settle_ended_text,
               'last_heartbeat', settle_ended_text)
    local result = {'type', '1', 'worker_name', worker}
    if settle_value ~= '' then
      table.insert(result, 'return_value')
      table.insert(result, settle_value)
    end
    for _, field in ipairs({'execution_id', settle_execution, 'execution_started_at', settle_started,
                            'execution_ended_at', ARGV[10]}) do
      table.insert(result, field)
    end
    local results_key = results_prefix .. settle_id
    redis.call('XADD', results_key, 'MAXLEN', '~', '10', '*', unpack(result))
    if result_ttl == -1 then
      redis.call('PERSIST', results_key)
    else
      redis.call('EXPIRE', results_key, result_ttl)
    end
    local score = now + result_ttl
    if result_ttl == -1 then score = '+inf' elseif result_ttl < 0 then score = result_ttl end
    redis.call('ZADD', finished_prefix .. origin, score, settle_id)
    -- RQ's Job.cleanup(result_ttl): the job is kept as long as its result
    if result_ttl > 0 then
      redis.call('EXPIRE', job_key, result_ttl)
      redis.call('EXPIRE', job_key .. ':dependents', result_ttl)
      redis.call('EXPIRE', job_key .. ':dependencies', result_ttl)
    end
    -- RQ's cleanup_execution, and the worker's counters
    redis.call('DEL', execution_prefix .. composite)
    redis.call('ZREM', wip_prefix .. origin, composite)
    redis.call('ZREM', executions_prefix .. settle_id, settle_execution)
    redis.call('SREM', executions_key, composite)
    redis.call('HINCRBY', worker_key, 'successful_job_count', 1)
    redis.call('HINCRBYFLOAT', worker_key, 'total_working_time', settle_ended - tonumber(settle_started))
    settled = 'ok'
  end
  if settled == 'ok' then
    redis.call('DEL', running_key)
    if settle_event ~= '' then
      redis.call('PUBLISH', channel, settle_event)
    end
  end
end

-- 2. claim: when this worker holds no claims, take its fair share of the backlog (at most claim_max)
if claim_max > 0 and redis.call('LLEN', claimed_key) == 0 then
  local backlog = 0
  for i = 6, #KEYS do
    backlog = backlog + redis.call('LLEN', KEYS[i])
  end
  local workers = math.max(1, redis.call('SCARD', workers_key))
  local wanted = math.min(claim_max, math.ceil(backlog / workers))
  for i = 6, #KEYS do
    if wanted <= 0 then
      break
    end
    local ids = redis.call('LRANGE', KEYS[i], 0, wanted - 1)
    if #ids > 0 then
      redis.call('LTRIM', KEYS[i], #ids, -1)
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
  if redis.call('EXISTS', job_prefix .. job_id) == 1 then
    started_id, started_execution = job_id, execution_id
    started_hash = redis.call('HGETALL', job_prefix .. job_id)
  else
    redis.call('DEL', running_key)
  end
end
if start_next == '1' and not started_id then
  while true do
    local job_id = redis.call('LPOP', claimed_key)
    if not job_id then
      break
    end
    local job_key = job_prefix .. job_id
    local origin = redis.call('HGET', job_key, 'origin')
    if origin then  -- a job whose hash is gone is skipped, as RQ's dequeue skips it
      local composite = job_id .. ':' .. next_execution
      local timeout = tonumber(redis.call('HGET', job_key, 'timeout') or '') or tonumber(default_timeout)
      local ttl = timeout + heartbeat_grace  -- RQ's SimpleWorker.get_heartbeat_ttl
      if timeout == -1 then
        ttl = worker_ttl  -- for jobs that never time out
      end
      redis.call('SET', running_key, composite)
      redis.call('HSET', job_key, 'status', 'started', 'started_at', now_text, 'last_heartbeat', now_text,
                 'worker_name', worker)
      redis.call('PERSIST', job_key)
      local execution_key = execution_prefix .. composite
      redis.call('HSET', execution_key, 'id', next_execution, 'job_id', job_id, 'created_at', now_float,
                 'last_heartbeat', now_float, 'worker_name', worker)
      redis.call('EXPIRE', execution_key, ttl)
      redis.call('ZADD', executions_prefix .. job_id, now + ttl + heartbeat_grace, next_execution)
      redis.call('EXPIRE', executions_prefix .. job_id, ttl + heartbeat_grace)
      redis.call('ZADD', wip_prefix .. origin, now + ttl, composite)
      redis.call('SADD', executions_key, composite)
      redis.call('EXPIRE', executions_key, ttl)  -- created for ttl + 60, then RQ's heartbeat sets ttl
      started_id, started_execution = job_id, next_execution
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
# KEYS[1] the worker's job in hand (queuing:running:<worker>)   KEYS[2] the worker's RQ key
# ARGV[1] "<job id>:<execution id>"   ARGV[2] lease, seconds
# Returns 1 (still this worker's) or 0 (a sweep took it: the worker was presumed dead).
STILL_MINE = """
local running_key, worker_key = KEYS[1], KEYS[2]
local composite, lease = ARGV[1], ARGV[2]
if redis.call('GET', running_key) ~= composite or redis.call('EXISTS', worker_key) == 0 then
  return 0
end
redis.call('EXPIRE', worker_key, lease)
return 1
"""

# Give every job a worker has claimed but not started back to the front of its queue, in order.
# KEYS[1] the worker's claim list (queuing:claimed:<worker>)
# ARGV[1] RQ's job key prefix   ARGV[2] RQ's queue key prefix
# Returns how many were given back.
GIVE_BACK = (
    _GIVE_BACK_FUNCTION
    + """
local claimed_key = KEYS[1]
local job_prefix, queue_prefix = ARGV[1], ARGV[2]
return give_back(claimed_key, job_prefix, queue_prefix)
"""
)

# The recovery sweep: for every claimer whose worker key is gone (or says it died), give its claims
# back, free the scheduler locks it held on these queues (RQ's would block retries and delayed jobs
# for a minute), and take over its job in hand (the caller then fails or retries it through RQ).
# KEYS[1] the claimers set (queuing:claimers)   KEYS[2..] RQ's scheduler locks of these queues
# ARGV[1] RQ's worker key prefix   ARGV[2] claim list prefix   ARGV[3] job-in-hand prefix
# ARGV[4] RQ's job key prefix      ARGV[5] RQ's queue key prefix
# Returns a flat list: worker name, "<job id>:<execution id>" of its job in hand or '', …
RECOVER = (
    _GIVE_BACK_FUNCTION
    + """
local claimers_key = KEYS[1]
local worker_prefix, claimed_prefix, running_prefix, job_prefix, queue_prefix =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local recovered = {}
for _, name in ipairs(redis.call('SMEMBERS', claimers_key)) do
  local worker_key = worker_prefix .. name
  if redis.call('EXISTS', worker_key) == 0 or redis.call('HEXISTS', worker_key, 'death') == 1 then
    give_back(claimed_prefix .. name, job_prefix, queue_prefix)
    local running = redis.call('GET', running_prefix .. name) or ''
    redis.call('DEL', running_prefix .. name)
    redis.call('SREM', claimers_key, name)
    for i = 2, #KEYS do
      if redis.call('GET', KEYS[i]) == name then
        redis.call('DEL', KEYS[i])
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
# KEYS[1] the worker's RQ key   ARGV[1] lease, seconds
# Returns 1, or 0 when the key is gone.
KEEP_ALIVE = """
local worker_key, lease = KEYS[1], ARGV[1]
return redis.call('EXPIRE', worker_key, lease)
"""
