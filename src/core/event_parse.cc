// Ingest body parsing with simdjson's on-demand API: one pass over the request buffer, strings
// copied once into the batch arena, numbers kept as their exact JSON text.
#include "core/event_parse.h"

#include <algorithm>

#include <simdjson.h>

#include "core/decimal.h"
#include "core/ids.h"

namespace tally::core {
namespace {

// Whether `t` is a number as RFC 8259 §6 writes it: -? (0 | [1-9][0-9]*) (. [0-9]+)?
// ([eE] [+-]? [0-9]+)?. simdjson's on-demand raw token is not validated on its own.
bool is_json_number(std::string_view t) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t from = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
      ++i;
    }
    return i - from;
  };
  if (i < t.size() && t[i] == '-') {
    ++i;
  }
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (i >= t.size() || t[i] < '1' || t[i] > '9' || digits() == 0) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (digits() == 0) {
      return false;
    }
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) {
      ++i;
    }
    if (digits() == 0) {
      return false;
    }
  }
  return i == t.size();
}

namespace od = simdjson::ondemand;

constexpr std::size_t kNestingMax = 8;

std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t' ||
          s.back() == ',' || s.back() == '}' || s.back() == ']')) {
    s.remove_suffix(1);
  }
  return s;
}

// Why one event was refused; empty code = fine.
struct EventProblem {
  std::string code;
  std::string message;

  bool ok() const { return code.empty(); }
};

class EventReader {
 public:
  EventReader(const ParseOptions& options, ParsedEvents* out) : options_(options), out_(out) {}

  // Reads one event object. Returns a JSON error when the document itself is broken; a
  // rule-breaking event is recorded in out_->errors and SUCCESS is returned.
  simdjson::error_code read(od::value event_value, std::uint32_t index) {
    EventBatch& b = out_->batch;
    const std::size_t props_mark = b.props().size();
    id_ = {};
    source_ = {};
    event_id_ = {};
    idempotency_key_ = {};
    customer_ = {};
    type_ = {};
    time_text_ = {};
    has_time_ = false;
    problem_ = {};

    od::object obj;
    if (auto err = event_value.get_object().get(obj); err) {
      if (err == simdjson::INCORRECT_TYPE) {
        record(index, "INVALID_TYPE", "event must be a JSON object");
        return simdjson::SUCCESS;
      }
      return err;
    }
    for (auto field : obj) {
      std::string_view key;
      if (auto err = field.unescaped_key().get(key); err) {
        return err;
      }
      od::value v;
      if (auto err = field.value().get(v); err) {
        return err;
      }
      if (auto err = read_field(key, v); err) {
        return err;
      }
    }
    finish(index, props_mark);
    return simdjson::SUCCESS;
  }

 private:
  simdjson::error_code read_string_field(std::string_view key, od::value& v, std::string* dst) {
    od::json_type t;
    if (auto err = v.type().get(t); err) {
      return err;
    }
    if (t == od::json_type::string) {
      std::string_view s;
      if (auto err = v.get_string().get(s); err) {
        return err;
      }
      dst->assign(s);
      return simdjson::SUCCESS;
    }
    if (t == od::json_type::null) {
      return simdjson::SUCCESS;  // treated as absent
    }
    // The unread value is skipped when the next field is read.
    set_problem("INVALID_TYPE", std::string("field '") + std::string(key) + "' must be a string");
    return simdjson::SUCCESS;
  }

