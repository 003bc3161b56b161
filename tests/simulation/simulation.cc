// The deterministic simulation (simulation.h).
//
// The model is what a client of the engine knows: per customer, every event whose ingest was
// acknowledged (id, type, time, value), the credits of acknowledged wallet transactions, the open
// reservations. Whatever the engine answered with an error, and the consumption of an async
// check, is "maybe": it may or may not have been stored. A maybe is settled by looking (the
// event list, the customer, the ledger) as soon as the engine is idle, and adopted into the model
// or dropped; a maybe acknowledged as durable (a check answered with check_durability = "sync")
// must be found. After that, every answer must follow from the model exactly.
#include "simulation/simulation.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/decimal.h"
#include "core/time.h"
#include "engine/engine_impl.h"

namespace tally::sim {

DiskFaults default_faults() {
  DiskFaults f;
  f.write_fail_ppm = 10'000;
  f.write_crash_ppm = 10'000;
  f.lose_unsynced = true;
  f.lie_sync_ppm = 0;
  return f;
}

namespace {

namespace fs = std::filesystem;

constexpr TimeUs kSecondUs = 1'000'000;
constexpr TimeUs kDayUs = 86'400 * kSecondUs;
constexpr TimeUs kStartUs = 1'768'899'600 * kSecondUs;  // 2026-01-20T09:00:00Z
constexpr std::uint32_t kCustomerPool = 6;              // c0 .. c5
constexpr std::int64_t kCallsPerDay = 40;               // plan "basic"
constexpr std::int64_t kTokensPerMonth = 3000;          // plan "basic"
constexpr std::int64_t kCreditsPerToken = 2;            // 0.002 USD x 1000 credits per USD
constexpr std::int64_t kLateDaysMax = 40;               // how far back a late event may go
constexpr int kOpenAttemptsMax = 50;                    // restarts before giving up on a disk
constexpr std::size_t kTraceTailMax = 40;
constexpr std::uint32_t kListPageMax = 1000;

std::string config_toml(bool check_sync, bool fsync) {
  std::string c = R"(
[server]
batch_events_max = 100

[storage]
dedup_window = "forever"
)";
  c += std::string("fsync = ") + (fsync ? "true" : "false") + "\n";
  c += R"(

[enforcement]
default_plan = "basic"
reservation_ttl = "120s"
)";
  c += std::string("check_durability = \"") + (check_sync ? "sync" : "async") + "\"\n";
  c += R"(
[credits]
currency = "USD"
per_currency_unit = 1000

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"
group_by = ["model"]

[[meters]]
key = "peak"
event_type = "tokens"
aggregation = "max"
value = "$.n"

[[plans]]
key = "basic"
limits = [
  { meter = "calls", period = "day", amount = 40 },
  { meter = "tokens", period = "month", amount = 3000 },
]

[[plans]]
key = "open"

[[prices]]
meter = "tokens"
unit_price = "0.002"
)";
  return c;
}

// An event as the model knows it.
struct Ev {
  std::string type;  // "api_call" or "tokens"
  TimeUs time_us = 0;
  std::int64_t n = 0;  // tokens: the value
  std::string group;   // api_call: service; tokens: model
  std::string user;    // api_call
  bool archived = false;
  std::uint64_t ack = 0;  // the step whose write stored it (the order of writes)

  bool calls() const { return type == "api_call"; }
};

struct Cust {
  std::string plan;                  // "" = the default plan, "basic"
  std::map<std::string, Ev> events;  // by id: every event known to be stored
  std::vector<std::string> order;    // the ids in the order they became known (for picking)
  // Ids of consuming checks known to be stored, with the process (engine open) that checked
  // them: within that process a retry is answered as a replay.
  std::vector<std::pair<std::string, std::uint32_t>> check_ids;
  // Ids of checks answered with an error (check_durability = "sync") and not stored: a client
  // retries those, and the retry must count.
  std::vector<std::string> lost_check_ids;
  std::uint64_t ack = 0;  // the step whose write created it

  struct Txn {
    std::string description;
    std::int64_t amount = 0;
    std::uint64_t ack = 0;
  };

  std::vector<Txn> txns;  // acknowledged admin transactions

  void add(const std::string& id, const Ev& ev) {
    events.emplace(id, ev);
    order.push_back(id);
  }
};

// An event whose fate the engine has not told for sure.
struct Maybe {
  std::string customer;
  std::string id;  // "" = named by the engine ("chk_..."): a check without event_id
  Ev ev;
  bool must = false;          // acknowledged as durable: must be found
  bool check = false;         // a check's usage event (retries of checks reuse its id)
  std::uint32_t process = 0;  // the engine open it was checked in
};

struct Hold {
  std::string label;  // "r7": reservation ids are random, so the trace names them by label
  std::string id;
  std::string customer;
  std::string meter;
  std::int64_t amount = 0;
  TimeUs at_us = 0;
  TimeUs expires_us = 0;
  std::string event_id;
  std::string group;
  std::string user;
};

struct ArchiveRec {
  std::string manifest;
  std::vector<std::pair<std::string, std::string>> events;  // (customer, id)
  bool restored = false;
};

struct MaybeTxn {
  std::string customer;
  std::string description;
  std::int64_t amount = 0;
  std::uint64_t ack = 0;
};

bool as_int(const std::string& text, std::int64_t* out) {
  core::Decimal d;
  if (!core::try_parse_decimal(text, &d) || d.units % core::Decimal::kScale != 0) {
    return false;
  }
  *out = static_cast<std::int64_t>(d.units / core::Decimal::kScale);
  return true;
}

TimeUs day_start(TimeUs t) {
  return t - t % kDayUs;
}

TimeUs month_start(TimeUs t) {
  using namespace std::chrono;
  const sys_days day{days{t / kDayUs}};
  const year_month_day ymd{day};
  const sys_days first{ymd.year() / ymd.month() / 1};
  return static_cast<TimeUs>(first.time_since_epoch().count()) * kDayUs;
}

TimeUs next_month_start(TimeUs t) {
  using namespace std::chrono;
  const sys_days day{days{t / kDayUs}};
  const year_month_day ymd{day};
  const sys_days first{(ymd.year() / ymd.month() / 1) + months{1}};
  return static_cast<TimeUs>(first.time_since_epoch().count()) * kDayUs;
}

std::string prop(const StoredEvent& e, const std::string& key) {
  for (const auto& p : e.properties) {
    if (p.key == key) {
      return p.text;
    }
  }
  return "";
}

// The end of the name of the manifest an archive run made at `created` with `id` writes
// (archive.cc, publish_files): "-20260120T090000Z-3.manifest.json".
std::string manifest_suffix(TimeUs created, std::uint64_t id) {
  std::string t;
  for (char ch : core::format_rfc3339(created).substr(0, 19)) {
    if (ch != '-' && ch != ':') {
      t += ch;
    }
  }
  return "-" + t + "Z-" + std::to_string(id) + ".manifest.json";
}

// An id for the trace. The engine names a check's event without event_id "chk_<process>_<n>"
// and a reservation "res_<process>_<n>_<random>", with random parts: the trace shows "chk_<n>"
// and "res_<n>", so it is the same in every run of a seed.
std::string shown(const std::string& id) {
  if (id.starts_with("chk_") || id.starts_with("res_")) {
    const std::size_t a = id.find('_', 4);
    if (a != std::string::npos) {
      const std::size_t b = id.find('_', a + 1);
      return id.substr(0, 4) + id.substr(a + 1, b == std::string::npos ? b : b - a - 1);
    }
  }
  return id;
}

std::string code_name(const Status& s) {
  return std::string(status_code_name(s.code()));
}

class Simulation {
 public:
  explicit Simulation(const SimOptions& o)
      : o_(o),
        rng_(o.seed * 0x9E3779B97F4A7C15ull + 0x5EED),
        disk_(o.seed ^ 0xD15CD15CD15CD15Cull, o.faults),
        clock_(kStartUs) {}

