counter = 0
request = function()
  counter = counter + 1
  local body = "value=" .. string.rep("x", 64)
  return wrk.format("PUT", "/v2/keys/bench/" .. tostring(math.random(1,1000000000)) .. "-" .. counter, {["Content-Type"]="application/x-www-form-urlencoded"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("P %.0f %.0f %.0f %.0f %d %d\n", latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, summary.requests, summary.duration))
end
