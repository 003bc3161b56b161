// The JSON encodings of Tally's public values (include/tally/types.h), one writer per type.
//
// Every writer produces exactly the bytes the HTTP API answers (docs/api.md), so the handlers,
// the CLI (`tally customers`, `tally query`, ...) and the webhook sender print one shape. This
// is the library tally_json: it depends on core and common only (no Beast, no engine), so the
// outbox sender can link it without the HTTP server.
//
// Writers append one JSON value to `w`; the *_json functions return a whole body.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <tally/types.h>

#include "common/json_writer.h"

namespace tally::http {

// RFC 3339 in UTC with microseconds when there are any ("2026-01-02T03:04:05Z").
std::string time_text(TimeUs t);
// A decimal text as a JSON number, or null when empty.
void write_decimal(common::JsonWriter& w, const std::string& decimal);
// A number as its shortest exact text.
void write_decimal(common::JsonWriter& w, const Decimal& d);
// A string, or null when empty.
void write_nullable(common::JsonWriter& w, const std::string& s);

void write_customer(common::JsonWriter& w, const Customer& c);
// ["admin", "ingest", ...]
void write_scopes(common::JsonWriter& w, Scope scopes);
void write_key(common::JsonWriter& w, const ApiKeyInfo& k);
// An alert as GET /v1/alerts and webhook payloads show it; with `deliveries`, also each
// delivery's state.
void write_alert(common::JsonWriter& w, const Alert& a, bool deliveries);

// One limit as GET /v1/customers/{id}/limits, the customer report and a check write it.
void write_limit_state(common::JsonWriter& w, const LimitState& s);
// The body of a check (POST /v1/check) and of each entry of a batch.
void write_check(common::JsonWriter& w, const CheckResult& r);

// The `errors` array of an ingest summary: index, id, code and message of each refused event.
void write_event_errors(common::JsonWriter& w, const std::vector<EventError>& errors);
// A stored event as GET /v1/events lists it; `cost_key` is "cost_" + the lower-case currency
// ("cost_usd"), written beside `cost` when the event was priced.
void write_event(common::JsonWriter& w, const StoredEvent& e, const std::string& currency,
                 const std::string& cost_key);

// GET /v1/customers/{id}/wallet, and one ledger transaction as listed and created.
void write_wallet(common::JsonWriter& w, const Wallet& wallet);
void write_ledger_transaction(common::JsonWriter& w, const LedgerTransaction& t);

// One window of a series ({window_start, window_end, value}), a series of them, and the trend
// points of GET /v1/meters/{key}/stats.
void write_window_value(common::JsonWriter& w, const WindowValue& v);
void write_series(common::JsonWriter& w, const std::vector<WindowValue>& data);
void write_trend(common::JsonWriter& w, const std::vector<TrendPoint>& points);

// The bodies of GET /v1/meters/{key}/query and GET /v1/customers/{id}/usage.
std::string query_result_json(const QueryResult& r);
std::string customer_usage_json(const CustomerUsage& r);
// What an archive run or a restore did: the body of POST /v1/admin/archive and what
// `tally archive` / `tally restore` print.
std::string archive_result_json(const ArchiveResult& r);
std::string restore_result_json(const RestoreResult& r);
// The body of GET /v1/prices: every price with its versions.
std::string prices_json(const std::vector<PriceInfo>& prices);
// What re-rating did (or would do): the body of POST /v1/customers/{id}/reprice and what
// `tally reprice` prints.
std::string reprice_report_json(const RepriceReport& r);
// The body of GET /v1/customers/{id}/usage/history, with the series of each group when
// `groups` (a group_by was asked).
std::string history_json(const UsageHistory& h, bool groups);
// The body of GET /v1/admin/usage/top: the top customers, ranked from 1.
std::string top_customers_json(const TopUsage& top);
// The body of GET /v1/meters/{key}/stats.
std::string meter_stats_json(const MeterStats& m);

}  // namespace tally::http
