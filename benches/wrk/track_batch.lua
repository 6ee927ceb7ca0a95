-- POST /t/events with batches of BATCH events spread over the seeded leads.
local ids = {}
local batch = tonumber(os.getenv("BATCH") or "100")
local types = { "page_view", "email_open", "email_click", "pricing_view", "calculator_use" }
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
  math.randomseed(os.time() + math.random(100000))
end
function request()
  local parts = {}
  for i = 1, batch do
    parts[i] = string.format('{"type":"%s","lead_id":"%s"}', types[math.random(#types)], ids[math.random(#ids)])
  end
  return wrk.format("POST", "/t/events", {
    ["Content-Type"] = "application/json",
    ["X-Write-Key"] = os.getenv("WRITE_KEY"),
  }, '{"events":[' .. table.concat(parts, ",") .. ']}')
end

-- RATE (events/s over all CONNECTIONS) paces each connection instead of sending flat out.
local rate = tonumber(os.getenv("RATE") or "0")
local connections = tonumber(os.getenv("CONNECTIONS") or "1")
if rate > 0 then
  -- Exponential gaps with the connection's mean share, not a fixed one: with a fixed gap every
  -- connection, started at the same moment, posted in step, and 16 batches landed together every
  -- 320 ms (1,600 events at once at 5,000/s), which measured the burst, not the rate.
  local mean = 1000 * connections * batch / rate
  function delay()
    return -mean * math.log(1 - math.random())
  end
end
