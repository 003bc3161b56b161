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
  w.key("aggregation")
      .value(upper(std::string(to_string(m.aggregation))))
      .key("eventType")
      .value(m.event_type);
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

// The meter the path names, or nullptr after answering 404.
const MeterInfo* found_meter(Call& call, const std::vector<MeterInfo>& meters) {
  const MeterInfo* m = find_meter(meters, call.params.at(0));
  if (m == nullptr) {
    answer(call, problem(404, "meter not found: " + call.params.at(0)));
  }
  return m;
}

// ---- meter queries --------------------------------------------------------------------------

// A meter query in OpenMeter's terms: Tally's query, what the answer repeats (from, to,
// windowSize when given), and the subjects asked for.
struct OpenMeterQuery {
  MeterQuery q;
  bool has_from = false;
  bool has_to = false;
  std::string window_size;
  std::vector<std::string> subjects;
  bool by_subject = false;  // groupBy=subject
};

// Reads one query parameter into `out`. Returns what is wrong with it, or "".
std::string read_query_param(const std::string& k, const std::string& v, OpenMeterQuery* out) {
  MeterQuery& q = out->q;
  if (k == "from" || k == "to") {
    auto t = core::parse_rfc3339(v);
    if (!t) {
      return k + ": " + t.error().message();
    }
    (k == "from" ? q.from_us : q.to_us) = *t;
    (k == "from" ? out->has_from : out->has_to) = true;
  } else if (k == "windowSize") {
    if (v != "MINUTE" && v != "HOUR" && v != "DAY" && v != "MONTH") {
      return "windowSize must be MINUTE, HOUR, DAY or MONTH";
    }
    out->window_size = v;
    q.window = v == "MINUTE" ? Window::kMinute
               : v == "HOUR" ? Window::kHour
               : v == "DAY"  ? Window::kDay
                             : Window::kMonth;
  } else if (k == "windowTimeZone") {
    q.timezone = v;
  } else if (k == "subject") {
    out->subjects.push_back(v);
  } else if (k == "groupBy") {
    if (v == "subject") {
      out->by_subject = true;
    } else {
      q.group_by.push_back(v);
    }
  } else if (k.size() > 15 && k.compare(0, 14, "filterGroupBy[") == 0 && k.back() == ']') {
    q.filter.emplace_back(k.substr(14, k.size() - 15), v);
  } else if (k != "clientId") {  // a client's own id for its queries: nothing to do
    return "unsupported query parameter '" + k +
           "'; Tally answers from, to, windowSize, windowTimeZone, subject, groupBy and "
           "filterGroupBy[key]";
  }
  return "";
}

// The query of `meter` the request asks (from the beginning to now, with the future skew
// allowed, unless it says otherwise): false after answering 400.
bool read_openmeter_query(Context& ctx, Call& call, const MeterInfo& meter, OpenMeterQuery* out) {
  out->q.meter = meter.key;
  out->q.from_us = 0;
  out->q.to_us =
      ctx.engine.clock().now_us() + ctx.options.future_skew_seconds_max * core::kUsPerSecond;
  for (const auto& [k, v] : call.request.query) {
    if (std::string error = read_query_param(k, v, out); !error.empty()) {
      answer(call, problem(400, error));
      return false;
    }
  }
  return true;
}

// A customer key sees its own subject only: its subjects become just its own, or false after
// answering 403 when it asked for another.
bool own_subjects(Call& call, std::vector<std::string>* subjects) {
  if (call.identity.customer.empty()) {
    return true;
  }
  if (std::any_of(subjects->begin(), subjects->end(),
                  [&](const auto& s) { return s != call.identity.customer; })) {
    answer(call, problem(403, "this key may query its own subject only"));
    return false;
  }
  *subjects = {call.identity.customer};
  return true;
}

// The rows of `q` for each subject (all customers when none is named): false after answering
// the engine's error.
bool query_subjects(Context& ctx, Call& call, const MeterQuery& q,
                    const std::vector<std::string>& subjects, std::vector<QueryRow>* rows) {
  auto run = [&](const std::string& customer) -> bool {
    MeterQuery one = q;
    one.customer = customer;
    auto r = ctx.engine.query(one);
    if (!r) {
      answer(call, problem_of(r.error()));
      return false;
    }
    rows->insert(rows->end(), r->rows.begin(), r->rows.end());
    return true;
  };
  if (subjects.empty()) {
    return run("");
  }
  for (const auto& s : subjects) {
    if (!run(s)) {
      return false;
    }
  }
  return true;
}

// The rows over all subjects: those of one window and group merge by the meter's aggregation
// `agg` (sum, count, min or max), without a customer.
std::vector<QueryRow> merge_subjects(std::vector<QueryRow> rows, Aggregation agg) {
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
    const core::Decimal v = agg == Aggregation::kMin   ? std::min(a, b)
                            : agg == Aggregation::kMax ? std::max(a, b)
                                                       : a + b;
    it->second.value = core::format_decimal(v);
  }
  std::vector<QueryRow> out;
  for (auto& [k, row] : merged) {
    row.customer.clear();
    out.push_back(std::move(row));
  }
  return out;
}

// OpenMeter's query answer: {from?, to?, windowSize?, data: [{value, windowStart, windowEnd,
// subject, groupBy}]}, the subject null over all subjects.
std::string query_body(const OpenMeterQuery& om, const std::vector<QueryRow>& rows,
                       bool keep_subject) {
  common::JsonWriter w;
  w.begin_object();
  if (om.has_from) {
    w.key("from").value(time_text(om.q.from_us));
  }
  if (om.has_to) {
    w.key("to").value(time_text(om.q.to_us));
  }
  if (!om.window_size.empty()) {
    w.key("windowSize").value(om.window_size);
  }
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
  return w.take();
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
  const MeterInfo* m = found_meter(call, meters);
  if (m == nullptr) {
    return;
  }
  common::JsonWriter w;
  write_meter(w, *m);
  answer(call, json_response(200, w.take()));
}

void openmeter_query(Context& ctx, Call& call) {
  const auto meters = ctx.engine.meters();
  const MeterInfo* meter = found_meter(call, meters);
  if (meter == nullptr) {
    return;
  }
  OpenMeterQuery om;
  if (!read_openmeter_query(ctx, call, *meter, &om) || !own_subjects(call, &om.subjects)) {
    return;
  }
  // Tally's rows are per customer; OpenMeter's are per subject only when asked, else over all.
  const bool keep_subject = om.by_subject || !om.subjects.empty();
  const Aggregation agg = meter->aggregation;
  if (!keep_subject && agg != Aggregation::kSum && agg != Aggregation::kCount &&
      agg != Aggregation::kMin && agg != Aggregation::kMax) {
    answer(call, problem(400, "a " + upper(std::string(to_string(agg))) +
                                  " meter is answered per subject: add groupBy=subject or a "
                                  "subject"));
    return;
  }
  std::vector<QueryRow> rows;
  if (!query_subjects(ctx, call, om.q, om.subjects, &rows)) {
    return;
  }
  if (!keep_subject) {
    rows = merge_subjects(std::move(rows), agg);
  }
  answer(call, json_response(200, query_body(om, rows, keep_subject)));
}

}  // namespace tally::http::handlers
