-- wrk script: replay pre-rendered HTTP requests from a file, in order, cycling.
--
-- bench/run.py writes BENCH_REQUESTS as records "<byte length>\n<raw request>".
-- Each wrk thread takes every BENCH_THREADS-th record. With BENCH_STOP_AFTER=N a
-- thread stops once it has N responses for its share (a fixed-count run, e.g.
-- every webhook delivery once) and touches BENCH_DONE_FILE, on which bench/load.py
-- interrupts wrk (wrk's main thread would otherwise sleep out the -d duration);
-- without it wrk's -d duration ends the run.
-- At the end one line "BENCH_JSON {...}" carries the figures and status counts.

local path = os.getenv("BENCH_REQUESTS")
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local done_file = os.getenv("BENCH_DONE_FILE")

local threads = {}
local requests = {}
local next_index = 0
local responses = 0
local target = 0
counts = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(path, "rb"))
  local record = 0
  while true do
    local length = file:read("*l")
    if not length then break end
    local raw = file:read(tonumber(length))
    if record % thread_count == thread_number then
      requests[#requests + 1] = raw
    end
    record = record + 1
  end
  file:close()
  if stop_after > 0 then
    target = math.ceil(stop_after / thread_count)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
  responses = responses + 1
  if target > 0 and responses == target then
    local marker = assert(io.open(done_file .. "." .. thread_number, "w"))
    marker:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%s":%d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    table.concat(parts, ",")))
end
