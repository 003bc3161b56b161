// The JSON encodings of Tally's public values (include/tally/types.h): one writer per type, each
// writing exactly the bytes the HTTP API has always answered. The HTTP handlers, the CLI and the
// webhook sender share them; this file is its own library (tally_json) so that what only needs
// the encodings does not link the HTTP server.
#include "http/json_codec.h"

#include "core/decimal.h"
#include "core/time.h"

namespace tally::http {

// Private to the codec: a limit's number or "unlimited", and a reset time or null.
namespace {

// A limit's number, or "unlimited" when it has none.
void write_limit_number(common::JsonWriter& w, const LimitState& s, const Decimal& d) {
  if (s.unlimited) {
    w.value("unlimited");
  } else {
    write_decimal(w, d);
  }
}

void write_reset(common::JsonWriter& w, TimeUs reset_us) {
  if (reset_us == 0) {
    w.null();
  } else {
    w.value(time_text(reset_us));
  }
}

// The error title of a denial.
const char* denial_title(Denial reason) {
  switch (reason) {
    case Denial::kLimitExceeded:
      return "Rate Limit Exceeded";
    case Denial::kTrialExpired:
      return "Trial Expired";
    case Denial::kFeatureNotEnabled:
      return "Feature Not Available";
    case Denial::kCustomerSuspended:
      return "Customer Suspended";
    case Denial::kInsufficientCredits:
      return "Insufficient Credits";
    case Denial::kNone:
    case Denial::kBatchDenied:
      break;
  }
  return "Denied";
}

}  // namespace

std::string time_text(TimeUs t) {
  return core::format_rfc3339(t);
}

void write_customer(common::JsonWriter& w, const Customer& c) {
  w.begin_object()
      .key("id")
      .value(c.id)
      .key("name")
      .value(c.name)
      .key("email")
      .value(c.email)
      .key("timezone")
      .value(c.timezone)
      .key("status")
      .value(to_string(c.status))
      .key("metadata")
      .raw(c.metadata_json.empty() ? "{}" : c.metadata_json)
      .key("created_at")
      .value(time_text(c.created_at_us))
      .key("updated_at")
      .value(time_text(c.updated_at_us))
      .key("plan");
  if (c.plan.empty()) {
    w.null();
  } else {
    w.value(c.plan);
  }
  w.key("trial_started_at")
      .value(time_text(c.trial_started_at_us != 0 ? c.trial_started_at_us : c.created_at_us));
  w.key("billing_anchor")
      .value(time_text(c.billing_anchor_us != 0 ? c.billing_anchor_us : c.created_at_us));
  w.key("organization");
  if (c.organization.empty()) {
    w.null();
  } else {
    w.value(c.organization);
  }
  w.key("overrides").begin_array();
  for (const auto& o : c.overrides) {
    w.begin_object().key("meter").value(o.meter).key("period").value(to_string(o.period));
    if (o.days != 0) {
      w.key("days").value(o.days);
    }
    w.key("amount");
    if (o.amount == "unlimited" || o.amount == "-1") {
      w.value("unlimited");
    } else {
      w.raw(o.amount);
    }
    w.key("hard").value(o.hard).end_object();
  }
  w.end_array().end_object();
}

void write_scopes(common::JsonWriter& w, Scope scopes) {
  w.begin_array();
  if (has(scopes, Scope::kAdmin))
    w.value("admin");
  if (has(scopes, Scope::kIngest))
    w.value("ingest");
  if (has(scopes, Scope::kCheck))
    w.value("check");
  if (has(scopes, Scope::kRead))
    w.value("read");
  w.end_array();
}

void write_key(common::JsonWriter& w, const ApiKeyInfo& k) {
  w.begin_object().key("id").value(k.id).key("prefix").value(k.prefix).key("customer");
  if (k.customer.empty()) {
    w.null();
  } else {
    w.value(k.customer);
  }
  w.key("name").value(k.name).key("scopes");
  write_scopes(w, k.scopes);
  w.key("created_at").value(time_text(k.created_at_us));
  w.key("revoked_at");
  k.revoked_at_us != 0 ? w.value(time_text(k.revoked_at_us)) : w.null();
  w.key("last_used_at");
  k.last_used_at_us != 0 ? w.value(time_text(k.last_used_at_us)) : w.null();
  w.key("total_requests").value(k.total_requests).end_object();
}

void write_decimal(common::JsonWriter& w, const std::string& decimal) {
  if (decimal.empty()) {
    w.null();
  } else {
    w.raw(decimal);
  }
}

void write_decimal(common::JsonWriter& w, const Decimal& d) {
  std::string text;  // a short number stays in the string's own buffer
  core::append_decimal(text, d);
  w.raw(text);
}

std::string query_result_json(const QueryResult& r) {
  common::JsonWriter w;
  w.begin_object()
      .key("meter")
      .value(r.meter)
      .key("measure")
      .value(to_string(r.measure))
      .key("from")
      .value(time_text(r.from_us))
      .key("to")
      .value(time_text(r.to_us))
      .key("window");
  r.window ? w.value(to_string(*r.window)) : w.null();
  w.key("timezone").value(r.timezone).key("data").begin_array();
  for (const auto& row : r.rows) {
    w.begin_object()
        .key("window_start")
        .value(time_text(row.window_start_us))
        .key("window_end")
        .value(time_text(row.window_end_us))
        .key("customer")
        .value(row.customer)
        .key("group")
        .begin_object();
    for (const auto& [k, v] : row.group) {
      w.key(k).value(v);
    }
    w.end_object().key("value");
    write_decimal(w, row.value);
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

std::string customer_usage_json(const CustomerUsage& r) {
  common::JsonWriter w;
  w.begin_object()
      .key("customer")
      .value(r.customer)
      .key("from")
      .value(time_text(r.from_us))
      .key("to")
      .value(time_text(r.to_us))
      .key("timezone")
      .value(r.timezone)
      .key("meters")
      .begin_array();
  for (const auto& m : r.meters) {
    w.begin_object()
        .key("meter")
        .value(m.meter)
        .key("aggregation")
        .value(to_string(m.aggregation))
        .key("unit")
        .value(m.unit)
        .key("value");
    write_decimal(w, m.value);
    if (!m.cost.empty()) {
      w.key("cost");
      write_decimal(w, m.cost);
      w.key("credits");
      write_decimal(w, m.credits);
    }
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

std::string archive_result_json(const ArchiveResult& r) {
  common::JsonWriter w;
  w.begin_object().key("events").value(r.events).key("cutoff").value(time_text(r.cutoff_us));
  if (r.events == 0) {
    w.key("file").null().key("manifest").null();
  } else {
    w.key("archive_id")
        .value(r.archive_id)
        .key("file")
        .value(r.file)
        .key("manifest")
        .value(r.manifest)
        .key("bytes")
        .value(r.bytes)
        .key("sha256")
        .value(r.sha256)
        .key("from")
        .value(time_text(r.from_us))
        .key("to")
        .value(time_text(r.to_us))
        .key("first_seq")
        .value(r.first_seq)
        .key("last_seq")
        .value(r.last_seq)
        .key("customers")
        .value(static_cast<std::uint64_t>(r.customers))
        .key("blocks_deleted")
        .value(r.blocks_deleted)
        .key("blocks_rewritten")
        .value(r.blocks_rewritten);
  }
  w.key("more").value(r.more).end_object();
  return w.take();
}

std::string restore_result_json(const RestoreResult& r) {
  common::JsonWriter w;
  w.begin_object()
      .key("archive_id")
      .value(r.archive_id)
      .key("file")
      .value(r.file)
      .key("events")
      .value(r.events)
      .key("already_present")
      .value(r.already_present)
      .end_object();
  return w.take();
}

void write_alert(common::JsonWriter& w, const Alert& a, bool deliveries) {
  w.begin_object().key("id").value(a.id).key("customer").value(a.customer);
  w.key("kind").value(to_string(a.kind)).key("level").value(to_string(a.level));
  if (a.kind == AlertKind::kLimit) {
    w.key("meter")
        .value(a.meter)
        .key("period")
        .value(to_string(a.period))
        .key("limit")
        .value(a.limit);
    w.key("threshold_percent").value(a.threshold_percent).key("limit_amount");
    write_decimal(w, a.limit_amount);
    w.key("used");
    write_decimal(w, a.used);
    w.key("percent");
    write_decimal(w, a.percent);
    w.key("window_start").value(time_text(a.window_start_us)).key("window_end");
    a.window_end_us == 0 ? w.null() : w.value(time_text(a.window_end_us));
  } else {
    w.key("threshold_amount");
    write_decimal(w, a.threshold_amount);
    w.key("balance");
    write_decimal(w, a.balance);
  }
  w.key("created_at").value(time_text(a.created_at_us));
  if (deliveries) {
    w.key("status").value(to_string(a.status)).key("sent").value(a.sent);
    w.key("delivery_attempts").value(static_cast<std::uint64_t>(a.delivery_attempts));
    w.key("deliveries").begin_array();
    for (const auto& d : a.deliveries) {
      const bool email = d.url.rfind("mailto:", 0) == 0;
      w.begin_object().key("id").value(d.id).key("channel").value(email ? "email" : "webhook");
      w.key("event").value(d.event).key("url").value(d.url);
      w.key("status")
          .value(to_string(d.status))
          .key("attempts")
          .value(static_cast<std::uint64_t>(d.attempts));
      w.key("last_attempt_at");
      d.last_attempt_at_us == 0 ? w.null() : w.value(time_text(d.last_attempt_at_us));
      w.key("last_status_code");
      d.last_status_code == 0 ? w.null() : w.value(static_cast<std::int64_t>(d.last_status_code));
      w.key("last_error");
      d.last_error.empty() ? w.null() : w.value(d.last_error);
      w.key("next_attempt_at");
      d.status != DeliveryStatus::kPending ? w.null() : w.value(time_text(d.next_attempt_at_us));
      w.key("delivered_at");
      d.delivered_at_us == 0 ? w.null() : w.value(time_text(d.delivered_at_us));
      w.end_object();
    }
    w.end_array();
  }
  w.end_object();
}

std::string prices_json(const std::vector<PriceInfo>& prices) {
  common::JsonWriter w;
  w.begin_object().key("prices").begin_array();
  for (const auto& p : prices) {
    w.begin_object().key("id").value(p.id).key("meter").value(p.meter).key("match").begin_object();
    for (const auto& [k, v] : p.match) {
      w.key(k).value(v);
    }
    w.end_object().key("configured").value(p.configured).key("versions").begin_array();
    for (const auto& v : p.versions) {
      w.begin_object().key("effective_from");
      v.effective_from_us == INT64_MIN ? w.null() : w.value(time_text(v.effective_from_us));
      w.key("created_at").value(time_text(v.created_at_us));
      w.key("in_effect").value(v.in_effect).key("ended").value(v.ended);
      w.key("model").value(to_string(v.model));
      if (v.model == PriceModel::kPerUnit) {
        w.key("unit_price");
        write_decimal(w, v.unit_price);
      } else if (v.model == PriceModel::kGraduated || v.model == PriceModel::kVolume) {
        w.key("tiers").begin_array();
        for (const auto& t : v.tiers) {
          w.begin_object().key("up_to");
          if (t.up_to.empty()) {
            w.value("inf");
          } else {
            write_decimal(w, t.up_to);
          }
          w.key("unit_price");
          write_decimal(w, t.unit_price);
          w.key("flat_fee");
          write_decimal(w, t.flat_fee);
          w.end_object();
        }
        w.end_array();
      } else if (v.model == PriceModel::kPackage) {
        w.key("package_size");
        write_decimal(w, v.package_size);
        w.key("package_price");
        write_decimal(w, v.package_price);
      } else {
        w.key("flat_fee");
        write_decimal(w, v.flat_fee);
      }
      w.key("currency").value(v.currency).key("credits_per_currency_unit");
      write_decimal(w, v.credits_per_currency_unit);
      w.end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
  return w.take();
}

std::string reprice_report_json(const RepriceReport& r) {
  common::JsonWriter w;
  w.begin_object().key("customer").value(r.customer).key("dry_run").value(r.dry_run);
  w.key("events").value(r.events).key("changed").value(r.changed).key("periods").begin_array();
  for (const auto& p : r.periods) {
    w.begin_object()
        .key("period_start")
        .value(time_text(p.start_us))
        .key("period_end")
        .value(time_text(p.end_us))
        .key("events")
        .value(p.events)
        .key("charged");
    write_decimal(w, p.charged);
    w.key("rated");
    write_decimal(w, p.rated);
    w.key("difference");
    write_decimal(w, p.difference);
    w.key("transaction_id");
    p.transaction_id.empty() ? w.null() : w.value(p.transaction_id);
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

void write_limit_state(common::JsonWriter& w, const LimitState& s) {
  w.begin_object()
      .key("meter")
      .value(s.meter)
      .key("period")
      .value(to_string(s.period))
      .key("rule")
      .value(s.rule())
      .key("hard")
      .value(s.hard)
      .key("used");
  write_decimal(w, s.used);
  w.key("limit");
  write_limit_number(w, s, s.limit);
  w.key("remaining");
  write_limit_number(w, s, s.remaining);
  w.key("percent");
  if (s.unlimited) {
    w.null();
  } else {
    w.raw(s.percent());
  }
  w.key("window_start").value(time_text(s.window_start_us));
  w.key("reset");
  write_reset(w, s.reset_us);
  w.end_object();
}

void write_check(common::JsonWriter& w, const CheckResult& r) {
  w.begin_object().key("allowed").value(r.allowed);
  if (!r.allowed) {
    w.key("error").value(denial_title(r.reason)).key("reason").value(denial_name(r.reason));
  }
  w.key("message").value(
      r.allowed ? (r.overage ? "Allowed past a soft limit (overage)." : "Allowed.") : r.message);
  w.key("tier").value(r.plan).key("plan").value(r.plan).key("meter").value(r.meter);
  w.key("amount");
  write_decimal(w, r.amount);
  if (r.has_rule) {
    const LimitState& s = r.rule;
    w.key("used");
    write_decimal(w, s.used);
    w.key("limit");
    write_limit_number(w, s, s.limit);
    w.key("remaining");
    write_limit_number(w, s, s.remaining);
    w.key("reset");
    write_reset(w, s.reset_us);
    w.key("period").value(to_string(s.period)).key("rule").value(s.rule());
  } else {
    w.key("used").null().key("limit").value("unlimited").key("remaining").value("unlimited");
    w.key("reset").null().key("period").null().key("rule").null();
  }
  w.key("overage").value(r.overage);
  if (r.prepaid) {
    w.key("credits_required");
    write_decimal(w, r.credits_required);
    w.key("credits_available");
    write_decimal(w, r.credits_available);
  }
  if (r.replayed) {
    w.key("replayed").value(true);
  }
  if (!r.reservation_id.empty()) {
    w.key("reservation_id").value(r.reservation_id);
    w.key("expires_at").value(time_text(r.reservation_expires_us));
  }
  w.key("limits").begin_array();
  for (const auto& l : r.limits) {
    write_limit_state(w, l);
  }
  w.end_array().end_object();
}

void write_event_errors(common::JsonWriter& w, const std::vector<EventError>& errors) {
  w.begin_array();
  for (const auto& e : errors) {
    w.begin_object()
        .key("index")
        .value(e.index)
        .key("id")
        .value(e.id)
        .key("code")
        .value(e.code)
        .key("message")
        .value(e.message)
        .end_object();
  }
  w.end_array();
}

void write_event(common::JsonWriter& w, const StoredEvent& e, const std::string& currency,
                 const std::string& cost_key) {
  w.begin_object()
      .key("id")
      .value(e.id)
      .key("customer")
      .value(e.customer)
      .key("type")
      .value(e.type)
      .key("time")
      .value(time_text(e.time_us))
      .key("received_at")
      .value(time_text(e.received_at_us));
  if (e.quantity != 1) {
    w.key("quantity").value(static_cast<std::uint64_t>(e.quantity));
  }
  if (e.flagged) {
    w.key("flagged").value(true);
  }
  if (e.priced) {
    w.key("cost");
    write_decimal(w, e.cost);
    w.key(cost_key);
    write_decimal(w, e.cost);
    w.key("currency").value(currency);
    w.key("credits");
    write_decimal(w, e.credits);
  }
  w.key("properties").begin_object();
  for (const auto& p : e.properties) {
    w.key(p.key);
    switch (p.kind) {
      case EventProperty::Kind::kString:
        w.value(p.text);
        break;
      case EventProperty::Kind::kNumber:
        w.raw(p.text);
        break;
      case EventProperty::Kind::kBool:
        w.raw(p.text == "true" ? "true" : "false");
        break;
      case EventProperty::Kind::kNull:
        w.null();
        break;
    }
  }
  w.end_object().end_object();
}

void write_ledger_transaction(common::JsonWriter& w, const LedgerTransaction& t) {
  w.begin_object()
      .key("id")
      .value(t.id)
      .key("customer")
      .value(t.customer)
      .key("type")
      .value(to_string(t.type));
  w.key("amount");
  write_decimal(w, t.amount);
  w.key("balance_before");
  write_decimal(w, t.balance_before);
  w.key("balance_after");
  write_decimal(w, t.balance_after);
  w.key("event_id");
  t.event_id.empty() ? w.null() : w.value(t.event_id);
  if (!t.grant_id.empty()) {
    w.key("grant_id").value(t.grant_id);
  }
  if (!t.reservation_id.empty()) {
    w.key("reservation_id").value(t.reservation_id);
  }
  if (!t.held.empty()) {
    w.key("held");
    write_decimal(w, t.held);
  }
  if (t.period_end_us != 0) {
    w.key("period_start").value(time_text(t.period_start_us));
    w.key("period_end").value(time_text(t.period_end_us));
  }
  if (t.type == LedgerType::kGrant || t.type == LedgerType::kTopUp) {
    w.key("priority").value(t.priority).key("expires_at");
    t.expires_at_us == 0 ? w.null() : w.value(time_text(t.expires_at_us));
  }
  w.key("description").value(t.description).key("created_at").value(time_text(t.created_at_us));
  w.end_object();
}

void write_wallet(common::JsonWriter& w, const Wallet& r) {
  w.begin_object().key("customer").value(r.customer);
  w.key("balance");
  write_decimal(w, r.balance);
  w.key("available");
  write_decimal(w, r.available);
  w.key("held");
  write_decimal(w, r.held);
  w.key("exhausted").value(r.exhausted);
  w.key("currency").value(r.currency).key("credits_per_currency_unit");
  write_decimal(w, r.credits_per_currency_unit);
  w.key("transactions").value(r.transactions);
  w.key("grants").begin_array();
  for (const auto& g : r.grants) {
    w.begin_object().key("id").value(g.id).key("type").value(to_string(g.type)).key("amount");
    write_decimal(w, g.amount);
    w.key("remaining");
    write_decimal(w, g.remaining);
    w.key("priority").value(g.priority).key("expires_at");
    g.expires_at_us == 0 ? w.null() : w.value(time_text(g.expires_at_us));
    w.key("created_at").value(time_text(g.created_at_us)).end_object();
  }
  w.end_array().end_object();
}

void write_window_value(common::JsonWriter& w, const WindowValue& v) {
  w.begin_object()
      .key("window_start")
      .value(time_text(v.window_start_us))
      .key("window_end")
      .value(time_text(v.window_end_us))
      .key("value");
  write_decimal(w, v.value);
  w.end_object();
}

void write_series(common::JsonWriter& w, const std::vector<WindowValue>& data) {
  w.begin_array();
  for (const auto& v : data) {
    write_window_value(w, v);
  }
  w.end_array();
}

void write_nullable(common::JsonWriter& w, const std::string& s) {
  if (s.empty()) {
    w.null();
  } else {
    w.value(s);
  }
}

void write_trend(common::JsonWriter& w, const std::vector<TrendPoint>& points) {
  w.begin_array();
  for (const auto& p : points) {
    w.begin_object()
        .key("window_start")
        .value(time_text(p.window_start_us))
        .key("window_end")
        .value(time_text(p.window_end_us))
        .key("value");
    write_decimal(w, p.value);
    w.key("previous");
    write_decimal(w, p.previous);
    w.key("change");
    write_decimal(w, p.change);
    w.key("change_percent");
    write_decimal(w, p.change_percent);
    w.end_object();
  }
  w.end_array();
}

std::string history_json(const UsageHistory& h, bool groups) {
  common::JsonWriter w;
  w.begin_object()
      .key("customer")
      .value(h.customer)
      .key("meter")
      .value(h.meter)
      .key("aggregation")
      .value(to_string(h.aggregation))
      .key("unit")
      .value(h.unit)
      .key("window")
      .value(to_string(h.window))
      .key("timezone")
      .value(h.timezone)
      .key("from")
      .value(time_text(h.from_us))
      .key("to")
      .value(time_text(h.to_us))
      .key("data");
  write_series(w, h.data);
  if (groups) {
    w.key("groups").begin_array();
    for (const auto& s : h.groups) {
      w.begin_object().key("group").begin_object();
      for (const auto& [k, v] : s.group) {
        w.key(k).value(v);
      }
      w.end_object().key("data");
      write_series(w, s.data);
      w.end_object();
    }
    w.end_array();
  }
  w.end_object();
  return w.take();
}

std::string top_customers_json(const TopUsage& top) {
  common::JsonWriter w;
  w.begin_object()
      .key("meter")
      .value(top.meter)
      .key("aggregation")
      .value(to_string(top.aggregation))
      .key("unit")
      .value(top.unit)
      .key("period");
  top.period ? w.value(to_string(*top.period)) : w.null();
  w.key("from")
      .value(time_text(top.from_us))
      .key("to")
      .value(time_text(top.to_us))
      .key("timezone")
      .value(top.timezone)
      .key("customers")
      .begin_array();
  std::uint64_t rank = 0;
  for (const auto& c : top.customers) {
    w.begin_object()
        .key("rank")
        .value(++rank)
        .key("customer")
        .value(c.customer)
        .key("name")
        .value(c.name)
        .key("value");
    write_decimal(w, c.value);
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

std::string meter_stats_json(const MeterStats& m) {
  common::JsonWriter w;
  w.begin_object()
      .key("meter")
      .value(m.meter)
      .key("aggregation")
      .value(to_string(m.aggregation))
      .key("unit")
      .value(m.unit)
      .key("customer");
  write_nullable(w, m.customer);
  w.key("window")
      .value(to_string(m.window))
      .key("timezone")
      .value(m.timezone)
      .key("from")
      .value(time_text(m.from_us))
      .key("to")
      .value(time_text(m.to_us))
      .key("windows")
      .value(m.windows)
      .key("windows_with_data")
      .value(m.windows_with_data)
      .key("stats")
      .begin_object()
      .key("count")
      .value(m.count);
  const std::pair<const char*, const std::string*> fields[] = {
      {"sum", &m.sum},       {"avg", &m.avg}, {"min", &m.min}, {"max", &m.max},
      {"median", &m.median}, {"p95", &m.p95}, {"p99", &m.p99}};
  for (const auto& [name, value] : fields) {
    w.key(name);
    write_decimal(w, *value);
  }
  w.end_object().key("trends").begin_object().key("window_over_window");
  write_trend(w, m.window_over_window);
  w.key("day_over_day");
  write_trend(w, m.day_over_day);
  w.end_object().key("peaks");
  write_series(w, m.peaks);
  w.end_object();
  return w.take();
}

}  // namespace tally::http
