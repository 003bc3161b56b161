// `tally export`: events or a meter's aggregates to a CSV, JSON, JSON Lines or XLSX file.
//
// It opens the engine read-only, so it works beside a running server. Text formats are written
// a page at a time (src/export), so memory stays flat whatever the size. The output goes to
// FILE.partial first and is renamed to FILE only when complete, so a failed or interrupted
// export never leaves a file that looks whole.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "config/config.h"
#include "core/time.h"
#include "export/export.h"

namespace tally::cli {

namespace {

struct ExportCli {
  DataOptions data;
  std::string format = "csv";
  std::string kind = "events";
  std::string customer, meter, type, from, to, window, timezone, measure;
  std::vector<std::string> group_by;
  std::string output;
  bool quiet = false;
};

// A progress line on stderr for exports that last more than a second, every half second.
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet) {}

  void update(std::uint64_t rows) {
    const auto now = std::chrono::steady_clock::now();
    if (quiet_ || now - start_ < std::chrono::seconds(1) ||
        now - last_ < std::chrono::milliseconds(500)) {
      return;
    }
    last_ = now;
    shown_ = true;
    std::fprintf(stderr, "\r%llu rows (%.0f/s)", static_cast<unsigned long long>(rows),
                 static_cast<double>(rows) / seconds());
  }

  void done(std::uint64_t rows, const std::string& where) {
    if (quiet_)
      return;
    std::fprintf(stderr, "%sexported %llu rows to %s in %.2f s\n", shown_ ? "\r" : "",
                 static_cast<unsigned long long>(rows), where.c_str(), seconds());
  }

