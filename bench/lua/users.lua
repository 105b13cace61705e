-- wrk: GET /v1/users/{id}/recommendations rotating over the ids in USERS_FILE
-- (one per line; the model's user_ids.txt). Ids are sent as is: numeric or URL-safe.
local ids = {}
local next_id = 1

function init(args)
  local path = os.getenv("USERS_FILE") or "user_ids.txt"
  for line in io.lines(path) do
    if line ~= "" then ids[#ids + 1] = line end
  end
  -- Threads start at different offsets so they do not ask for the same users in step.
  next_id = (math.random(#ids))
end

function request()
  local id = ids[next_id]
  next_id = next_id % #ids + 1
  return wrk.format("GET", "/v1/users/" .. id .. "/recommendations?n=10")
end
