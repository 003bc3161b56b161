// The option reference: the table of every option (options.cc) as OptionInfo rows and as the
// Markdown that docs/configuration.md embeds, so the documentation cannot drift from the parser.
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/options.h"

namespace tally::config {
namespace {

std::string kind_name(Kind kind, std::int64_t min, std::int64_t max) {
  switch (kind) {
    case Kind::kString:
      return "string";
    case Kind::kStringOrBool:
      return "string or boolean";
    case Kind::kInteger:
      return "integer (" + std::to_string(min) + ".." + std::to_string(max) + ")";
    case Kind::kBool:
      return "boolean";
    case Kind::kBytes:
      return "size (" + format_bytes(min) + ".." + format_bytes(max) + ")";
    case Kind::kDuration:
      return "duration (up to " + format_seconds(max) + ")";
    case Kind::kListen:
      return "host:port";
    case Kind::kStringList:
      return "array of strings";
    case Kind::kFilter:
      return "table";
    case Kind::kIntList:
      return "array of integers (" + std::to_string(min) + ".." + std::to_string(max) + ")";
    case Kind::kLimits:
      return "array of limit tables";
    case Kind::kAmount:
      return "amount";
    case Kind::kTiers:
      return "array of tier tables";
    case Kind::kStringOrList:
      return "string or array of strings (1.." + std::to_string(max) + ")";
  }
  return "?";
}

template <typename T>
void append_options(const SectionDoc& section, std::span<const Option<T>> options,
                    std::vector<OptionInfo>* out) {
  for (const Option<T>& o : options) {
    out->push_back(OptionInfo{std::string(section.name), section.is_array, std::string(o.key),
                              kind_name(o.kind, o.min, o.max), std::string(o.default_toml),
                              o.required, std::string(o.doc)});
  }
}

// Markdown table cells cannot hold '|' or line breaks.
std::string cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string format_bytes(std::int64_t bytes) {
  static constexpr std::pair<std::int64_t, std::string_view> kUnits[] = {
      {kTiB, "TiB"}, {kGiB, "GiB"}, {kMiB, "MiB"}, {kKiB, "KiB"}};
  for (const auto& [size, name] : kUnits) {
    if (bytes >= size && bytes % size == 0) {
      return std::to_string(bytes / size) + std::string(name);
    }
  }
  return std::to_string(bytes) + "B";
}

std::string format_seconds(std::int64_t seconds) {
  if (seconds > 0 && seconds % kSecondsPerDay == 0) {
    return std::to_string(seconds / kSecondsPerDay) + "d";
  }
  return std::to_string(seconds) + "s";
}

std::vector<OptionInfo> config_options() {
  std::vector<OptionInfo> out;
  append_options<ServerConfig>(kServerSection, kServerOptions, &out);
  append_options<StorageConfig>(kStorageSection, kStorageOptions, &out);
  append_options<core::MeterSpec>(kMetersSection, kMeterOptions, &out);
  append_options<EnforcementConfig>(kEnforcementSection, kEnforcementOptions, &out);
  append_options<core::Plan>(kPlansSection, kPlanOptions, &out);
  append_options<RouteRule>(kRoutesSection, kRouteOptions, &out);
  append_options<CreditsConfig>(kCreditsSection, kCreditsOptions, &out);
  append_options<PriceConfig>(kPricesSection, kPriceOptions, &out);
  append_options<AlertsConfig>(kAlertsSection, kAlertsOptions, &out);
  append_options<WebhookConfig>(kWebhooksSection, kWebhookOptions, &out);
  append_options<NotificationConfig>(kNotificationsSection, kNotificationOptions, &out);
  append_options<RetentionConfig>(kRetentionSection, kRetentionOptions, &out);
  append_options<CustomerSeed>(kCustomersSection, kCustomerOptions, &out);
  append_options<ClusterConfig>(kClusterSection, kClusterOptions, &out);
  return out;
}

std::string config_reference_markdown() {
  static constexpr const SectionDoc* kSections[] = {
      &kServerSection,    &kStorageSection,  &kMetersSection,        &kEnforcementSection,
      &kPlansSection,     &kRoutesSection,   &kCreditsSection,       &kPricesSection,
      &kAlertsSection,    &kWebhooksSection, &kNotificationsSection, &kRetentionSection,
      &kCustomersSection, &kClusterSection};
  const std::vector<OptionInfo> options = config_options();
  std::string out;
  for (const SectionDoc* section : kSections) {
    const std::string name(section->name);
    out += section->is_array ? "### [[" + name + "]]\n\n" : "### [" + name + "]\n\n";
    out += std::string(section->doc) + "\n\n";
    out += "| key | type | default | meaning |\n";
    out += "|---|---|---|---|\n";
    for (const OptionInfo& o : options) {
      if (o.section != name) {
        continue;
      }
      std::string default_text = o.required               ? "required"
                                 : o.default_toml.empty() ? "none"
                                                          : "`" + o.default_toml + "`";
      out += "| `" + o.key + "` | " + cell(o.type) + " | " + cell(default_text) + " | " +
             cell(o.doc) + " |\n";
    }
    out += "\n";
  }
  out.pop_back();  // one trailing newline, not a blank line
  return out;
}
}  // namespace tally::config
