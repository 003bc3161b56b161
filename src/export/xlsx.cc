// The XLSX writer: the only code that includes libxlsxwriter. The workbook is opened in
// constant-memory mode, so each row goes to a temporary file as soon as the next one starts and
// strings are written inline (no shared-string table): memory stays flat however many rows.
//
// Cells: times, ids and JSON texts are strings; flagged is a boolean; value, cost and credits
// are numbers (spreadsheets hold IEEE doubles: about 15 significant digits). A string longer
// than a cell may hold (32,767 bytes) is cut at a UTF-8 character boundary.
#include <cstdlib>
#include <string>

#include <xlsxwriter.h>

#include "core/time.h"
#include "export/export.h"
#include "export/source.h"

namespace tally::exporter {

namespace {

constexpr lxw_row_t kSheetRowsMax = 1048576;  // the format's limit, header included
constexpr std::size_t kCellBytesMax = 32767;

class Workbook {
 public:
  Workbook(const std::string& path, const char* sheet_name, const std::vector<std::string>& header)
      : sheet_name_(sheet_name), header_(header) {
    lxw_workbook_options options = {};
    options.constant_memory = LXW_TRUE;
    book_ = workbook_new_opt(path.c_str(), &options);
  }

  ~Workbook() {
    if (book_ != nullptr) {
      workbook_close(book_);  // only on an earlier error; the file is incomplete either way
    }
  }

  bool ok() const { return book_ != nullptr; }

  // Starts a new row, moving to a new worksheet (with the header) when this one is full.
  void begin_row() {
    if (sheet_ == nullptr || row_ + 1 >= kSheetRowsMax) {
      add_sheet();
    }
    ++row_;
    col_ = 0;
  }

  void string(std::string_view s) {
    if (s.size() > kCellBytesMax) {
      std::size_t n = kCellBytesMax;
      while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;
      s = s.substr(0, n);
    }
    if (!s.empty()) {
      cell_.assign(s);
      note(worksheet_write_string(sheet_, row_, col_, cell_.c_str(), nullptr));
    }
    ++col_;
  }

  void number(const std::string& decimal) {
    if (!decimal.empty()) {
      note(worksheet_write_number(sheet_, row_, col_, std::strtod(decimal.c_str(), nullptr),
                                  nullptr));
    }
    ++col_;
  }

  void boolean(bool b) {
    note(worksheet_write_boolean(sheet_, row_, col_, b ? 1 : 0, nullptr));
    ++col_;
  }

  Status close(const std::string& path) {
    if (sheet_ == nullptr) {
      add_sheet();  // an empty export still has its header row
    }
    const lxw_error e = workbook_close(book_);
    book_ = nullptr;
    if (error_ != LXW_NO_ERROR) {
      return Status::io_error("cannot write " + path + ": " + lxw_strerror(error_));
    }
    if (e != LXW_NO_ERROR) {
      return Status::io_error("cannot write " + path + ": " + lxw_strerror(e));
    }
    return Status();
  }

 private:
  // A new worksheet ("events", then "events 2", ...) with the header in its first row.
  void add_sheet() {
    ++sheets_;
    const std::string name =
        sheets_ == 1 ? sheet_name_ : sheet_name_ + " " + std::to_string(sheets_);
    sheet_ = workbook_add_worksheet(book_, name.c_str());
    row_ = 0;
    col_ = 0;
    for (const auto& h : header_)
      string(h);
  }

  void note(lxw_error e) {
    if (e != LXW_NO_ERROR && error_ == LXW_NO_ERROR)
      error_ = e;
  }

  lxw_workbook* book_ = nullptr;
  lxw_worksheet* sheet_ = nullptr;
  std::string sheet_name_;
  const std::vector<std::string>& header_;
  int sheets_ = 0;
  lxw_row_t row_ = 0;
  lxw_col_t col_ = 0;
  std::string cell_;
  lxw_error error_ = LXW_NO_ERROR;
};

}  // namespace

Result<std::uint64_t> write_xlsx(const Engine& engine, const ExportRequest& request,
                                 const std::string& path,
                                 const std::function<void(std::uint64_t)>& progress) {
  auto opened = Source::open(engine, request);
  if (!opened)
    return opened.error();
  Source& source = **opened;
  const bool events = source.kind() == Kind::kEvents;
  const auto& header = events ? event_columns() : aggregate_columns();
  Workbook book(path, kind_name(request.kind), header);
  if (!book.ok())
    return Status::io_error("cannot create " + path);
  std::uint64_t rows = 0;
  std::string text;
  bool more = true;
  std::vector<StoredEvent> page;
  while (more) {
    if (events) {
      auto r = source.next_events(&page);
      if (!r)
        return r.error();
      more = *r;
      for (const auto& e : page) {
        book.begin_row();
        book.string(e.id);
        book.string(e.customer);
        book.string(e.type);
        book.string(core::format_rfc3339(e.time_us));
        book.string(core::format_rfc3339(e.received_at_us));
        book.boolean(e.flagged);
        book.number(std::to_string(e.quantity));
        book.number(e.cost);
        book.number(e.credits);
        text.clear();
        append_properties_json(text, e);
        book.string(text);
        ++rows;
      }
    } else {
      std::span<const QueryRow> slice;
      more = source.next_aggregates(&slice);
      for (const auto& row : slice) {
        book.begin_row();
        book.string(core::format_rfc3339(row.window_start_us));
        book.string(core::format_rfc3339(row.window_end_us));
        book.string(row.customer);
        text.clear();
        append_group_json(text, row);
        book.string(text);
        book.number(row.value);
        ++rows;
      }
    }
    if (progress)
      progress(rows);
  }
  TALLY_TRY(book.close(path));
  return rows;
}

}  // namespace tally::exporter
