-- GET /t/pixel.gif: one event per request, as e-mail opens and page beacons send them.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
end
function request()
  return wrk.format("GET", string.format("/t/pixel.gif?k=%s&lead=%s&e=page_view", os.getenv("WRITE_KEY"), ids[math.random(#ids)]))
end

-- RATE (events/s over all threads) paces the requests instead of sending flat out. Loading pace.lua
-- also seeds each thread's random generator, which the picks above use.
delay = dofile("benches/wrk/pace.lua")(tonumber(os.getenv("RATE") or "0"))
