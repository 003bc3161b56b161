// The loader: walks a TOML document against the option table (options.h) and fills a Config.
//
// The only code of Tally that includes toml++; its exceptions are caught here and become
// Status values. Keys are visited in file order, so the error reported is the first one in the
// file, named by file, line and field ("tally.toml:9: meters[1].aggregation: ...").
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <span>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

#include <toml++/toml.h>

#include "config/options.h"
#include "core/ids.h"
#include "core/time.h"

namespace tally::config {
namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string_view type_phrase(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return n.as_array()->is_array_of_tables() && !n.as_array()->empty() ? "an array of tables"
                                                                          : "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// Edit distance, for "did you mean" hints on misspelt keys. Keys are short, so quadratic is fine.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// " (did you mean 'x'?)" when one of `known` is close to `key`, else "".
template <typename Range>
std::string suggestion(std::string_view key, const Range& known) {
  std::string_view best;
  std::size_t best_distance = 3;  // more than two edits away is a different word
  for (std::string_view k : known) {
    std::size_t d = edit_distance(key, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  return best.empty() ? std::string() : " (did you mean '" + std::string(best) + "'?)";
}

// Text of a scalar filter value, as an event property of that value would read.
bool scalar_text(const toml::node& n, std::string* out) {
  if (const auto* s = n.as_string()) {
    *out = s->get();
    return true;
  }
  if (const auto* i = n.as_integer()) {
    *out = std::to_string(i->get());
    return true;
  }
  if (const auto* b = n.as_boolean()) {
    *out = b->get() ? "true" : "false";
    return true;
  }
  if (const auto* f = n.as_floating_point()) {
    double d = f->get();
    if (d != d || d == std::numeric_limits<double>::infinity() ||
        d == -std::numeric_limits<double>::infinity()) {
      return false;  // no JSON number has this text
    }
    std::array<char, 64> buf{};
    auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), d);
    if (ec != std::errc()) {
      return false;
    }
    out->assign(buf.data(), end);
    return true;
  }
  return false;
}

bool before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// A table's entries in file order. toml++ keeps keys sorted by name; errors should come in the
// order a person reads the file.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  out.reserve(t.size());
  for (const auto& [k, v] : t) {
    out.emplace_back(&k, &v);
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return before(a.first->source().begin, b.first->source().begin);
  });
  return out;
}

// Where each key of one table was given, for checks that span keys.
using Positions = std::map<std::string, toml::source_position, std::less<>>;

// ---------------------------------------------------------------------------------------------
// The loader: walks the TOML tree against the option table.

class Loader {
 public:
  explicit Loader(std::string_view path) : path_(path.empty() ? "<config>" : path) {}

  Status load(const toml::table& root, Config* config) {
    for (const auto& [key, node] : in_file_order(root)) {
      std::string_view name = key->str();
      const toml::source_position at = key->source().begin;
      if (name == kServerSection.name) {
        TALLY_TRY(load_section(*node, at, kServerSection, kServerOptions, &config->server));
      } else if (name == kStorageSection.name) {
        TALLY_TRY(load_section(*node, at, kStorageSection, kStorageOptions, &config->storage));
      } else if (name == kMetersSection.name) {
        TALLY_TRY(load_meters(*node, at, &config->meters));
      } else if (name == kCustomersSection.name) {
        TALLY_TRY(load_customers(*node, at, &config->customers));
      } else if (name == kEnforcementSection.name) {
        TALLY_TRY(load_section(*node, at, kEnforcementSection, kEnforcementOptions,
                               &config->enforcement));
      } else if (name == kPlansSection.name) {
        TALLY_TRY(load_plans(*node, at, &config->plans));
      } else if (name == kRoutesSection.name) {
        TALLY_TRY(load_tables(*node, at, kRoutesSection, kRouteOptions, "routes", &config->routes));
      } else if (name == kCreditsSection.name) {
        TALLY_TRY(load_section(*node, at, kCreditsSection, kCreditsOptions, &config->credits));
      } else if (name == kRetentionSection.name) {
        TALLY_TRY(
            load_section(*node, at, kRetentionSection, kRetentionOptions, &config->retention));
      } else if (name == kClusterSection.name) {
        config->cluster.emplace();
        TALLY_TRY(load_section(*node, at, kClusterSection, kClusterOptions, &*config->cluster));
      } else if (name == kPricesSection.name) {
        TALLY_TRY(load_prices(*node, at, &config->prices));
      } else if (name == kAlertsSection.name) {
        TALLY_TRY(load_section(*node, at, kAlertsSection, kAlertsOptions, &config->alerts));
      } else if (name == kWebhooksSection.name) {
        TALLY_TRY(load_tables(*node, at, kWebhooksSection, kWebhookOptions, "webhooks",
                              &config->webhooks));
      } else if (name == kNotificationsSection.name) {
        TALLY_TRY(load_tables(*node, at, kNotificationsSection, kNotificationOptions,
                              "notifications", &config->notifications));
      } else {
        static const std::string_view kNames[] = {
            kServerSection.name,    kStorageSection.name,       kEnforcementSection.name,
            kMetersSection.name,    kPlansSection.name,         kRoutesSection.name,
            kCreditsSection.name,   kPricesSection.name,        kAlertsSection.name,
            kWebhooksSection.name,  kNotificationsSection.name, kCustomersSection.name,
            kRetentionSection.name, kClusterSection.name};
        std::string hint = suggestion(name, kNames);
        if (node->is_table()) {
          return fail(at, "unknown section [" + std::string(name) + "]" + hint);
        }
        if (node->is_array_of_tables()) {
          return fail(at, "unknown section [[" + std::string(name) + "]]" + hint);
        }
        return fail(at, "unknown key '" + std::string(name) + "' at top level" + hint);
      }
    }
    return cross_check(root, *config);
  }

