// Exports: the row sources (events by page, aggregates from one query) and the CSV, JSON and
// JSON Lines writers. The XLSX writer is in xlsx.cc, the only file that includes libxlsxwriter.
#include "export/export.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "common/json_writer.h"
#include "core/time.h"
#include "export/source.h"

namespace tally::exporter {

std::optional<Format> parse_format(std::string_view text) {
  if (text == "csv")
    return Format::kCsv;
  if (text == "json")
    return Format::kJson;
  if (text == "jsonl")
    return Format::kJsonl;
  if (text == "xlsx")
    return Format::kXlsx;
  return std::nullopt;
}

std::optional<Kind> parse_kind(std::string_view text) {
  if (text == "events")
    return Kind::kEvents;
  if (text == "aggregates")
    return Kind::kAggregates;
  return std::nullopt;
}

const char* format_name(Format f) {
  switch (f) {
    case Format::kCsv:
      return "csv";
    case Format::kJson:
      return "json";
    case Format::kJsonl:
      return "jsonl";
    case Format::kXlsx:
      return "xlsx";
  }
  return "csv";
}

const char* kind_name(Kind k) {
  return k == Kind::kEvents ? "events" : "aggregates";
}

namespace {
// 2025-01-17T14:30:00.25Z -> 20250117T143000Z (seconds precision, for file names).
std::string compact_time(TimeUs t) {
  std::string out;
  for (char c : core::format_rfc3339(t)) {
    if (c == '.')
      break;
    if (c != '-' && c != ':')
      out += c;
  }
  if (out.empty() || out.back() != 'Z')
    out += 'Z';
  return out;
}
}  // namespace

std::string default_file_name(const ExportRequest& r, bool to_given, TimeUs now_us) {
  return std::string("tally-") + kind_name(r.kind) + "-" +
         (r.from_us != 0 ? compact_time(r.from_us) : "start") + "-" +
         (to_given ? compact_time(r.to_us) : "end") + "-" + compact_time(now_us) + "." +
         format_name(r.format);
}

const char* content_type(Format f) {
  switch (f) {
    case Format::kCsv:
      return "text/csv; charset=utf-8; header=present";
    case Format::kJson:
      return "application/json";
    case Format::kJsonl:
      return "application/jsonl";
    case Format::kXlsx:
      return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
  }
  return "application/octet-stream";
}

void append_csv_field(std::string& out, std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
    out += field;
    return;
  }
  out += '"';
  for (char c : field) {
    if (c == '"')
      out += '"';
    out += c;
  }
  out += '"';
}

// ---- sources (source.h) -------------------------------------------------------------------

const std::vector<std::string>& event_columns() {
  static const std::vector<std::string> kColumns = {"id",          "customer",  "type",     "time",
                                                    "received_at", "flagged",   "quantity", "cost",
                                                    "credits",     "properties"};
  return kColumns;
}

const std::vector<std::string>& aggregate_columns() {
  static const std::vector<std::string> kColumns = {"window_start", "window_end", "customer",
                                                    "group", "value"};
  return kColumns;
}

void append_properties_json(std::string& out, const StoredEvent& e) {
  out += '{';
  bool first = true;
  for (const auto& p : e.properties) {
    if (!first)
      out += ',';
    first = false;
    common::append_json_string(out, p.key);
    out += ':';
    switch (p.kind) {
      case EventProperty::Kind::kString:
        common::append_json_string(out, p.text);
        break;
      case EventProperty::Kind::kNumber:
        out += p.text;
        break;
      case EventProperty::Kind::kBool:
        out += p.text == "true" ? "true" : "false";
        break;
      case EventProperty::Kind::kNull:
        out += "null";
        break;
    }
  }
  out += '}';
}

void append_group_json(std::string& out, const QueryRow& row) {
  out += '{';
  bool first = true;
  for (const auto& [k, v] : row.group) {
    if (!first)
      out += ',';
    first = false;
    common::append_json_string(out, k);
    out += ':';
    common::append_json_string(out, v);
  }
  out += '}';
}

Status validate(const Engine& engine, const ExportRequest& r) {
  if (!r.customer.empty()) {
    auto c = engine.get_customer(r.customer);
    if (!c)
      return c.error();
  }
  const bool aggregates = r.kind == Kind::kAggregates;
  if (aggregates && r.meter.empty()) {
    return Status::invalid_argument("kind 'aggregates' needs a meter");
  }
  if (!r.meter.empty()) {
    const auto meters = engine.meters();
    const bool known = std::any_of(meters.begin(), meters.end(),
                                   [&](const MeterInfo& m) { return m.key == r.meter; });
    if (!known)
      return Status::not_found("meter '" + r.meter + "' does not exist");
  }
  if (aggregates && !r.type.empty()) {
    return Status::invalid_argument("'type' applies to kind 'events' only");
  }
  if (!aggregates && !r.type.empty() && !r.meter.empty()) {
    return Status::invalid_argument("give 'type' or 'meter', not both");
  }
  if (!aggregates &&
      (!r.window.empty() || !r.timezone.empty() || !r.measure.empty() || !r.group_by.empty())) {
    return Status::invalid_argument(
        "'window', 'tz', 'measure' and 'group_by' apply to kind 'aggregates' only");
  }
  if (r.to_us != 0 && r.to_us <= r.from_us) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  if (aggregates && r.to_us == 0) {
    return Status::invalid_argument("kind 'aggregates' needs an end ('to')");
  }
  return Status();
}

