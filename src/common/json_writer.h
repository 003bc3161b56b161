// A small streaming JSON writer: appends to a std::string, escapes per RFC 8259, and tracks
// commas so callers write keys and values in order. No DOM, no allocation beyond the output.
//
//   JsonWriter w;
//   w.begin_object().key("accepted").value(3).key("errors").begin_array().end_array().end_object();
//
// Misuse (a value where a key is expected) is a programming error caught by debug assertions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tally::common {

// Appends `s` as a quoted JSON string (escaping quotes, backslashes and control characters;
// invalid UTF-8 bytes are replaced by U+FFFD so output is always valid JSON).
void append_json_string(std::string& out, std::string_view s);

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s);

class JsonWriter {
 public:
  JsonWriter() { out_.reserve(256); }

  explicit JsonWriter(std::string buffer) : out_(std::move(buffer)) { out_.clear(); }

  JsonWriter& begin_object() {
    separate();
    out_ += '{';
    first_ = true;
    return *this;
  }

  JsonWriter& end_object() {
    out_ += '}';
    first_ = false;
    return *this;
  }

  JsonWriter& begin_array() {
    separate();
    out_ += '[';
    first_ = true;
    return *this;
  }

  JsonWriter& end_array() {
    out_ += ']';
    first_ = false;
    return *this;
  }

  JsonWriter& key(std::string_view k) {
    separate();
    append_json_string(out_, k);
    out_ += ':';
    after_key_ = true;
    return *this;
  }

  JsonWriter& value(std::string_view s) {
    separate();
    append_json_string(out_, s);
    return *this;
  }

  JsonWriter& value(const char* s) { return value(std::string_view(s)); }

  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }

  JsonWriter& value(bool b) {
    separate();
    out_ += b ? "true" : "false";
    return *this;
  }

  JsonWriter& value(std::int64_t v);
  JsonWriter& value(std::uint64_t v);

  JsonWriter& value(int v) { return value(static_cast<std::int64_t>(v)); }

  JsonWriter& value(unsigned v) { return value(static_cast<std::uint64_t>(v)); }

  JsonWriter& value(double v);  // non-finite values are written as null

  JsonWriter& null() {
    separate();
    out_ += "null";
    return *this;
  }

  // Writes `json` verbatim as one value. REQUIRES: json is valid JSON.
  JsonWriter& raw(std::string_view json) {
    separate();
    out_ += json;
    return *this;
  }

  const std::string& str() const { return out_; }

  std::string take() { return std::move(out_); }

 private:
  void separate() {
    if (after_key_) {
      after_key_ = false;
      first_ = false;
      return;
    }
    if (!first_) {
      out_ += ',';
    }
    first_ = false;
  }

  std::string out_;
  bool first_ = true;
  bool after_key_ = false;
};

}  // namespace tally::common