 private:
  // "file:line: what".
  Status fail(const toml::source_position& at, std::string_view what) const {
    return Status::invalid_argument(path_ + ":" + std::to_string(at.line) + ": " +
                                    std::string(what));
  }

  Status fail_field(const toml::source_position& at, std::string_view field,
                    std::string_view what) const {
    return fail(at, std::string(field) + ": " + std::string(what));
  }

  template <typename T>
  Status load_section(const toml::node& node, const toml::source_position& at,
                      const SectionDoc& section,
                      std::span<const Option<std::type_identity_t<T>>> options, T* target) {
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      return fail(at, std::string(section.name) + ": expected a table ([" +
                          std::string(section.name) + "]), got " + std::string(type_phrase(node)));
    }
    Positions positions;
    return apply(*table, options, std::string(section.name) + ".",
                 "[" + std::string(section.name) + "]", target, &positions);
  }

  // Sets every key of `table` through `options`. `field_prefix` starts field names in messages
  // ("server.", "meters[2]."); `where` names the table in unknown-key messages ("[[meters]]").
  template <typename T>
  Status apply(const toml::table& table, std::span<const Option<std::type_identity_t<T>>> options,
               const std::string& field_prefix, const std::string& where, T* target,
               Positions* positions) {
    for (const auto& [key, node] : in_file_order(table)) {
      std::string_view name = key->str();
      const toml::source_position at = key->source().begin;
      const auto option = std::find_if(options.begin(), options.end(),
                                       [&](const Option<T>& o) { return o.key == name; });
      if (option == options.end()) {
        std::vector<std::string_view> known;
        for (const Option<T>& o : options) {
          known.push_back(o.key);
        }
        return fail(
            at, "unknown key '" + std::string(name) + "' in " + where + suggestion(name, known));
      }
      const std::string field = field_prefix + std::string(name);
      Value value;
      TALLY_TRY(read(*node, *option, field, &value));
      Status s = option->set(*target, std::move(value));
      if (!s.ok()) {
        return fail_field(node->source().begin, field, s.message());
      }
      positions->emplace(std::string(name), at);
    }
    // The table's own position is its header ("[[meters]]"), where a missing key belongs.
    for (const Option<T>& o : options) {
      if (o.required && positions->find(o.key) == positions->end()) {
        return fail(table.source().begin, field_prefix.substr(0, field_prefix.size() - 1) +
                                              ": missing required key '" + std::string(o.key) +
                                              "'");
      }
    }
    return Status();
  }

  // Reads `node` as option o's kind into *out, checking the bounds.
  template <typename T>
  Status read(const toml::node& node, const Option<T>& o, const std::string& field,
              Value* out) const {
    const toml::source_position at = node.source().begin;
    auto wrong_type = [&](std::string_view expected) {
      return fail_field(
          at, field,
          "expected " + std::string(expected) + ", got " + std::string(type_phrase(node)));
    };
    switch (o.kind) {
      case Kind::kStringOrBool:
        if (const auto* b = node.as_boolean()) {
          out->text = b->get() ? "true" : "false";
          return Status();
        }
        [[fallthrough]];
      case Kind::kString: {
        const auto* s = node.as_string();
        if (s == nullptr) {
          return wrong_type(o.kind == Kind::kString ? "a string" : "a string or a boolean");
        }
        const std::string& text = s->get();
        const auto size = static_cast<std::int64_t>(text.size());
        if (size < o.min || size > o.max) {
          if (o.min > 0 && size == 0) {
            return fail_field(at, field, "must not be empty");
          }
          return fail_field(at, field,
                            "must be " + std::to_string(o.min) + " to " + std::to_string(o.max) +
                                " bytes long, got " + std::to_string(size));
        }
        out->text = text;
        return Status();
      }
      case Kind::kInteger: {
        const auto* i = node.as_integer();
        if (i == nullptr) {
          return wrong_type("an integer");
        }
        out->number = i->get();
        if (out->number < o.min || out->number > o.max) {
          return fail_field(at, field,
                            std::to_string(out->number) + " is out of range " +
                                std::to_string(o.min) + ".." + std::to_string(o.max));
        }
        return Status();
      }
      case Kind::kBool: {
        const auto* b = node.as_boolean();
        if (b == nullptr) {
          return wrong_type("true or false");
        }
        out->flag = b->get();
        return Status();
      }
      case Kind::kBytes: {
        std::uint64_t bytes = 0;
        if (const auto* i = node.as_integer()) {
          if (i->get() < 0) {
            return fail_field(at, field, std::to_string(i->get()) + " is negative");
          }
          bytes = static_cast<std::uint64_t>(i->get());
        } else if (const auto* s = node.as_string()) {
          Status st = parse_byte_size(s->get(), &bytes);
          if (!st.ok()) {
            return fail_field(at, field, st.message());
          }
        } else {
          return wrong_type("a size (an integer, or a string such as \"64MiB\")");
        }
        if (bytes < static_cast<std::uint64_t>(o.min) ||
            bytes > static_cast<std::uint64_t>(o.max)) {
          return fail_field(at, field,
                            std::to_string(bytes) + " bytes is out of range " +
                                format_bytes(o.min) + ".." + format_bytes(o.max));
        }
        out->number = static_cast<std::int64_t>(bytes);
        return Status();
      }
      case Kind::kDuration: {
        std::int64_t seconds = 0;
        if (const auto* i = node.as_integer()) {
          seconds = i->get();
          if (seconds < 0) {
            return fail_field(at, field, std::to_string(seconds) + " is negative");
          }
        } else if (const auto* s = node.as_string()) {
          if (s->get() != "forever") {
            Status st = parse_duration_seconds(s->get(), &seconds);
            if (!st.ok()) {
              return fail_field(at, field, st.message() + ", or \"forever\"");
            }
          }
        } else {
          return wrong_type("a duration (\"forever\", seconds, or a string such as \"30d\")");
        }
        if (seconds < o.min || seconds > o.max) {
          return fail_field(at, field,
                            std::to_string(seconds) + " seconds is out of range " +
                                format_seconds(o.min) + ".." + format_seconds(o.max));
        }
        out->number = seconds;
        return Status();
      }
      case Kind::kListen: {
        const auto* s = node.as_string();
        if (s == nullptr) {
          return wrong_type("a string \"host:port\"");
        }
        std::uint16_t port = 0;
        Status st = parse_listen(s->get(), &out->text, &port);
        if (!st.ok()) {
          return fail_field(at, field, st.message());
        }
        out->number = port;
        return Status();
      }
      case Kind::kStringOrList: {
        std::vector<const toml::node*> elements;
        std::vector<std::string> element_fields;
        if (node.is_string()) {
          elements.push_back(&node);
          element_fields.push_back(field);
        } else if (const auto* array = node.as_array()) {
          if (array->empty() || static_cast<std::int64_t>(array->size()) > o.max) {
            return fail_field(at, field,
                              "has " + std::to_string(array->size()) + " entries; 1 to " +
                                  std::to_string(o.max) + " are allowed");
          }
          for (std::size_t i = 0; i < array->size(); ++i) {
            elements.push_back(array->get(i));
            element_fields.push_back(field + "[" + std::to_string(i) + "]");
          }
        } else {
          return wrong_type("a string or an array of strings");
        }
        for (std::size_t i = 0; i < elements.size(); ++i) {
          const toml::node& element = *elements[i];
          const toml::source_position element_at = element.source().begin;
          const auto* s = element.as_string();
          if (s == nullptr) {
            return fail_field(element_at, element_fields[i],
                              "expected a string, got " + std::string(type_phrase(element)));
          }
          if (s->get().empty() || s->get().size() > kConnStringBytesMax) {
            return fail_field(
                element_at, element_fields[i],
                "must be 1 to " + std::to_string(kConnStringBytesMax) + " bytes long");
          }
          if (std::find(out->list.begin(), out->list.end(), s->get()) != out->list.end()) {
            return fail_field(element_at, element_fields[i], "is listed twice");
          }
          out->list.push_back(s->get());
        }
        return Status();
      }
      case Kind::kStringList: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type("an array of strings");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string element_field = field + "[" + std::to_string(i) + "]";
          const toml::source_position element_at = element.source().begin;
          const auto* s = element.as_string();
          if (s == nullptr) {
            return fail_field(element_at, element_field,
                              "expected a string, got " + std::string(type_phrase(element)));
          }
          if (s->get().empty() || s->get().size() > kNameBytesMax) {
            return fail_field(element_at, element_field,
                              "must be 1 to " + std::to_string(kNameBytesMax) + " bytes long");
          }
          if (std::find(out->list.begin(), out->list.end(), s->get()) != out->list.end()) {
            return fail_field(element_at, element_field, "'" + s->get() + "' is listed twice");
          }
          out->list.push_back(s->get());
        }
        return Status();
      }
      case Kind::kFilter: {
        const auto* table = node.as_table();
        if (table == nullptr) {
          return wrong_type("a table such as { feature_id = \"x\" }");
        }
        if (static_cast<std::int64_t>(table->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(table->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (const auto& [key, value] : in_file_order(*table)) {
          const std::string entry_field = field + "." + std::string(key->str());
          const toml::source_position entry_at = key->source().begin;
          if (key->str().empty() || key->str().size() > kNameBytesMax) {
            return fail_field(
                entry_at, field,
                "property names must be 1 to " + std::to_string(kNameBytesMax) + " bytes long");
          }
          std::string text;
          if (!scalar_text(*value, &text)) {
            return fail_field(entry_at, entry_field,
                              "expected a string, integer, float or boolean, got " +
                                  std::string(type_phrase(*value)));
          }
          if (text.size() > kFilterTextBytesMax) {
            return fail_field(entry_at, entry_field,
                              "longer than " + std::to_string(kFilterTextBytesMax) + " bytes");
          }
          out->pairs.emplace_back(std::string(key->str()), std::move(text));
        }
        return Status();
      }
      case Kind::kIntList: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type("an array of integers");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string element_field = field + "[" + std::to_string(i) + "]";
          const auto* n = element.as_integer();
          if (n == nullptr) {
            return fail_field(element.source().begin, element_field,
                              "expected an integer, got " + std::string(type_phrase(element)));
          }
          if (n->get() < o.min || n->get() > o.max) {
            return fail_field(element.source().begin, element_field,
                              std::to_string(n->get()) + " is out of range " +
                                  std::to_string(o.min) + ".." + std::to_string(o.max));
          }
          if (!out->ints.empty() && n->get() <= out->ints.back()) {
            return fail_field(element.source().begin, element_field,
                              "values must be ascending without repeats");
          }
          out->ints.push_back(n->get());
        }
        return Status();
      }
      case Kind::kAmount: {
        if (!scalar_text(node, &out->text) || node.is_boolean()) {
          return wrong_type("a number or a decimal string");
        }
        return Status();
      }
      case Kind::kTiers: {
        const auto* array = node.as_array();
        if (array == nullptr || array->empty()) {
          return wrong_type(
              "a non-empty array of tables such as [{ up_to = 1000, unit_price = "
              "\"0.01\" }, { unit_price = \"0.008\" }]");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string ef = field + "[" + std::to_string(i) + "]";
          const toml::source_position eat = element.source().begin;
          const auto* t = element.as_table();
          if (t == nullptr) {
            return fail_field(eat, ef,
                              "expected a table, got " + std::string(type_phrase(element)));
          }
          core::PriceTier tier;
          tier.unbounded = true;
          for (const auto& [key, value] : in_file_order(*t)) {
            const std::string kf = ef + "." + std::string(key->str());
            const toml::source_position kat = key->source().begin;
            const std::string_view k = key->str();
            std::string text;
            if (!scalar_text(*value, &text) || value->is_boolean()) {
              return fail_field(kat, kf, "expected a number or a decimal string");
            }
            if (k == "up_to") {
              if (text == "inf" || text == "unlimited" || text == "-1") {
                continue;
              }
              Status st = decimal_value(text, false, &tier.up_to);
              if (!st.ok() || tier.up_to.units == 0) {
                return fail_field(kat, kf, "expected a positive number or \"inf\"");
              }
              tier.unbounded = false;
            } else if (k == "unit_price" || k == "flat_fee") {
              Status st =
                  decimal_value(text, false, k == "unit_price" ? &tier.unit_price : &tier.flat_fee);
              if (!st.ok()) {
                return fail_field(kat, kf, st.message());
              }
            } else {
              static constexpr std::string_view kKeys[] = {"up_to", "unit_price", "flat_fee"};
              return fail(kat,
                          "unknown key '" + std::string(k) + "' in " + ef + suggestion(k, kKeys));
            }
          }
          const bool last = i + 1 == array->size();
          if (tier.unbounded != last) {
            return fail_field(eat, ef,
                              last ? "the last tier has no bound: use up_to = \"inf\" or leave "
                                     "it out"
                                   : "every tier but the last needs 'up_to'");
          }
          if (!out->tiers.empty() && !tier.unbounded && tier.up_to <= out->tiers.back().up_to) {
            return fail_field(eat, ef + ".up_to", "tiers must be ascending");
          }
          out->tiers.push_back(tier);
        }
        return Status();
      }
      case Kind::kLimits: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type(
              "an array of tables such as [{ meter = \"api_calls\", period = "
              "\"day\", amount = 100 }]");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string ef = field + "[" + std::to_string(i) + "]";
          const toml::source_position eat = element.source().begin;
          const auto* t = element.as_table();
          if (t == nullptr) {
            return fail_field(eat, ef,
                              "expected a table, got " + std::string(type_phrase(element)));
          }
          std::string meter, period, amount;
          std::int64_t days = 0;
          bool hard = true;
          bool has_amount = false;
          for (const auto& [key, value] : in_file_order(*t)) {
            const std::string kf = ef + "." + std::string(key->str());
            const toml::source_position kat = key->source().begin;
            const std::string_view k = key->str();
            if (k == "meter" || k == "period") {
              const auto* str = value->as_string();
              if (str == nullptr) {
                return fail_field(kat, kf,
                                  "expected a string, got " + std::string(type_phrase(*value)));
              }
              (k == "meter" ? meter : period) = str->get();
            } else if (k == "amount") {
              if (!scalar_text(*value, &amount) || value->is_boolean()) {
                return fail_field(kat, kf, "expected a number, -1 or \"unlimited\"");
              }
              has_amount = true;
            } else if (k == "days") {
              const auto* n = value->as_integer();
              if (n == nullptr || n->get() < 1 || n->get() > kTrialDaysMax) {
                return fail_field(kat, kf,
                                  "expected an integer 1.." + std::to_string(kTrialDaysMax));
              }
              days = n->get();
            } else if (k == "hard") {
              const auto* b = value->as_boolean();
              if (b == nullptr) {
                return fail_field(kat, kf, "expected true or false");
              }
              hard = b->get();
            } else {
              static constexpr std::string_view kKeys[] = {"meter", "period", "amount", "days",
                                                           "hard"};
              return fail(kat,
                          "unknown key '" + std::string(k) + "' in " + ef + suggestion(k, kKeys));
            }
          }
          if (meter.empty() || period.empty() || !has_amount) {
            return fail_field(eat, ef, "a limit needs 'meter', 'period' and 'amount'");
          }
          Result<core::LimitRule> rule = make_limit(meter, period, days, amount, hard);
          if (!rule) {
            return fail_field(eat, ef, rule.error().message());
          }
          out->limits.push_back(std::move(*rule));
        }
        return Status();
      }
    }
    return fail_field(at, field, "unsupported option kind");  // unreachable: all kinds handled
  }

  // The node of an array-of-tables section, or an error saying how to write one.
  Result<const toml::array*> array_of_tables(const toml::node& node,
                                             const toml::source_position& at,
                                             const SectionDoc& section) const {
    const toml::array* array = node.as_array();
    const std::string name(section.name);
    if (array == nullptr) {
      return fail(at, name + ": expected an array of tables ([[" + name + "]]), got " +
                          std::string(type_phrase(node)));
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::node& entry = *array->get(i);
      if (!entry.is_table()) {
        return fail(entry.source().begin, name + "[" + std::to_string(i) +
                                              "]: expected a table, got " +
                                              std::string(type_phrase(entry)));
      }
    }
    return array;
  }

  Status load_meters(const toml::node& node, const toml::source_position& at,
                     std::vector<core::MeterSpec>* meters) {
    Result<const toml::array*> array = array_of_tables(node, at, kMetersSection);
    if (!array) {
      return array.error();
    }
    if ((*array)->size() > kMetersMax) {
      return fail(at, "meters: " + std::to_string((*array)->size()) + " meters; at most " +
                          std::to_string(kMetersMax) + " are allowed");
    }
    std::map<std::string, std::pair<std::size_t, std::uint32_t>, std::less<>> seen;  // line
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "meters[" + std::to_string(i) + "]";
      core::MeterSpec meter;
      Positions positions;
      TALLY_TRY(apply(entry, kMeterOptions, prefix + ".", "[[meters]]", &meter, &positions));

      const toml::source_position key_at = positions.at("key");
      auto [it, inserted] = seen.try_emplace(meter.key, i, key_at.line);
      if (!inserted) {
        return fail_field(key_at, prefix + ".key",
                          "'" + meter.key + "' is already the key of meters[" +
                              std::to_string(it->second.first) + "] (line " +
                              std::to_string(it->second.second) + ")");
      }

      const auto value_at = positions.find("value");
      const bool has_value = value_at != positions.end();
      if (meter.aggregation == core::Aggregation::kCount && has_value) {
        const bool explicit_count = positions.count("aggregation") > 0;
        return fail_field(value_at->second, prefix + ".value",
                          std::string("a count takes no value") +
                              (explicit_count ? "" : " (aggregation defaults to count)") +
                              "; remove 'value' or choose another aggregation");
      }
      if (meter.allow_negative && (meter.aggregation == core::Aggregation::kCount ||
                                   meter.aggregation == core::Aggregation::kUniqueCount)) {
        return fail_field(positions.at("allow_negative"), prefix + ".allow_negative",
                          std::string("a ") +
                              std::string(core::aggregation_name(meter.aggregation)) +
                              " has no value that could be negative; remove 'allow_negative'");
      }
      if (meter.aggregation != core::Aggregation::kCount && !has_value) {
        return fail(entry.source().begin,
                    prefix + ": aggregation '" +
                        std::string(core::aggregation_name(meter.aggregation)) +
                        "' needs a 'value' (a path such as \"$.input_tokens\")");
      }
      meters->push_back(std::move(meter));
    }
    return Status();
  }

  Status load_customers(const toml::node& node, const toml::source_position& at,
                        std::vector<CustomerSeed>* customers) {
    Result<const toml::array*> array = array_of_tables(node, at, kCustomersSection);
    if (!array) {
      return array.error();
    }
    if ((*array)->size() > kCustomersMax) {
      return fail(at, "customers: " + std::to_string((*array)->size()) + " customers; at most " +
                          std::to_string(kCustomersMax) + " are allowed");
    }
    std::map<std::string, std::pair<std::size_t, std::uint32_t>, std::less<>> seen;
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "customers[" + std::to_string(i) + "]";
      CustomerSeed customer;
      Positions positions;
      TALLY_TRY(
          apply(entry, kCustomerOptions, prefix + ".", "[[customers]]", &customer, &positions));
      const toml::source_position id_at = positions.at("id");
      auto [it, inserted] = seen.try_emplace(customer.id, i, id_at.line);
      if (!inserted) {
        return fail_field(id_at, prefix + ".id",
                          "'" + customer.id + "' is already the id of customers[" +
                              std::to_string(it->second.first) + "] (line " +
                              std::to_string(it->second.second) + ")");
      }
      customers->push_back(std::move(customer));
    }
    return Status();
  }

  Status load_plans(const toml::node& node, const toml::source_position& at,
                    std::vector<core::Plan>* plans) {
    Result<const toml::array*> array = array_of_tables(node, at, kPlansSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "plans[" + std::to_string(i) + "]";
      core::Plan plan;
      Positions positions;
      TALLY_TRY(apply(entry, kPlanOptions, prefix + ".", "[[plans]]", &plan, &positions));
      for (std::size_t j = 0; j < plans->size(); ++j) {
        if ((*plans)[j].key == plan.key) {
          return fail_field(
              positions.at("key"), prefix + ".key",
              "'" + plan.key + "' is already the key of plans[" + std::to_string(j) + "]");
        }
      }
      plans->push_back(std::move(plan));
    }
    return Status();
  }

  // An array of tables whose entries are rows of `options` alone: [[routes]], [[webhooks]],
  // [[notifications]]. `key` names them in messages ("routes[2].", "[[routes]]").
  template <typename T, typename Section, typename Options>
  Status load_tables(const toml::node& node, const toml::source_position& at,
                     const Section& section, const Options& options, const std::string& key,
                     std::vector<T>* out) {
    Result<const toml::array*> array = array_of_tables(node, at, section);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      T item;
      Positions positions;
      TALLY_TRY(apply(entry, options, key + "[" + std::to_string(i) + "].", "[[" + key + "]]",
                      &item, &positions));
      out->push_back(std::move(item));
    }
    return Status();
  }

  Status load_prices(const toml::node& node, const toml::source_position& at,
                     std::vector<PriceConfig>* prices) {
    Result<const toml::array*> array = array_of_tables(node, at, kPricesSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "prices[" + std::to_string(i) + "]";
      PriceConfig price;
      Positions positions;
      TALLY_TRY(apply(entry, kPriceOptions, prefix + ".", "[[prices]]", &price, &positions));
      const core::PriceSpec& p = price.spec;
      const toml::source_position eat = entry.source().begin;
      auto needs = [&](std::string_view what) {
        return fail(eat, prefix + ": model '" + std::string(to_string(p.model)) + "' needs " +
                             std::string(what));
      };
      switch (p.model) {
        case core::PriceModel::kPerUnit:
          if (!price.has_unit_price) {
            return needs("'unit_price'");
          }
          break;
        case core::PriceModel::kGraduated:
        case core::PriceModel::kVolume:
          if (p.tiers.empty()) {
            return needs("'tiers'");
          }
          break;
        case core::PriceModel::kPackage:
          if (p.package_size.units <= 0 || positions.count("package_price") == 0) {
            return needs("'package_size' (> 0) and 'package_price'");
          }
          break;
        case core::PriceModel::kFlat:
          if (positions.count("flat_fee") == 0) {
            return needs("'flat_fee'");
          }
          break;
      }
      prices->push_back(std::move(price));
    }
    return Status();
  }

  // References between sections: limits and routes name meters, default_plan names a plan.
  Status cross_check(const toml::table& root, const Config& config) const {
    auto entry_at = [&](std::string_view section, std::size_t i) {
      const toml::array* a = root[section].as_array();
      return a != nullptr && i < a->size() ? a->get(i)->source().begin : root.source().begin;
    };
    for (std::size_t i = 0; i < config.plans.size(); ++i) {
      const core::Plan& plan = config.plans[i];
      for (std::size_t j = 0; j < plan.limits.size(); ++j) {
        const core::LimitRule& l = plan.limits[j];
        const std::string field =
            "plans[" + std::to_string(i) + "].limits[" + std::to_string(j) + "]";
        const core::MeterSpec* m = config.find_meter(l.meter);
        if (m == nullptr) {
          return fail_field(entry_at("plans", i), field + ".meter",
                            "'" + l.meter + "' is not a configured meter");
        }
        for (std::size_t k = 0; k < j; ++k) {
          const core::LimitRule& earlier = plan.limits[k];
          if (earlier.meter == l.meter && earlier.period == l.period) {
            return fail_field(entry_at("plans", i), field,
                              "repeats the " + std::string(core::period_name(l.period)) +
                                  " limit of meter '" + l.meter + "' (limits[" + std::to_string(k) +
                                  "]); a plan has one limit per meter and period");
          }
        }
        if (m->aggregation != core::Aggregation::kCount &&
            m->aggregation != core::Aggregation::kSum &&
            m->aggregation != core::Aggregation::kLatest &&
            m->aggregation != core::Aggregation::kMax) {
          return fail_field(entry_at("plans", i), field + ".meter",
                            "meter '" + l.meter + "' aggregates by " +
                                std::string(core::aggregation_name(m->aggregation)) +
                                "; limits apply to count, sum, latest and max meters");
        }
        if (core::period_is_rate(l.period) && m->aggregation != core::Aggregation::kCount &&
            m->aggregation != core::Aggregation::kSum) {
          return fail_field(entry_at("plans", i), field + ".period",
                            "a rate limit needs a count or sum meter");
        }
      }
    }
    for (std::size_t i = 0; i < config.routes.size(); ++i) {
      const RouteRule& r = config.routes[i];
      if (config.find_meter(r.meter) == nullptr) {
        return fail_field(entry_at("routes", i), "routes[" + std::to_string(i) + "].meter",
                          "'" + r.meter + "' is not a configured meter");
      }
    }
    for (std::size_t i = 0; i < config.customers.size(); ++i) {
      const std::string& plan = config.customers[i].plan;
      if (!plan.empty() && config.find_plan(plan) == nullptr) {
        return fail_field(entry_at("customers", i), "customers[" + std::to_string(i) + "].plan",
                          "'" + plan + "' is not a configured plan");
      }
    }
    for (std::size_t i = 0; i < config.prices.size(); ++i) {
      const core::PriceSpec& p = config.prices[i].spec;
      const std::string field = "prices[" + std::to_string(i) + "]";
      const core::MeterSpec* m = config.find_meter(p.meter);
      if (m == nullptr) {
        return fail_field(entry_at("prices", i), field + ".meter",
                          "'" + p.meter + "' is not a configured meter");
      }
      if (m->aggregation != core::Aggregation::kCount &&
          m->aggregation != core::Aggregation::kSum) {
        return fail_field(entry_at("prices", i), field + ".meter",
                          "meter '" + p.meter + "' aggregates by " +
                              std::string(core::aggregation_name(m->aggregation)) +
                              "; prices apply to count and sum meters");
      }
      if (p.currency != config.credits.currency) {
        return fail_field(entry_at("prices", i), field + ".currency",
                          "'" + p.currency + "' differs from [credits] currency '" +
                              config.credits.currency + "'");
      }
      // Entries of one meter and match are versions of one price: each its own start.
      for (std::size_t j = 0; j < i; ++j) {
        const PriceConfig& earlier = config.prices[j];
        if (earlier.spec.meter != p.meter || !same_match(earlier.spec.match, p.match)) {
          continue;
        }
        const PriceConfig& here = config.prices[i];
        if (here.has_effective_from == earlier.has_effective_from &&
            (!here.has_effective_from || here.effective_from_us == earlier.effective_from_us)) {
          return fail_field(entry_at("prices", i), field,
                            "repeats the meter and match of prices[" + std::to_string(j) +
                                "]: versions of one price each need their own effective_from "
                                "(one may have none)");
        }
      }
    }
    if (!config.enforcement.default_plan.empty() &&
        config.find_plan(config.enforcement.default_plan) == nullptr) {
      const toml::node* n = root.at_path("enforcement.default_plan").node();
      return fail_field(n != nullptr ? n->source().begin : root.source().begin,
                        "enforcement.default_plan",
                        "'" + config.enforcement.default_plan + "' is not a configured plan");
    }
    for (const auto& [removed, replacement] : config.enforcement.replaced_plans) {
      const toml::node* n = root.at_path("enforcement.replaced_plans").node();
      const toml::source_position where = n != nullptr ? n->source().begin : root.source().begin;
      if (config.find_plan(removed) != nullptr) {
        return fail_field(
            where, "enforcement.replaced_plans." + removed,
            "'" + removed + "' is a configured plan; only removed plans are replaced");
      }
      if (config.find_plan(replacement) == nullptr) {
        return fail_field(where, "enforcement.replaced_plans." + removed,
                          "'" + replacement + "' is not a configured plan");
      }
    }
    for (std::size_t i = 0; i < config.plans.size(); ++i) {
      const core::Plan& plan = config.plans[i];
      if (!plan.alert_levels.empty() && plan.alert_levels.size() != plan.alert_thresholds.size()) {
        return fail_field(entry_at("plans", i), "plans[" + std::to_string(i) + "].alert_levels",
                          "names " + std::to_string(plan.alert_levels.size()) + " levels for " +
                              std::to_string(plan.alert_thresholds.size()) +
                              " alert_thresholds; give one per threshold");
      }
    }
    const AlertsConfig& alerts = config.alerts;
    if (!alerts.levels.empty() && alerts.levels.size() != alerts.thresholds.size()) {
      const toml::node* n = root.at_path("alerts.levels").node();
      return fail_field(n != nullptr ? n->source().begin : root.source().begin, "alerts.levels",
                        "names " + std::to_string(alerts.levels.size()) + " levels for " +
                            std::to_string(alerts.thresholds.size()) +
                            " thresholds; give one per threshold");
    }
    for (std::size_t i = 0; i < config.webhooks.size(); ++i) {
      const WebhookConfig& w = config.webhooks[i];
      if (w.retry_backoff_max_seconds < w.retry_backoff_seconds) {
        return fail_field(entry_at("webhooks", i),
                          "webhooks[" + std::to_string(i) + "].retry_backoff_max",
                          "is shorter than retry_backoff");
      }
    }
    for (std::size_t i = 0; i < config.notifications.size(); ++i) {
      const NotificationConfig& n = config.notifications[i];
      const std::string name = "notifications[" + std::to_string(i) + "]";
      if (n.retry_backoff_max_seconds < n.retry_backoff_seconds) {
        return fail_field(entry_at("notifications", i), name + ".retry_backoff_max",
                          "is shorter than retry_backoff");
      }
      if (n.to.empty() && !n.to_customer) {
        return fail_field(entry_at("notifications", i), name,
                          "no recipients: set `to`, or `to_customer = true`");
      }
      if (!n.user.empty() && n.password_env.empty()) {
        return fail_field(entry_at("notifications", i), name,
                          "user needs password_env (the environment variable that holds the "
                          "password)");
      }
      if (n.user.empty() && !n.password_env.empty()) {
        return fail_field(entry_at("notifications", i), name, "password_env needs a user");
      }
    }
    return Status();
  }

  std::string path_;
};

}  // namespace