Result<std::unique_ptr<Source>> Source::open(const Engine& engine, const ExportRequest& r) {
  TALLY_TRY(validate(engine, r));
  auto s = std::unique_ptr<Source>(new Source(engine, r.kind));
  if (r.kind == Kind::kEvents) {
    s->events_query_.customer = r.customer;
    s->events_query_.type = r.type;
    s->events_query_.from_us = r.from_us;
    s->events_query_.to_us = r.to_us;
    s->events_query_.limit = kPageEvents;
    s->events_query_.budget_ms = r.page_budget_ms;
    if (!r.meter.empty()) {
      for (const auto& m : engine.meters()) {
        if (m.key == r.meter) {
          s->events_query_.type = m.event_type;
          s->meter_filter_ = m.filter;
        }
      }
    }
    std::vector<StoredEvent> first;
    auto more = s->read_events(&first);
    if (!more) {
      return more.error();
    }
    s->first_page_ = std::move(first);
    s->first_more_ = *more;
    return s;
  }
  MeterQuery q;
  q.meter = r.meter;
  q.from_us = r.from_us;
  q.to_us = r.to_us;
  if (!r.window.empty()) {
    auto w = core::parse_window(r.window);
    if (!w) {
      return w.error();
    }
    q.window = *w;
  }
  q.timezone = r.timezone;
  q.customer = r.customer;
  if (!r.measure.empty()) {
    const std::optional<Measure> m = parse_measure(r.measure);
    if (!m) {
      return Status::invalid_argument("measure must be units, cost or credits");
    }
    q.measure = *m;
  }
  q.group_by = r.group_by;
  auto result = engine.query(q);
  if (!result)
    return result.error();
  s->aggregates_ = std::move(result->rows);
  return s;
}

bool Source::matches(const StoredEvent& e) const {
  for (const auto& filter : meter_filter_) {
    // Not a structured binding: clang before 16 cannot capture one in a lambda.
    const auto& key = filter.first;
    auto it = std::find_if(e.properties.begin(), e.properties.end(),
                           [&](const EventProperty& p) { return p.key == key; });
    if (it == e.properties.end() || it->text != filter.second)
      return false;
  }
  return true;
}

Result<bool> Source::next_events(std::vector<StoredEvent>* page) {
  if (first_page_) {
    *page = std::move(*first_page_);
    first_page_.reset();
    return first_more_;
  }
  return read_events(page);
}

Result<bool> Source::read_events(std::vector<StoredEvent>* page) {
  page->clear();
  if (done_)
    return false;
  auto r = engine_.list_events(events_query_);
  if (!r)
    return r.error();
  events_query_.cursor = std::move(r->next_cursor);
  done_ = events_query_.cursor.empty();
  for (auto& e : r->events) {
    if (meter_filter_.empty() || matches(e))
      page->push_back(std::move(e));
  }
  return !done_;
}

bool Source::next_aggregates(std::span<const QueryRow>* rows) {
  const std::size_t n = std::min(kPageRows, aggregates_.size() - position_);
  *rows = std::span<const QueryRow>(aggregates_.data() + position_, n);
  position_ += n;
  return position_ < aggregates_.size();
}

// ---- text formats ---------------------------------------------------------------------------

namespace {

void append_time(std::string& out, TimeUs t) {
  out += core::format_rfc3339(t);
}

void append_uint(std::string& out, std::uint64_t v) {
  char digits[24];
  out.append(digits, std::to_chars(digits, digits + sizeof(digits), v).ptr);
}

// Formatting a time is the costliest part of a row, and neighbouring events mostly share
// received_at (one per commit) and often time: remember the last one of each.
struct TimeText {
  TimeUs at = -1;
  std::string text;

