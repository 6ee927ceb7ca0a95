-- A frontend's mix: 60% GET /api/leads/{id}, 30% a list page, 10% POST /api/leads.
-- CRUD_RATE (requests/s over all threads) paces the requests.
local ids = {}
local counter = 0
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
end
function request()
  local auth = { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") }
  local pick = math.random(10)
  if pick <= 6 then
    return wrk.format("GET", "/api/leads/" .. ids[math.random(#ids)], auth)
  elseif pick <= 9 then
    return wrk.format("GET", "/api/leads?sort=-score&per_page=50", auth)
  end
  counter = counter + 1
  auth["Content-Type"] = "application/json"
  local body = string.format('{"first_name":"Soak","last_name":"Lead%d","email":"soak%d-%d@example.com"}',
    counter, counter, math.random(1000000000))
  return wrk.format("POST", "/api/leads", auth, body)
end

-- CRUD_RATE paces the requests; loading pace.lua also seeds each thread's random generator.
delay = dofile("benches/wrk/pace.lua")(tonumber(os.getenv("CRUD_RATE") or "0"))
