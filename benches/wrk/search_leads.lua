-- A search (trigram-indexed LIKE on name, e-mail and company) with a status filter.
local terms = { "ann", "johnson", "acme 1", "lee", "marsh", "tech mart", "lead42", "wonka" }
local statuses = { "new", "contacted", "qualified" }
function request()
  local path = string.format("/api/leads?q=%s&status=%s&sort=-score&per_page=25",
    terms[math.random(#terms)]:gsub(" ", "%%20"), statuses[math.random(#statuses)])
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") })
end
