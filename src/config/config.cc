// Config's own helpers: limit rules, route matching and lookups by key. The table of options
// is options.cc, the TOML loader loader.cc.
#include "config/config.h"

#include <string>
#include <string_view>

#include "config/options.h"

namespace tally::config {

Result<core::LimitRule> make_limit(std::string meter, core::PeriodKind period, std::int64_t days,
                                   std::string_view amount, bool hard) {
  core::LimitRule rule;
  rule.meter = std::move(meter);
  rule.period = period;
  if (rule.period == core::PeriodKind::kTrial) {
    if (days <= 0) {
      return Status::invalid_argument("a trial limit needs 'days' (the trial's length)");
    }
    if (days > kTrialDaysMax) {
      return Status::invalid_argument("a trial's 'days' must be 1.." +
                                      std::to_string(kTrialDaysMax));
    }
    rule.days = days;
  } else if (days != 0) {
    return Status::invalid_argument("'days' applies only to period \"trial\"");
  }
  if (amount == "unlimited" || amount == "-1") {
    rule.unlimited = true;
  } else {
    Result<core::Decimal> d = core::parse_decimal(amount);
    if (!d || d->units < 0) {
      return Status::invalid_argument("amount '" + std::string(amount) +
                                      "' is not a number >= 0, -1 or \"unlimited\"");
    }
    rule.amount = *d;
  }
  rule.hard = hard;
  return rule;
}

Result<core::LimitRule> make_limit(std::string meter, std::string_view period, std::int64_t days,
                                   std::string_view amount, bool hard) {
  Result<core::PeriodKind> p = core::parse_period(period);
  if (!p) {
    return p.error();
  }
  return make_limit(std::move(meter), *p, days, amount, hard);
}

bool route_matches(const RouteRule& rule, std::string_view method, std::string_view path) {
  if (!rule.method.empty() && !equals_ignore_case(rule.method, method)) {
    return false;
  }
  const std::string_view pattern = rule.path;
  if (pattern.find('*') == std::string_view::npos) {
    if (path.substr(0, pattern.size()) != pattern) {
      return false;
    }
    return path.size() == pattern.size() || pattern.back() == '/' || path[pattern.size()] == '/' ||
           path[pattern.size()] == '?';
  }
  // Glob: '*' matches any run of characters (iterative with backtracking to the last star).
  std::size_t p = 0, s = 0, star = std::string_view::npos, mark = 0;
  const std::string_view subject = path.substr(0, path.find('?'));
  while (s < subject.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = s;
    } else if (p < pattern.size() && pattern[p] == subject[s]) {
      ++p;
      ++s;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      s = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

const core::Plan* Config::find_plan(std::string_view key) const {
  for (const auto& p : plans) {
    if (p.key == key) {
      return &p;
    }
  }
  return nullptr;
}

const core::MeterSpec* Config::find_meter(std::string_view key) const {
  for (const auto& m : meters) {
    if (m.key == key) {
      return &m;
    }
  }
  return nullptr;
}

}  // namespace tally::config
