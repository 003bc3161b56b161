// Reading JSON answers in tests: a parsed document that owns its parser.
#pragma once

#include <memory>
#include <string>

#include <simdjson.h>

namespace tally::testing {

class Json {
 public:
  explicit Json(const std::string& text) : text_(text) {
    ok_ = parser_.parse(text_).get(root_) == simdjson::SUCCESS;
  }

  bool ok() const { return ok_; }

  simdjson::dom::element operator[](const char* key) const { return root_[key].value_unsafe(); }

  simdjson::dom::element root() const { return root_; }

  // Convenience accessors; they fail the test on a missing or mistyped field.
  std::string str(const char* key) const {
    std::string_view v;
    if (root_[key].get_string().get(v) != simdjson::SUCCESS) {
      return "<missing " + std::string(key) + ">";
    }
    return std::string(v);
  }

  std::int64_t num(const char* key) const {
    std::int64_t v = -999999;
    if (root_[key].get_int64().get(v) != simdjson::SUCCESS) {
      double d = 0;
      if (root_[key].get_double().get(d) == simdjson::SUCCESS) {
        return static_cast<std::int64_t>(d);
      }
    }
    return v;
  }

  bool is_null(const char* key) const { return root_[key].is_null(); }

  bool has(const char* key) const { return root_[key].error() == simdjson::SUCCESS; }

 private:
  std::string text_;
  simdjson::dom::parser parser_;
  simdjson::dom::element root_;
  bool ok_ = false;
};

}  // namespace tally::testing