  simdjson::error_code read_field(std::string_view key, od::value& v) {
    if (key == "id") {
      return read_string_field(key, v, &id_);
    }
    if (key == "source" && options_.source_scopes_id) {
      return read_string_field(key, v, &source_);
    }
    if (key == "event_id") {
      return read_string_field(key, v, &event_id_);
    }
    if (key == "idempotency_key") {
      return read_string_field(key, v, &idempotency_key_);
    }
    if (key == "customer" || key == "customer_id" || key == "subject") {
      return read_string_field(key, v, &customer_);
    }
    if (key == "type" || key == "event_type") {
      return read_string_field(key, v, &type_);
    }
    if (key == "time" || key == "timestamp") {
      has_time_ = true;
      return read_string_field(key, v, &time_text_);
    }
    if (key == "specversion" || key == "datacontenttype" || key == "dataschema") {
      return simdjson::SUCCESS;  // CloudEvents envelope fields: skipped unread
    }
    if (key == "properties" || key == "data") {
      od::json_type t;
      if (auto err = v.type().get(t); err) {
        return err;
      }
      if (t == od::json_type::null) {
        return simdjson::SUCCESS;
      }
      if (t != od::json_type::object) {
        set_problem("INVALID_TYPE", std::string("'") + std::string(key) + "' must be an object");
        return simdjson::SUCCESS;
      }
      prefix_.clear();
      return read_properties(v, 0);
    }
    // Any other top-level field is a property (the flat shape).
    prefix_.clear();
    return read_property(key, v, 0);
  }

  simdjson::error_code read_properties(od::value& v, std::size_t depth) {
    od::object obj;
    if (auto err = v.get_object().get(obj); err) {
      return err;
    }
    for (auto field : obj) {
      std::string_view key;
      if (auto err = field.unescaped_key().get(key); err) {
        return err;
      }
      od::value child;
      if (auto err = field.value().get(child); err) {
        return err;
      }
      if (auto err = read_property(key, child, depth); err) {
        return err;
      }
    }
    return simdjson::SUCCESS;
  }

  simdjson::error_code read_property(std::string_view key, od::value& v, std::size_t depth) {
    EventBatch& b = out_->batch;
    od::json_type t;
    if (auto err = v.type().get(t); err) {
      return err;
    }
    const std::size_t prefix_size = prefix_.size();
    if (!prefix_.empty()) {
      prefix_ += '.';
    }
    prefix_ += key;
    simdjson::error_code result = simdjson::SUCCESS;
    if (key.empty() || prefix_.size() > kPropKeyBytesMax) {
      set_problem("INVALID_VALUE",
                  "property names must be 1.." + std::to_string(kPropKeyBytesMax) + " bytes");
    }
    switch (t) {
      case od::json_type::object:
        if (depth + 1 >= kNestingMax) {
          set_problem("INVALID_VALUE", "property '" + prefix_ + "' is nested too deeply");
        } else {
          result = read_properties(v, depth + 1);
        }
        break;
      case od::json_type::array: {
        set_problem("INVALID_TYPE", "property '" + prefix_ +
                                        "' is an array; properties are numbers, strings, "
                                        "booleans or objects of them");
        break;
      }
      case od::json_type::string: {
        std::string_view s;
        result = v.get_string().get(s);
        if (result == simdjson::SUCCESS) {
          if (s.size() > kPropTextBytesMax) {
            set_problem("INVALID_VALUE", "property '" + prefix_ + "' is longer than " +
                                             std::to_string(kPropTextBytesMax) + " bytes");
          }
          push_prop(b, PropKind::kString, s);
        }
        break;
      }
      case od::json_type::number: {
        std::string_view raw = trim_right(v.raw_json_token());
        if (!is_json_number(raw)) {
          // `01`, `1.`, `.5`, `+1`: not JSON (RFC 8259 §6), so the document is malformed and
          // the whole request fails, not only this event.
          result = simdjson::NUMBER_ERROR;
          break;
        }
        {
          // Validate the number token fully: on-demand does not for a raw token.
          double checked = 0;
          if (v.get_double().get(checked) != simdjson::SUCCESS || !parse_decimal(raw).has_value()) {
            set_problem("INVALID_VALUE",
                        "property '" + prefix_ + "' is not a finite number within +-1e28");
          }
          push_prop(b, PropKind::kNumber, raw);
        }
        break;
      }
      case od::json_type::boolean: {
        bool flag = false;
        result = v.get_bool().get(flag);
        if (result == simdjson::SUCCESS) {
          push_prop(b, PropKind::kBool, flag ? "true" : "false");
        }
        break;
      }
      case od::json_type::null: {
        bool is_null = false;
        result = v.is_null().get(is_null);
        if (result == simdjson::SUCCESS) {
          push_prop(b, PropKind::kNull, "");
        }
        break;
      }
    }
    prefix_.resize(prefix_size);
    return result;
  }

