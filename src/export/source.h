// The rows of an export, read from the engine: events a page at a time by cursor, aggregates
// from one query. Internal to src/export.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "export/export.h"

namespace tally::exporter {

const std::vector<std::string>& event_columns();  // CSV and XLSX headers
const std::vector<std::string>& aggregate_columns();
// {"key":value,...} with numbers, booleans and nulls as stored.
void append_properties_json(std::string& out, const StoredEvent& e);
// {"property":"value",...}
void append_group_json(std::string& out, const QueryRow& row);

class Source {
 public:
  // Validates the request and, for aggregates, runs the query; for events, reads the first
  // page, so that an export the engine refuses is refused before any answer starts. Errors: as
  // validate(), and the engine's query or listing errors.
  static Result<std::unique_ptr<Source>> open(const Engine& engine, const ExportRequest& r);

  Kind kind() const { return kind_; }

  // Replaces *page with the next page of events (possibly empty, when the meter's filter drops
  // a whole page). Returns true while more may follow.
  Result<bool> next_events(std::vector<StoredEvent>* page);
  // The next slice of aggregate rows. Returns true while more follow.
  bool next_aggregates(std::span<const QueryRow>* rows);

 private:
  Source(const Engine& engine, Kind kind) : engine_(engine), kind_(kind) {}

  bool matches(const StoredEvent& e) const;

  const Engine& engine_;
  Kind kind_;
  EventListQuery events_query_;
  std::vector<std::pair<std::string, std::string>> meter_filter_;
  bool done_ = false;
  // The first page of events, read by open(), handed out by the first next_events().
  std::optional<std::vector<StoredEvent>> first_page_;
  bool first_more_ = false;
  Result<bool> read_events(std::vector<StoredEvent>* page);
  std::vector<QueryRow> aggregates_;
  std::size_t position_ = 0;
};

}  // namespace tally::exporter
