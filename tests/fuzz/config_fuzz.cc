// Fuzzes the TOML configuration (config::parse_config): toml++'s parser and Tally's option
// table over it. Any text must give a Config or kInvalidArgument naming the file; nothing may
// throw out of the config layer or crash, and a config that loads must load the same way twice.
#include "config/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = tally::fuzz::as_text(data, size);
  auto c = tally::config::parse_config(text, "fuzz.toml");
  if (!c) {
    FUZZ_EXPECT(c.error().code() == tally::StatusCode::kInvalidArgument, c.error().message());
    FUZZ_EXPECT(c.error().message().rfind("fuzz.toml", 0) == 0,
                "the message names the file: " + c.error().message());
    return 0;
  }
  auto again = tally::config::parse_config(text, "fuzz.toml");
  FUZZ_EXPECT(again.has_value(), again.error().message());
  FUZZ_EXPECT(again->server == c->server && again->storage == c->storage &&
                  again->enforcement == c->enforcement &&
                  again->meters.size() == c->meters.size() &&
                  again->plans.size() == c->plans.size() && again->customers == c->customers,
              "a second load agrees");
  for (const auto& p : c->plans) {
    FUZZ_EXPECT(c->find_plan(p.key) != nullptr, p.key);
  }
  for (const auto& m : c->meters) {
    FUZZ_EXPECT(c->find_meter(m.key) != nullptr, m.key);
  }
  return 0;
}