  // Refuses the event when it feeds a meter of options_.nonnegative with a value below zero.
  // The event's properties are b.props()[props_mark, end).
  void check_nonnegative(const EventBatch& b, std::size_t props_mark) {
    auto find = [&](std::string_view key) -> const Prop* {
      for (std::size_t i = props_mark; i < b.props().size(); ++i) {
        if (b.text(b.props()[i].key) == key) {
          return &b.props()[i];
        }
      }
      return nullptr;
    };
    for (const MeterSpec* m : *options_.nonnegative) {
      if (m->event_type != type_ || m->value_property.empty()) {
        continue;
      }
      const bool filtered_out = std::any_of(m->filter.begin(), m->filter.end(), [&](const auto& f) {
        const Prop* p = find(f.first);
        return p == nullptr || p->kind == PropKind::kNull || b.text(p->text) != f.second;
      });
      const Prop* value = find(m->value_property);
      if (filtered_out || value == nullptr || value->kind != PropKind::kNumber) {
        continue;
      }
      Decimal d;
      if (try_parse_decimal(b.text(value->text), &d) && d.units < 0) {
        set_problem("NEGATIVE_VALUE",
                    "property '" + m->value_property + "' is " + std::string(b.text(value->text)) +
                        "; meter '" + m->key + "' takes values of zero or more" +
                        (m->allow_negative ? " from customer keys (negative corrections need an "
                                             "admin key)"
                                           : ""));
        return;
      }
    }
  }

  void push_prop(EventBatch& b, PropKind kind, std::string_view text) {
    b.props().push_back(Prop{b.add_text(prefix_), b.add_text(text), kind});
  }

  void set_problem(std::string code, std::string message) {
    if (problem_.ok()) {
      problem_ = EventProblem{std::move(code), std::move(message)};
    }
  }

  void record(std::uint32_t index, std::string code, std::string message) {
    EventError e;
    e.index = index;
    e.id = !idempotency_key_.empty() ? idempotency_key_ : !id_.empty() ? id_ : event_id_;
    if (e.id.size() > kEventIdBytesMax) {
      e.id.resize(kEventIdBytesMax);
    }
    e.code = std::move(code);
    e.message = std::move(message);
    out_->errors.push_back(std::move(e));
  }

