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

# Shared by every step: keys someone else gave the wrong type are noted in `problems` (key, found,
# wanted: the caller says one line for each) and left alone, never written over.
_PROBLEMS = """
local problems = {}
local function wrong_type(key, wanted)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' or found == wanted then
    return false
  end
  table.insert(problems, key)
  table.insert(problems, found)
  table.insert(problems, wanted)
  return true
end
"""

# Shared by GIVE_BACK and RECOVER: put a claim list back at the front of each job's queue, in order.
# Everything is read and checked first, then written (Lua has no rollback): a claimed id whose job key
# is not a hash is dropped (as RQ's dequeue drops an id whose job is gone); one whose queue has the
# wrong type stays claimed. Returns how many were given back, and how many stay claimed.
_GIVE_BACK_FUNCTION = (
    _PROBLEMS
    + """
local function give_back(claimed_key, job_prefix, queue_prefix)
  if redis.call('TYPE', claimed_key)['ok'] ~= 'list' then
    return 0, 0
  end
  local ids = redis.call('LRANGE', claimed_key, 0, -1)
  local destinations, kept, queue_fine = {}, {}, {}
  for i = 1, #ids do
    local job_key = job_prefix .. ids[i]
    if not wrong_type(job_key, 'hash') then
      local origin = redis.call('HGET', job_key, 'origin')
      if origin then
        local queue_key = queue_prefix .. origin
        if queue_fine[queue_key] == nil then
          queue_fine[queue_key] = not wrong_type(queue_key, 'list')
        end
        if queue_fine[queue_key] then
          destinations[i] = queue_key
        else
          table.insert(kept, ids[i])
        end
      end
    end
  end
  local given = 0
  for i = #ids, 1, -1 do
    if destinations[i] then
      redis.call('LPUSH', destinations[i], ids[i])
      given = given + 1
    end
  end
  redis.call('DEL', claimed_key)
  if #kept > 0 then
    redis.call('RPUSH', claimed_key, unpack(kept))
  end
  return given, #kept
end
"""
)

