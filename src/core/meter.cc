// Meters: names of aggregations, value paths from config, fingerprints, and the per-event
// match that decides what an event contributes (see meter.h).
//
// meter_accepts runs for every (event, meter) pair on the ingest path. It compares views into
// the batch arena, parses numbers without allocating, and writes the group key into a string
// the caller reuses, so a steady stream of events allocates nothing here.
#include "core/meter.h"

#include <algorithm>

#include "core/quote.h"

namespace tally::core {
namespace {

constexpr char kGroupSeparator = '\x1f';

Status path_error(std::string_view path, std::string_view what) {
  return quoted_error("invalid property path", path, what);
}

// Characters that carry JSONPath meaning and so cannot appear in a bare (dotted) segment.
bool is_path_syntax(char c) {
  return c == '.' || c == '[' || c == ']' || c == '*' || c == '$' || c == '\'' || c == '"' ||
         c == '@' || c == '?' || c == '(' || c == ')' || c == ' ' || c == '\t' || c == '\\';
}

// Appends `s` with its length in front, so the fields of a fingerprint cannot run together
// ("ab" + "c" and "a" + "bc" give different text).
void append_field(std::string* out, std::string_view s) {
  out->append(std::to_string(s.size()));
  out->push_back(':');
  out->append(s);
  out->push_back(';');
}

// A property path read segment by segment ("$.a['b'].c") into its dotted form ("a.b.c").
class PathReader {
 public:
  explicit PathReader(std::string_view path) : path_(path) { out_.reserve(path.size()); }

  // Reads the whole path (not empty); returns why it is refused, or nullptr.
  const char* read() {
    if (path_[0] == '$') {
      pos_ = 1;
      after_root_ = true;
      if (pos_ == path_.size()) {
        return "names no property";
      }
    }
    while (pos_ < path_.size()) {
      const char* why = path_[pos_] == '[' ? read_quoted() : read_dotted();
      if (why != nullptr) {
        return why;
      }
      first_segment_ = false;
      after_root_ = false;
    }
    return nullptr;
  }

  std::string take() { return std::move(out_); }

 private:
  // ['name'] or ["name"]; anything else in brackets is an index, slice or filter.
  const char* read_quoted() {
    ++pos_;
    if (pos_ >= path_.size() || (path_[pos_] != '\'' && path_[pos_] != '"')) {
      return "array indexes, wildcards and filters are not supported";
    }
    const char quote = path_[pos_];
    ++pos_;
    const std::size_t name_begin = pos_;
    while (pos_ < path_.size() && path_[pos_] != quote) {
      if (path_[pos_] == '\\') {
        return "escapes in quoted names are not supported";
      }
      ++pos_;
    }
    if (pos_ >= path_.size()) {
      return "unterminated quoted name";
    }
    const std::string_view name = path_.substr(name_begin, pos_ - name_begin);
    ++pos_;  // closing quote
    if (pos_ >= path_.size() || path_[pos_] != ']') {
      return "expected ']' after a quoted name";
    }
    ++pos_;
    if (name.empty()) {
      return "empty property name";
    }
    append(name);
    return nullptr;
  }

  // .name, or a bare name first ("name" or "$name" is refused).
  const char* read_dotted() {
    if (path_[pos_] == '.') {
      if (first_segment_ && !after_root_) {
        return "starts with '.'; write \"$.name\" or \"name\"";
      }
      ++pos_;
    } else if (after_root_ || !first_segment_) {
      return "expected '.' or '[' between names";
    }
    const std::size_t name_begin = pos_;
    while (pos_ < path_.size() && !is_path_syntax(path_[pos_])) {
      ++pos_;
    }
    const std::string_view name = path_.substr(name_begin, pos_ - name_begin);
    if (name.empty()) {
      return why_no_name();
    }
    if (pos_ < path_.size() && path_[pos_] != '.' && path_[pos_] != '[') {
      return path_[pos_] == '*' ? "wildcards are not supported" : "unexpected character";
    }
    append(name);
    return nullptr;
  }

  // Why no name follows a '.' (or starts the path), by what comes instead.
  const char* why_no_name() const {
    if (pos_ >= path_.size()) {
      return "ends with '.'";
    }
    switch (path_[pos_]) {
      case '*':
        return "wildcards are not supported";
      case '.':
        return "recursive descent ('..') is not supported";
      case '[':
        // "$.['a']" is not JSONPath; "$['a']" is.
        return "expected a name after '.'";
      default:
        return "unexpected character";
    }
  }