 private:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  bool quiet_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

int fail(const Status& s) {
  std::fprintf(stderr, "tally: export: %s\n", s.message().c_str());
  return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

int write_text(const Engine& engine, const exporter::ExportRequest& request, std::FILE* out,
               Progress& progress, std::uint64_t* rows) {
  auto text = exporter::TextExport::open(engine, request);
  if (!text)
    return fail(text.error());
  std::string piece;
  piece.reserve(1 << 20);
  bool more = true;
  while (more) {
    piece.clear();
    auto r = (*text)->next(&piece);
    if (!r)
      return fail(r.error());
    more = *r;
    if (std::fwrite(piece.data(), 1, piece.size(), out) != piece.size()) {
      std::perror("tally: export: write");
      return 1;
    }
    progress.update((*text)->rows());
  }
  *rows = (*text)->rows();
  return 0;
}

// The request the options name, checked as far as it can be before the store is opened: 0, or
// 2 after saying what is wrong.
int read_request(const ExportCli& o, exporter::ExportRequest* request) {
  auto format = exporter::parse_format(o.format);
  auto kind = exporter::parse_kind(o.kind);
  if (!format || !kind) {
    std::fprintf(stderr, "tally: export: %s\n",
                 !format ? "--format must be csv, json, jsonl or xlsx"
                         : "--kind must be events or aggregates");
    return 2;
  }
  request->format = *format;
  request->kind = *kind;
  request->customer = o.customer;
  request->meter = o.meter;
  request->type = o.type;
  request->window = o.window;
  request->timezone = o.timezone;
  request->measure = o.measure;
  request->group_by = o.group_by;
  if (!o.meter.empty() && o.data.config_path.empty()) {
    std::fprintf(stderr,
                 "tally: export: --meter needs --config FILE: meters are defined in the "
                 "configuration file, not stored in the data directory\n");
    return 2;
  }
  for (auto [text, name, out] :
       {std::tuple{&o.from, "from", &request->from_us}, std::tuple{&o.to, "to", &request->to_us}}) {
    if (text->empty()) {
      continue;
    }
    auto t = core::parse_rfc3339(*text);
    if (!t) {
      std::fprintf(stderr, "tally: export: --%s: %s\n", name, t.error().message().c_str());
      return 2;
    }
    *out = *t;
  }
  if (o.output == "-" && request->format == exporter::Format::kXlsx) {
    std::fprintf(stderr, "tally: export: xlsx is written to a file only; give --output FILE\n");
    return 2;
  }
  return 0;
}

// CSV, JSON or JSON Lines to the standard output.
int export_to_stdout(const Engine& engine, const exporter::ExportRequest& request,
                     Progress& progress) {
  std::uint64_t rows = 0;
  const int code = write_text(engine, request, stdout, progress, &rows);
  if (code == 0 && std::fflush(stdout) != 0) {
    std::perror("tally: export: write");
    return 1;
  }
  return code;
}

// The export to `path`, written to "<path>.partial" first and renamed when whole (removed when
// not): 0 with `*rows` written, or the exit code of the failure.
int export_to_file(const Engine& engine, const exporter::ExportRequest& request,
                   const std::string& path, Progress& progress, std::uint64_t* rows) {
  const std::string partial = path + ".partial";
  int code = 0;
  if (request.format == exporter::Format::kXlsx) {
    auto r = exporter::write_xlsx(engine, request, partial,
                                  [&](std::uint64_t n) { progress.update(n); });
    code = r ? 0 : fail(r.error());
    *rows = r ? *r : 0;
  } else {
    std::FILE* f = std::fopen(partial.c_str(), "wb");
    if (f == nullptr) {
      std::fprintf(stderr, "tally: export: cannot create %s: ", partial.c_str());
      std::perror(nullptr);
      return 1;
    }
    code = write_text(engine, request, f, progress, rows);
    if (std::fclose(f) != 0 && code == 0) {
      std::perror("tally: export: write");
      code = 1;
    }
  }
  if (code == 0 && std::rename(partial.c_str(), path.c_str()) != 0) {
    std::perror("tally: export: rename");
    code = 1;
  }
  if (code != 0) {
    std::remove(partial.c_str());
  }
  return code;
}

int run_export(const ExportCli& o) {
  exporter::ExportRequest request;
  if (const int code = read_request(o, &request); code != 0) {
    return code;
  }
  config::Config cfg;
  if (!load_config(o.data, &cfg)) {
    return 1;
  }
  request.currency = cfg.credits.currency;
  auto engine = open_engine(o.data, true);
  if (!engine) {
    return 1;
  }
  const TimeUs now_us = engine->clock().now_us();
  if (request.kind == exporter::Kind::kAggregates && request.to_us == 0) {
    request.to_us = now_us + cfg.server.future_skew_seconds_max * core::kUsPerSecond;
  }
  // Refuse a bad request before creating any file.
  if (Status s = exporter::validate(*engine, request); !s.ok()) {
    return fail(s);
  }
  Progress progress(o.quiet);
  if (o.output == "-") {
    return export_to_stdout(*engine, request, progress);
  }
  const std::string path = o.output.empty()
                               ? exporter::default_file_name(request, request.to_us != 0, now_us)
                               : o.output;
  std::uint64_t rows = 0;
  const int code = export_to_file(*engine, request, path, progress, &rows);
  if (code == 0) {
    progress.done(rows, path);
  }
  return code;
}

}  // namespace

void register_export(CLI::App& app) {
  auto o = std::make_shared<ExportCli>();
  auto* cmd = app.add_subcommand(
      "export", "export events or a meter's aggregates to a file (works beside a running server)");
  add_data_options(cmd, &o->data);
  cmd->add_option("-f,--format", o->format, "csv (default), json, jsonl or xlsx");
  cmd->add_option("-k,--kind", o->kind, "events (default) or aggregates");
  cmd->add_option("--customer", o->customer, "one customer (default: every customer)");
  cmd->add_option("--meter", o->meter,
                  "aggregates: the meter (required); events: only the events it reads");
  cmd->add_option("--type", o->type, "events: only this event type");
  cmd->add_option("--from", o->from, "RFC 3339 start (inclusive)");
  cmd->add_option("--to", o->to, "RFC 3339 end (exclusive)");
  cmd->add_option("--window", o->window, "aggregates: minute|hour|day|week|month (default: none)");
  cmd->add_option("--tz", o->timezone, "aggregates: IANA zone for day/week/month windows");
  cmd->add_option("--measure", o->measure, "aggregates: units (default), cost or credits");
  cmd->add_option("--group-by", o->group_by,
                  "aggregates: group-by properties of the meter to keep (repeat or comma-separate)")
      ->delimiter(',');
  cmd->add_option("-o,--output", o->output,
                  "file to write, - for standard output (default: "
                  "tally-<kind>-<from>-<to>-<now>.<format> in the current directory)");
  cmd->add_flag("-q,--quiet", o->quiet, "no progress or summary line");
  cmd->callback([o] { std::exit(run_export(*o)); });
}

}  // namespace tally::cli
