-- wrk script: count "Reservation confirmed" answers across all threads (to prove 0 oversold).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  confirmed = 0
end

function response(status, headers, body)
  if body and body:find("Reservation confirmed", 1, true) then
    confirmed = confirmed + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("confirmed")
  end
  io.write(string.format("CONFIRMED %d\n", total))
end