  void finish(std::uint32_t index, std::size_t props_mark) {
    EventBatch& b = out_->batch;
    if (!source_.empty() && !id_.empty()) {
      id_ = source_ + "/" + id_;  // source_scopes_id
    }
    const std::string& dedup_key = !idempotency_key_.empty() ? idempotency_key_
                                   : !id_.empty()            ? id_
                                                             : event_id_;
    if (problem_.ok()) {
      if (dedup_key.empty()) {
        set_problem("MISSING_FIELD", "event needs an 'id' (or 'event_id' / 'idempotency_key')");
      } else if (dedup_key.size() > kEventIdBytesMax) {
        set_problem("INVALID_VALUE",
                    "event id is longer than " + std::to_string(kEventIdBytesMax) + " bytes");
      } else if (Status bad = check_event_id("event id", dedup_key); !bad.ok()) {
        set_problem("INVALID_VALUE", bad.message());
      } else if (!idempotency_key_.empty() && event_id_.size() > kEventIdBytesMax) {
        // Kept as a property below; still an id field, so the id limit holds.
        set_problem("INVALID_VALUE",
                    "event_id is longer than " + std::to_string(kEventIdBytesMax) + " bytes");
      } else if (customer_.empty() && options_.default_customer.empty()) {
        set_problem("MISSING_FIELD", "event needs a 'customer' (or 'customer_id' / 'subject')");
      } else if (Status bad_customer =
                     customer_.empty() ? Status() : check_name("customer", customer_);
                 !bad_customer.ok()) {
        set_problem("INVALID_VALUE", bad_customer.message());
      } else if (type_.empty()) {
        set_problem("MISSING_FIELD", "event needs a 'type' (or 'event_type')");
      } else if (Status bad_type = check_name("type", type_); !bad_type.ok()) {
        set_problem("INVALID_VALUE", bad_type.message());
      } else if (options_.known_types != nullptr &&
                 std::find(options_.known_types->begin(), options_.known_types->end(), type_) ==
                     options_.known_types->end()) {
        set_problem("UNKNOWN_EVENT_TYPE", "no meter takes events of type '" + type_ + "'");
      }
    }
    TimeUs time_us = options_.now_us;
    if (problem_.ok() && has_time_ && !time_text_.empty()) {
      auto parsed = parse_rfc3339(time_text_);
      if (!parsed) {
        set_problem("INVALID_TIME", "time '" + time_text_ + "': " + parsed.error().message());
      } else if (*parsed > options_.now_us + options_.future_skew_us_max) {
        set_problem("TIME_IN_FUTURE",
                    "time '" + time_text_ + "' is more than " +
                        std::to_string(options_.future_skew_us_max / kUsPerSecond) +
                        " s in the future");
      } else {
        time_us = *parsed;
      }
    }
    const std::size_t prop_count = b.props().size() - props_mark;
    if (problem_.ok() && prop_count > kEventPropsMax) {
      set_problem("INVALID_VALUE",
                  "event has more than " + std::to_string(kEventPropsMax) + " properties");
    }
    if (problem_.ok() && options_.nonnegative != nullptr) {
      check_nonnegative(b, props_mark);
    }
    if (!problem_.ok()) {
      b.props().resize(props_mark);  // the arena keeps the bytes; they are never referenced
      record(index, problem_.code, problem_.message);
      return;
    }
    // When idempotency_key won, keep the event_id / id it replaced as properties.
    if (!idempotency_key_.empty()) {
      if (!event_id_.empty()) {
        prefix_.assign("event_id");
        push_prop(b, PropKind::kString, event_id_);
      }
    }
    Event e;
    e.id = b.add_text(dedup_key);
    e.customer = b.add_text(customer_.empty() ? options_.default_customer : customer_);
    e.type = b.add_text(type_);
    e.time_us = time_us;
    e.prop_begin = static_cast<std::uint32_t>(props_mark);
    e.prop_count = static_cast<std::uint32_t>(b.props().size() - props_mark);
    b.events().push_back(e);
    out_->indexes.push_back(index);
  }

  const ParseOptions& options_;
  ParsedEvents* out_;
  std::string id_, source_, event_id_, idempotency_key_, customer_, type_, time_text_;
  bool has_time_ = false;
  EventProblem problem_;
  std::string prefix_;
};

Status json_error(simdjson::error_code err) {
  if (err == simdjson::INCOMPLETE_ARRAY_OR_OBJECT) {
    // simdjson reports a root whose last token is not its closing bracket this way: a
    // truncated body, or one with a scalar after the document (`{...} garbage`).
    return Status::invalid_argument(
        "malformed JSON: the document ends inside an object or array, or has content after the "
        "JSON document");
  }
  return Status::invalid_argument(std::string("malformed JSON: ") + simdjson::error_message(err));
}

Status too_many(std::uint32_t events_max) {
  return Status::payload_too_large("a request may carry at most " + std::to_string(events_max) +
                                   " events");
}

