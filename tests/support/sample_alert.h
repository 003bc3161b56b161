// The alert the unit tests of alert deliveries share (src/notify/email_test.cc,
// src/webhook/sender_test.cc): a warning at 80 % of 100 api_calls a month for customer acme.
#pragma once

#include <tally/types.h>

#include "core/time.h"

namespace tally::testing {

inline Alert sample_limit_alert() {
  Alert a;
  a.id = "alrt_7";
  a.customer = "acme";
  a.kind = AlertKind::kLimit;
  a.level = AlertLevel::kWarning;
  a.meter = "api_calls";
  a.period = LimitPeriod::kMonth;
  a.limit = "api_calls per month";
  a.threshold_percent = 80;
  a.limit_amount = "100";
  a.used = "80";
  a.percent = "80.00";
  a.window_start_us = *core::parse_rfc3339("2025-03-01T00:00:00Z");
  a.window_end_us = *core::parse_rfc3339("2025-04-01T00:00:00Z");
  a.created_at_us = *core::parse_rfc3339("2025-03-04T10:05:09Z");
  return a;
}

}  // namespace tally::testing