  void append(std::string& out, TimeUs t) {
    if (t != at) {
      at = t;
      text = core::format_rfc3339(t);
    }
    out += text;
  }
};

class TextExportImpl final : public TextExport {
 public:
  TextExportImpl(std::unique_ptr<Source> source, Format format, std::string currency)
      : source_(std::move(source)), format_(format), currency_(std::move(currency)) {
    cost_key_ = "cost_" + currency_;
    std::transform(cost_key_.begin(), cost_key_.end(), cost_key_.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }

  Result<bool> next(std::string* out) override {
    if (finished_)
      return false;
    if (!started_) {
      started_ = true;
      write_header(*out);
    }
    bool more = false;
    if (source_->kind() == Kind::kEvents) {
      auto r = source_->next_events(&page_);
      if (!r)
        return r.error();
      more = *r;
      for (const auto& e : page_)
        write_event(*out, e);
    } else {
      std::span<const QueryRow> rows;
      more = source_->next_aggregates(&rows);
      for (const auto& row : rows)
        write_aggregate(*out, row);
    }
    if (!more) {
      finished_ = true;
      if (format_ == Format::kJson)
        *out += rows_ == 0 ? "]\n" : "\n]\n";
    }
    return more;
  }

  std::uint64_t rows() const override { return rows_; }

 private:
  void write_header(std::string& out) {
    if (format_ == Format::kJson) {
      out += '[';
    } else if (format_ == Format::kCsv) {
      const auto& columns =
          source_->kind() == Kind::kEvents ? event_columns() : aggregate_columns();
      for (std::size_t i = 0; i < columns.size(); ++i) {
        if (i > 0)
          out += ',';
        out += columns[i];
      }
      out += "\r\n";
    }
  }

  // JSON: one object per line after '[', separated by ",\n"; JSON Lines: one per line.
  void begin_json_row(std::string& out) {
    if (format_ == Format::kJson)
      out += rows_ == 0 ? "\n" : ",\n";
  }

  void end_row(std::string& out) {
    if (format_ == Format::kCsv) {
      out += "\r\n";
    } else if (format_ == Format::kJsonl) {
      out += '\n';
    }
    ++rows_;
  }

  void write_event(std::string& out, const StoredEvent& e) {
    if (format_ == Format::kCsv) {
      append_csv_field(out, e.id);
      out += ',';
      append_csv_field(out, e.customer);
      out += ',';
      append_csv_field(out, e.type);
      out += ',';
      time_text_.append(out, e.time_us);
      out += ',';
      received_text_.append(out, e.received_at_us);
      out += e.flagged ? ",true," : ",false,";
      append_uint(out, e.quantity);
      out += ',';
      out += e.cost;  // decimal text: never needs quoting
      out += ',';
      out += e.credits;
      out += ',';
      scratch_.clear();
      append_properties_json(scratch_, e);
      append_csv_field(out, scratch_);
      end_row(out);
      return;
    }
    // The same object as GET /v1/events (src/http/handlers/events.cc).
    begin_json_row(out);
    out += "{\"id\":";
    common::append_json_string(out, e.id);
    out += ",\"customer\":";
    common::append_json_string(out, e.customer);
    out += ",\"type\":";
    common::append_json_string(out, e.type);
    out += ",\"time\":\"";
    time_text_.append(out, e.time_us);
    out += "\",\"received_at\":\"";
    received_text_.append(out, e.received_at_us);
    out += '"';
    if (e.flagged)
      out += ",\"flagged\":true";
    if (e.quantity != 1) {
      out += ",\"quantity\":";
      append_uint(out, e.quantity);
    }
    if (e.priced) {
      out += ",\"cost\":";
      out += e.cost;
      out += ",\"";
      out += cost_key_;
      out += "\":";
      out += e.cost;
      out += ",\"currency\":";
      common::append_json_string(out, currency_);
      out += ",\"credits\":";
      out += e.credits;
    }
    out += ",\"properties\":";
    append_properties_json(out, e);
    out += '}';
    end_row(out);
  }

  void write_aggregate(std::string& out, const QueryRow& row) {
    if (format_ == Format::kCsv) {
      append_time(out, row.window_start_us);
      out += ',';
      append_time(out, row.window_end_us);
      out += ',';
      append_csv_field(out, row.customer);
      out += ',';
      scratch_.clear();
      append_group_json(scratch_, row);
      append_csv_field(out, scratch_);
      out += ',';
      out += row.value;
      end_row(out);
      return;
    }
    // The same object as a row of GET /v1/meters/{key}/query.
    begin_json_row(out);
    out += "{\"window_start\":\"";
    append_time(out, row.window_start_us);
    out += "\",\"window_end\":\"";
    append_time(out, row.window_end_us);
    out += "\",\"customer\":";
    common::append_json_string(out, row.customer);
    out += ",\"group\":";
    append_group_json(out, row);
    out += ",\"value\":";
    out += row.value.empty() ? "null" : row.value;
    out += '}';
    end_row(out);
  }

  std::unique_ptr<Source> source_;
  Format format_;
  std::string currency_;
  std::string cost_key_;
  std::vector<StoredEvent> page_;
  std::string scratch_;
  TimeText time_text_;
  TimeText received_text_;
  std::uint64_t rows_ = 0;
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace

Result<std::unique_ptr<TextExport>> TextExport::open(const Engine& engine, ExportRequest request) {
  if (request.format == Format::kXlsx) {
    return Status::invalid_argument("format 'xlsx' is written to a file only (tally export)");
  }
  auto source = Source::open(engine, request);
  if (!source)
    return source.error();
  return std::unique_ptr<TextExport>(
      new TextExportImpl(std::move(*source), request.format, request.currency));
}

}  // namespace tally::exporter