Result<Config> parse_config(std::string_view toml_text, std::string_view path) {
  const std::string shown_path = path.empty() ? std::string("<config>") : std::string(path);
  Config config;
  config.source_path = std::string(path);
  try {
    toml::table root = toml::parse(toml_text, std::string_view(shown_path));
    Loader loader(shown_path);
    TALLY_TRY(loader.load(root, &config));
    for (PriceConfig& price : config.prices) {
      const core::Decimal markup =
          price.has_markup ? price.markup_percent : config.credits.markup_percent;
      core::Decimal factor;
      core::Decimal rate;
      if (!core::divide_decimal_half_even(markup + core::Decimal::from_int(100),
                                          core::Decimal::from_int(100), &factor) ||
          !core::multiply_half_even(config.credits.per_currency_unit, factor, &rate)) {
        return Status::invalid_argument(shown_path + ": prices of meter '" + price.spec.meter +
                                        "': the credit rate is out of range");
      }
      price.spec.credits_per_currency_unit = rate;
    }
  } catch (const toml::parse_error& e) {
    const toml::source_position at = e.source().begin;
    return Status::invalid_argument(shown_path + ":" + std::to_string(at.line) + ":" +
                                    std::to_string(at.column) + ": " +
                                    std::string(e.description()));
  } catch (const std::exception& e) {
    // Only allocation failure is expected here; no exception may leave the config layer.
    return Status::internal(shown_path + ": " + e.what());
  }
  return config;
}

Result<Config> load_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Status::not_found("cannot read config file '" + path + "': it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::not_found("cannot read config file '" + path + "': " + std::strerror(errno));
  }
  // Not `stream << in.rdbuf()`: it fails on an empty file, and an empty file is a valid
  // config (every default).
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    // A directory opens on Linux but cannot be read.
    return Status::not_found("cannot read config file '" + path + "'");
  }
  return parse_config(text, path);
}
}  // namespace tally::config
