// OpenMeter's API under /openmeter (docs/compat.md): CloudEvents ingest, meters, and meter
// queries, in OpenMeter's shapes, errors as application/problem+json, so that @openmeter/sdk
// works against Tally by its base URL alone. A CloudEvent's `subject` is the customer, `type`
// the event type, `data` the properties, and `source` scopes `id` (the stored id is
// "<source>/<id>"). Unlike OpenMeter, a 2xx means the events are durable, and duplicates are
// exact.
#include <algorithm>
#include <cctype>
#include <map>

#include "core/decimal.h"
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

Response problem(unsigned status, std::string_view detail) {
  const char* title = status == 400   ? "Bad Request"
                      : status == 401 ? "Unauthorized"
                      : status == 403 ? "Forbidden"
                      : status == 404 ? "Not Found"
                      : status == 405 ? "Method Not Allowed"
                      : status == 413 ? "Payload Too Large"
                      : status == 415 ? "Unsupported Media Type"
                      : status == 429 ? "Too Many Requests"
                      : status == 503 ? "Service Unavailable"
                      : status == 507 ? "Insufficient Storage"
                                      : "Internal Server Error";
  common::JsonWriter w;
  w.begin_object().key("type").value("about:blank").key("title").value(title);
  w.key("status").value(status).key("detail").value(detail).end_object();
  Response r = json_response(status, w.take());
  r.content_type = "application/problem+json";
  return r;
}

Response problem_of(const Status& s) {
  return problem(status_response(s).status, s.message());
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

void write_meter(common::JsonWriter& w, const MeterInfo& m) {
  w.begin_object().key("id").value(m.key).key("slug").value(m.key).key("name").value(m.key);
  if (!m.description.empty()) {
    w.key("description").value(m.description);
  }
  w.key("aggregation").value(upper(m.aggregation)).key("eventType").value(m.event_type);
  if (!m.value_property.empty()) {
    w.key("valueProperty").value("$." + m.value_property);
  }
  w.key("groupBy").begin_object();
  for (const auto& g : m.group_by) {
    w.key(g).value("$." + g);
  }
  w.end_object().end_object();
}

const MeterInfo* find_meter(const std::vector<MeterInfo>& meters, const std::string& key) {
  auto it = std::find_if(meters.begin(), meters.end(), [&](const auto& m) { return m.key == key; });
  return it != meters.end() ? &*it : nullptr;
}

}  // namespace

Response openmeter_refusal(unsigned status, std::string_view detail) {
  return problem(status, detail);
}

void openmeter_ingest(Context& ctx, Call& call) {
  std::string type;
  if (const auto* t = call.request.header("content-type")) {
    type = t->substr(0, t->find(';'));
    while (!type.empty() && type.back() == ' ')
      type.pop_back();
  }
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (type != "application/cloudevents+json" && type != "application/cloudevents-batch+json" &&
      type != "application/json") {
    answer(call, problem(415,
                         "send application/cloudevents+json, "
                         "application/cloudevents-batch+json or application/json"));
    return;
  }
  IngestOptions options;
  options.restrict_customer = call.identity.customer;
  options.negative_corrections = call.identity.admin();
  options.source_scopes_id = true;
  Responder respond = std::move(call.respond);
  ctx.engine.ingest_json_async(
      std::move(call.request.body), options, [respond](Result<IngestSummary> r) {
        if (!r) {
          const Status& s = r.error();
          respond(
              problem(s.code() == StatusCode::kInvalidArgument ? 400 : status_response(s).status,
                      s.message()));
          return;
        }
        if (!r->errors.empty()) {
          // The valid events are stored; a retry of the whole batch stores them once.
          std::string detail = std::to_string(r->errors.size()) + " invalid event" +
                               (r->errors.size() == 1 ? "" : "s") + ":";
          for (std::size_t i = 0; i < r->errors.size() && i < 10; ++i) {
            const EventError& e = r->errors[i];
            detail += " [" + std::to_string(e.index) + "] " + e.code + ": " + e.message + ";";
          }
          respond(problem(400, detail));
          return;
        }
        Response ok;
        ok.status = 204;
        respond(std::move(ok));
      });
}

void openmeter_list_meters(Context& ctx, Call& call) {
  common::JsonWriter w;
  w.begin_array();
  for (const auto& m : ctx.engine.meters()) {
    write_meter(w, m);
  }
  w.end_array();
  answer(call, json_response(200, w.take()));
}

void openmeter_get_meter(Context& ctx, Call& call) {
  const auto meters = ctx.engine.meters();
  const MeterInfo* m = find_meter(meters, call.params.at(0));
  if (m == nullptr) {
    answer(call, problem(404, "meter not found: " + call.params.at(0)));
    return;
  }
  common::JsonWriter w;
  write_meter(w, *m);
  answer(call, json_response(200, w.take()));
}

