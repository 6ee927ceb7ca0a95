-- Pacing for the load scripts: requests on a schedule of RATE a second over all of wrk's threads
-- (WRK_THREADS, default 1), with exponential gaps, as independent senders arrive. With fixed gaps
-- the connections, started together, sent in step: 16 batches landed at once every 320 ms (1,600
-- events at 5,000/s), which measured the burst, not the rate.
--
-- The schedule is the thread's, in wall-clock time, and a connection that comes back from an
-- answer takes the next free slot. A fixed pause after each answer offered less than RATE by the
-- answers' latency: on a slower machine 16 connections pacing pixels towards 5,200/s sent 3,626/s,
-- and the latency reported was not at the rate asked for. Slots that passed while every connection
-- was waiting are not made up, so a server that falls behind is not then sent a burst.
--
--   local pace = dofile("benches/wrk/pace.lua")
--   delay = pace(events_per_second / events_per_request)   -- nil when not paced
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } pace_timespec;
int clock_gettime(int clock, pace_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("pace_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
-- Each wrk thread loads the scripts into a Lua state of its own, whose generator starts from the
-- same state: seeded from the clock's nanoseconds, the threads' gaps (and picks of leads) differ
-- instead of running in step.
ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
math.randomseed(tonumber(ts.tv_nsec))

return function(requests_per_second)
  if not requests_per_second or requests_per_second <= 0 then
    return nil
  end
  local mean = 1000 * tonumber(os.getenv("WRK_THREADS") or "1") / requests_per_second
  local next_slot = 0
  return function()
    local now = now_ms()
    local slot = math.max(next_slot, now)
    next_slot = slot + -mean * math.log(1 - math.random())
    -- wrk waits whole milliseconds; the schedule itself stays exact, so the error does not add up.
    return slot - now
  end
end
