#include "http/json_util.h"

#include "core/decimal.h"

#include "core/time.h"

namespace tally::http {

Response json_response(unsigned status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string_view details_json) {
  common::JsonWriter w;
  w.begin_object().key("error").value(code).key("message").value(message);
  if (!details_json.empty()) {
    w.key("details").raw(details_json);
  }
  w.end_object();
  return json_response(status, w.take());
}

Response status_response(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return json_response(200, "{}");
    case StatusCode::kInvalidArgument:
      return error_response(400, "VALIDATION_ERROR", s.message(), s.details_json());
    case StatusCode::kUnauthenticated:
      return error_response(401, "UNAUTHORIZED", s.message());
    case StatusCode::kPermissionDenied:
      return error_response(403, "FORBIDDEN", s.message());
    case StatusCode::kNotFound:
      return error_response(404, "NOT_FOUND", s.message());
    case StatusCode::kAlreadyExists:
      return error_response(409, "CONFLICT", s.message());
    case StatusCode::kUnprocessable:
      return error_response(422, "UNPROCESSABLE_ENTITY", s.message(), s.details_json());
    case StatusCode::kResourceExhausted: {
      Response r = error_response(503, "SERVICE_UNAVAILABLE", s.message());
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    case StatusCode::kUnavailable: {
      Response r = error_response(503, "SERVICE_UNAVAILABLE", s.message());
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    case StatusCode::kInsufficientStorage:
      // Writes wait for free space; reads, dry-run checks and /health go on (docs/operations.md).
      return error_response(507, "INSUFFICIENT_STORAGE", s.message());
    case StatusCode::kIOError:
    case StatusCode::kCorruption:
    case StatusCode::kInternal:
      return error_response(500, "INTERNAL_ERROR", s.message());
  }
  return error_response(500, "INTERNAL_ERROR", s.message());
}

std::string time_text(TimeUs t) { return core::format_rfc3339(t); }

void write_customer(common::JsonWriter& w, const Customer& c) {
  w.begin_object()
      .key("id").value(c.id)
      .key("name").value(c.name)
      .key("email").value(c.email)
      .key("timezone").value(c.timezone)
      .key("status").value(c.status)
      .key("metadata").raw(c.metadata_json.empty() ? "{}" : c.metadata_json)
      .key("created_at").value(time_text(c.created_at_us))
      .key("updated_at").value(time_text(c.updated_at_us))
      .key("plan");
  if (c.plan.empty()) {
    w.null();
  } else {
    w.value(c.plan);
  }
  w.key("trial_started_at").value(time_text(c.trial_started_at_us != 0 ? c.trial_started_at_us : c.created_at_us));
  w.key("billing_anchor").value(time_text(c.billing_anchor_us != 0 ? c.billing_anchor_us : c.created_at_us));
  w.key("organization");
  if (c.organization.empty()) {
    w.null();
  } else {
    w.value(c.organization);
  }
  w.key("overrides").begin_array();
  for (const auto& o : c.overrides) {
    w.begin_object().key("meter").value(o.meter).key("period").value(o.period);
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

void write_scopes(common::JsonWriter& w, std::uint32_t scopes) {
  w.begin_array();
  if ((scopes & kScopeAdmin) != 0) w.value("admin");
  if ((scopes & kScopeIngest) != 0) w.value("ingest");
  if ((scopes & kScopeCheck) != 0) w.value("check");
  if ((scopes & kScopeRead) != 0) w.value("read");
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
      .key("meter").value(r.meter)
      .key("measure").value(r.measure)
      .key("from").value(time_text(r.from_us))
      .key("to").value(time_text(r.to_us))
      .key("window");
  r.window.empty() ? w.null() : w.value(r.window);
  w.key("timezone").value(r.timezone).key("data").begin_array();
  for (const auto& row : r.rows) {
    w.begin_object()
        .key("window_start").value(time_text(row.window_start_us))
        .key("window_end").value(time_text(row.window_end_us))
        .key("customer").value(row.customer)
        .key("group").begin_object();
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
      .key("customer").value(r.customer)
      .key("from").value(time_text(r.from_us))
      .key("to").value(time_text(r.to_us))
      .key("timezone").value(r.timezone)
      .key("meters").begin_array();
  for (const auto& m : r.meters) {
    w.begin_object()
        .key("meter").value(m.meter)
        .key("aggregation").value(m.aggregation)
        .key("unit").value(m.unit)
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
    w.key("archive_id").value(r.archive_id)
        .key("file").value(r.file)
        .key("manifest").value(r.manifest)
        .key("bytes").value(r.bytes)
        .key("sha256").value(r.sha256)
        .key("from").value(time_text(r.from_us))
        .key("to").value(time_text(r.to_us))
        .key("first_seq").value(r.first_seq)
        .key("last_seq").value(r.last_seq)
        .key("customers").value(static_cast<std::uint64_t>(r.customers))
        .key("blocks_deleted").value(r.blocks_deleted)
        .key("blocks_rewritten").value(r.blocks_rewritten);
  }
  w.key("more").value(r.more).end_object();
  return w.take();
}

std::string restore_result_json(const RestoreResult& r) {
  common::JsonWriter w;
  w.begin_object()
      .key("archive_id").value(r.archive_id)
      .key("file").value(r.file)
      .key("events").value(r.events)
      .key("already_present").value(r.already_present)
      .end_object();
  return w.take();
}

void write_alert(common::JsonWriter& w, const Alert& a, bool deliveries) {
  w.begin_object().key("id").value(a.id).key("customer").value(a.customer);
  w.key("kind").value(a.kind).key("level").value(a.level);
  if (a.kind == "limit") {
    w.key("meter").value(a.meter).key("period").value(a.period).key("limit").value(a.limit);
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
    w.key("status").value(a.status).key("sent").value(a.sent);
    w.key("delivery_attempts").value(static_cast<std::uint64_t>(a.delivery_attempts));
    w.key("deliveries").begin_array();
    for (const auto& d : a.deliveries) {
      const bool email = d.url.rfind("mailto:", 0) == 0;
      w.begin_object().key("id").value(d.id).key("channel").value(email ? "email" : "webhook");
      w.key("event").value(d.event).key("url").value(d.url);
      w.key("status").value(d.status).key("attempts").value(static_cast<std::uint64_t>(d.attempts));
      w.key("last_attempt_at");
      d.last_attempt_at_us == 0 ? w.null() : w.value(time_text(d.last_attempt_at_us));
      w.key("last_status_code");
      d.last_status_code == 0 ? w.null() : w.value(static_cast<std::int64_t>(d.last_status_code));
      w.key("last_error");
      d.last_error.empty() ? w.null() : w.value(d.last_error);
      w.key("next_attempt_at");
      d.status != "pending" ? w.null() : w.value(time_text(d.next_attempt_at_us));
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
      w.key("model").value(v.model);
      if (v.model == "per_unit") {
        w.key("unit_price");
        write_decimal(w, v.unit_price);
      } else if (v.model == "graduated" || v.model == "volume") {
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
      } else if (v.model == "package") {
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
        .key("period_start").value(time_text(p.start_us))
        .key("period_end").value(time_text(p.end_us))
        .key("events").value(p.events)
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

}  // namespace tally::http
