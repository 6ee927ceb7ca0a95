-- GET /api/leads/{id} for random ids of the seeded leads.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("LEAD_IDS")) do ids[#ids + 1] = line end
  math.randomseed(os.time() + math.random(1000))
end
function request()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/api/leads/" .. id, { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") })
end