  void append(std::string_view name) {
    if (!first_segment_) {
      out_.push_back('.');
    }
    out_.append(name);
  }

  std::string_view path_;
  std::size_t pos_ = 0;
  bool after_root_ = false;  // true right after "$": the next segment needs '.' or '['
  bool first_segment_ = true;
  std::string out_;
};

}  // namespace

Result<Aggregation> parse_aggregation(std::string_view name) {
  if (std::optional<Aggregation> a = parse_aggregation_name(name)) {
    return *a;
  }
  return Status::invalid_argument("unknown aggregation " + quote_text(name) +
                                  "; expected count, sum, min, max, avg, latest or unique_count");
}

std::string_view aggregation_name(Aggregation a) {
  return to_string(a);
}

std::string MeterSpec::fingerprint() const {
  // Versioned so a future change of this encoding is itself a visible change. Filters are an
  // AND of equalities, so their order does not change any number and is normalised away;
  // group_by order does (it orders the group tuple) and is kept.
  std::string out = "meter-v1;";
  append_field(&out, key);
  append_field(&out, event_type);
  append_field(&out, aggregation_name(aggregation));
  append_field(&out, value_property);
  out.append("group_by=");
  out.append(std::to_string(group_by.size()));
  out.push_back(';');
  for (const std::string& g : group_by) {
    append_field(&out, g);
  }
  std::vector<std::pair<std::string, std::string>> sorted_filter = filter;
  std::sort(sorted_filter.begin(), sorted_filter.end());
  out.append("filter=");
  out.append(std::to_string(sorted_filter.size()));
  out.push_back(';');
  for (const auto& [property, value] : sorted_filter) {
    append_field(&out, property);
    append_field(&out, value);
  }
  return out;
}

Result<std::string> parse_value_path(std::string_view path) {
  if (path.empty()) {
    return path_error(path, "empty");
  }
  if (path.size() > kPropKeyBytesMax) {
    return path_error(path, "longer than a property key may be");
  }
  PathReader reader(path);
  if (const char* why = reader.read(); why != nullptr) {
    return path_error(path, why);
  }
  return reader.take();
}

bool meter_accepts(const MeterSpec& m, const EventBatch& b, const Event& e, MeterInput* input,
                   std::string* group) {
  if (b.text(e.type) != m.event_type) {
    return false;
  }
  for (const auto& [property, value] : m.filter) {
    const Prop* p = b.find_prop(e, property);
    // A JSON null equals no filter value: it means "no value", not the text "null".
    if (p == nullptr || p->kind == PropKind::kNull || b.text(p->text) != value) {
      return false;
    }
  }

  MeterInput out;
  switch (m.aggregation) {
    case Aggregation::kCount:
      out.value = Decimal::from_int(e.quantity);
      break;
    case Aggregation::kSum:
    case Aggregation::kMin:
    case Aggregation::kMax:
    case Aggregation::kAvg:
    case Aggregation::kLatest: {
      const Prop* p = b.find_prop(e, m.value_property);
      if (p == nullptr || p->kind != PropKind::kNumber) {
        return false;
      }
      if (!try_parse_decimal(b.text(p->text), &out.value)) {
        return false;
      }
      break;
    }
    case Aggregation::kUniqueCount: {
      const Prop* p = b.find_prop(e, m.value_property);
      if (p == nullptr || p->kind == PropKind::kNull) {
        return false;
      }
      out.value = Decimal::from_int(1);
      out.unique = b.text(p->text);
      break;
    }
    default:
      return false;
  }

  if (input != nullptr) {
    *input = out;
  }
  if (group != nullptr) {
    // clear() keeps the capacity, so a reused string stops allocating after the first events.
    group->clear();
    for (std::size_t i = 0; i < m.group_by.size(); ++i) {
      if (i > 0) {
        group->push_back(kGroupSeparator);
      }
      const Prop* p = b.find_prop(e, m.group_by[i]);
      // Absent and null both group as "": neither carries a value.
      if (p != nullptr && p->kind != PropKind::kNull) {
        group->append(b.text(p->text));
      }
    }
  }
  return true;
}

}  // namespace tally::core
