-- The pipeline view: one or two statuses, best score first, pages 1-4.
local statuses = { "new", "contacted", "qualified", "won", "new,qualified" }
function request()
  local path = string.format("/api/leads?status=%s&sort=-score,-created_at&per_page=25&page=%d",
    statuses[math.random(#statuses)], math.random(4))
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") })
end
