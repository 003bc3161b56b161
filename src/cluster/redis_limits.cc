// Limit checks in a Redis Cluster through one function library (see redis_limits.h).
#include "cluster/redis_limits.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "common/assert.h"
#include "redis/slot.h"

namespace tally::cluster {

namespace {

// The function library. Every number is an integer below 2^53, so Lua's doubles hold it
// exactly; numbers written back to Redis are formatted with '%.0f' (tostring would round to 14
// digits). A window counter is a Redis integer; a bucket a hash of l (level, units), f (the
// remainder: the true fill is l - f/period, 0 <= f < period) and t (last consumption, us).
//
// tally_check KEYS: one per limit. ARGV: now_us, amount units, consume (1/0), expiry margin
// ms, then per limit: kind ('w' window, 'r' rate), limit units, hard (1/0), unlimited (1/0),
// and for a window its expiry (unix ms, 0 = none; given to a counter this call makes, which
// keeps it), for a rate its period (us).
// Returns {allowed, consumed, then per limit: fits, used or level (before consuming), f}.
//
// tally_seed KEYS: the window counter. ARGV: units, expiry (unix ms, 0 = none). Sets it only
// when absent; returns 1 when set, 0 when it was there.
//
// tally_release KEYS: the window counter. ARGV: units. Subtracts, never below 0, keeping the
// expiry; returns the counter after, or -1 when there is none.
//
// tally_add KEYS: window counters. ARGV: units for each key. Adds to each counter that exists
// (usage ingested: a counter that does not exist yet is seeded from PostgreSQL, which holds
// it), never past COUNTER_MAX, keeping the expiry; returns how many counters it added to.
//
// tally_adhoc KEYS: an ad-hoc limit's window counter (adhoc_key). ARGV: limit, cost (whole
// numbers up to 1e15, not units), expiry (unix ms). As core::window_decide: the cost fits when
// used <= limit and cost <= limit - used, and is then added. Returns {fits, used before}. Given
// back with tally_release.
constexpr std::string_view kLibrarySource = R"lua(#!lua name=tally_limits

local COUNTER_MAX = 4503599627370496 -- 2^52

local function fmt(x)
  return string.format('%.0f', x)
end

local TWO53 = 9007199254740992 -- 2^53

-- q, r with q * c + r = y and 0 <= r < c, exactly, for integers 0 <= y < 2^53 and 0 < c.
-- y / c is rounded to the nearest double, so q may come out one too small, never too large
-- (q * c <= y * (1 + 2^-53) < y + 1): the loops put it right, every value below 2^53.
local function divmod(y, c)
  local q = math.floor(y / c)
  local r = y - q * c
  while r < 0 do q = q - 1; r = r + c end
  while r >= c do q = q + 1; r = r - c end
  return q, r
end

-- q, r with q * c + r = a * b + f and 0 <= r < c, exactly, for integers 0 <= a <= 2^50,
-- 0 <= b < c < 2^32 and 0 <= f < c. When a * b + f < 2^53 the double holds it exactly (a
-- product or sum at or past 2^53 rounds to at least 2^53, so the test itself is exact) and one
-- divmod answers. Otherwise a = qa * c + ra and ra * b is taken in two base-2^16 digits of b:
-- every intermediate value is an integer below 2^53 (ra < 2^32, a digit < 2^16, q <= a).
local function muldiv(a, b, c, f)
  local x = a * b + f
  if x < TWO53 then return divmod(x, c) end
  local qa, ra = divmod(a, c)
  local bh = math.floor(b / 65536)
  local bl = b - bh * 65536
  local q1, r1 = divmod(ra * bh, c)
  local q2, r = divmod(r1 * 65536 + ra * bl + f, c)
  return qa * b + q1 * 65536 + q2, r
end

-- The bucket (l, f) last consumed at t, drained at limit per p microseconds until now:
-- the true fill l - f/p minus limit * (now - t) / p, exactly, as (l', f'); (0, 0) when empty.
-- A bucket is never drained backwards (now <= t: unchanged).
local function drain(l, f, t, now, limit, p)
  if l == 0 or limit == 0 or now <= t then return l, f end
  local e = now - t
  local k, r = divmod(e, p)
  if k > math.floor(l / limit) then return 0, 0 end -- k whole periods drain more than l
  local d, f2 = muldiv(limit, r, p, f)
  d = d + k * limit
  if d >= l then return 0, 0 end
  return l - d, f2
end

local function check(keys, args)
  local n = #keys
  if #args ~= 5 + 5 * n then
    return redis.error_reply('ERR tally_check: expected ' .. (5 + 5 * n) .. ' arguments')
  end
  local now = tonumber(args[1])
  local amount = tonumber(args[2])
  local consume = args[3] == '1' and amount > 0
  local margin = tonumber(args[4])
  local strict = args[5] == '1'
  local allowed = 1
  local st = {}
  for i = 1, n do
    local a = 5 + 5 * (i - 1)
    local s = { kind = args[a + 1], limit = tonumber(args[a + 2]), x = tonumber(args[a + 5]) }
    if s.kind == 'w' then
      local v = redis.call('GET', keys[i])
      if not v and strict then
        return redis.error_reply('TALLY_UNSEEDED ' .. keys[i])
      end
      s.v = tonumber(v or '0')
      s.existed = v and true or false
      s.f = 0
    else
      local h = redis.call('HMGET', keys[i], 'l', 'f', 't')
      local t = tonumber(h[3] or '0')
      s.v, s.f = drain(tonumber(h[1] or '0'), tonumber(h[2] or '0'), t, now, s.limit, s.x)
      s.t = math.max(t, now)
    end
    s.fits = args[a + 4] == '1' or s.v + amount <= s.limit
    if not s.fits and args[a + 3] == '1' then allowed = 0 end
    st[i] = s
  end
  local consumed = 0
  if allowed == 1 and consume then
    for i = 1, n do
      if st[i].v + amount > COUNTER_MAX then
        return redis.error_reply('TALLY_RANGE ' .. keys[i] .. ' would exceed 2^52 units')
      end
    end
    local done = {}
    for i = 1, n do
      local k, s = keys[i], st[i]
      if not done[k] then
        done[k] = true
        if s.kind == 'w' then
          redis.call('INCRBY', k, args[2])
          -- A window's expiry never changes: a counter that existed got it when it was made
          -- (here, or by tally_seed, both at the window's end plus the margin).
          if s.x > 0 and not s.existed then redis.call('PEXPIREAT', k, fmt(s.x)) end
        else
          local l = s.v + amount
          redis.call('HSET', k, 'l', fmt(l), 'f', fmt(s.f), 't', fmt(s.t))
          -- Kept until it has drained, plus the margin; a bucket of limit 0 never drains.
          local periods = COUNTER_MAX
          if s.limit > 0 then periods = math.floor(l / s.limit) + 1 end
          local ttl = math.min(periods * math.ceil(s.x / 1000), 3153600000000) -- 100 years
          redis.call('PEXPIREAT', k, fmt(math.floor(s.t / 1000) + ttl + margin))
        end
      end
    end
    consumed = 1
  end
  local out = { allowed, consumed }
  for i = 1, n do
    out[#out + 1] = st[i].fits and 1 or 0
    out[#out + 1] = st[i].v
    out[#out + 1] = st[i].f
  end
  return out
end

local function seed(keys, args)
  local r
  if tonumber(args[2]) > 0 then
    r = redis.call('SET', keys[1], args[1], 'NX', 'PXAT', args[2])
  else
    r = redis.call('SET', keys[1], args[1], 'NX')
  end
  if r then return 1 end
  return 0
end

local function release(keys, args)
  local v = redis.call('GET', keys[1])
  if not v then return -1 end
  local left = tonumber(v) - tonumber(args[1])
  if left < 0 then left = 0 end
  redis.call('SET', keys[1], fmt(left), 'KEEPTTL')
  return left
end

local function add(keys, args)
  local added = 0
  for i = 1, #keys do
    local v = redis.call('GET', keys[i])
    if v then
      local after = tonumber(v) + tonumber(args[i])
      if after > COUNTER_MAX then after = COUNTER_MAX end
      redis.call('SET', keys[i], fmt(after), 'KEEPTTL')
      added = added + 1
    end
  end
  return added
end

-- Gives a consumption of `amount` back to the distinct counters `keys` (args[1 + i]: 'w' for a
-- window, 'r' for a bucket), never below 0: a bucket's fraction and instant are left as they
-- are, so it holds what it held before the consumption, drained since. A counter that is gone
-- is left gone. Returns how many counters it gave back to.
local function take_back(keys, args)
  local amount = tonumber(args[1])
  local given = 0
  for i = 1, #keys do
    if args[1 + i] == 'w' then
      local v = redis.call('GET', keys[i])
      if v then
        local left = tonumber(v) - amount
        if left < 0 then left = 0 end
        redis.call('SET', keys[i], fmt(left), 'KEEPTTL')
        given = given + 1
      end
    else
      local l = redis.call('HGET', keys[i], 'l')
      if l then
        local left = tonumber(l) - amount
        if left < 0 then left = 0 end
        redis.call('HSET', keys[i], 'l', fmt(left))
        given = given + 1
      end
    end
  end
  return given
end

local function adhoc(keys, args)
  local limit = tonumber(args[1])
  local cost = tonumber(args[2])
  local used = tonumber(redis.call('GET', keys[1]) or '0')
  if used <= limit and cost <= limit - used then
    if cost > 0 then redis.call('SET', keys[1], fmt(used + cost), 'PXAT', args[3]) end
    return { 1, used }
  end
  return { 0, used }
end

redis.register_function('tally_check', check)
redis.register_function('tally_adhoc', adhoc)
redis.register_function('tally_take_back', take_back)
redis.register_function('tally_seed', seed)
redis.register_function('tally_release', release)
redis.register_function('tally_add', add)
)lua";

// Decimal units (1e-9) per counter unit (1e-6).
constexpr std::int64_t kDecimalPerUnit = core::Decimal::kScale / kUnitsPerOne;

std::string limit_name(const core::LimitRule& rule) {
  return "the limit of " + rule.meter + " per " + std::string(core::period_name(rule.period));
}

// A window's expiry in unix milliseconds: its end plus the margin; 0 when it never ends.
std::int64_t window_expiry_ms(const core::Span& span, std::int64_t margin_ms) {
  if (span.end == std::numeric_limits<core::TimeUs>::max()) {
    return 0;
  }
  return (span.end + 999) / 1000 + margin_ms;
}

Status reply_error(const redis::Reply& r, std::string_view call) {
  if (r.str.rfind("TALLY_UNSEEDED", 0) == 0) {
    return Status(StatusCode::kUnavailable,
                  std::string(call) + ": the counter " + r.str.substr(15) +
                      " does not exist (Redis lost it, or it was never seeded); nothing was "
                      "consumed",
                  std::string(kUnseededDetails));
  }
  if (r.str.rfind("TALLY_RANGE", 0) == 0) {
    return Status::unprocessable(std::string(call) + ": " + r.str.substr(12) +
                                 " (nothing was consumed)");
  }
  // Refusals before the function runs: the cluster or the node is not ready for writes now.
  for (std::string_view prefix :
       {"CLUSTERDOWN", "TRYAGAIN", "LOADING", "READONLY", "MASTERDOWN", "BUSY"}) {
    if (r.str.rfind(prefix, 0) == 0) {
      return Status::unavailable(std::string(call) + " did not run: " + r.str);
    }
  }
  if (r.str.rfind("OOM", 0) == 0) {
    return Status::resource_exhausted(std::string(call) + " did not run: " + r.str);
  }
  return Status::internal(std::string(call) + " answered an error: " + r.str);
}

// The integer an FCALL of `call` answered: its failure, or its error reply as reply_error says.
Result<std::int64_t> integer_reply(const Result<redis::Reply>& r, std::string_view call) {
  if (!r) {
    return r.error();
  }
  if (r->is_error()) {
    return reply_error(*r, call);
  }
  if (!r->is_integer()) {
    return Status::internal(std::string(call) + " answered a value that is not an integer");
  }
  return r->integer;
}

// The window of a calendar rule containing `at_us`, for seed and release.
Result<core::Span> window_of(const core::LimitRule& rule, const core::PeriodContext& ctx,
                             core::TimeUs at_us) {
  if (core::period_is_rate(rule.period)) {
    return Status::invalid_argument(limit_name(rule) + " is a rate: it has no window counter");
  }
  core::Span span;
  if (!core::period_span(rule, at_us, ctx, &span)) {
    return Status::invalid_argument(limit_name(rule) + ": the trial is not running at that time");
  }
  return span;
}

}  // namespace

bool may_have_run(const Status& s) {
  return s.code() == StatusCode::kUnavailable &&
         s.message().find("may have run") != std::string::npos;
}

bool is_unseeded(const Status& status) {
  return status.code() == StatusCode::kUnavailable && status.details_json() == kUnseededDetails;
}

Result<std::int64_t> to_units(core::Decimal d, std::string_view what, std::int64_t max_units) {
  if (d.units < 0) {
    return Status::invalid_argument(std::string(what) + " must not be negative, got " + d.text());
  }
  if (d.units % kDecimalPerUnit != 0) {
    return Status::invalid_argument(std::string(what) + " " + d.text() +
                                    " is finer than 0.000001, the resolution of the cluster's "
                                    "limit counters");
  }
  if (d.units / kDecimalPerUnit > max_units) {
    const core::Decimal max{static_cast<__int128>(max_units) * kDecimalPerUnit};
    return Status::invalid_argument(std::string(what) + " " + d.text() + " is above " + max.text() +
                                    ", the largest value the cluster's limit counters hold "
                                    "exactly");
  }
  return static_cast<std::int64_t>(d.units / kDecimalPerUnit);
}

namespace {

// `text` as the whole of a hash tag: as it is, or '~' and its bytes in hex when it holds a
// brace or starts with '~' (see the header's file comment).
void append_tag(std::string& out, std::string_view text) {
  const bool plain =
      text.find_first_of("{}") == std::string_view::npos && (text.empty() || text.front() != '~');
  if (plain) {
    out += text;
    return;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  out += '~';
  for (unsigned char c : text) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
}

}  // namespace

std::string customer_key_prefix(std::string_view customer) {
  std::string out = "{tally:c:";
  append_tag(out, customer);
  out += "}:";
  return out;
}

std::string adhoc_key(std::string_view ns, std::string_view identifier, std::int64_t duration_ms,
                      core::TimeUs window_start_us) {
  // A newline cannot be in either (ad-hoc texts hold no control characters), so the pair is
  // unambiguous.
  std::string pair;
  pair.reserve(ns.size() + identifier.size() + 1);
  pair += ns;
  pair += '\n';
  pair += identifier;
  std::string key = "{tally:a:";
  append_tag(key, pair);
  key += "}:";
  key += std::to_string(duration_ms);
  key += ':';
  key += std::to_string(window_start_us);
  return key;
}

std::string window_key(std::string_view customer, const core::LimitRule& rule,
                       core::TimeUs window_start_us) {
  std::string key = customer_key_prefix(customer);
  key += "w:";
  key += rule.meter;
  key += ':';
  key += core::period_name(rule.period);
  key += ':';
  key += std::to_string(window_start_us);
  return key;
}

std::string rate_key(std::string_view customer, const core::LimitRule& rule) {
  TALLY_DASSERT(core::period_is_rate(rule.period), "a rate key is for a rate rule");
  std::string key = customer_key_prefix(customer);
  key += "r:";
  key += rule.meter;
  key += ':';
  key += core::period_name(rule.period);
  key += ':';
  key += rule.amount.text();
  return key;
}

RedisLimits::RedisLimits(redis::ClusterClient& client, RedisLimitsOptions options)
    : client_(client), options_(options) {}

Status RedisLimits::load() {
  Result<redis::Reply> r = client_.command_on_all_primaries(
      {"FUNCTION", "LOAD", "REPLACE", std::string(kLibrarySource)});
  if (!r) {
    return r.error();
  }
  if (r->is_error()) {
    return Status::internal("FUNCTION LOAD of " + std::string(kLimitsLibrary) +
                            " was refused: " + r->str);
  }
  ++stats_.loads;
  return Status();
}

Result<redis::Reply> RedisLimits::fcall(const std::vector<std::string>& argv) {
  Result<redis::Reply> r = client_.command(argv);
  if (r && r->is_error() && r->str.find("Function not found") != std::string::npos) {
    // A new or flushed cluster, or a node that never had the library: nothing ran.
    ++stats_.reloads;
    TALLY_TRY(load());
    r = client_.command(argv);
  }
  return r;
}

Result<RedisCheck> RedisLimits::check(std::string_view customer,
                                      const std::vector<core::LimitRule>& rules,
                                      const core::PeriodContext& ctx, core::Decimal amount,
                                      core::TimeUs now_us, bool consume) {
  Result<std::int64_t> amount_units = to_units(amount, "the amount");
  if (!amount_units) {
    return amount_units.error();
  }
  const std::size_t n = rules.size();
  std::vector<core::LimitInput> in(n);
  std::vector<core::RateState> rates(n);
  std::vector<int> place(n, -1);  // the limit's index among the function's keys
  std::vector<core::TimeUs> periods(n, 0);
  std::vector<std::string> keys;
  std::vector<std::string> args = {std::to_string(now_us), std::to_string(*amount_units), "",
                                   std::to_string(options_.expiry_margin_ms),
                                   options_.require_seeded_windows ? "1" : "0"};
  bool denied_here = false;  // a hard trial limit outside its window
  for (std::size_t i = 0; i < n; ++i) {
    const core::LimitRule& rule = rules[i];
    in[i].rule = &rule;
    std::int64_t limit_units = 0;
    if (!rule.unlimited) {
      Result<std::int64_t> u = to_units(rule.amount, limit_name(rule));
      if (!u) {
        return u.error();
      }
      limit_units = *u;
    }
    if (core::period_is_rate(rule.period)) {
      if (rule.unlimited) {
        continue;  // nothing to count (core reports it as unlimited)
      }
      periods[i] = core::rate_period_us(rule.period);
      keys.push_back(rate_key(customer, rule));
      args.insert(args.end(), {"r", std::to_string(limit_units), rule.hard ? "1" : "0", "0",
                               std::to_string(periods[i])});
    } else {
      core::Span span;
      const bool inside = core::period_span(rule, now_us, ctx, &span);
      in[i].window_start_us = span.start;
      in[i].reset_us = span.end == std::numeric_limits<core::TimeUs>::max() ? 0 : span.end;
      if (!inside) {
        in[i].outside = true;
        denied_here = denied_here || (rule.hard && !rule.unlimited);
        continue;
      }
      keys.push_back(window_key(customer, rule, span.start));
      args.insert(args.end(), {"w", std::to_string(limit_units), rule.hard ? "1" : "0",
                               rule.unlimited ? "1" : "0",
                               std::to_string(window_expiry_ms(span, options_.expiry_margin_ms))});
    }
    place[i] = static_cast<int>(keys.size()) - 1;
  }
  const bool consume_asked = consume && !denied_here && *amount_units > 0;
  args[2] = consume_asked ? "1" : "0";

  bool allowed_there = true;
  bool consumed = false;
  std::vector<bool> fits_there(keys.size(), true);
  if (!keys.empty()) {
    std::vector<std::string> argv = {"FCALL", "tally_check", std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    Result<redis::Reply> r = fcall(argv);
    if (!r) {
      return r.error();
    }
    if (r->is_error()) {
      return reply_error(*r, "tally_check");
    }
    if (!r->is_array() || r->elements.size() != 2 + 3 * keys.size()) {
      return Status::internal("tally_check answered a reply of an unexpected shape");
    }
    for (const redis::Reply& e : r->elements) {
      if (!e.is_integer()) {
        return Status::internal("tally_check answered a value that is not an integer");
      }
    }
    ++stats_.checks;
    allowed_there = r->elements[0].integer == 1;
    consumed = r->elements[1].integer == 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (place[i] < 0) {
        continue;
      }
      const auto k = static_cast<std::size_t>(place[i]);
      fits_there[k] = r->elements[2 + 3 * k].integer == 1;
      const std::int64_t v = r->elements[3 + 3 * k].integer;
      const std::int64_t f = r->elements[4 + 3 * k].integer;
      if (periods[i] == 0) {
        in[i].used = core::Decimal{static_cast<__int128>(v) * kDecimalPerUnit};
      } else {
        // The true fill v - f/period rounded up to 1e-9: never below it.
        const __int128 level = static_cast<__int128>(v) * kDecimalPerUnit -
                               static_cast<__int128>(f) * kDecimalPerUnit / periods[i];
        rates[i] = core::RateState{core::Decimal{level}, now_us};
        in[i].rate = &rates[i];
      }
    }
  } else {
    consumed = consume_asked;  // no counter to consume on
  }

  RedisCheck out;
  out.limits.resize(n);
  out.verdict = core::evaluate_limits(in.data(), n, amount, now_us, out.limits.data());
  // core decides on the same integers (rounded up to 1e-9 for buckets, see the header), so
  // the two always agree; the function's decision is the one that was applied.
  for (std::size_t i = 0; i < n; ++i) {
    if (place[i] >= 0) {
      const bool there = fits_there[static_cast<std::size_t>(place[i])];
      TALLY_BUG(out.limits[i].fits == there, "core and tally_check agree on a limit");
      out.limits[i].fits = there;
    }
  }
  const bool allowed = allowed_there && !denied_here;
  TALLY_BUG(out.verdict.allowed == allowed, "core and tally_check agree on a check");
  out.verdict.allowed = allowed;
  out.consumed = consumed;
  if (consumed) {
    out.after.resize(n);
    out.top_after = core::outcomes_after(in.data(), n, amount, now_us, out.after.data());
    if (options_.wait_replicas > 0 && !keys.empty()) {
      TALLY_TRY(wait_for_replicas(keys.front(), now_us));
    }
  }
  return out;
}

Status RedisLimits::wait_for_replicas(const std::string& key, core::TimeUs now_us) {
  const std::string primary = client_.primary_for_slot(redis::key_slot(key));
  ReplicaCount& count = replicas_[primary];
  if (count.asked_at_us == 0 || now_us < count.asked_at_us ||
      now_us - count.asked_at_us >= options_.replica_count_ttl_us) {
    Result<redis::Reply> info = client_.command_at(primary, {"INFO", "replication"});
    if (!info || !info->is_text()) {
      return Status::unavailable("the check consumed on " + primary +
                                 ", whose replicas could not be counted (" +
                                 (info ? info->str : info.error().message()) +
                                 "): it may be lost in a failover (may have run)");
    }
    const std::string_view field = "connected_slaves:";
    const std::size_t at = info->str.find(field);
    count.replicas =
        at == std::string::npos ? 0 : std::atoll(info->str.c_str() + at + field.size());
    count.asked_at_us = now_us;
  }
  const std::int64_t need = std::min<std::int64_t>(options_.wait_replicas, count.replicas);
  if (need <= 0) {
    return Status();
  }
  ++stats_.waits;
  Result<redis::Reply> r = client_.command_for_key(
      key, {"WAIT", std::to_string(need), std::to_string(options_.wait_timeout_ms)});
  if (!r) {
    return Status::unavailable("the check consumed on " + primary +
                               ", and WAIT for its replicas failed (" + r.error().message() +
                               "): it may be lost in a failover (may have run)");
  }
  if (!r->is_integer() || r->integer < need) {
    ++stats_.waits_short;
    count.asked_at_us = 0;  // ask again next time: a replica may be gone
    return Status::unavailable("the check consumed on " + primary + ", but " +
                               (r->is_integer() ? std::to_string(r->integer) : r->str) + " of " +
                               std::to_string(need) + " replicas acknowledged it within " +
                               std::to_string(options_.wait_timeout_ms) +
                               " ms: it may be lost in a failover (may have run)");
  }
  return Status();
}

Result<bool> RedisLimits::seed(std::string_view customer, const core::LimitRule& rule,
                               const core::PeriodContext& ctx, core::Decimal used,
                               core::TimeUs at_us) {
  Result<std::int64_t> units = to_units(used, "the seeded usage", kCounterUnitsMax);
  if (!units) {
    return units.error();
  }
  Result<core::Span> span = window_of(rule, ctx, at_us);
  if (!span) {
    return span.error();
  }
  Result<std::int64_t> r =
      integer_reply(fcall({"FCALL", "tally_seed", "1", window_key(customer, rule, span->start),
                           std::to_string(*units),
                           std::to_string(window_expiry_ms(*span, options_.expiry_margin_ms))}),
                    "tally_seed");
  if (!r) {
    return r.error();
  }
  return *r == 1;
}

Status RedisLimits::restart(std::string_view customer, const core::LimitRule& rule,
                            const core::PeriodContext& ctx, core::TimeUs at_us) {
  Result<core::Span> span = window_of(rule, ctx, at_us);
  if (!span) {
    return span.error();
  }
  std::vector<std::string> argv = {"SET", window_key(customer, rule, span->start), "0"};
  if (const std::int64_t expiry = window_expiry_ms(*span, options_.expiry_margin_ms); expiry > 0) {
    argv.insert(argv.end(), {"PXAT", std::to_string(expiry)});
  }
  Result<redis::Reply> r = client_.command(argv);
  if (!r) {
    return r.error();
  }
  if (r->is_error()) {
    return reply_error(*r, "SET");
  }
  return Status();
}

Status RedisLimits::set_rate(std::string_view customer, const core::LimitRule& rule,
                             core::Decimal level, core::TimeUs now_us) {
  TALLY_DASSERT(core::period_is_rate(rule.period) && !rule.unlimited, "a counted rate rule");
  Result<std::int64_t> limit = to_units(rule.amount, limit_name(rule));
  if (!limit) {
    return limit.error();
  }
  Result<std::int64_t> units = to_units(level, "the rebuilt level", kCounterUnitsMax);
  if (!units) {
    return units.error();
  }
  const std::int64_t l = std::min(*units, *limit);
  // Kept until it has drained, plus the margin, as tally_check keeps a bucket it consumed on.
  constexpr std::int64_t kKeepMaxMs = 3'153'600'000'000;  // 100 years
  const std::int64_t period_ms = (core::rate_period_us(rule.period) + 999) / 1000;
  const std::int64_t keep_ms =
      *limit > 0 ? std::min(kKeepMaxMs, (l / *limit + 1) * period_ms) : kKeepMaxMs;
  const std::string key = rate_key(customer, rule);
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{"HSET", key, "l", std::to_string(l), "f", "0", "t",
                                 std::to_string(now_us)},
        std::vector<std::string>{
            "PEXPIREAT", key,
            std::to_string(now_us / 1000 + keep_ms + options_.expiry_margin_ms)}}) {
    Result<redis::Reply> r = client_.command(argv);
    if (!r) {
      return r.error();
    }
    if (r->is_error()) {
      return reply_error(*r, argv[0]);
    }
  }
  return Status();
}

Result<std::int64_t> RedisLimits::release(std::string_view customer, const core::LimitRule& rule,
                                          const core::PeriodContext& ctx, core::Decimal amount,
                                          core::TimeUs at_us) {
  Result<std::int64_t> units = to_units(amount, "the released amount");
  if (!units) {
    return units.error();
  }
  Result<core::Span> span = window_of(rule, ctx, at_us);
  if (!span) {
    return span.error();
  }
  return integer_reply(fcall({"FCALL", "tally_release", "1",
                              window_key(customer, rule, span->start), std::to_string(*units)}),
                       "tally_release");
}

Result<std::int64_t> RedisLimits::take_back(std::string_view customer,
                                            const std::vector<core::LimitRule>& rules,
                                            const core::PeriodContext& ctx, core::Decimal amount,
                                            core::TimeUs at_us) {
  Result<std::int64_t> units = to_units(amount, "the amount taken back");
  if (!units) {
    return units.error();
  }
  std::vector<std::string> keys;
  std::vector<std::string> kinds;
  for (const core::LimitRule& rule : rules) {
    std::string key;
    if (core::period_is_rate(rule.period)) {
      if (rule.unlimited) {
        continue;  // not counted (as check())
      }
      key = rate_key(customer, rule);
    } else {
      core::Span span;
      if (!core::period_span(rule, at_us, ctx, &span)) {
        continue;  // outside its window: nothing was consumed on it
      }
      key = window_key(customer, rule, span.start);
    }
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      kinds.emplace_back(core::period_is_rate(rule.period) ? "r" : "w");
      keys.push_back(std::move(key));
    }
  }
  if (keys.empty()) {
    return 0;
  }
  std::vector<std::string> argv = {"FCALL", "tally_take_back", std::to_string(keys.size())};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.push_back(std::to_string(*units));
  argv.insert(argv.end(), kinds.begin(), kinds.end());
  return integer_reply(fcall(argv), "tally_take_back");
}

Result<AdHocDecision> RedisLimits::adhoc(const std::string& key, std::int64_t limit,
                                         std::int64_t cost, std::int64_t expiry_ms,
                                         core::TimeUs now_us) {
  if (limit < 0 || limit > kAdHocValueMax || cost < 0 || cost > kAdHocValueMax) {
    return Status::invalid_argument("an ad-hoc limit and cost must be 0 to 1e15");
  }
  Result<redis::Reply> r = fcall({"FCALL", "tally_adhoc", "1", key, std::to_string(limit),
                                  std::to_string(cost), std::to_string(expiry_ms)});
  if (!r) {
    return r.error();
  }
  if (r->is_error()) {
    return reply_error(*r, "tally_adhoc");
  }
  if (!r->is_array() || r->elements.size() != 2 || !r->elements[0].is_integer() ||
      !r->elements[1].is_integer()) {
    return Status::internal("tally_adhoc answered a reply of an unexpected shape");
  }
  ++stats_.checks;
  AdHocDecision out;
  out.fits = r->elements[0].integer == 1;
  out.used_before = r->elements[1].integer;
  if (out.fits && cost > 0 && options_.wait_replicas > 0) {
    TALLY_TRY(wait_for_replicas(key, now_us));
  }
  return out;
}

Result<std::int64_t> RedisLimits::adhoc_take_back(const std::string& key, std::int64_t cost) {
  if (cost < 0 || cost > kAdHocValueMax) {
    return Status::invalid_argument("an ad-hoc cost must be 0 to 1e15");
  }
  return integer_reply(fcall({"FCALL", "tally_release", "1", key, std::to_string(cost)}),
                       "tally_release");
}

Result<std::int64_t> RedisLimits::add(std::string_view customer,
                                      const std::vector<WindowAdd>& adds) {
  if (adds.empty()) {
    return 0;
  }
  std::vector<std::string> argv = {"FCALL", "tally_add", std::to_string(adds.size())};
  std::vector<std::string> units;
  for (const WindowAdd& a : adds) {
    Result<std::int64_t> u = to_units(a.amount, "the ingested amount", kCounterUnitsMax);
    if (!u) {
      return u.error();
    }
    Result<core::Span> span = window_of(*a.rule, *a.ctx, a.at_us);
    if (!span) {
      return span.error();
    }
    argv.push_back(window_key(customer, *a.rule, span->start));
    units.push_back(std::to_string(*u));
  }
  argv.insert(argv.end(), units.begin(), units.end());
  return integer_reply(fcall(argv), "tally_add");
}

}  // namespace tally::cluster