  SimReport run() {
    if (o_.work_dir.empty()) {
      dir_ = fs::temp_directory_path() /
             ("tally-sim-" + std::to_string(o_.seed) + "-" + std::to_string(::getpid()));
      remove_dir_ = true;
    } else {
      dir_ = o_.work_dir;
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
    fs::create_directories(dir_ / "archive", ec);
    check_sync_ = rng_.below(2) == 0;
    // One seed in four runs with [storage] fsync = false: acknowledged writes may then be lost at
    // a crash, but only as a suffix (the log is replayed in order), never one without those
    // acknowledged before it.
    fsync_ = rng_.below(4) != 0;
    report_.durability =
        std::string(check_sync_ ? "sync" : "async") + (fsync_ ? "" : ", fsync false");
    note("open: check_durability " + report_.durability);
    if (open_engine()) {
      for (step_ = 1; step_ <= o_.steps && report_.ok; ++step_) {
        ++report_.steps;
        if (rng_.chance(o_.crash_ppm)) {
          crash("between steps");
          continue;
        }
        one_step();
        settle();
      }
      if (report_.ok) {
        crash("at the end");
      }
    }
    engine_.reset();
    if (remove_dir_) {
      fs::remove_all(dir_, ec);
    }
    report_.disk = disk_.counters();
    for (const auto& [id, c] : model_) {
      report_.events_acknowledged += c.events.size();
    }
    return std::move(report_);
  }

 private:
  // ---- trace and failures --------------------------------------------------------------------

  void note(const std::string& line) {
    std::string full = "step " + std::to_string(step_) + ": " + line;
    for (char ch : full) {
      hash_ = (hash_ ^ static_cast<unsigned char>(ch)) * 0x100000001B3ull;
    }
    hash_ = (hash_ ^ '\n') * 0x100000001B3ull;
    report_.trace_hash = hash_;
    if (o_.log) {
      std::fprintf(stderr, "%s\n", full.c_str());
    }
    report_.trace_tail.push_back(std::move(full));
    if (report_.trace_tail.size() > kTraceTailMax) {
      report_.trace_tail.erase(report_.trace_tail.begin());
    }
  }

  // Records the first difference; always false, so callers can `return fail(...)`.
  bool fail(const std::string& what) {
    if (report_.ok) {
      report_.ok = false;
      report_.failure = "step " + std::to_string(step_) + ": " + what;
      note("FAILED: " + what);
    }
    return false;
  }

  // ---- engine lifecycle ----------------------------------------------------------------------

  bool open_engine() {
    EngineOptions eo;
    eo.config_toml = config_toml(check_sync_, fsync_);
    eo.data_dir = (dir_ / "data").string();  // names nothing: the disk is the store
    eo.clock = &clock_;
    for (int attempt = 1; attempt <= kOpenAttemptsMax; ++attempt) {
      if (disk_.crashed()) {
        disk_.recover();
      }
      auto e = Engine::Impl::open(eo, disk_.store());
      if (e) {
        engine_ = std::move(*e);
        ++process_;
        engine_->flush();
        if (!disk_.crashed()) {
          return true;
        }
        // A write at start-up was the one the process died in: the open starts over.
        disk_.crash();
        engine_.reset();
        note("crashed while opening");
        continue;
      }
      if (e.error().code() != StatusCode::kIOError) {
        return fail("open failed: " + code_name(e.error()) + " " + e.error().message());
      }
      note("open failed (" + e.error().message() + "), attempt " + std::to_string(attempt));
      if (disk_.crashed()) {
        continue;
      }
    }
    return fail("the engine could not be opened in " + std::to_string(kOpenAttemptsMax) +
                " attempts");
  }

  // The process dies: nothing more is written, the engine is dropped, the disk keeps what it
  // keeps, and a new engine opens on it. Then every answer must agree with the model.
  void crash(const std::string& why) {
    ++report_.crashes;
    note("crash " + why);
    disk_.crash();
    engine_.reset();
    disk_.recover();
    // Reservations are durable once answered, and so are commits and releases once answered:
    // they survive with fsync; without it a suffix of writes may be lost, so any reservation
    // not yet expired may be open or closed. Unsettled async checks (holds without an id) are
    // gone either way.
    std::erase_if(holds_, [](const Hold& h) { return h.id.empty(); });
    if (!fsync_) {
      for (const Hold& h : all_holds_) {
        if (std::none_of(maybe_holds_.begin(), maybe_holds_.end(),
                         [&](const Hold& m) { return m.id == h.id; })) {
          maybe_holds_.push_back(h);
        }
      }
      holds_.clear();
    }
    relaxed_ = !fsync_;
    if (!open_engine()) {
      return;
    }
    if (reconcile()) {
      audit();
    }
  }

  // After a step: waits for the commit thread, handles a crash inside a write, and settles what
  // the step left uncertain.
  void settle() {
    if (!report_.ok) {
      return;
    }
    if (!disk_.crashed()) {
      engine_->flush();
    }
    if (disk_.crashed()) {
      crash("inside a write");
      return;
    }
    if (!maybes_.empty() || !maybe_customers_.empty() || !maybe_txns_.empty() || pending_archive_ ||
        pending_restore_ >= 0) {
      reconcile();
    }
  }

  // ---- the model -----------------------------------------------------------------------------

  // Whether a check answered with check_durability = "sync" must survive a crash.
  bool durable_checks() const { return check_sync_ && fsync_; }

  std::string pick_customer() { return "c" + std::to_string(rng_.below(kCustomerPool)); }

  // A customer the model knows exists, or "" when there is none.
  std::string pick_known_customer() {
    if (model_.empty()) {
      return "";
    }
    auto it = model_.begin();
    std::advance(it, static_cast<long>(rng_.below(model_.size())));
    return it->first;
  }

  std::string fresh_id(const char* prefix) { return prefix + std::to_string(++next_id_); }

  Ev random_event(TimeUs now) {
    Ev ev;
    ev.ack = step_;
    const bool calls = rng_.below(2) == 0;
    ev.type = calls ? "api_call" : "tokens";
    ev.time_us = now;
    if (rng_.below(4) == 0) {
      ev.time_us = now - rng_.range(60, kLateDaysMax * 86'400) * kSecondUs;  // a late event
    }
    if (calls) {
      ev.group = "s" + std::to_string(rng_.range(1, 2));
      ev.user = "u" + std::to_string(rng_.range(1, 6));
    } else {
      ev.group = "m" + std::to_string(rng_.range(1, 2));
      ev.n = rng_.range(0, 200);
    }
    return ev;
  }

  std::string plan_of(const std::string& customer) const {
    auto it = model_.find(customer);
    const std::string plan = it == model_.end() ? "" : it->second.plan;
    return plan.empty() ? "basic" : plan;
  }

  // Usage of a limited meter in the window that holds now: stored events and open holds; with
  // `maybe`, also the holds that may be open.
  std::int64_t used_now(const std::string& customer, const std::string& meter,
                        bool maybe = false) const {
    const TimeUs now = clock_.now_us();
    const bool calls = meter == "calls";
    const TimeUs from = calls ? day_start(now) : month_start(now);
    const TimeUs to = calls ? from + kDayUs : next_month_start(now);
    std::int64_t used = 0;
    auto it = model_.find(customer);
    if (it != model_.end()) {
      for (const auto& [id, ev] : it->second.events) {
        if (ev.calls() == calls && ev.time_us >= from && ev.time_us < to) {
          used += calls ? 1 : ev.n;
        }
      }
    }
    for (const Hold& h : holds_) {
      if (h.customer == customer && h.meter == meter && h.expires_us > now && h.at_us >= from &&
          h.at_us < to) {
        used += h.amount;
      }
    }
    for (const Hold& h : maybe ? maybe_holds_ : std::vector<Hold>{}) {
      if (h.customer == customer && h.meter == meter && h.expires_us > now && h.at_us >= from &&
          h.at_us < to) {
        used += h.amount;
      }
    }
    return used;
  }

  // Whether `amount` fits whatever the holds that may be open are: false when the answer
  // depends on them.
  bool decided(const std::string& customer, const std::string& meter, std::int64_t amount) const {
    if (plan_of(customer) != "basic") {
      return true;
    }
    const std::int64_t limit = meter == "calls" ? kCallsPerDay : kTokensPerMonth;
    return (used_now(customer, meter) + amount <= limit) ==
           (used_now(customer, meter, true) + amount <= limit);
  }

  bool fits(const std::string& customer, const std::string& meter, std::int64_t amount) const {
    if (plan_of(customer) != "basic") {
      return true;
    }
    const std::int64_t limit = meter == "calls" ? kCallsPerDay : kTokensPerMonth;
    return used_now(customer, meter) + amount <= limit;
  }

  void drop_expired_holds() {
    const TimeUs now = clock_.now_us();
    std::erase_if(holds_, [&](const Hold& h) { return h.expires_us <= now; });
    std::erase_if(maybe_holds_, [&](const Hold& h) { return h.expires_us <= now; });
  }

  std::int64_t balance_of(const std::string& customer) const {
    auto it = model_.find(customer);
    if (it == model_.end()) {
      return 0;
    }
    std::int64_t b = 0;
    for (const auto& t : it->second.txns) {
      b += t.amount;
    }
    for (const auto& [id, ev] : it->second.events) {
      if (!ev.calls()) {
        b -= kCreditsPerToken * ev.n;
      }
    }
    return b;
  }

  // The model's customer `id`, made (as created by the write of step `ack`) when absent.
  Cust& customer_entry(const std::string& id, std::uint64_t ack) {
    auto [it, fresh] = model_.try_emplace(id);
    if (fresh) {
      it->second.ack = ack;
    }
    return it->second;
  }

  // ---- steps ---------------------------------------------------------------------------------

  void one_step() {
    const std::uint64_t r = rng_.below(1000);
    if (r < 250) {
      step_ingest();
    } else if (r < 300) {
      step_resend();
    } else if (r < 490) {
      step_check();
    } else if (r < 530) {
      step_check_batch();
    } else if (r < 600) {
      step_reserve();
    } else if (r < 660) {
      step_commit();
    } else if (r < 690) {
      step_release();
    } else if (r < 750) {
      step_wallet();
    } else if (r < 790) {
      step_create_customer();
    } else if (r < 920) {
      step_advance();
    } else if (r < 945 && fsync_) {
      // Archive and restore only where no acknowledged write can be lost: the model does not
      // roll them back.
      step_archive();
    } else if (r < 970 && fsync_) {
      step_restore();
    } else if (r < 980 && !check_sync_ && fsync_) {
      step_async_loss();
    } else {
      note("audit");
      if (reconcile()) {
        audit();
      }
    }
  }

  static std::string event_json(const std::string& customer, const std::string& id, const Ev& ev,
                                bool valid_type) {
    std::string j = "{\"id\":\"" + id + "\",\"customer\":\"" + customer + "\"";
    if (valid_type) {
      j += ",\"type\":\"" + ev.type + "\"";
    }
    j += ",\"time\":\"" + core::format_rfc3339(ev.time_us) + "\",\"properties\":{";
    if (ev.calls()) {
      j += "\"service\":\"" + ev.group + "\",\"user\":\"" + ev.user + "\"";
    } else {
      j += "\"model\":\"" + ev.group + "\",\"n\":" + std::to_string(ev.n);
    }
    return j + "}}";
  }

  void step_ingest() {
    const TimeUs now = clock_.now_us();
    const std::uint64_t k = 1 + rng_.below(6);
    std::string body = "[";
    std::string line = "ingest";
    std::uint32_t want_accepted = 0;
    std::uint32_t want_duplicates = 0;
    std::uint32_t want_rejected = 0;
    std::vector<std::pair<std::string, std::string>> in_batch;  // accepted (customer, id)
    std::vector<Maybe> stored;                                  // what acceptance stores
    for (std::uint64_t i = 0; i < k; ++i) {
      std::string customer = pick_customer();
      Ev ev = random_event(now);
      std::string id;
      bool valid = true;
      const std::uint64_t mode = rng_.below(100);
      auto cit = model_.find(customer);
      if (mode < 6) {
        valid = false;  // no type: refused by the parser
        id = fresh_id("x");
      } else if (mode < 26 && cit != model_.end() && !cit->second.order.empty()) {
        // A retry of a stored event (perhaps archived), perhaps with other content.
        id = cit->second.order[rng_.below(cit->second.order.size())];
      } else if (mode < 34 && !in_batch.empty()) {
        const auto& prev = in_batch[rng_.below(in_batch.size())];
        customer = prev.first;
        id = prev.second;
      } else if (mode < 40 && !model_.empty()) {
        // Another customer's id: ids are scoped per customer, so this is a new event here.
        const std::string other = pick_known_customer();
        const Cust& oc = model_.at(other);
        id = oc.order.empty() ? fresh_id("e") : oc.order[rng_.below(oc.order.size())];
      } else {
        id = fresh_id("e");
      }
      if (i != 0) {
        body += ",";
      }
      body += event_json(customer, id, ev, valid);
      if (!valid) {
        ++want_rejected;
        line += " " + customer + ":" + shown(id) + "(invalid)";
        continue;
      }
      const bool known = model_.count(customer) != 0 && model_.at(customer).events.count(id) != 0;
      bool again = false;
      for (const auto& p : in_batch) {
        again = again || (p.first == customer && p.second == id);
      }
      if (known || again) {
        ++want_duplicates;
        line += " " + customer + ":" + shown(id) + "(dup)";
        continue;
      }
      ++want_accepted;
      in_batch.emplace_back(customer, id);
      stored.push_back(Maybe{customer, id, ev, false, false});
      line += " " + customer + ":" + shown(id);
    }
    body += "]";
    auto r = engine_->ingest_json(body);
    if (!r) {
      note(line + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError) {
        fail("ingest answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      for (auto& m : stored) {
        maybes_.push_back(std::move(m));
      }
      return;
    }
    note(line + " -> accepted " + std::to_string(r->accepted) + " duplicates " +
         std::to_string(r->duplicates) + " rejected " + std::to_string(r->rejected));
    if (r->accepted != want_accepted || r->duplicates != want_duplicates ||
        r->rejected != want_rejected) {
      fail("ingest answered accepted " + std::to_string(r->accepted) + ", duplicates " +
           std::to_string(r->duplicates) + ", rejected " + std::to_string(r->rejected) +
           "; the model expects " + std::to_string(want_accepted) + ", " +
           std::to_string(want_duplicates) + ", " + std::to_string(want_rejected));
      return;
    }
    for (const auto& m : stored) {
      customer_entry(m.customer, m.ev.ack).add(m.id, m.ev);
    }
  }

  // Re-sends one acknowledged event (maybe archived) alone: always a duplicate.
  void step_resend() {
    const std::string customer = pick_known_customer();
    if (customer.empty() || model_.at(customer).order.empty()) {
      step_ingest();
      return;
    }
    const Cust& c = model_.at(customer);
    const std::string id = c.order[rng_.below(c.order.size())];
    const Ev& ev = c.events.at(id);
    auto r = engine_->ingest_json(event_json(customer, id, ev, true));
    const std::string what =
        "resend " + customer + ":" + shown(id) + (ev.archived ? " (archived)" : "");
    if (!r) {
      note(what + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError) {
        fail("a resend answered " + code_name(r.error()) + ": " + r.error().message());
      }
      return;
    }
    note(what + " -> accepted " + std::to_string(r->accepted) + " duplicates " +
         std::to_string(r->duplicates));
    if (r->accepted != 0 || r->duplicates != 1) {
      fail("re-sending the acknowledged event " + customer + ":" + shown(id) +
           (ev.archived ? " (archived)" : "") + " was not a duplicate: accepted " +
           std::to_string(r->accepted) + ", duplicates " + std::to_string(r->duplicates));
    }
  }

  struct CheckPlan {
    CheckRequest req;
    std::int64_t amount = 0;
    bool fresh = true;                // no stored check has its id: the model predicts the decision
    std::uint32_t retry_process = 0;  // a retry: the process its original was checked in
    std::string label;
  };

  CheckPlan plan_check(const std::string& customer, Consume consume) {
    CheckPlan p;
    p.req.customer = customer;
    p.req.consume = consume;
    const bool calls = rng_.below(2) == 0;
    p.req.meter = calls ? "calls" : "tokens";
    p.amount = calls ? 1 : rng_.range(1, 400);
    p.req.amount = std::to_string(p.amount);
    if (calls) {
      p.req.properties = {{"service", "s" + std::to_string(rng_.range(1, 2))},
                          {"user", "u" + std::to_string(rng_.range(1, 6))}};
    } else {
      p.req.properties = {{"model", "m" + std::to_string(rng_.range(1, 2))}};
    }
    const std::uint64_t id_mode = rng_.below(100);
    bool retry_failed = false;
    auto cit = model_.find(customer);
    if (consume == Consume::kYes && id_mode < 10 && cit != model_.end() &&
        !cit->second.check_ids.empty()) {
      const auto& [id, process] = cit->second.check_ids[rng_.below(cit->second.check_ids.size())];
      p.req.event_id = id;
      p.retry_process = process;
      p.fresh = false;
    } else if (consume == Consume::kYes && id_mode < 15 && cit != model_.end() &&
               !cit->second.lost_check_ids.empty()) {
      // The retry of a check that failed: nothing of it was stored, so it counts now.
      auto& lost = cit->second.lost_check_ids;
      const std::size_t i = rng_.below(lost.size());
      p.req.event_id = lost[i];
      lost.erase(lost.begin() + static_cast<long>(i));
      retry_failed = true;
    } else if (id_mode < 80) {
      p.req.event_id = fresh_id("k");
    }
    p.label = customer + " " + p.req.meter + " " + p.req.amount +
              (consume == Consume::kNo        ? " ask"
               : consume == Consume::kReserve ? " reserve"
                                              : "") +
              (p.req.event_id.empty() ? "" : " id " + shown(p.req.event_id)) +
              (p.fresh ? (retry_failed ? " (retry of a failed check)" : "") : " (retry)");
    return p;
  }

  Ev check_event(const CheckRequest& req, std::int64_t amount) const {
    Ev ev;
    ev.ack = step_;
    ev.time_us = clock_.now_us();
    if (req.meter == "calls") {
      ev.type = "api_call";
      ev.group = req.properties[0].second;
      ev.user = req.properties[1].second;
    } else {
      ev.type = "tokens";
      ev.group = req.properties[0].second;
      ev.n = amount;
    }
    return ev;
  }

  void step_check() {
    ++report_.checks;
    const std::uint64_t c = rng_.below(100);
    const Consume consume = c < 80 ? Consume::kYes : Consume::kNo;
    const std::string customer = pick_customer();
    CheckPlan p = plan_check(customer, consume);
    drop_expired_holds();
    const bool exists = model_.count(customer) != 0;
    auto r = engine_->check(p.req);
    if (!exists) {
      note("check " + p.label + " -> " + (r ? "allowed?" : code_name(r.error())));
      if (r || r.error().code() != StatusCode::kNotFound) {
        fail("a check for the unknown customer " + customer + " was not answered NOT_FOUND");
      }
      return;
    }
    if (!r) {
      note("check " + p.label + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError || !check_sync_) {
        fail("check answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      if (p.fresh && consume == Consume::kYes) {
        maybes_.push_back(
            Maybe{customer, p.req.event_id, check_event(p.req, p.amount), false, true, process_});
        if (!p.req.event_id.empty()) {
          model_.at(customer).lost_check_ids.push_back(p.req.event_id);
        }
      }
      return;
    }
    note("check " + p.label + " -> " +
         (r->allowed ? "allowed" : "denied " + std::string(denial_name(r->reason))) +
         (r->replayed ? " replayed" : ""));
    if (p.fresh) {
      const bool want = fits(customer, p.req.meter, p.amount);
      if (r->allowed != want && decided(customer, p.req.meter, p.amount)) {
        fail("check " + p.label + " answered " + (r->allowed ? "allowed" : "denied") +
             "; the model has " + std::to_string(used_now(customer, p.req.meter)) +
             " used of the " + p.req.meter + " limit of plan " + plan_of(customer));
        return;
      }
    } else if (r->allowed && !r->replayed && p.retry_process == process_) {
      // Within one process a retried id is remembered: answered as a replay.
      fail("the retried check " + p.label + " was allowed without \"replayed\"");
      return;
    }
    if (p.fresh && r->replayed) {
      fail("check " + p.label + " answered \"replayed\", but no check with its id was stored");
      return;
    }
    if (r->allowed && p.fresh && consume == Consume::kYes) {
      maybes_.push_back(Maybe{customer, p.req.event_id, check_event(p.req, p.amount),
                              durable_checks(), true, process_});
    }
  }

  void step_check_batch() {
    ++report_.checks;
    const std::string a = pick_known_customer();
    if (a.empty()) {
      step_ingest();
      return;
    }
    const std::string b = rng_.below(2) == 0 ? a : pick_known_customer();
    const std::uint64_t n = 2 + rng_.below(2);
    std::vector<CheckPlan> plans;
    std::vector<CheckRequest> reqs;
    std::string line = "check_batch";
    for (std::uint64_t i = 0; i < n; ++i) {
      CheckPlan p = plan_check(i == 0 ? a : b, Consume::kYes);
      if (!p.fresh || p.req.event_id.empty()) {
        p.req.event_id = fresh_id("k");
        p.fresh = true;
        p.label = p.req.customer + " " + p.req.meter + " " + p.req.amount + " id " + p.req.event_id;
      }
      line += " [" + p.label + "]";
      reqs.push_back(p.req);
      plans.push_back(std::move(p));
    }
    drop_expired_holds();
    // All or nothing, each check seeing the ones before it.
    bool all = true;
    bool sure = true;
    std::vector<Hold> tentative;
    for (const auto& p : plans) {
      if (!fits(p.req.customer, p.req.meter, p.amount)) {
        all = false;
      }
      sure = sure && decided(p.req.customer, p.req.meter, p.amount);
      // Counted like a hold for the checks after it (removed below).
      holds_.push_back(Hold{"", "", p.req.customer, p.req.meter, p.amount, clock_.now_us(),
                            clock_.now_us() + kDayUs, "", "", ""});
    }
    holds_.resize(holds_.size() - plans.size());
    auto r = engine_->check_batch(reqs);
    if (!r) {
      note(line + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError || !check_sync_) {
        fail("check_batch answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      for (const auto& p : plans) {
        maybes_.push_back(Maybe{p.req.customer, p.req.event_id, check_event(p.req, p.amount), false,
                                true, process_});
        model_.at(p.req.customer).lost_check_ids.push_back(p.req.event_id);
      }
      return;
    }
    if (!sure) {
      all = (*r)[0].allowed;  // holds that may be open decide; all agree, as below
    }
    note(line + " -> " + (all ? "allowed" : "denied"));
    for (std::size_t i = 0; i < plans.size(); ++i) {
      if ((*r)[i].allowed != all) {
        fail("check_batch " + line + ": check " + std::to_string(i) + " answered " +
             ((*r)[i].allowed ? "allowed" : "denied " + std::string(denial_name((*r)[i].reason))) +
             "; the model expects " + (all ? "all allowed" : "all denied"));
        return;
      }
    }
    if (all) {
      for (const auto& p : plans) {
        maybes_.push_back(Maybe{p.req.customer, p.req.event_id, check_event(p.req, p.amount),
                                durable_checks(), true, process_});
      }
    }
  }

  void step_reserve() {
    ++report_.checks;
    const std::string customer = pick_known_customer();
    if (customer.empty()) {
      step_ingest();
      return;
    }
    CheckPlan p = plan_check(customer, Consume::kReserve);
    p.req.reservation_ttl_seconds = rng_.range(30, 900);
    drop_expired_holds();
    const bool want = fits(customer, p.req.meter, p.amount);
    const bool sure = decided(customer, p.req.meter, p.amount);
    auto r = engine_->check(p.req);
    if (!r) {
      note("reserve " + p.label + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError) {
        fail("a reservation answered " + code_name(r.error()) + ": " + r.error().message());
      }
      // Its record's write failed: taken back, unless a crash in the write kept it (an id the
      // model never learns: counted as maybe open until it would expire).
      Hold h;
      h.customer = customer;
      h.meter = p.req.meter;
      h.amount = p.amount;
      h.at_us = clock_.now_us();
      h.expires_us = clock_.now_us() + p.req.reservation_ttl_seconds * kSecondUs;
      maybe_holds_.push_back(h);
      return;
    }
    const std::string label = "r" + std::to_string(++next_hold_);
    note("reserve " + p.label + " ttl " + std::to_string(p.req.reservation_ttl_seconds) + " -> " +
         (r->allowed ? "allowed " + label : "denied " + std::string(denial_name(r->reason))));
    if (r->allowed != want && sure) {
      fail("reservation " + p.label + " answered " + (r->allowed ? "allowed" : "denied") +
           "; the model has " + std::to_string(used_now(customer, p.req.meter)) + " used of the " +
           p.req.meter + " limit");
      return;
    }
    if (!r->allowed) {
      return;
    }
    const TimeUs expires = clock_.now_us() + p.req.reservation_ttl_seconds * kSecondUs;
    if (r->reservation_id.empty() || r->reservation_expires_us != expires) {
      fail("an allowed reservation has no id or expires at " +
           std::to_string(r->reservation_expires_us) + " instead of " + std::to_string(expires));
      return;
    }
    Hold h;
    h.label = label;
    h.id = r->reservation_id;
    h.customer = customer;
    h.meter = p.req.meter;
    h.amount = p.amount;
    h.at_us = clock_.now_us();
    h.expires_us = expires;
    h.event_id = p.req.event_id;
    h.group = p.req.properties[0].second;
    h.user = p.req.meter == "calls" ? p.req.properties[1].second : "";
    holds_.push_back(h);
    all_holds_.push_back(h);
  }

  // A reservation to commit or release: an open one, or (sometimes) one that is gone.
  const Hold* pick_hold() {
    if (all_holds_.empty()) {
      return nullptr;
    }
    if (rng_.below(100) < 80 && !holds_.empty()) {
      return &holds_[rng_.below(holds_.size())];
    }
    return &all_holds_[rng_.below(all_holds_.size())];
  }

  bool hold_open(const std::string& id) const {
    for (const Hold& h : holds_) {
      if (h.id == id) {
        return h.expires_us > clock_.now_us();
      }
    }
    return false;
  }

  // Whether a reservation may be open or closed (a crash without fsync, or a failed close).
  bool hold_maybe(const std::string& id) const {
    return std::any_of(maybe_holds_.begin(), maybe_holds_.end(),
                       [&](const Hold& h) { return h.id == id && h.expires_us > clock_.now_us(); });
  }

  void forget_hold(const std::string& id) {
    std::erase_if(holds_, [&](const Hold& h) { return h.id == id; });
    std::erase_if(maybe_holds_, [&](const Hold& h) { return h.id == id; });
  }

  // A close (commit or release) answered with an error: not written, or (a crash in its write)
  // written; either way the reservation may be open.
  void close_failed(const Hold& h) {
    forget_hold(h.id);
    maybe_holds_.push_back(h);
  }

  void step_commit() {
    const Hold* picked = pick_hold();
    if (picked == nullptr) {
      step_reserve();
      return;
    }
    const Hold h = *picked;
    const bool open = hold_open(h.id);
    const bool maybe = hold_maybe(h.id);
    std::string amount_text;
    std::int64_t amount = h.amount;
    if (rng_.below(3) != 0) {
      amount = h.meter == "calls" ? rng_.range(0, 1) : rng_.range(0, 2 * h.amount);
      amount_text = std::to_string(amount);
    }
    auto r = engine_->commit_reservation(h.id, amount_text);
    const std::string line =
        "commit " + h.label + " " + (amount_text.empty() ? "(reserved)" : amount_text);
    note(line + " -> " + (r ? "ok" : code_name(r.error())) +
         (open    ? ""
          : maybe ? " (maybe open)"
                  : " (gone)"));
    drop_expired_holds();
    const bool failed = !r && r.error().code() == StatusCode::kIOError && (open || maybe);
    if (failed) {
      close_failed(h);
    } else if (maybe) {
      if (!r && r.error().code() != StatusCode::kNotFound) {
        fail("committing reservation " + h.label + ", which may be open, answered " +
             code_name(r.error()));
        return;
      }
      forget_hold(h.id);  // now closed for sure
      if (!r) {
        return;
      }
    } else if (!open) {
      if (r || r.error().code() != StatusCode::kNotFound) {
        fail("committing reservation " + h.label +
             ", which was settled, expired or lost in a crash, was not answered NOT_FOUND");
      }
      return;
    } else if (!r) {
      fail("committing the open reservation " + h.label + " answered " + code_name(r.error()) +
           ": " + r.error().message());
      return;
    }
    if (!failed) {
      forget_hold(h.id);
    }
    if (amount > 0) {
      Ev ev;
      ev.ack = step_;
      ev.time_us = clock_.now_us();
      ev.type = h.meter == "calls" ? "api_call" : "tokens";
      ev.group = h.group;
      ev.user = h.user;
      ev.n = h.meter == "calls" ? 0 : amount;
      // A commit is answered once its usage event and close are durable: with fsync, the event
      // of an answered commit must be found; that of a failed one may or may not be.
      maybes_.push_back(Maybe{h.customer, h.event_id.empty() ? h.id : h.event_id, ev,
                              r.has_value() && fsync_, false, process_});
    }
  }

  void step_release() {
    const Hold* picked = pick_hold();
    if (picked == nullptr) {
      step_reserve();
      return;
    }
    const Hold h = *picked;
    const bool open = hold_open(h.id);
    const bool maybe = hold_maybe(h.id);
    Status s = engine_->release_reservation(h.id);
    note("release " + h.label + " -> " + (s.ok() ? "ok" : code_name(s)) +
         (open    ? ""
          : maybe ? " (maybe open)"
                  : " (gone)"));
    drop_expired_holds();
    if (s.code() == StatusCode::kIOError && (open || maybe)) {
      close_failed(h);
      return;
    }
    if (maybe) {
      if (!s.ok() && s.code() != StatusCode::kNotFound) {
        fail("releasing reservation " + h.label + ", which may be open, answered " + code_name(s));
        return;
      }
      forget_hold(h.id);
      return;
    }
    if (open != s.ok() || (!open && s.code() != StatusCode::kNotFound)) {
      fail("releasing reservation " + h.label + " (" + (open ? "open" : "gone") + ") answered " +
           code_name(s));
      return;
    }
    forget_hold(h.id);
  }

  void step_wallet() {
    const std::string customer = pick_customer();
    WalletTransactionRequest req;
    static constexpr LedgerType kTypes[] = {LedgerType::kGrant, LedgerType::kTopUp,
                                            LedgerType::kRefund, LedgerType::kAdjustment};
    req.type = kTypes[rng_.below(4)];
    std::int64_t amount = rng_.range(1, 500);
    if (req.type == LedgerType::kAdjustment && rng_.below(2) == 0) {
      amount = -amount;
    }
    req.amount = std::to_string(amount);
    req.description = fresh_id("w");
    const bool exists = model_.count(customer) != 0;
    auto r = engine_->wallet_transaction(customer, req);
    const std::string line =
        "wallet " + customer + " " + std::string(to_string(req.type)) + " " + req.amount;
    note(line + " -> " + (r ? "ok" : code_name(r.error())));
    if (!exists) {
      if (r || r.error().code() != StatusCode::kNotFound) {
        fail("a wallet transaction for the unknown customer " + customer +
             " was not answered NOT_FOUND");
      }
      return;
    }
    if (!r) {
      if (r.error().code() != StatusCode::kIOError) {
        fail(line + " answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      maybe_txns_.push_back(MaybeTxn{customer, req.description, amount, step_});
      return;
    }
    const std::int64_t before = balance_of(customer);
    model_.at(customer).txns.push_back(Cust::Txn{req.description, amount, step_});
    std::int64_t got_before = 0;
    std::int64_t got_after = 0;
    if (!as_int(r->balance_before, &got_before) || !as_int(r->balance_after, &got_after) ||
        got_before != before || got_after != before + amount) {
      fail(line + ": balance " + r->balance_before + " -> " + r->balance_after +
           "; the model has " + std::to_string(before) + " -> " + std::to_string(before + amount));
    }
  }

  void step_create_customer() {
    const std::string id = pick_customer();
    static const char* kPlans[] = {"", "basic", "open"};
    Customer c;
    c.id = id;
    c.plan = kPlans[rng_.below(3)];
    const bool exists = model_.count(id) != 0;
    auto r = engine_->create_customer(c);
    note("create_customer " + id + " plan '" + c.plan + "' -> " +
         (r ? "ok" : code_name(r.error())));
    if (exists) {
      if (r || r.error().code() != StatusCode::kAlreadyExists) {
        fail("creating the existing customer " + id + " was not answered ALREADY_EXISTS");
      }
      return;
    }
    if (!r) {
      if (r.error().code() != StatusCode::kIOError) {
        fail("create_customer answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      maybe_customers_.push_back(MaybeCustomer{id, c.plan, step_});
      return;
    }
    customer_entry(id, step_).plan = c.plan;
  }

  void step_advance() {
    const std::uint64_t r = rng_.below(100);
    std::int64_t seconds = 0;
    if (r < 70) {
      seconds = rng_.range(1, 600);
    } else if (r < 95) {
      seconds = rng_.range(600, 6 * 3600);
    } else {
      seconds = rng_.range(86'400, 3 * 86'400);
    }
    clock_.advance_us(seconds * kSecondUs);
    drop_expired_holds();
    note("advance " + std::to_string(seconds) + "s to " + core::format_rfc3339(clock_.now_us()));
  }

  std::set<std::string> manifests_on_disk() const {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_ / "archive", ec)) {
      const std::string name = entry.path().string();
      if (name.ends_with(".manifest.json")) {
        out.insert(name);
      }
    }
    return out;
  }

  void step_archive() {
    const TimeUs cutoff = clock_.now_us() - rng_.range(1, 35) * kDayUs;
    ArchiveRequest req;
    req.before_us = cutoff;
    req.out_dir = (dir_ / "archive").string();
    std::vector<std::pair<std::string, std::string>> candidates;
    for (const auto& [cid, c] : model_) {
      for (const auto& id : c.order) {
        const Ev& ev = c.events.at(id);
        if (!ev.archived && ev.time_us < cutoff) {
          candidates.emplace_back(cid, id);
        }
      }
    }
    // A run whose write failed left its files (they may be the only copy of its events); a
    // run in the same second with the same archive id and events would take their name.
    const std::string suffix = manifest_suffix(clock_.now_us(), next_archive_id_);
    bool name_taken = false;
    for (const auto& m : manifests_on_disk()) {
      name_taken = name_taken || m.ends_with(suffix);
    }
    auto r = engine_->archive(req);
    const std::string line = "archive before " + core::format_rfc3339(cutoff) + " (" +
                             std::to_string(candidates.size()) + " events)";
    if (!r && name_taken && r.error().code() == StatusCode::kAlreadyExists) {
      note(line + " -> " + code_name(r.error()) + " (the files of a failed run)");
      return;
    }
    if (!r) {
      note(line + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError) {
        fail("archive answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      pending_archive_ = true;
      archive_candidates_ = std::move(candidates);
      archive_suffix_ = suffix;
      return;
    }
    note(line + " -> " + std::to_string(r->events) + " archived");
    if (r->events != candidates.size() || r->more) {
      fail("archive moved " + std::to_string(r->events) + " events" +
           (r->more ? " (and says more remain)" : "") + "; the model has " +
           std::to_string(candidates.size()) + " hot events before the cutoff");
      return;
    }
    if (r->events == 0) {
      return;
    }
    if (r->archive_id != next_archive_id_ || !r->manifest.ends_with(suffix)) {
      fail("archive " + std::to_string(r->archive_id) + " wrote " + r->manifest +
           "; the model expects archive " + std::to_string(next_archive_id_));
      return;
    }
    ++next_archive_id_;
    for (const auto& [cid, id] : candidates) {
      model_.at(cid).events.at(id).archived = true;
    }
    archives_.push_back(ArchiveRec{r->manifest, std::move(candidates), false});
  }

  void step_restore() {
    if (archives_.empty()) {
      step_archive();
      return;
    }
    const std::size_t i = rng_.below(archives_.size());
    ArchiveRec& a = archives_[i];
    // A file restored before whose events a later run archived again: those events belong to
    // that later archive now, so the old file is refused (and nothing changes).
    bool rearchived = false;
    for (const auto& [cid, id] : a.events) {
      rearchived = rearchived || (a.restored && model_.at(cid).events.at(id).archived);
    }
    auto r = engine_->restore(a.manifest);
    const std::string line = "restore archive " + std::to_string(i) + " (" +
                             std::to_string(a.events.size()) + " events" +
                             (a.restored ? ", restored before" : "") +
                             (rearchived ? ", archived again since" : "") + ")";
    if (rearchived) {
      note(line + " -> " + (r ? "ok" : code_name(r.error())));
      if (r || r.error().code() != StatusCode::kUnprocessable) {
        fail(line + " was not refused as UNPROCESSABLE");
      }
      return;
    }
    if (!r) {
      note(line + " -> " + code_name(r.error()));
      if (r.error().code() != StatusCode::kIOError) {
        fail("restore answered " + code_name(r.error()) + ": " + r.error().message());
        return;
      }
      pending_restore_ = static_cast<int>(i);
      return;
    }
    note(line + " -> " + std::to_string(r->events) + " restored, " +
         std::to_string(r->already_present) + " present");
    const std::uint64_t want = a.restored ? 0 : a.events.size();
    if (r->events != want) {
      fail(line + ": restored " + std::to_string(r->events) + " events; the model expects " +
           std::to_string(want));
      return;
    }
    mark_restored(a);
  }

  void mark_restored(ArchiveRec& a) {
    for (const auto& [cid, id] : a.events) {
      model_.at(cid).events.at(id).archived = false;
    }
    a.restored = true;
  }

  // Async checks answered while their commit cannot be written, then a crash: their
  // consumption may be lost (the documented window of check_durability = "async").
  void step_async_loss() {
    const std::string customer = pick_known_customer();
    if (customer.empty()) {
      step_ingest();
      return;
    }
    note("hold writes");
    disk_.hold_writes();
    const std::uint64_t n = 1 + rng_.below(3);
    for (std::uint64_t i = 0; i < n && report_.ok; ++i) {
      ++report_.checks;
      CheckPlan p = plan_check(customer, Consume::kYes);
      if (!p.fresh || p.req.event_id.empty()) {
        p.req.event_id = fresh_id("k");
        p.fresh = true;
        p.label = customer + " " + p.req.meter + " " + p.req.amount + " id " + p.req.event_id;
      }
      const bool want = fits(customer, p.req.meter, p.amount);
      auto r = engine_->check(p.req);
      note("check " + p.label + " -> " +
           (r ? (r->allowed ? "allowed" : "denied") : code_name(r.error())));
      if (!r || (r->allowed != want && decided(customer, p.req.meter, p.amount))) {
        fail("check " + p.label + " while writes wait: answered " +
             (r ? (r->allowed ? "allowed" : "denied") : code_name(r.error())) + ", model " +
             (want ? "allowed" : "denied"));
        break;
      }
      if (r->allowed) {
        // Counted at once by later checks, as a hold is.
        maybes_.push_back(
            Maybe{customer, p.req.event_id, check_event(p.req, p.amount), false, true, process_});
        holds_.push_back(Hold{"", "", customer, p.req.meter, p.amount, clock_.now_us(),
                              clock_.now_us() + kDayUs, "", "", ""});
      }
    }
    // The crash refuses the waiting writes (and ends the hold): their checks' usage is lost.
    crash("with async checks waiting for their commit");
  }

  // ---- settling maybes, and comparing everything ------------------------------------------

  bool list_all(std::vector<StoredEvent>* out) {
    EventListQuery q;
    q.limit = kListPageMax;
    for (;;) {
      auto page = engine_->list_events(q);
      if (!page) {
        return fail("list_events answered " + code_name(page.error()) + ": " +
                    page.error().message());
      }
      for (auto& e : page->events) {
        out->push_back(std::move(e));
      }
      if (page->next_cursor.empty()) {
        return true;
      }
      q.cursor = page->next_cursor;
    }
  }

  static bool same_content(const StoredEvent& s, const Ev& ev) {
    if (s.type != ev.type || s.time_us != ev.time_us) {
      return false;
    }
    if (ev.calls()) {
      return prop(s, "service") == ev.group && prop(s, "user") == ev.user;
    }
    std::int64_t n = -1;
    return prop(s, "model") == ev.group && as_int(prop(s, "n"), &n) && n == ev.n;
  }

  static std::string describe(const StoredEvent& s) {
    return s.customer + ":" + shown(s.id) + " " + s.type + " at " +
           core::format_rfc3339(s.time_us) + " n=" + prop(s, "n");
  }

  // With fsync = false, a crash may lose the last acknowledged writes: what survived must be
  // every write up to some step and none after it. Finds that step from what is stored and
  // forgets, in the model, what came after it.
  bool roll_back_lost_suffix(
      const std::map<std::pair<std::string, std::string>, const StoredEvent*>& seen) {
    std::set<std::string> customers;
    for (const auto& c : engine_->list_customers()) {
      customers.insert(c.id);
    }
    std::map<std::string, std::set<std::string>> ledger;  // customer -> descriptions
    for (const auto& cid : customers) {
      LedgerQuery q;
      q.customer = cid;
      q.limit = 1000;
      for (;;) {
        auto page = engine_->wallet_transactions(q);
        if (!page) {
          return fail("wallet_transactions answered " + code_name(page.error()));
        }
        for (const auto& tx : page->transactions) {
          ledger[cid].insert(tx.description);
        }
        if (page->next_cursor.empty()) {
          break;
        }
        q.cursor = page->next_cursor;
      }
    }
    std::uint64_t first_lost = UINT64_MAX;  // the earliest step with an acknowledged write lost
    std::uint64_t last_kept = 0;            // the latest step with a write found
    std::string first_lost_what;
    std::string last_kept_what;
    auto saw = [&](bool present, std::uint64_t ack, const std::string& what) {
      if (!present && ack < first_lost) {
        first_lost = ack;
        first_lost_what = what;
      }
      if (present && ack > last_kept) {
        last_kept = ack;
        last_kept_what = what;
      }
    };
    for (const auto& [cid, c] : model_) {
      saw(customers.count(cid) != 0, c.ack, "customer " + cid);
      for (const auto& [id, ev] : c.events) {
        saw(seen.count({cid, id}) != 0, ev.ack, "event " + cid + ":" + shown(id));
      }
      for (const auto& t : c.txns) {
        saw(ledger[cid].count(t.description) != 0, t.ack, "wallet transaction " + t.description);
      }
    }
    for (const Maybe& m : maybes_) {  // a maybe found was written: it counts as kept
      if (!m.id.empty() && seen.count({m.customer, m.id}) != 0) {
        saw(true, m.ev.ack, "event " + m.customer + ":" + shown(m.id));
      }
    }
    if (first_lost == UINT64_MAX) {
      return true;
    }
    if (last_kept >= first_lost) {
      return fail("with fsync = false a crash lost " + first_lost_what + " (step " +
                  std::to_string(first_lost) + ") but kept " + last_kept_what + " (step " +
                  std::to_string(last_kept) + "): not a suffix of the writes");
    }
    std::uint64_t lost = 0;
    for (auto it = model_.begin(); it != model_.end();) {
      Cust& c = it->second;
      if (c.ack >= first_lost) {
        lost += 1 + c.events.size() + c.txns.size();
        it = model_.erase(it);
        continue;
      }
      std::vector<std::string> order;
      for (const auto& id : c.order) {
        if (c.events.at(id).ack >= first_lost) {
          c.events.erase(id);
          ++lost;
          std::erase_if(c.check_ids, [&](const auto& p) { return p.first == id; });
        } else {
          order.push_back(id);
        }
      }
      c.order = std::move(order);
      lost += static_cast<std::uint64_t>(
          std::erase_if(c.txns, [&](const Cust::Txn& t) { return t.ack >= first_lost; }));
      ++it;
    }
    note("fsync = false: the writes of step " + std::to_string(first_lost) + " on are lost (" +
         std::to_string(lost) + " acknowledged items)");
    return true;
  }

  // Settles every maybe by looking at the engine; then the stored events must be exactly the
  // model's hot events, each once.
  bool reconcile() {
    // Customers whose creation was not acknowledged.
    for (const auto& mc : maybe_customers_) {
      auto c = engine_->get_customer(mc.id);
      if (c && model_.count(mc.id) == 0) {
        customer_entry(mc.id, mc.ack).plan = mc.plan;
      }
    }
    maybe_customers_.clear();

    std::vector<StoredEvent> listed;
    if (!list_all(&listed)) {
      return false;
    }
    std::map<std::pair<std::string, std::string>, const StoredEvent*> seen;
    for (const auto& e : listed) {
      if (!seen.emplace(std::make_pair(e.customer, e.id), &e).second) {
        return fail("the event " + describe(e) + " is stored twice");
      }
    }
    auto hot = [&](const std::string& cid, const std::string& id) {
      return seen.count({cid, id}) != 0;
    };
    if (relaxed_) {
      relaxed_ = false;
      if (!roll_back_lost_suffix(seen)) {
        return false;
      }
    }

    // An archive or restore answered with an error is all or nothing.
    if (pending_archive_) {
      pending_archive_ = false;
      std::size_t gone = 0;
      for (const auto& [cid, id] : archive_candidates_) {
        gone += hot(cid, id) ? 0 : 1;
      }
      if (gone != 0 && gone != archive_candidates_.size()) {
        return fail("an archive answered with an error left " + std::to_string(gone) + " of " +
                    std::to_string(archive_candidates_.size()) + " events archived");
      }
      if (gone != 0) {
        std::string manifest;
        for (const auto& m : manifests_on_disk()) {
          if (m.ends_with(archive_suffix_)) {
            manifest = m;
          }
        }
        note("the failed archive took effect: " + std::to_string(gone) + " events");
        if (manifest.empty()) {
          return fail("an archive answered with an error removed " + std::to_string(gone) +
                      " events from the hot store, but its file is gone: their raw events are "
                      "lost");
        }
        ++next_archive_id_;
        for (const auto& [cid, id] : archive_candidates_) {
          model_.at(cid).events.at(id).archived = true;
        }
        archives_.push_back(ArchiveRec{manifest, archive_candidates_, false});
      }
      archive_candidates_.clear();
    }
    if (pending_restore_ >= 0) {
      ArchiveRec& a = archives_[static_cast<std::size_t>(pending_restore_)];
      pending_restore_ = -1;
      std::size_t back = 0;
      for (const auto& [cid, id] : a.events) {
        back += hot(cid, id) ? 1 : 0;
      }
      const bool was_hot = a.restored;
      if (!was_hot && back != 0) {
        if (back != a.events.size()) {
          return fail("a restore answered with an error put back " + std::to_string(back) + " of " +
                      std::to_string(a.events.size()) + " events");
        }
        note("the failed restore took effect");
        mark_restored(a);
      }
    }

    // Every event the model holds: hot ones listed once with their content, archived ones not.
    std::set<std::pair<std::string, std::string>> matched;
    for (const auto& [cid, c] : model_) {
      for (const auto& id : c.order) {
        const Ev& ev = c.events.at(id);
        auto it = seen.find({cid, id});
        if (ev.archived) {
          if (it != seen.end()) {
            return fail("the archived event " + cid + ":" + shown(id) + " is in the hot store");
          }
          continue;
        }
        if (it == seen.end()) {
          return fail("the acknowledged event " + cid + ":" + shown(id) + " (" + ev.type + " at " +
                      core::format_rfc3339(ev.time_us) + ") is lost");
        }
        if (!same_content(*it->second, ev)) {
          return fail("the event " + describe(*it->second) + " is not the one acknowledged (" +
                      ev.type + " at " + core::format_rfc3339(ev.time_us) +
                      " n=" + std::to_string(ev.n) + ")");
        }
        matched.insert(it->first);
      }
    }
    // The rest must be maybes.
    std::vector<bool> used(maybes_.size(), false);
    std::uint32_t adopted = 0;
    for (const auto& e : listed) {
      if (matched.count({e.customer, e.id}) != 0) {
        continue;
      }
      std::size_t found = maybes_.size();
      for (std::size_t i = 0; i < maybes_.size() && found == maybes_.size(); ++i) {
        const Maybe& m = maybes_[i];
        if (used[i] || m.customer != e.customer) {
          continue;
        }
        if (m.id.empty() ? e.id.starts_with("chk_") && same_content(e, m.ev) : m.id == e.id) {
          found = i;
        }
      }
      if (found == maybes_.size()) {
        return fail("the event " + describe(e) + " is stored but was never acknowledged");
      }
      const Maybe& m = maybes_[found];
      if (!same_content(e, m.ev)) {
        return fail("the event " + describe(e) + " is not the one sent");
      }
      used[found] = true;
      ++adopted;
      Cust& c = customer_entry(e.customer, m.ev.ack);
      c.add(e.id, m.ev);
      // Only a check sent with an event_id can be retried: the id of an unnamed one is the
      // engine's (it is not a check id the engine remembers).
      if (m.check && !m.id.empty()) {
        c.check_ids.emplace_back(e.id, m.process);
        std::erase(c.lost_check_ids, e.id);
      }
    }
    std::uint32_t dropped = 0;
    for (std::size_t i = 0; i < maybes_.size(); ++i) {
      if (used[i]) {
        continue;
      }
      if (maybes_[i].must) {
        return fail("the event of a check acknowledged as durable (" + maybes_[i].customer + ":" +
                    (maybes_[i].id.empty() ? "<unnamed>" : shown(maybes_[i].id)) + ") is lost");
      }
      ++dropped;
    }
    if (!maybes_.empty()) {
      note("settled: " + std::to_string(adopted) + " stored, " + std::to_string(dropped) + " not");
    }
    maybes_.clear();

    // Wallet transactions answered with an error: found in the ledger, or not there.
    for (const MaybeTxn& t : maybe_txns_) {
      if (model_.count(t.customer) == 0) {
        // Its customer was lost with the writes after it (fsync = false), so it was too; the
        // comparison of customers below checks that the customer is indeed gone.
        note("wallet transaction " + t.description + " lost with its customer");
        continue;
      }
      LedgerQuery q;
      q.customer = t.customer;
      q.limit = 1000;
      bool found = false;
      for (;;) {
        auto page = engine_->wallet_transactions(q);
        if (!page) {
          return fail("wallet_transactions answered " + code_name(page.error()));
        }
        for (const auto& tx : page->transactions) {
          found = found || tx.description == t.description;
        }
        if (page->next_cursor.empty()) {
          break;
        }
        q.cursor = page->next_cursor;
      }
      if (found) {
        model_.at(t.customer).txns.push_back(Cust::Txn{t.description, t.amount, t.ack});
      }
      note("wallet transaction " + t.description + (found ? " stored" : " not stored"));
    }
    maybe_txns_.clear();

    // Customers: exactly those the model knows.
    std::set<std::string> engine_ids;
    for (const auto& c : engine_->list_customers()) {
      engine_ids.insert(c.id);
      auto it = model_.find(c.id);
      if (it == model_.end()) {
        return fail("the customer " + c.id + " exists but was never acknowledged");
      }
      if (c.plan != it->second.plan) {
        return fail("customer " + c.id + " has plan '" + c.plan + "', the model '" +
                    it->second.plan + "'");
      }
    }
    for (const auto& [cid, c] : model_) {
      if (engine_ids.count(cid) == 0) {
        return fail("the acknowledged customer " + cid + " is lost");
      }
    }
    return true;
  }

  // Every answer about usage against the model: totals per meter and customer, credits,
  // wallets and their ledgers, limits, and verify.
  bool audit() {
    ++report_.audits;
    const TimeUs now = clock_.now_us();
    const TimeUs from = kStartUs - (kLateDaysMax + 2) * kDayUs;
    const TimeUs to = now + kDayUs;

    struct Totals {
      std::int64_t calls = 0, tokens = 0, peak = -1, events = 0, priced = 0;
      std::set<std::string> users;
    };

    std::map<std::string, Totals> want;
    std::uint64_t hot_events = 0;
    std::uint64_t archived_events = 0;
    for (const auto& [cid, c] : model_) {
      Totals& t = want[cid];
      for (const auto& [id, ev] : c.events) {
        (ev.archived ? archived_events : hot_events) += 1;
        if (ev.calls()) {
          ++t.calls;
          t.users.insert(ev.user);
        } else {
          t.tokens += ev.n;
          t.peak = std::max(t.peak, ev.n);
          t.priced += ev.n > 0 ? 1 : 0;
        }
      }
    }
    auto compare_meter = [&](const std::string& meter, const std::string& measure,
                             auto expected) -> bool {
      MeterQuery q;
      q.meter = meter;
      q.measure = measure.empty() ? Measure::kUnits : parse_measure(measure).value();
      q.from_us = from;
      q.to_us = to;
      auto r = engine_->query(q);
      if (!r) {
        return fail("query " + meter + " answered " + code_name(r.error()));
      }
      std::map<std::string, std::string> got;
      for (const auto& row : r->rows) {
        got[row.customer] = row.value;
      }
      for (const auto& [cid, t] : want) {
        const std::optional<std::int64_t> w = expected(t);
        auto it = got.find(cid);
        std::int64_t v = 0;
        if (!w.has_value()) {
          if (it != got.end() && !it->second.empty()) {
            return fail("query " + meter + " " + measure + " of " + cid + " is " + it->second +
                        "; the model has no events");
          }
          continue;
        }
        if (it == got.end() || !as_int(it->second, &v) || v != *w) {
          return fail("query " + meter + (measure.empty() ? "" : " " + measure) + " of " + cid +
                      " is " + (it == got.end() ? "absent" : it->second) + "; the model has " +
                      std::to_string(*w));
        }
      }
      for (const auto& [cid, value] : got) {
        if (want.count(cid) == 0) {
          return fail("query " + meter + " has a row for the unknown customer " + cid);
        }
      }
      return true;
    };
    using Opt = std::optional<std::int64_t>;
    if (!compare_meter("calls", "",
                       [](const Totals& t) { return t.calls > 0 ? Opt(t.calls) : Opt(); }) ||
        !compare_meter("users", "",
                       [](const Totals& t) {
                         return t.calls > 0 ? Opt(static_cast<std::int64_t>(t.users.size()))
                                            : Opt();
                       }) ||
        !compare_meter("tokens", "",
                       [](const Totals& t) { return t.peak >= 0 ? Opt(t.tokens) : Opt(); }) ||
        !compare_meter("peak", "",
                       [](const Totals& t) { return t.peak >= 0 ? Opt(t.peak) : Opt(); }) ||
        !compare_meter("tokens", "credits", [](const Totals& t) {
          return t.peak >= 0 ? Opt(kCreditsPerToken * t.tokens) : Opt();
        })) {
      return false;
    }

    for (const auto& [cid, t] : want) {
      // The wallet, and its ledger: the balance is the sum of the transactions, one burn per
      // priced event with credits.
      auto w = engine_->wallet(cid);
      std::int64_t balance = 0;
      if (!w || !as_int(w->balance, &balance) || balance != balance_of(cid)) {
        return fail("the wallet of " + cid + " has balance " + (w ? w->balance : "<error>") +
                    "; the model has " + std::to_string(balance_of(cid)));
      }
      LedgerQuery q;
      q.customer = cid;
      q.limit = 1000;
      std::int64_t sum = 0;
      std::int64_t burns = 0;
      for (;;) {
        auto page = engine_->wallet_transactions(q);
        if (!page) {
          return fail("wallet_transactions of " + cid + " answered " + code_name(page.error()));
        }
        for (const auto& tx : page->transactions) {
          std::int64_t a = 0;
          if (!as_int(tx.amount, &a)) {
            return fail("a ledger amount of " + cid + " is not whole: " + tx.amount);
          }
          sum += a;
          burns += tx.type == LedgerType::kBurn ? 1 : 0;
        }
        if (page->next_cursor.empty()) {
          break;
        }
        q.cursor = page->next_cursor;
      }
      if (sum != balance || burns != t.priced) {
        return fail("the ledger of " + cid + " sums to " + std::to_string(sum) + " with " +
                    std::to_string(burns) + " burns; the balance is " + std::to_string(balance) +
                    " and the model has " + std::to_string(t.priced) + " priced events");
      }
      // Limits: what the plan's windows hold now.
      if (plan_of(cid) == "basic") {
        auto lr = engine_->limits_report(cid);
        if (!lr) {
          return fail("limits_report of " + cid + " answered " + code_name(lr.error()));
        }
        drop_expired_holds();
        for (const auto& l : lr->limits) {
          std::int64_t used = 0;
          const std::int64_t model_used = used_now(cid, l.meter);
          const std::int64_t model_most = used_now(cid, l.meter, true);
          if (!as_int(l.used.text(), &used) || used < model_used || used > model_most) {
            return fail("the " + l.rule() + " limit of " + cid + " has " + l.used.text() +
                        " used; the model has " + std::to_string(model_used) +
                        (model_most != model_used ? " to " + std::to_string(model_most) : ""));
          }
        }
      }
    }

    auto v = engine_->verify();
    if (!v) {
      return fail("verify answered " + code_name(v.error()) + ": " + v.error().message());
    }
    if (!v->ok()) {
      return fail("verify found " + std::to_string(v->differences.size()) +
                  " differences, the first: " + v->differences[0]);
    }
    if (v->events != hot_events || v->archived_events != archived_events) {
      return fail("verify counted " + std::to_string(v->events) + " events and " +
                  std::to_string(v->archived_events) + " archived; the model has " +
                  std::to_string(hot_events) + " and " + std::to_string(archived_events));
    }
    note("audit ok: " + std::to_string(hot_events) + " events, " + std::to_string(archived_events) +
         " archived, " + std::to_string(want.size()) + " customers");
    return true;
  }

  SimOptions o_;
  Rng rng_;
  Disk disk_;
  FakeClock clock_;
  std::unique_ptr<Engine> engine_;
  fs::path dir_;
  bool remove_dir_ = false;
  bool check_sync_ = true;
  bool fsync_ = true;
  bool relaxed_ = false;  // after a crash with fsync = false: a suffix of writes may be lost
  std::uint32_t step_ = 0;
  std::uint64_t hash_ = 0xCBF29CE484222325ull;
  SimReport report_;

  std::map<std::string, Cust> model_;  // customer id -> what is known of it
  std::vector<Maybe> maybes_;

  struct MaybeCustomer {
    std::string id;
    std::string plan;
    std::uint64_t ack = 0;
  };

  std::vector<MaybeCustomer> maybe_customers_;
  std::vector<MaybeTxn> maybe_txns_;
  std::vector<Hold> holds_;      // open reservations (and, briefly, unsettled async checks)
  std::vector<Hold> all_holds_;  // every reservation made, to try settled ones again
  // Reservations that may be open or closed (see crash, close_failed), and failed reservations
  // a crash may have kept (no id): counted by limits as maybe used.
  std::vector<Hold> maybe_holds_;
  std::vector<ArchiveRec> archives_;
  bool pending_archive_ = false;
  std::vector<std::pair<std::string, std::string>> archive_candidates_;
  std::string archive_suffix_;  // of the manifest of the archive answered with an error
  std::uint64_t next_archive_id_ = 1;
  int pending_restore_ = -1;
  std::uint64_t next_id_ = 0;
  std::uint64_t next_hold_ = 0;
  std::uint32_t process_ = 0;  // engine opens so far
};

}  // namespace

SimReport run_simulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.run();
}

std::string describe_failure(const SimOptions& options, const SimReport& report) {
  std::string s = "simulation seed " + std::to_string(options.seed) + " (check_durability " +
                  report.durability + ", " + std::to_string(options.steps) + " steps) failed at " +
                  report.failure + "\nlast steps:\n";
  for (const auto& line : report.trace_tail) {
    s += "  " + line + "\n";
  }
  s += "reproduce: scripts/simulate.sh 1 " + std::to_string(options.seed) +
       "  (or TALLY_SIM_SEED=" + std::to_string(options.seed) +
       " TALLY_SIM_LOG=1 build/test/tests/tally_simulation_tests"
       " --gtest_filter=Simulation.Seeds)\n";
  return s;
}

}  // namespace tally::sim
