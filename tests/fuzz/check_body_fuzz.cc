// Fuzzes the JSON bodies of the check API through Api::handle on an in-memory engine: the body
// parsing lives in the handlers (src/http/handlers/check.cc), and what it hands the engine
// (amounts, meters, features, event ids, properties) is checked by the engine, so both are
// exercised as a client would reach them, without sockets.
//
// The first byte picks the route and the key: POST /v1/check, POST /v1/check/batch,
// PUT /v1/customers/c1/overrides, POST /v1/customers/c1/reset, or a commit of a fresh
// reservation (POST /v1/reservations/{id}/commit), with the admin key or customer c1's key.
// The rest is the body. Every answer must be a JSON document, every 4xx must name its error (or
// be a denial, "allowed": false), and no body may earn a 5xx other than 503 (back-pressure).
//
// The engine keeps what the inputs consume, so a long run's state drifts; it is reopened every
// kInputsPerEngine inputs to keep memory flat, and a crashing input replays on a fresh engine.
#include <future>
#include <memory>
#include <string>

#include <simdjson.h>

#include "core/time.h"
#include "fuzz_util.h"
#include "http/api.h"

namespace {

using namespace tally;

constexpr const char* kAdminKey = "fuzz-admin-key-0123456789abcdef";
constexpr int kInputsPerEngine = 20'000;

constexpr const char* kConfig = R"(
[server]
accept_unmetered_events = true

[enforcement]
default_plan = "starter"
reservation_ttl = "60s"

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[plans]]
key = "starter"
features = ["chat", "search"]
limits = [
  { meter = "api_calls", period = "day", amount = 34 },
  { meter = "api_calls", period = "minute", amount = 60 },
  { meter = "tokens", period = "month", amount = 100000 },
]

[[plans]]
key = "metered"
features = ["chat"]
limits = [{ meter = "tokens", period = "lifetime", amount = 1000 }]

[[customers]]
id = "c1"

[[customers]]
id = "c2"
plan = "metered"
)";

struct World {
  World() : clock(*core::parse_rfc3339("2025-01-20T12:00:00Z")) {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = kConfig;
    o.clock = &clock;
    o.admin_key = kAdminKey;
    auto e = Engine::open(o);
    FUZZ_EXPECT(e.has_value(), e.error().message());
    engine = std::move(*e);
    NewApiKeyRequest k;
    k.customer = "c1";
    auto key = engine->create_key(k);
    FUZZ_EXPECT(key.has_value(), key.error().message());
    customer_key = key->secret;
    api = std::make_unique<http::Api>(*engine, http::ApiOptions{});
  }

  FakeClock clock;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<http::Api> api;
  std::string customer_key;
};

http::Response call(World& w, const std::string& key, std::string method, std::string path,
                    std::string body) {
  http::Request r;
  r.method = std::move(method);
  r.path = path;
  r.target = std::move(path);
  r.headers = {{"x-api-key", key}, {"content-type", "application/json"}};
  r.body = std::move(body);
  r.remote_address = "127.0.0.1";
  std::promise<http::Response> answered;
  auto f = answered.get_future();
  w.api->handle(std::move(r),
                [&answered](http::Response resp) { answered.set_value(std::move(resp)); });
  return f.get();
}

// Tally writes exact decimals, whose integer part may pass 64 bits (usage is a sum of amounts
// up to 1e28); simdjson's DOM refuses such numbers, so runs of more than 18 digits are
// shortened before the answer is checked for being JSON.
std::string shorten_long_numbers(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  std::size_t run = 0;
  for (char c : text) {
    run = (c >= '0' && c <= '9') ? run + 1 : 0;
    if (run <= 18) {
      out += c;
    }
  }
  return out;
}

void check_answer(const http::Response& r, std::string_view body) {
  FUZZ_EXPECT(r.status < 500 || r.status == 503,
              std::to_string(r.status) + " " + r.body + " for " + std::string(body));
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  FUZZ_EXPECT(parser.parse(shorten_long_numbers(r.body)).get(root) == simdjson::SUCCESS,
              "answer not JSON: " + r.body);
  if (r.status >= 400) {
    // An error names itself; a denial (429, 403) is a check answer with "allowed": false.
    std::string_view code;
    bool allowed = true;
    FUZZ_EXPECT((root["error"].get_string().get(code) == simdjson::SUCCESS && !code.empty()) ||
                    (root["allowed"].get_bool().get(allowed) == simdjson::SUCCESS && !allowed),
                "an error body names its error: " + r.body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  static std::unique_ptr<World> world;
  static int inputs = 0;
  if (!world || ++inputs % kInputsPerEngine == 0) {
    world.reset();
    world = std::make_unique<World>();
  }
  World& w = *world;
  const std::uint8_t mode = data[0];
  const std::string& key = (mode & 0x80) != 0 ? w.customer_key : std::string(kAdminKey);
  std::string body(tally::fuzz::as_text(data + 1, size - 1));
  http::Response r;
  switch ((mode & 0x7F) % 5) {
    case 0:
      r = call(w, key, "POST", "/v1/check", body);
      break;
    case 1:
      r = call(w, key, "POST", "/v1/check/batch", body);
      break;
    case 2:
      r = call(w, kAdminKey, "PUT", "/v1/customers/c1/overrides", body);
      break;
    case 3:
      r = call(w, kAdminKey, "POST", "/v1/customers/c1/reset", body);
      break;
    default: {
      const http::Response reserved =
          call(w, key, "POST", "/v1/check",
               R"({"customer":"c1","meter":"tokens","amount":5,"consume":"reserve"})");
      check_answer(reserved, "(reserve)");
      simdjson::dom::parser parser;
      std::string_view id;
      if (reserved.status != 200 ||
          parser.parse(reserved.body)["reservation_id"].get_string().get(id) != simdjson::SUCCESS) {
        return 0;  // the reservation was refused (limit reached): nothing to commit
      }
      r = call(w, key, "POST", "/v1/reservations/" + std::string(id) + "/commit", body);
      break;
    }
  }
  check_answer(r, body);
  return 0;
}
