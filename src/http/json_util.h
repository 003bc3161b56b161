// JSON helpers shared by the HTTP handlers: error bodies, Status -> HTTP status, and the
// encoding of engine values.
#pragma once

#include <string>
#include <string_view>

#include <tally/status.h>
#include <tally/types.h>

#include "common/json_writer.h"
#include "http/server.h"

namespace tally::http {

// {"error": code, "message": message, "details"?: details_json}
Response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string_view details_json = {});
// Maps a Status to its HTTP status and error code.
Response status_response(const Status& s);
Response json_response(unsigned status, std::string body);

std::string time_text(TimeUs t);
void write_customer(common::JsonWriter& w, const Customer& c);
void write_key(common::JsonWriter& w, const ApiKeyInfo& k);
// A decimal text as a JSON number, or null when empty.
void write_decimal(common::JsonWriter& w, const std::string& decimal);
// A number as its shortest exact text.
void write_decimal(common::JsonWriter& w, const Decimal& d);
// ["admin", "ingest", ...]
// An alert as GET /v1/alerts and webhook payloads show it; with `deliveries`, also each
// delivery's state.
void write_alert(common::JsonWriter& w, const Alert& a, bool deliveries);
void write_scopes(common::JsonWriter& w, std::uint32_t scopes);

// The bodies of GET /v1/meters/{key}/query and GET /v1/customers/{id}/usage.
std::string query_result_json(const QueryResult& r);
std::string customer_usage_json(const CustomerUsage& r);
// What an archive run or a restore did: the body of POST /v1/admin/archive and what
// `tally archive` / `tally restore` print.
std::string archive_result_json(const ArchiveResult& r);
// The body of GET /v1/prices: every price with its versions.
std::string prices_json(const std::vector<PriceInfo>& prices);
// What re-rating did (or would do): the body of POST /v1/customers/{id}/reprice and what
// `tally reprice` prints.
std::string reprice_report_json(const RepriceReport& r);
std::string restore_result_json(const RestoreResult& r);

}  // namespace tally::http
