-- Picks a random request line per call from the file named after "--".
-- A line is "METHOD<TAB>PATH<TAB>BODY"; headers come from wrk's -H options.
local requests = {}

function init(args)
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    requests[#requests + 1] = { method = method, path = path, body = body }
  end
end

function request()
  local r = requests[math.random(#requests)]
  local body = nil
  if r.body ~= "" then body = r.body end
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