# Settle the job this worker just ran, start the next claimed one (claiming more when it holds none).
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
# ARGV[26] RQ's worker TTL, for jobs that never time out   ARGV[27] the most seconds a TTL or timeout may be
# Returns {settled, job id, job hash (flat), execution id, problems, left} for the job to run now (job id false: none),
# where settled is ''     nothing to settle
#                  'ok'   settled (or found settled: a step whose reply was lost had done it)
#                  'lost' the job was no longer this worker's (its lease lapsed and a sweep took it): nothing written
#                  'rq'   left to RQ's own code (the job has dependents, or keeps no result): nothing done at all
# or {'no worker'} when this worker's key is gone (presumed dead): nothing was done at all.
# The job hash is the one the step leaves (status started, its start, heartbeat and worker already in it).
# problems: flat (key, type found, type wanted) of keys left alone: a queue (not served until fixed),
# the workers set (the fair share then counts one worker), a job key (that job skipped).
# left: jobs still queued after this step claimed (0 when it claimed nothing): idle workers may take them.
# Every step can be repeated when its reply is lost: a job a lost step started is returned again.
# Whatever someone else wrote, it reads and checks before it writes: a bad job or key never errors half-way.
# Cheap on purpose (it runs once per job): each key is read once (a job's hash with one HMGET or HGETALL,
# whose error says it is not a hash: TYPE only then, to name it), the job in hand is written once (not
# deleted and set again), the worker's counters go in its one HSET, and a claim is looked for only when
# the claim list comes up empty. RQ's own writes (fields, TTLs) are all there, as tests/test_processor.py
# checks key for key; only EXPIREs of keys that cannot exist are left out (a job's dependents key, which
# the step just found absent, and its dependencies key when it names no dependency).
ADVANCE = (
    _PROBLEMS
    + """
local worker_key, executions_key, running_key, claimed_key, workers_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, lease, now_text, now_float = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local settle_mode, settle_id, settle_execution = ARGV[5], ARGV[6], ARGV[7]
local settle_started, settle_ended_text, settle_ended = ARGV[8], ARGV[9], tonumber(ARGV[10])
local settle_value, settle_event, channel = ARGV[11], ARGV[12], ARGV[13]
local claim_max, start_next, next_execution, default_timeout = tonumber(ARGV[14]), ARGV[15], ARGV[16], ARGV[17]
local job_prefix, wip_prefix, finished_prefix = ARGV[18], ARGV[19], ARGV[20]
local execution_prefix, executions_prefix, results_prefix = ARGV[21], ARGV[22], ARGV[23]
local default_result_ttl, heartbeat_grace, worker_ttl = tonumber(ARGV[24]), tonumber(ARGV[25]), tonumber(ARGV[26])
local most_seconds = tonumber(ARGV[27])
local now = math.floor(tonumber(now_float))
-- A number of seconds RQ and EXPIRE both take (a whole number from -1 up), else `fallback`.
local function seconds(value, fallback)
  local n = tonumber(value)
  if n and n == math.floor(n) and n >= -1 and n <= most_seconds then
    return n
  end
  return fallback
end
-- A job's hash read with `command` (HMGET or HGETALL), or false (named in problems) when it is no hash.
local function read_job(job_key, command, ...)
  local reply = redis.pcall(command, job_key, ...)
  if reply['err'] then
    wrong_type(job_key, 'hash')
    return false
  end
  return reply
end
if redis.call('TYPE', worker_key)['ok'] ~= 'hash' then
  return {'no worker'}
end
local worker_fields = redis.call('HMGET', worker_key, 'death', 'successful_job_count', 'total_working_time')
if worker_fields[1] then
  return {'no worker'}
end
local worker_update = {'state', 'idle', 'last_heartbeat', now_text}

-- 1. settle
local settled = ''
local in_hand, in_hand_read, in_hand_stale = false, false, false  -- the job-in-hand key: value, read?, to delete?
if settle_mode ~= '' then
  local composite = settle_id .. ':' .. settle_execution
  local job_key = job_prefix .. settle_id
  local job = read_job(job_key, 'HMGET', 'origin', 'result_ttl', 'status', 'dependency_ids', 'dependency_id')
  in_hand, in_hand_read = redis.call('GET', running_key), true
  if in_hand ~= composite then
    -- Not (or no longer) in hand: settled already by a step whose reply was lost, or taken by a sweep.
    if settle_mode == 'released' or (job and job[3] == 'finished') then
      settled = 'done before'
    else
      settled = 'lost'
    end
  elseif settle_mode == 'released' then
    settled = 'ok'
  elseif not job then
    settled = 'lost'  -- someone replaced the job's hash while it ran: nothing of it to settle
  else
    local origin = job[1]
    local result_ttl = seconds(job[2] or default_result_ttl, default_result_ttl)
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
    -- RQ's Job.cleanup(result_ttl): the job is kept as long as its result (its dependents key, just
    -- found absent, has nothing to expire; its dependencies key exists only when it names some)
    if result_ttl > 0 then
      redis.call('EXPIRE', job_key, result_ttl)
      if (job[4] and job[4] ~= '' and job[4] ~= '[]') or (job[5] and job[5] ~= '') then
        redis.call('EXPIRE', job_key .. ':dependencies', result_ttl)
      end
    end
    -- RQ's cleanup_execution, and the worker's counters (written with its state, below)
    redis.call('DEL', execution_prefix .. composite)
    redis.call('ZREM', wip_prefix .. origin, composite)
    redis.call('ZREM', executions_prefix .. settle_id, settle_execution)
    redis.call('SREM', executions_key, composite)
    local count = tonumber(worker_fields[2]) or 0
    local working = (tonumber(worker_fields[3]) or 0) + settle_ended - tonumber(settle_started)
    table.insert(worker_update, 'successful_job_count')
    table.insert(worker_update, string.format('%d', count + 1))
    table.insert(worker_update, 'total_working_time')
    table.insert(worker_update, string.format('%.6f', working))
    settled = 'ok'
  end
  if settled == 'ok' then
    in_hand, in_hand_stale = false, true  -- deleted below, unless the next job's start replaces it
    if settle_event ~= '' then
      redis.call('PUBLISH', channel, settle_event)
    end
  end
end

-- 2. claim: this worker's fair share of the backlog (at most claim_max), when it holds no claims
local left = 0
local function claim()
  local queues, backlog = {}, 0
  for i = 6, #KEYS do
    if not wrong_type(KEYS[i], 'list') then
      table.insert(queues, KEYS[i])
      backlog = backlog + redis.call('LLEN', KEYS[i])
    end
  end
  local workers = 1
  if not wrong_type(workers_key, 'set') then
    workers = math.max(1, redis.call('SCARD', workers_key))
  end
  local wanted = math.min(claim_max, math.ceil(backlog / workers))
  for _, queue_key in ipairs(queues) do
    if wanted <= 0 then
      break
    end
    local ids = redis.call('LRANGE', queue_key, 0, wanted - 1)
    if #ids > 0 then
      redis.call('LTRIM', queue_key, #ids, -1)
      redis.call('RPUSH', claimed_key, unpack(ids))
      wanted = wanted - #ids
      backlog = backlog - #ids
    end
  end
  left = backlog
end
if claim_max > 0 and start_next ~= '1' and redis.call('LLEN', claimed_key) == 0 then
  claim()  -- (when a job is to start, the claim list is looked at by taking from it, below)
end

-- 3. start the next claimed job: RQ's prepare_execution and prepare_job_execution
local started_id, started_hash, started_execution = false, false, false
if not in_hand_read then
  in_hand = redis.call('GET', running_key)
end
if in_hand then
  -- A job a step started whose reply never reached us (Redis went away): that job runs now.
  local job_id, execution_id = string.match(in_hand, '^(.*):([^:]*)$')
  local hash = job_id and redis.pcall('HGETALL', job_prefix .. job_id)
  if hash and not hash['err'] and #hash > 0 then
    started_id, started_execution, started_hash = job_id, execution_id, hash
  else
    in_hand_stale = true
  end
end
if start_next == '1' and not started_id then
  local claimed = claim_max <= 0  -- claim at most once, when the claim list comes up empty
  while true do
    local job_id = redis.call('LPOP', claimed_key)
    if not job_id and not claimed then
      claimed = true
      claim()
      job_id = redis.call('LPOP', claimed_key)
    end
    if not job_id then
      break
    end
    local job_key = job_prefix .. job_id
    -- A job whose hash is gone (or is not a hash) is skipped, as RQ's dequeue skips it.
    local hash = read_job(job_key, 'HGETALL')
    local origin, timeout_field = false, false
    if hash then
      for i = 1, #hash, 2 do
        local name = hash[i]
        if name == 'origin' then
          origin = hash[i + 1]
        elseif name == 'timeout' then
          timeout_field = hash[i + 1]
        end
      end
    end
    if origin then
      local composite = job_id .. ':' .. next_execution
      -- A timeout that is not a whole number of seconds: the TTLs assume the default, and the
      -- processor fails the job with that reason before running anything of it.
      local timeout = seconds(timeout_field, tonumber(default_timeout))
      local ttl = timeout + heartbeat_grace  -- RQ's SimpleWorker.get_heartbeat_ttl
      if timeout == -1 then
        ttl = worker_ttl  -- for jobs that never time out
      end
      redis.call('SET', running_key, composite)
      in_hand_stale = false
      local written = {'status', 'started', 'started_at', now_text, 'last_heartbeat', now_text, 'worker_name', worker}
      redis.call('HSET', job_key, unpack(written))
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
      -- The hash as this step leaves it: what was read, with what was just written.
      for w = 1, #written, 2 do
        local found = false
        for i = 1, #hash, 2 do
          if hash[i] == written[w] then
            hash[i + 1], found = written[w + 1], true
            break
          end
        end
        if not found then
          table.insert(hash, written[w])
          table.insert(hash, written[w + 1])
        end
      end
      started_id, started_execution, started_hash = job_id, next_execution, hash
      break
    end
  end
end

-- 4. the worker's state and its lease
if started_id then
  worker_update[2] = 'busy'
end
redis.call('HSET', worker_key, unpack(worker_update))
redis.call('EXPIRE', worker_key, lease)
if in_hand_stale then
  redis.call('DEL', running_key)
end
if settled == 'done before' then
  settled = 'ok'
end
return {settled, started_id, started_hash, started_execution, problems, left}
"""
)

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
# Returns {how many were given back, problems (flat: key, type found, type wanted)}.
GIVE_BACK = (
    _GIVE_BACK_FUNCTION
    + """
local claimed_key = KEYS[1]
local job_prefix, queue_prefix = ARGV[1], ARGV[2]
local given = give_back(claimed_key, job_prefix, queue_prefix)
return {given, problems}
"""
)

