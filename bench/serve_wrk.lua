-- wrk script for bench/serve_bench.py: POST unique readings, count the 200s per thread.
-- Env: SF_KEY (x-api-key), SF_PATH (/records or /record), SF_BATCH (readings per request),
--      SF_BASE_MS (first timestamp, epoch ms).
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  key = os.getenv("SF_KEY")
  path = os.getenv("SF_PATH")
  batch = tonumber(os.getenv("SF_BATCH"))
  base = tonumber(os.getenv("SF_BASE_MS"))
  n = 0
  ok = 0
  bad = 0
  headers = {["x-api-key"] = key, ["Content-Type"] = "application/json"}
end

local function one(ts)
  return string.format(
    '{"greenhouse_id":"bench-%d","device_id":"d%d","timestamp":%d,' ..
    '"temperature":%.1f,"humidity":55.0,"co2":450,"error_code":0}',
    id, ts % 10, ts, 15 + (ts % 100) / 10)
end

function request()
  local parts = {}
  for i = 1, batch do
    n = n + 1
    parts[i] = one(base + n)
  end
  local body
  if path == "/records" then
    body = '{"records":[' .. table.concat(parts, ",") .. ']}'
  else
    body = parts[1]
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
  end
  io.write(string.format(
    'SF_RESULT {"ok": %d, "bad": %d, "requests": %d, "duration_us": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "errors_timeout": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d}\n',
    total_ok, total_bad, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status))
end
