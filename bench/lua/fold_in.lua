-- wrk: POST /v1/recommendations (fold-in) with one of a few fixed histories
-- read from HISTORIES_FILE (one JSON body per line).
local bodies = {}
local next_body = 1

function init(args)
  local path = os.getenv("HISTORIES_FILE") or "histories.jsonl"
  for line in io.lines(path) do
    if line ~= "" then bodies[#bodies + 1] = line end
  end
  next_body = math.random(#bodies)
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/v1/recommendations", {["Content-Type"] = "application/json"}, body)
end
