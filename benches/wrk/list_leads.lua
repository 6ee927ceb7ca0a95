-- A filtered, searched, sorted list page, with varying search terms and pages.
local terms = { "ann", "son", "acme", "lee", "mar", "tech", "ali", "ber" }
local statuses = { "new", "contacted", "qualified", "new,qualified" }
function request()
  local path = string.format("/api/leads?status=%s&q=%s&sort=-score,created_at&per_page=25&page=%d",
    statuses[math.random(#statuses)], terms[math.random(#terms)], math.random(3))
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") })
end
