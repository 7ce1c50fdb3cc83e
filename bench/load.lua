-- Picks a random request line per call from the file named after "--".
-- A line is "METHOD<TAB>PATH<TAB>BODY"; headers come from wrk's -H options.
-- NEWDEVICE in a body becomes a fingerprint no earlier call, round or run has sent, so an
-- activation of a new device stays one however long the scenario runs.
local requests = {}
local threads = 0
local sent = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    requests[#requests + 1] = { method = method, path = path, body = body }
  end
  device_prefix = string.format("new-%d-%d-", os.time(), thread_number)
end

function request()
  local r = requests[math.random(#requests)]
  local body = nil
  if r.body ~= "" then body = r.body end
  if body and body:find("NEWDEVICE", 1, true) then
    sent = sent + 1
    body = body:gsub("NEWDEVICE", device_prefix .. sent)
  end
  return wrk.format(r.method, r.path, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
