// GET /v1/export: events or a meter's aggregates as CSV, JSON, JSON Lines or XLSX.
//
// Every check (parameters, scope, customer, meter, range) is made before the status is sent;
// the body is then produced a page at a time by src/export and sent as HTTP chunks
// (Response::stream), so the server's memory stays flat whatever the size. Each piece is made
// on the work pool, never on the I/O thread, and each page of events has the time budget of
// GET /v1/events. An error after the status was sent (a disk error) can only cut the response
// short: the server closes the connection without the final chunk. XLSX is a zip whose
// directory is written at close, so it is first written to a temporary file (libxlsxwriter's
// constant-memory mode), then streamed from it and removed.
#include "export/export.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <fcntl.h>
#include <unistd.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

// A streamed body whose pieces `next` makes on the work pool: it may read the store or a file.
std::function<void(StreamReady)> stream_on_pool(WorkPool& pool,
                                                std::function<Result<bool>(std::string*)> next) {
  return [&pool, next = std::move(next)](StreamReady ready) {
    const bool queued = pool.submit_continuation([next, ready] {
      StreamPiece piece;
      Result<bool> more = next(&piece.data);
      if (!more) {
        ready(more.error());
        return;
      }
      piece.more = *more;
      ready(std::move(piece));
    });
    if (!queued) {
      ready(Status::unavailable("the server is stopping"));
    }
  };
}

// A workbook written to a temporary file, read back a chunk at a time, removed when done.
class XlsxFile {
 public:
  static constexpr std::size_t kChunkBytes = 256 * 1024;

  explicit XlsxFile(std::string path) : path_(std::move(path)) {}

  ~XlsxFile() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    std::remove(path_.c_str());
  }

  const std::string& path() const { return path_; }

  bool open() {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    return fd_ >= 0;
  }

  Result<bool> next(std::string* out) {
    out->resize(kChunkBytes);
    const ssize_t n = ::read(fd_, out->data(), kChunkBytes);
    if (n < 0) {
      return Status::io_error("cannot read the workbook");
    }
    out->resize(static_cast<std::size_t>(n));
    return n > 0;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// A 200 that sends the export as an attachment named `file`, its body yet to be set.
Response attachment(const exporter::ExportRequest& r, const std::string& file) {
  Response resp;
  resp.status = 200;
  resp.content_type = exporter::content_type(r.format);
  resp.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + file + "\"");
  return resp;
}

void export_xlsx(Context& ctx, Call& call, const exporter::ExportRequest& r,
                 const std::string& file) {
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  std::string name = (dir / "tally-export-XXXXXX").string();
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    answer(call, status_response(Status::io_error("cannot create a temporary file")));
    return;
  }
  ::close(fd);
  auto workbook = std::make_shared<XlsxFile>(name);
  auto rows = exporter::write_xlsx(ctx.engine, r, workbook->path());
  if (!rows) {
    answer(call, status_response(rows.error()));
    return;
  }
  if (!workbook->open()) {
    answer(call, status_response(Status::io_error("cannot read the workbook back")));
    return;
  }
  Response resp = attachment(r, file);
  resp.stream =
      stream_on_pool(ctx.pool, [workbook](std::string* out) { return workbook->next(out); });
  answer(call, std::move(resp));
}

// CSV, JSON or JSON Lines, made a page at a time as the client reads.
void export_text(Context& ctx, Call& call, const exporter::ExportRequest& r,
                 const std::string& file) {
  auto text = exporter::TextExport::open(ctx.engine, r);
  if (!text) {
    answer(call, status_response(text.error()));
    return;
  }
  Response resp = attachment(r, file);
  std::shared_ptr<exporter::TextExport> stream(std::move(*text));
  resp.stream = stream_on_pool(ctx.pool, [stream](std::string* out) -> Result<bool> {
    auto more = stream->next(out);
    if (!more) {
      std::fprintf(stderr, "tally: GET /v1/export cut short after %llu rows: %s\n",
                   static_cast<unsigned long long>(stream->rows()), more.error().message().c_str());
    }
    return more;
  });
  answer(call, std::move(resp));
}

// format and kind: false after answering 400 for one that is none of its values.
bool read_format_and_kind(Call& call, exporter::ExportRequest* r) {
  if (const auto* f = call.request.query_param("format")) {
    auto format = exporter::parse_format(*f);
    if (!format) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "query parameter 'format' must be csv, json, jsonl or xlsx"));
      return false;
    }
    r->format = *format;
  }
  if (const auto* k = call.request.query_param("kind")) {
    auto kind = exporter::parse_kind(*k);
    if (!kind) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "query parameter 'kind' must be events or aggregates"));
      return false;
    }
    r->kind = *kind;
  }
  return true;
}

// The parameters taken as they are (the export checks them), and group_by: comma-separated,
// or repeated.
void read_text_params(Call& call, exporter::ExportRequest* r) {
  const std::pair<const char*, std::string*> texts[] = {
      {"customer", &r->customer}, {"meter", &r->meter}, {"type", &r->type},
      {"window", &r->window},     {"tz", &r->timezone}, {"measure", &r->measure}};
  for (const auto& [name, field] : texts) {
    if (const auto* v = call.request.query_param(name)) {
      *field = *v;
    }
  }
  for (const auto& [k, v] : call.request.query) {
    if (k != "group_by") {
      continue;
    }
    for (std::size_t start = 0; start <= v.size();) {
      std::size_t comma = v.find(',', start);
      if (comma == std::string::npos) {
        comma = v.size();
      }
      if (comma > start) {
        r->group_by.push_back(v.substr(start, comma - start));
      }
      start = comma + 1;
    }
  }
}

// What the request asks to export, as of `now` (aggregates up to now and the future skew
// allowed, unless `to` says otherwise): false after answering 400 or 403.
bool read_export_request(Context& ctx, Call& call, TimeUs now, exporter::ExportRequest* r) {
  if (!only_params(call,
                   {"format", "kind", "customer", "meter", "type", "from", "to", "window", "tz",
                    "measure", "group_by"},
                   {.list_allowed = true})) {
    return false;
  }
  r->currency = ctx.options.currency;
  if (!read_format_and_kind(call, r)) {
    return false;
  }
  read_text_params(call, r);
  if (r->kind == exporter::Kind::kAggregates) {
    r->to_us = now + ctx.options.future_skew_seconds_max * core::kUsPerSecond;
  }
  r->page_budget_ms = ctx.options.page_budget_ms;
  return scope_customer(call, &r->customer) && time_param(call, "from", &r->from_us) &&
         time_param(call, "to", &r->to_us);
}

}  // namespace

void export_data(Context& ctx, Call& call) {
  const TimeUs now = ctx.engine.clock().now_us();
  exporter::ExportRequest r;
  if (!read_export_request(ctx, call, now, &r)) {
    return;
  }
  const bool to_given = call.request.query_param("to") != nullptr;
  const std::string file = exporter::default_file_name(r, to_given, now);
  if (r.format == exporter::Format::kXlsx) {
    export_xlsx(ctx, call, r, file);
  } else {
    export_text(ctx, call, r, file);
  }
}

}  // namespace tally::http::handlers