void openmeter_query(Context& ctx, Call& call) {
  const auto meters = ctx.engine.meters();
  const MeterInfo* meter = find_meter(meters, call.params.at(0));
  if (meter == nullptr) {
    answer(call, problem(404, "meter not found: " + call.params.at(0)));
    return;
  }
  MeterQuery q;
  q.meter = meter->key;
  q.from_us = 0;
  q.to_us = ctx.engine.clock().now_us() + ctx.options.future_skew_seconds_max * core::kUsPerSecond;
  bool has_from = false;
  bool has_to = false;
  std::string window_size;
  std::vector<std::string> subjects;
  bool by_subject = false;
  for (const auto& [k, v] : call.request.query) {
    if (k == "from" || k == "to") {
      auto t = core::parse_rfc3339(v);
      if (!t) {
        answer(call, problem(400, k + ": " + t.error().message()));
        return;
      }
      (k == "from" ? q.from_us : q.to_us) = *t;
      (k == "from" ? has_from : has_to) = true;
    } else if (k == "windowSize") {
      window_size = v;
      if (v == "MINUTE" || v == "HOUR" || v == "DAY" || v == "MONTH") {
        q.window = v == "MINUTE" ? Window::kMinute
                   : v == "HOUR" ? Window::kHour
                   : v == "DAY"  ? Window::kDay
                                 : Window::kMonth;
      } else {
        answer(call, problem(400, "windowSize must be MINUTE, HOUR, DAY or MONTH"));
        return;
      }
    } else if (k == "windowTimeZone") {
      q.timezone = v;
    } else if (k == "subject") {
      subjects.push_back(v);
    } else if (k == "groupBy") {
      if (v == "subject") {
        by_subject = true;
      } else {
        q.group_by.push_back(v);
      }
    } else if (k.size() > 15 && k.compare(0, 14, "filterGroupBy[") == 0 && k.back() == ']') {
      q.filter.emplace_back(k.substr(14, k.size() - 15), v);
    } else if (k == "clientId") {
      // a client's own id for its queries: nothing to do
    } else {
      answer(call, problem(400, "unsupported query parameter '" + k +
                                    "'; Tally answers from, to, windowSize, windowTimeZone, "
                                    "subject, groupBy and filterGroupBy[key]"));
      return;
    }
  }
  if (!call.identity.customer.empty()) {
    // A customer key sees its own subject only.
    if (std::any_of(subjects.begin(), subjects.end(),
                    [&](const auto& s) { return s != call.identity.customer; })) {
      answer(call, problem(403, "this key may query its own subject only"));
      return;
    }
    subjects = {call.identity.customer};
  }
  // Tally's rows are per customer; OpenMeter's are per subject only when asked, else over all.
  const bool keep_subject = by_subject || !subjects.empty();
  const std::string agg = meter->aggregation;
  if (!keep_subject && agg != "sum" && agg != "count" && agg != "min" && agg != "max") {
    answer(call, problem(400, "a " + upper(agg) +
                                  " meter is answered per subject: add groupBy=subject or a "
                                  "subject"));
    return;
  }
  std::vector<QueryRow> rows;
  auto run = [&](const std::string& customer) -> bool {
    MeterQuery one = q;
    one.customer = customer;
    auto r = ctx.engine.query(one);
    if (!r) {
      answer(call, problem_of(r.error()));
      return false;
    }
    rows.insert(rows.end(), r->rows.begin(), r->rows.end());
    return true;
  };
  if (subjects.empty()) {
    if (!run(""))
      return;
  } else {
    for (const auto& s : subjects) {
      if (!run(s))
        return;
    }
  }
  if (!keep_subject) {
    // Over all subjects: rows of one window and group merge.
    std::map<std::pair<std::pair<TimeUs, TimeUs>, std::vector<std::pair<std::string, std::string>>>,
             QueryRow>
        merged;
    for (auto& row : rows) {
      auto key = std::make_pair(std::make_pair(row.window_start_us, row.window_end_us), row.group);
      auto [it, fresh] = merged.try_emplace(key, row);
      if (fresh || row.value.empty()) {
        continue;
      }
      if (it->second.value.empty()) {
        it->second.value = row.value;
        continue;
      }
      const core::Decimal a = *core::parse_decimal(it->second.value);
      const core::Decimal b = *core::parse_decimal(row.value);
      const core::Decimal v = agg == "min" ? std::min(a, b) : agg == "max" ? std::max(a, b) : a + b;
      it->second.value = core::format_decimal(v);
    }
    rows.clear();
    for (auto& [k, row] : merged) {
      row.customer.clear();
      rows.push_back(std::move(row));
    }
  }
  common::JsonWriter w;
  w.begin_object();
  if (has_from)
    w.key("from").value(time_text(q.from_us));
  if (has_to)
    w.key("to").value(time_text(q.to_us));
  if (!window_size.empty())
    w.key("windowSize").value(window_size);
  w.key("data").begin_array();
  for (const auto& row : rows) {
    w.begin_object().key("value");
    write_decimal(w, row.value.empty() ? "0" : row.value);
    w.key("windowStart").value(time_text(row.window_start_us));
    w.key("windowEnd").value(time_text(row.window_end_us)).key("subject");
    keep_subject ? w.value(row.customer) : w.null();
    w.key("groupBy").begin_object();
    for (const auto& [gk, gv] : row.group) {
      w.key(gk);
      gv.empty() ? w.null() : w.value(gv);
    }
    w.end_object().end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
