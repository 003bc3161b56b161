// `tally ingest`, `tally query`, `tally usage`, `tally verify`.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "core/event_parse.h"
#include "core/time.h"
#include "http/json_codec.h"

namespace tally::cli {

namespace {

bool parse_time_flag(const std::string& text, const char* name, TimeUs* out) {
  if (text.empty())
    return true;
  auto t = core::parse_rfc3339(text);
  if (!t) {
    std::fprintf(stderr, "tally: --%s: %s\n", name, t.error().message().c_str());
    return false;
  }
  *out = *t;
  return true;
}

struct IngestOptionsCli {
  DataOptions data;
  std::string file;
  std::uint32_t batch = 1000;
};

// One run of `tally ingest`: the lines of a batch, the counts so far and the exit code.
class IngestRun {
 public:
  IngestRun(Engine& engine, std::uint32_t batch) : engine_(engine), batch_(batch) {
    check_options_.events_max = std::numeric_limits<std::uint32_t>::max();
  }

  // Takes line number `line_no`: refused alone when it is not one event object, else added to
  // the batch, which is committed once it holds `batch` events.
  void add_line(std::uint64_t line_no, const std::string& line) {
    lines_ = line_no;
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) {
      return;  // blank lines are skipped; they still count for line numbers
    }
    if (line[first] != '{') {
      refuse(line_no, "INVALID_TYPE", "a line must hold one event object");
      return;
    }
    // The API's own parser, so a line is refused alone exactly when the API would refuse a body
    // holding it (numbers, for one, are judged alike); its events' rules are checked once, by
    // the engine, with the batch.
    scratch_.assign(line);
    if (Status s = core::parse_events(scratch_, check_options_, &checked_); !s.ok()) {
      refuse(line_no, "INVALID_JSON", s.message());
      return;
    }
    if (!batch_lines_.empty())
      body_ += ',';
    body_ += line;
    batch_lines_.push_back(line_no);
    if (batch_lines_.size() >= batch_)
      flush();
  }

  // Commits the lines waiting, if any, and reports progress at most twice a second.
  void flush() {
    if (batch_lines_.empty())
      return;
    body_ += "]}";
    IngestOptions options;
    options.negative_corrections = true;  // the operator, on the data directory: an admin
    auto r = engine_.ingest_json(std::move(body_), options);
    if (!r) {
      std::fprintf(stderr, "\ntally: lines %llu..%llu: %s\n",
                   static_cast<unsigned long long>(batch_lines_.front()),
                   static_cast<unsigned long long>(batch_lines_.back()),
                   r.error().message().c_str());
      exit_code_ = 1;
      rejected_ += batch_lines_.size();
    } else {
      accepted_ += r->accepted;
      duplicates_ += r->duplicates;
      for (const auto& e : r->errors) {
        refuse(e.index < batch_lines_.size() ? batch_lines_[e.index] : 0, e.code, e.message);
      }
    }
    body_ = "{\"events\":[";
    batch_lines_.clear();
    const auto now = std::chrono::steady_clock::now();
    if (now - last_progress_ > std::chrono::milliseconds(500)) {
      last_progress_ = now;
      std::fprintf(stderr, "\r%s (%.0f/s)", counts().c_str(),
                   static_cast<double>(lines_) / seconds(now));
    }
  }

  // The final counts; the exit code (1 when any line was refused).
  int finish() {
    flush();
    std::fprintf(stderr, "\r%s in %.2f s\n", counts().c_str(),
                 seconds(std::chrono::steady_clock::now()));
    return exit_code_;
  }

 private:
  void refuse(std::uint64_t line_no, const std::string& code, const std::string& message) {
    std::fprintf(stderr, "\ntally: line %llu: %s: %s\n", static_cast<unsigned long long>(line_no),
                 code.c_str(), message.c_str());
    ++rejected_;
    exit_code_ = 1;
  }

  // "N lines, A accepted, D duplicates, R rejected".
  std::string counts() const {
    return std::to_string(lines_) + " lines, " + std::to_string(accepted_) + " accepted, " +
           std::to_string(duplicates_) + " duplicates, " + std::to_string(rejected_) + " rejected";
  }

  double seconds(std::chrono::steady_clock::time_point now) const {
    return std::chrono::duration<double>(now - start_).count();
  }

