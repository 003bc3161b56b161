// The operator's views that are not a customer's: GET /v1/admin/organizations (organizations
// rolled up), GET /v1/admin/live (ingest and check rates and p99s from the server's own
// counters), GET /v1/admin/audit (the audit log of operators' actions), and a customer's
// denied checks of the last hour, GET /v1/customers/{id}/denials (the dashboard's "429s in the
// last hour"). Each reads its query parameters strictly and asks the engine; the numbers are
// all the engine's, or the server's own counters.
#include <algorithm>

#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

// Refuses a parameter not in `known`; answers 400 and returns false.
bool known_params(Call& call, std::initializer_list<std::string_view> known) {
  for (const auto& [k, v] : call.request.query) {
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      answer(call, error_response(400, "VALIDATION_ERROR", "unknown query parameter '" + k + "'"));
      return false;
    }
  }
  return true;
}

// "0.005" for 5 ms: a bound in nanoseconds as milliseconds, exactly.
void write_ms(common::JsonWriter& w, std::uint64_t ns) {
  std::string text = std::to_string(ns / 1'000'000);
  if (const std::uint64_t frac = ns % 1'000'000; frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 6 - digits.size(), '0');
    while (digits.back() == '0') {
      digits.pop_back();
    }
    text += "." + digits;
  }
  w.raw(text);
}

void write_p99(common::JsonWriter& w, const P99& p) {
  w.key("observations").value(p.observations).key("p99_ms");
  if (p.observations == 0) {
    w.null();
  } else {
    write_ms(w, p.le_ns);
  }
  w.key("p99_beyond_last_bucket").value(p.beyond_last_bound);
}

}  // namespace

void admin_organizations(Context& ctx, Call& call) {
  if (!known_params(call, {"offset", "limit"})) {
    return;
  }
  std::uint32_t offset = 0;
  std::uint32_t limit = 50;
  if (!offset_param(call, "offset", &offset) || !uint_param(call, "limit", 100, &limit)) {
    return;
  }
  auto r = ctx.engine.organization_summaries(offset, limit);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("total")
      .value(r->total)
      .key("offset")
      .value(offset)
      .key("limit")
      .value(limit)
      .key("organizations")
      .begin_array();
  for (const OrganizationSummary& o : r->organizations) {
    w.begin_object()
        .key("organization")
        .value(o.organization)
        .key("customers")
        .value(o.customers)
        .key("suspended")
        .value(o.suspended)
        .key("max_limit_percent");
    write_decimal(w, o.max_percent);
    w.key("max_limit_customer");
    write_nullable(w, o.max_customer);
    w.key("max_limit_rule");
    write_nullable(w, o.max_rule);
    w.key("meters").begin_array();
    for (const UsageItem& m : o.meters) {
      w.begin_object()
          .key("meter")
          .value(m.meter)
          .key("aggregation")
          .value(to_string(m.aggregation))
          .key("unit")
          .value(m.unit)
          .key("value");
      write_decimal(w, m.value);
      w.end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void admin_live(Context& ctx, Call& call) {
  if (!known_params(call, {})) {
    return;
  }
  LiveSample now;
  now.at_us = ctx.engine.clock().now_us();
  now.events_accepted = ctx.engine.stats().events_accepted;
  now.ingest = ctx.api.request_metrics().latency(LatencyKind::kIngest);
  now.check = ctx.api.request_metrics().latency(LatencyKind::kCheck);
  const std::optional<LiveSample> base = ctx.api.live_rates().baseline(now);
  const double secs = base ? static_cast<double>(now.at_us - base->at_us) / 1e6 : 0;
  common::JsonWriter w;
  w.begin_object().key("at").value(time_text(now.at_us)).key("window_seconds");
  if (!base) {
    // The first sample: nothing to subtract yet. The totals are still shown.
    w.null().key("from").null();
  } else {
    w.value(secs).key("from").value(time_text(base->at_us));
  }
  auto rate = [&](std::uint64_t a, std::uint64_t b) {
    if (!base || secs <= 0) {
      w.null();
    } else {
      w.value(static_cast<double>(a >= b ? a - b : 0) / secs);
    }
  };
  const P99 ingest = base ? p99_between(now.ingest, base->ingest) : P99{};
  const P99 check = base ? p99_between(now.check, base->check) : P99{};
  w.key("ingest").begin_object().key("events_per_second");
  rate(now.events_accepted, base ? base->events_accepted : 0);
  w.key("requests_per_second");
  rate(now.ingest.count(), base ? base->ingest.count() : 0);
  write_p99(w, ingest);
  w.key("events_accepted_total").value(now.events_accepted);
  w.end_object().key("check").begin_object().key("requests_per_second");
  rate(now.check.count(), base ? base->check.count() : 0);
  write_p99(w, check);
  w.key("requests_total").value(now.check.count());
  w.end_object().end_object();
  answer(call, json_response(200, w.take()));
}

void admin_audit(Context& ctx, Call& call) {
  if (!known_params(call, {"limit"})) {
    return;
  }
  std::uint32_t limit = 100;
  if (!uint_param(call, "limit", 1000, &limit)) {
    return;
  }
  auto records = ctx.engine.audit_log(limit);
  if (!records) {
    answer(call, status_response(records.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("entries").begin_array();
  for (auto it = records->rbegin(); it != records->rend(); ++it) {
    w.raw(*it);  // each record is a JSON object written by the engine (src/engine/audit.h)
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void customer_denials(Context& ctx, Call& call) {
  if (!known_params(call, {})) {
    return;
  }
  auto r = ctx.engine.denials_last_hour(call.params.at(0));
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("customer")
      .value(r->customer)
      .key("from")
      .value(time_text(r->from_us))
      .key("to")
      .value(time_text(r->to_us))
      .key("denied_last_hour")
      .value(r->total)
      .key("per_minute")
      .begin_array();
  for (std::uint64_t n : r->per_minute) {
    w.value(n);
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
