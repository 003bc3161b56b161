// tally_embed_example: Tally inside another C++ program, without a server.
//
// Opens a tally::Engine on a data directory with a configuration given as TOML text (one meter,
// one plan of 5 API calls a day), creates a customer, and checks one API call at a time until a
// check is denied, printing each decision. Then it reserves work of unknown cost, settles the
// reservation, ingests a plain usage event and prints the customer's usage.
//
//   tally_embed_example DATA_DIR
//
// DATA_DIR is created if missing; run it on a fresh directory (a second run finds the day's
// quota already spent, and says so). Exit code 0 when the fifth check was the last one allowed,
// 1 on any other outcome (a second run included), 2 on a usage or engine error.
#include <cstdio>
#include <string>

#include <tally/engine.h>

namespace {

// The whole configuration. A real program would more likely pass EngineOptions::config_path.
constexpr const char* kConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
unit = "calls"

[[meters]]
key = "tokens"
event_type = "llm_tokens"
aggregation = "sum"
value = "$.tokens"

[enforcement]
default_plan = "free"

[[plans]]
key = "free"
features = ["chat"]
limits = [
  { meter = "api_calls", period = "day", amount = 5 },
  { meter = "tokens", period = "month", amount = 10000 },
]
)";

constexpr int kLimit = 5;
constexpr int kChecksMax = 100;  // a bound on the loop, in case the limit were not enforced

int fail(const char* what, const tally::Status& s) {
  std::fprintf(stderr, "tally_embed_example: %s: %s\n", what, s.to_string().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  tally::EngineOptions options;
  options.config_toml = kConfig;
  options.data_dir = argv[1];
  tally::Result<std::unique_ptr<tally::Engine>> opened = tally::Engine::open(options);
  if (!opened) {
    return fail("open", opened.error());
  }
  tally::Engine& engine = **opened;

  tally::Customer customer;
  customer.id = "acme";
  customer.name = "Acme Inc.";
  customer.plan = "free";
  bool reused = false;
  if (auto c = engine.create_customer(customer); !c) {
    if (c.error().code() != tally::StatusCode::kAlreadyExists) {
      return fail("create customer", c.error());
    }
    reused = true;
    std::printf("customer acme exists already (a reused data directory)\n");
  }

  // Checks: each allowed one consumes 1 api_call at once (counted in memory, its usage event
  // joins the next group commit); the first denied one consumes nothing.
  int allowed = 0;
  bool denied = false;
  for (int n = 1; n <= kChecksMax && !denied; ++n) {
    tally::CheckRequest request;
    request.customer = "acme";
    request.meter = "api_calls";
    request.amount = "1";
    request.feature = "chat";
    request.event_id = "embed-call-" + std::to_string(n);  // a retry with this id counts once
    tally::Result<tally::CheckResult> r = engine.check(request);
    if (!r) {
      return fail("check", r.error());
    }
    if (r->allowed && r->replayed) {
      // A retry of a check that was allowed before (here: by an earlier run) answers that
      // decision again and consumes nothing, whatever the usage is now.
      std::printf("check %d: replayed: allowed before, nothing consumed\n", n);
    } else if (r->allowed) {
      ++allowed;
      std::printf("check %d: allowed, used %s of %s, remaining %s (%s)\n", n,
                  r->rule.used.text().c_str(), r->rule.limit.text().c_str(),
                  r->rule.remaining.text().c_str(), r->rule.rule().c_str());
    } else {
      denied = true;
      std::printf("check %d: denied (%s): %s; retry after %lld s\n", n, std::string(tally::denial_name(r->reason)).c_str(),
                  r->message.c_str(),
                  static_cast<long long>((r->retry_after_us + 999'999) / 1'000'000));
    }
  }

  // A reservation for work whose cost is known only afterwards: hold 2000 tokens, then record
  // the 1234 actually used.
  tally::CheckRequest reserve;
  reserve.customer = "acme";
  reserve.meter = "tokens";
  reserve.amount = "2000";
  reserve.consume = tally::Consume::kReserve;
  tally::Result<tally::CheckResult> held = engine.check(reserve);
  if (!held) {
    return fail("reserve", held.error());
  }
  if (held->allowed) {
    tally::Result<tally::CheckResult> settled =
        engine.commit_reservation(held->reservation_id, "1234");
    if (!settled) {
      return fail("commit reservation", settled.error());
    }
    std::printf("reservation %s: held 2000 tokens, committed 1234\n", held->reservation_id.c_str());
  } else {
    std::printf("reservation denied (%s)\n", std::string(tally::denial_name(held->reason)).c_str());
  }

  // Plain usage events go through ingest, which returns once they are durable. The id makes a
  // resent event count once.
  tally::Result<tally::IngestSummary> ingested = engine.ingest_json(
      R"({"events":[{"id":"embed-tokens-1","customer":"acme","type":"llm_tokens",)"
      R"("properties":{"tokens":100}}]})");
  if (!ingested) {
    return fail("ingest", ingested.error());
  }
  std::printf("ingest: %u accepted, %u duplicate, %u rejected\n", ingested->accepted,
              ingested->duplicates, ingested->rejected);
  for (const tally::EventError& e : ingested->errors) {
    std::printf("  event %u: %s: %s\n", e.index, e.code.c_str(), e.message.c_str());
  }

  engine.flush();  // every consumption above is durable from here on
  tally::Result<tally::CustomerUsage> usage = engine.customer_usage("acme", 0, 0);
  if (!usage) {
    return fail("usage", usage.error());
  }
  for (const tally::UsageItem& item : usage->meters) {
    std::printf("usage this month: %s = %s\n", item.meter.c_str(), item.value.c_str());
  }

  if (denied && allowed == kLimit) {
    std::printf("result: %d checks allowed, then denied\n", allowed);
    return 0;
  }
  if (reused && denied && allowed == 0) {
    std::printf("result: the day's quota was spent by an earlier run\n");
  } else {
    std::printf("result: unexpected: %d allowed, %s\n", allowed,
                denied ? "then denied" : "never denied");
  }
  return 1;
}