  Engine& engine_;
  const std::uint32_t batch_;
  core::ParseOptions check_options_;
  core::ParsedEvents checked_;
  std::string scratch_;
  std::uint64_t lines_ = 0, accepted_ = 0, duplicates_ = 0, rejected_ = 0;
  std::vector<std::uint64_t> batch_lines_;  // the 1-based line number of each event of the batch
  std::string body_ = "{\"events\":[";
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_progress_ = start_;
  int exit_code_ = 0;
};

// Reads JSON Lines and feeds them through the same parser and commit pipeline as the API,
// `batch` events per commit. Each line is checked on its own first (one JSON object), so a
// malformed line is refused alone, with its own line number, and cannot merge with its
// neighbours in the batch body; every other line is still stored.
int ingest(const IngestOptionsCli& o) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (o.file != "-") {
    file.open(o.file);
    if (!file) {
      std::fprintf(stderr, "tally: cannot read %s\n", o.file.c_str());
      return 1;
    }
    in = &file;
  }
  auto engine = open_engine(o.data, false);
  if (!engine)
    return 1;
  IngestRun run(*engine, o.batch);
  std::uint64_t line_no = 0;
  std::string line;
  while (std::getline(*in, line)) {
    run.add_line(++line_no, line);
  }
  return run.finish();
}

// Meters live in the configuration only (the data directory keeps no definitions), so a command
// that reads them without --config would see no meters and answer wrongly rather than fail.
bool require_config(const DataOptions& data, const char* command) {
  if (!data.config_path.empty())
    return true;
  std::fprintf(stderr,
               "tally: %s needs --config FILE: meters are defined in the configuration file, "
               "not stored in the data directory\n",
               command);
  return false;
}

struct QueryCli {
  DataOptions data;
  MeterQuery q;
  std::string from, to, window, group_by;
};

struct UsageCli {
  DataOptions data;
  std::string customer, from, to;
};

struct RepriceCli {
  DataOptions data;
  std::string customer, from, to;
  bool dry_run = false;
};

