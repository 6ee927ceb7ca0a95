-- GET /t/pixel.gif: one event per request, as e-mail opens and page beacons send them.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
  math.randomseed(os.time() + math.random(100000))
end
function request()
  return wrk.format("GET", string.format("/t/pixel.gif?k=%s&lead=%s&e=page_view", os.getenv("WRITE_KEY"), ids[math.random(#ids)]))
end

-- RATE (events/s over all CONNECTIONS) paces each connection instead of sending flat out.
local rate = tonumber(os.getenv("RATE") or "0")
local connections = tonumber(os.getenv("CONNECTIONS") or "1")
if rate > 0 then
  -- wrk truncates the delay to whole milliseconds, and a connection's share can be less than one
  -- (0.8 ms at 5,000/s on 4 connections): rounded at random, the delays average the share. The
  -- delay comes after each answer, so the rate offered stays under RATE by the answers' latency.
  local share = 1000 * connections / rate
  function delay()
    local whole = math.floor(share)
    return whole + ((math.random() < share - whole) and 1 or 0)
  end
end