# The recovery sweep: for every claimer whose worker key is gone (or says it died), give its claims
# back, free the scheduler locks it held on these queues (RQ's would block retries and delayed jobs
# for a minute), and take over its job in hand (the caller then fails or retries it through RQ).
# KEYS[1] the claimers set (queuing:claimers)   KEYS[2..] RQ's scheduler locks of these queues
# ARGV[1] RQ's worker key prefix   ARGV[2] claim list prefix   ARGV[3] job-in-hand prefix
# ARGV[4] RQ's job key prefix      ARGV[5] RQ's queue key prefix
# ARGV[6] the sweeping worker's name: never swept by itself (its key gone, it registers again and
#         settles what it holds: it is alive, whatever its key says)
# Returns {flat list: worker name, "<job id>:<execution id>" of its job in hand or '', …; problems}.
# A dead worker with claims that cannot go back yet (their queue has the wrong type) stays a claimer.
RECOVER = (
    _GIVE_BACK_FUNCTION
    + """
local claimers_key = KEYS[1]
local worker_prefix, claimed_prefix, running_prefix, job_prefix, queue_prefix =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sweeper = ARGV[6]
local recovered = {}
if wrong_type(claimers_key, 'set') then
  return {recovered, problems}
end
for _, name in ipairs(redis.call('SMEMBERS', claimers_key)) do
  local worker_key = worker_prefix .. name
  if name ~= sweeper and (redis.call('TYPE', worker_key)['ok'] ~= 'hash'
                          or redis.call('HEXISTS', worker_key, 'death') == 1) then
    local _, kept = give_back(claimed_prefix .. name, job_prefix, queue_prefix)
    local running_key = running_prefix .. name
    local running = ''
    if not wrong_type(running_key, 'string') then
      running = redis.call('GET', running_key) or ''
      redis.call('DEL', running_key)
    end
    if kept == 0 then
      redis.call('SREM', claimers_key, name)
    end
    for i = 2, #KEYS do
      if redis.call('GET', KEYS[i]) == name then
        redis.call('DEL', KEYS[i])
      end
    end
    table.insert(recovered, name)
    table.insert(recovered, running)
  end
end
return {recovered, problems}
"""
)