// Reads each event of `events` in turn, numbering them from out->total.
Status read_events(od::array events, EventReader& reader, const ParseOptions& options,
                   ParsedEvents* out) {
  for (auto element : events) {
    od::value v;
    if (auto err = element.get(v); err) {
      return json_error(err);
    }
    if (out->total >= options.events_max) {
      return too_many(options.events_max);
    }
    if (auto err = reader.read(v, out->total); err) {
      return json_error(err);
    }
    ++out->total;
  }
  return Status();
}

// A root object: {"events": [...]} when it has an "events" field (which must be an array; the
// root's other fields are walked past unread, so the document is read to its end); otherwise the
// root is one event.
Status read_root_object(od::document& doc, EventReader& reader, const ParseOptions& options,
                        ParsedEvents* out) {
  od::object root;
  if (auto err = doc.get_object().get(root); err) {
    return json_error(err);
  }
  bool batch_shape = false;
  for (auto field : root) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key); err) {
      return json_error(err);
    }
    if (key != "events" || batch_shape) {
      continue;  // other root fields (and a repeated "events") are skipped unread
    }
    od::value events_value;
    if (auto err = field.value().get(events_value); err) {
      return json_error(err);
    }
    od::json_type t;
    if (auto err = events_value.type().get(t); err) {
      return json_error(err);
    }
    if (t != od::json_type::array) {
      return Status::invalid_argument("'events' must be an array of event objects");
    }
    od::array events;
    if (auto err = events_value.get_array().get(events); err) {
      return json_error(err);
    }
    batch_shape = true;
    TALLY_TRY(read_events(events, reader, options, out));
  }
  if (batch_shape) {
    return Status();
  }
  doc.rewind();
  od::value whole;
  if (auto err = doc.get_value().get(whole); err) {
    return json_error(err);
  }
  if (auto err = reader.read(whole, 0); err) {
    return json_error(err);
  }
  out->total = 1;
  return Status();
}

// The root value has been read to its closing bracket. simdjson indexes every token of the
// buffer, so any token left (a second NDJSON document, `{...} garbage`) means the body is more
// than one JSON value; whitespace is never a token.
Status check_nothing_after(od::document& doc, const std::string& body) {
  const char* rest = nullptr;
  if (doc.current_location().get(rest) == simdjson::SUCCESS) {
    return Status::invalid_argument(
        "malformed JSON: unexpected content after the JSON document at byte " +
        std::to_string(rest - body.data()) +
        "; send one JSON document per request (newline-delimited JSON is not accepted)");
  }
  return Status();
}

// parse_events without the details of its kInvalidArgument.
Status parse_body(std::string& body, const ParseOptions& options, ParsedEvents* out) {
  out->clear();
  thread_local od::parser parser;
  const std::size_t length = body.size();
  body.reserve(length + simdjson::SIMDJSON_PADDING);
  od::document doc;
  if (auto err = parser.iterate(body.data(), length, body.capacity()).get(doc); err) {
    return json_error(err);
  }
  od::json_type root_type;
  if (auto err = doc.type().get(root_type); err) {
    return json_error(err);
  }
  EventReader reader(options, out);
  if (root_type == od::json_type::array) {
    od::array events;
    if (auto err = doc.get_array().get(events); err) {
      return json_error(err);
    }
    TALLY_TRY(read_events(events, reader, options, out));
  } else if (root_type == od::json_type::object) {
    TALLY_TRY(read_root_object(doc, reader, options, out));
  } else {
    return Status::invalid_argument(
        "body must be a JSON object ({\"events\": [...]} or one event) or an array of events");
  }
  TALLY_TRY(check_nothing_after(doc, body));
  if (out->total == 0) {
    return Status::invalid_argument("the batch holds no events");
  }
  return Status();
}

}  // namespace

Status parse_events(std::string& body, const ParseOptions& options, ParsedEvents* out) {
  Status s = parse_body(body, options, out);
  if (s.code() == StatusCode::kInvalidArgument) {
    // However it failed, the body as a whole is not JSON the API accepts.
    return Status::invalid_argument(s.message(), std::string(kInvalidJsonDetails));
  }
  return s;
}

}  // namespace tally::core
