// Exports of stored events and meter aggregates as CSV, JSON, JSON Lines and XLSX, shared by
// `tally export` (src/cli/export_cmd.cc) and GET /v1/export (src/http/handlers/export.cc).
//
// Design. An export reads only the public Engine API: events page by page through
// Engine::list_events (kPageEvents at a time, by cursor), aggregates from one Engine::query
// (itself capped at 100,000 rows by the engine). Text formats are produced piece by piece by
// TextExport::next, so a caller writes each piece out (to a file, or as an HTTP chunk) before it
// asks for the next one: memory stays flat whatever the size of the export. XLSX is a zip
// written when the workbook closes, so it is written to a file by write_xlsx, with
// libxlsxwriter's constant-memory mode (each row is flushed to a temporary file).
//
// An export is not a snapshot: events stored while it runs may or may not appear in it.
//
// The columns (CSV, XLSX) and objects (JSON, JSON Lines) are described in docs/api.md#exports.
//
// Thread safety: a TextExport is used from one thread at a time; the Engine it reads must
// outlive it. The free functions are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tally/engine.h>

namespace tally::exporter {

// Events asked from the engine per page (its maximum).
inline constexpr std::uint32_t kPageEvents = 1000;
// Aggregate rows written per piece.
inline constexpr std::size_t kPageRows = 1000;

enum class Format : std::uint8_t { kCsv, kJson, kJsonl, kXlsx };
enum class Kind : std::uint8_t { kEvents, kAggregates };

std::optional<Format> parse_format(std::string_view text);  // csv, json, jsonl, xlsx
std::optional<Kind> parse_kind(std::string_view text);      // events, aggregates
const char* format_name(Format f);                          // also the file extension
const char* kind_name(Kind k);
const char* content_type(Format f);

struct ExportRequest;
// tally-<kind>-<from|start>-<to|end>-<now>.<format>, times as 20250117T143000Z (seconds); "start"
// when the request has no `from`, "end" when `to_given` is false.
std::string default_file_name(const ExportRequest& r, bool to_given, TimeUs now_us);

struct ExportRequest {
  Format format = Format::kCsv;
  Kind kind = Kind::kEvents;
  std::string customer;  // "" = every customer
  // Events: only the events this meter reads (its event type, and its filter). Aggregates:
  // the meter to export (required).
  std::string meter;
  std::string type;  // events only: only this event type ("" = all)
  TimeUs from_us = 0;
  TimeUs to_us = 0;  // events: 0 = no bound. Aggregates: REQUIRES to_us > from_us
  // Aggregates only, as in MeterQuery: window "" gives one row per customer and group.
  std::string window;
  std::string timezone;
  std::string measure;
  std::vector<std::string> group_by;  // aggregates only: group-by properties to keep
  // Events only: each page stops scanning after this long (EventListQuery::budget_ms), so one
  // piece of a sparse export never takes long. 0 = no budget.
  std::uint32_t page_budget_ms = 0;
  // The [credits] currency: CSV and JSON exports of events name their cost column after it
  // ("cost_usd") and write it beside each cost.
  std::string currency = "USD";
};

// Checks `request` against the engine before any output is made. Errors: kInvalidArgument (a
// missing or unexpected meter, an empty range, a bad window, zone or measure), kNotFound (the
// customer or the meter does not exist).
Status validate(const Engine& engine, const ExportRequest& request);

// RFC 4180: `field` as is, or quoted (quotes doubled) when it holds a comma, a quote, CR or LF.
void append_csv_field(std::string& out, std::string_view field);

// A CSV, JSON or JSON Lines export produced piece by piece.
class TextExport {
 public:
  // Validates the request (see validate()) and, for aggregates, runs the query. Errors: as
  // validate(), kInvalidArgument with kQueryTooLargeDetails (an aggregate query over 100,000
  // rows), kInvalidArgument for format xlsx.
  static Result<std::unique_ptr<TextExport>> open(const Engine& engine, ExportRequest request);

  virtual ~TextExport() = default;

  // Appends the next piece to `out`: the header, then up to a page of rows, then the trailer.
  // Returns true while more may follow and false once the export is complete (nothing more
  // will be appended). Errors: the engine's (kCorruption, kIOError); the export is then
  // unusable.
  virtual Result<bool> next(std::string* out) = 0;

  // Data rows written so far.
  virtual std::uint64_t rows() const = 0;
};

// Writes the export as an XLSX workbook at `path` (replaced if it exists): a header row, then
// one row per event or aggregate, on further worksheets when one fills up (1,048,575 rows).
// `progress`, when set, is called after each page with the rows written so far. Returns the
// number of rows. Errors: as TextExport::open, kIOError when the file cannot be written.
Result<std::uint64_t> write_xlsx(const Engine& engine, const ExportRequest& request,
                                 const std::string& path,
                                 const std::function<void(std::uint64_t)>& progress = {});

}  // namespace tally::exporter
