-- POST /t/events with batches of BATCH events spread over the seeded leads.
local ids = {}
local batch = tonumber(os.getenv("BATCH") or "100")
local types = { "page_view", "email_open", "email_click", "pricing_view", "calculator_use" }
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
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

-- RATE (events/s over all threads) paces the requests instead of sending flat out. Loading pace.lua
-- also seeds each thread's random generator, which the picks above use.
delay = dofile("benches/wrk/pace.lua")(tonumber(os.getenv("RATE") or "0") / batch)