// The group_by flag's comma-separated properties.
std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start < text.size()) {
    auto comma = text.find(',', start);
    if (comma == std::string::npos)
      comma = text.size();
    parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

// The exit code of `tally query`: 0 and the answer's JSON on standard output, else 1 or 2.
int run_query(QueryCli& qo) {
  if (!require_config(qo.data, "query"))
    return 2;
  auto engine = open_engine(qo.data, true);
  if (!engine)
    return 1;
  qo.q.to_us = engine->clock().now_us() + 300 * core::kUsPerSecond;
  if (!parse_time_flag(qo.from, "from", &qo.q.from_us) ||
      !parse_time_flag(qo.to, "to", &qo.q.to_us)) {
    return 2;
  }
  if (!qo.window.empty()) {
    auto w = core::parse_window(qo.window);
    if (!w) {
      std::fprintf(stderr, "tally: %s\n", w.error().message().c_str());
      return 1;
    }
    qo.q.window = *w;
  }
  qo.q.group_by = split_commas(qo.group_by);
  auto r = engine->query(qo.q);
  if (!r) {
    std::fprintf(stderr, "tally: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("%s\n", http::query_result_json(*r).c_str());
  return 0;
}

// The exit code of `tally usage`.
int run_usage(const UsageCli& uo) {
  if (!require_config(uo.data, "usage"))
    return 2;
  auto engine = open_engine(uo.data, true);
  if (!engine)
    return 1;
  TimeUs from = 0, to = 0;
  if (!parse_time_flag(uo.from, "from", &from) || !parse_time_flag(uo.to, "to", &to)) {
    return 2;
  }
  auto r = engine->customer_usage(uo.customer, from, to);
  if (!r) {
    std::fprintf(stderr, "tally: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("%s\n", http::customer_usage_json(*r).c_str());
  return 0;
}

// The exit code of `tally reprice`: 2 for a request the engine refuses as invalid.
int run_reprice(const RepriceCli& ro) {
  if (!require_config(ro.data, "reprice"))
    return 2;
  RepriceRequest req;
  req.customer = ro.customer;
  req.dry_run = ro.dry_run;
  if (!parse_time_flag(ro.from, "from", &req.from_us) ||
      !parse_time_flag(ro.to, "to", &req.to_us)) {
    return 2;
  }
  auto engine = open_engine(ro.data, ro.dry_run);
  if (!engine)
    return 1;
  auto r = engine->reprice(req);
  if (!r) {
    std::fprintf(stderr, "tally: %s\n", r.error().message().c_str());
    return r.error().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s\n", http::reprice_report_json(*r).c_str());
  return 0;
}

// The exit code of `tally verify`: 0 when everything agrees, 1 on a difference, 2 when it could
// not run.
int run_verify(const DataOptions& vo) {
  if (!require_config(vo, "verify"))
    return 2;
  auto engine = open_engine(vo, true);
  if (!engine)
    return 2;
  auto r = engine->verify();
  if (!r) {
    std::fprintf(stderr, "tally: %s\n", r.error().message().c_str());
    return 2;
  }
  for (const auto& d : r->differences) {
    std::printf("DIFFERENCE: %s\n", d.c_str());
  }
  const std::string archived =
      r->archived_events == 0 ? "" : " (" + std::to_string(r->archived_events) + " archived)";
  std::printf("verified %llu events%s, %llu aggregates, %llu ledger transactions: %s\n",
              static_cast<unsigned long long>(r->events), archived.c_str(),
              static_cast<unsigned long long>(r->aggregates),
              static_cast<unsigned long long>(r->transactions),
              r->ok() ? "OK" : "DIFFERENCES FOUND");
  return r->ok() ? 0 : 1;
}

void add_ingest(CLI::App& app) {
  auto io = std::make_shared<IngestOptionsCli>();
  auto* ing = app.add_subcommand("ingest", "bulk-load JSON Lines events (server stopped)");
  add_data_options(ing, &io->data);
  ing->add_option("file", io->file, "a JSON Lines file, or - for standard input")->required();
  ing->add_option("--batch", io->batch, "events per commit")->check(CLI::Range(1, 10000));
  ing->callback([io] { std::exit(ingest(*io)); });
}

void add_query(CLI::App& app) {
  auto qo = std::make_shared<QueryCli>();
  auto* query = app.add_subcommand("query", "query a meter (works beside a running server)");
  add_data_options(query, &qo->data);
  query->add_option("meter", qo->q.meter, "meter key")->required();
  query->add_option("--from", qo->from, "RFC 3339 start (inclusive)");
  query->add_option("--to", qo->to, "RFC 3339 end (exclusive; default now)");
  query->add_option("--window", qo->window, "minute|hour|day|week|month");
  query->add_option("--tz", qo->q.timezone, "IANA time zone for day/week/month windows");
  query->add_option("--customer", qo->q.customer, "one customer");
  query->add_option("--group-by", qo->group_by, "comma-separated group-by properties");
  query->callback([qo] { std::exit(run_query(*qo)); });
}

void add_usage(CLI::App& app) {
  auto uo = std::make_shared<UsageCli>();
  auto* usage = app.add_subcommand("usage", "one customer's totals per meter");
  add_data_options(usage, &uo->data);
  usage->add_option("customer", uo->customer, "customer id")->required();
  usage->add_option("--from", uo->from, "RFC 3339 start (default: start of this month)");
  usage->add_option("--to", uo->to, "RFC 3339 end");
  usage->callback([uo] { std::exit(run_usage(*uo)); });
}

void add_reprice(CLI::App& app) {
  auto ro = std::make_shared<RepriceCli>();
  auto* reprice = app.add_subcommand(
      "reprice",
      "apply today's price versions to a customer's priced events of a range: one adjustment "
      "per billing period for the difference (server stopped; --dry-run works beside it)");
  add_data_options(reprice, &ro->data);
  reprice->add_option("--customer", ro->customer, "customer id")->required();
  reprice->add_option("--from", ro->from, "RFC 3339 start of the events' time (inclusive)")
      ->required();
  reprice->add_option("--to", ro->to, "RFC 3339 end (exclusive)")->required();
  reprice->add_flag("--dry-run", ro->dry_run, "print what would change, write nothing");
  reprice->callback([ro] { std::exit(run_reprice(*ro)); });
}

void add_verify(CLI::App& app) {
  auto vo = std::make_shared<DataOptions>();
  auto* verify = app.add_subcommand(
      "verify",
      "recompute every aggregate from the stored events and compare (exit 1 on any difference)");
  add_data_options(verify, vo.get());
  verify->callback([vo] { std::exit(run_verify(*vo)); });
}

}  // namespace

void register_data(CLI::App& app) {
  add_ingest(app);
  add_query(app);
  add_usage(app);
  add_reprice(app);
  add_verify(app);
}

}  // namespace tally::cli
