-- POST /api/leads: a lead, its audit row and its outbox event in one transaction.
local counter = 0
function request()
  counter = counter + 1
  local body = string.format(
    '{"first_name":"Load","last_name":"Test%d","email":"load%d-%d@example.com","company":"Bench Co","budget":25000,"tags":["bench"]}',
    counter, counter, math.random(1000000000))
  return wrk.format("POST", "/api/leads", {
    ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
    ["Content-Type"] = "application/json",
  }, body)
end
