// Lago's API under /lago (docs/compat.md): events (one, or batches of up to 100), customers,
// current usage, and wallets with their top-ups, in Lago's shapes and Lago's error shape
// ({"status", "error", "code", "error_details"}), so that lago-javascript-client works against
// Tally by its base URL alone.
//
// The mapping: a Lago customer's external_id is the Tally customer; an event's code is its
// event type (a billable metric is a meter taking that type), its transaction_id its event id
// (exact dedup, per customer), its properties its properties. A Tally customer has one plan,
// so one subscription: an event naming only external_subscription_id names the customer of
// that id, which must exist. A customer has one credit wallet, whose Lago id is
// "wallet_<customer>"; Lago credits are Tally credits, one for one, and Lago's rate_amount is
// fixed by [credits] per_currency_unit.
//
// Unlike Lago, a 2xx means the events are durable; like Lago, a batch is all or nothing: one
// event at fault (a duplicate transaction_id included) and nothing of it is stored.
#include <algorithm>
#include <charconv>
#include <map>
#include <memory>

#include <simdjson.h>

#include "config/config.h"
#include "core/decimal.h"
#include "core/event.h"
#include "core/ids.h"
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

constexpr std::size_t kBatchEventsMax = 100;  // Lago's own bound on POST /events/batch
constexpr std::uint32_t kPerPageMax = 100;
constexpr std::string_view kWalletPrefix = "wallet_";
// The latest instant a Lago timestamp may name (9999-12-31T23:59:59Z), in seconds.
constexpr std::int64_t kTimestampSecondsMax = 253'402'300'799;

const char* title_of(unsigned status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    case 507:
      return "Insufficient Storage";
    default:
      return "Internal Server Error";
  }
}

// {"status", "error", "code"?, "error_details"?}: Lago's error body.
Response lago_error(unsigned status, std::string_view code = {}, std::string_view details = {},
                    std::string_view error = {}) {
  common::JsonWriter w;
  w.begin_object().key("status").value(status).key("error");
  error.empty() ? w.value(title_of(status)) : w.value(error);
  if (!code.empty()) {
    w.key("code").value(code);
  }
  if (!details.empty()) {
    w.key("error_details").raw(details);
  }
  w.end_object();
  return json_response(status, w.take());
}

// Lago's 400: what was wrong with the request itself, in "error" as Lago puts it.
Response bad_request(std::string_view detail) {
  return lago_error(400, {}, {}, "BadRequest: " + std::string(detail));
}

// Field -> error codes, in the order found: Lago's validation error_details.
using FieldErrors = std::vector<std::pair<std::string, std::string>>;

void add(FieldErrors* e, std::string field, std::string code) {
  e->emplace_back(std::move(field), std::move(code));
}

void write_field_errors(common::JsonWriter& w, const FieldErrors& errors) {
  std::vector<std::string> fields;
  for (const auto& [f, c] : errors) {
    if (std::find(fields.begin(), fields.end(), f) == fields.end()) {
      fields.push_back(f);
    }
  }
  w.begin_object();
  for (const auto& f : fields) {
    w.key(f).begin_array();
    for (const auto& [g, c] : errors) {
      if (g == f) {
        w.value(c);
      }
    }
    w.end_array();
  }
  w.end_object();
}

Response validation_errors(const FieldErrors& errors) {
  common::JsonWriter w;
  write_field_errors(w, errors);
  return lago_error(422, "validation_errors", w.take());
}

Response validation_error(std::string field, std::string code) {
  FieldErrors e;
  add(&e, std::move(field), std::move(code));
  return validation_errors(e);
}

// An engine error that is none of the cases a handler names itself.
Response engine_error(const Status& s) {
  const unsigned status = status_response(s).status;
  Response r = lago_error(status, status == 403 ? "forbidden" : "");
  if (status == 503) {
    r.headers.emplace_back("Retry-After", "1");
  }
  return r;
}

// The body as one JSON object: false after answering 415 or 400.
bool lago_body(Call& call, dom::object* out) {
  if (const std::string* ct = call.request.header("content-type"); ct != nullptr && !ct->empty()) {
    std::string media = ct->substr(0, ct->find(';'));
    while (!media.empty() && media.back() == ' ')
      media.pop_back();
    std::transform(media.begin(), media.end(), media.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (media != "application/json" && !(media.size() > 5 && media.ends_with("+json"))) {
      answer(call, lago_error(415, {}, {}, "Content-Type '" + *ct + "' is not JSON"));
      return false;
    }
  }
  dom::element root;
  if (std::string error = parse_body(call.request, &root); !error.empty()) {
    answer(call, bad_request(error));
    return false;
  }
  if (root.get_object().get(*out) != simdjson::SUCCESS) {
    answer(call, bad_request("the body must be a JSON object"));
    return false;
  }
  return true;
}

// The object under `name` in `body` (Lago's {"event": {...}}, {"wallet": {...}}): false after
// answering 400, as Lago does for a missing root.
bool root_object(Call& call, const dom::object& body, const char* name, dom::object* out) {
  dom::element el;
  if (body.at_key(name).get(el) != simdjson::SUCCESS ||
      el.get_object().get(*out) != simdjson::SUCCESS) {
    answer(call, bad_request(std::string("param is missing or the value is empty: ") + name));
    return false;
  }
  return true;
}

// A string field; numbers are taken as their text (Lago's parameters are strings). Returns
// false when the field is absent, null or of another type (`*wrong_type` says which).
bool text_field(const dom::object& obj, const char* name, std::string* out,
                bool* wrong_type = nullptr) {
  dom::element el;
  if (obj.at_key(name).get(el) != simdjson::SUCCESS || el.is_null()) {
    return false;
  }
  std::string_view s;
  if (el.get_string().get(s) == simdjson::SUCCESS) {
    out->assign(s);
    return true;
  }
  if (el.is_int64() || el.is_uint64() || el.is_double()) {
    *out = simdjson::minify(el);
    return true;
  }
  if (wrong_type != nullptr) {
    *wrong_type = true;
  }
  return false;
}

// A string field that must be there and not empty: false after adding invalid_type or
// value_is_mandatory to `errors`.
bool required_text(const dom::object& obj, const char* name, std::string* out,
                   FieldErrors* errors) {
  bool wrong = false;
  if (!text_field(obj, name, out, &wrong) || out->empty()) {
    add(errors, name, wrong ? "invalid_type" : "value_is_mandatory");
    return false;
  }
  return true;
}

// A customer key sees its own customer only: false after answering 403.
bool own_customer(Call& call, const std::string& customer) {
  if (call.identity.customer.empty() || call.identity.customer == customer) {
    return true;
  }
  answer(call, lago_error(403, "forbidden"));
  return false;
}

// ---- money -------------------------------------------------------------------------------

// Rounds to a whole number, half to even.
std::int64_t round_whole(core::Decimal d) {
  const core::Decimal r = core::divide_half_even(d, core::Decimal::kScale);
  return static_cast<std::int64_t>(r.units);
}

// Currency amounts in cents (two decimals, half to even).
std::int64_t cents_of(core::Decimal amount) {
  return round_whole(core::Decimal{amount.units * 100});
}

core::Decimal decimal_or_zero(const std::string& text) {
  auto d = core::parse_decimal(text);
  return d ? *d : core::Decimal{};
}

// What credits are worth in the currency: credits / per_currency_unit.
core::Decimal credits_in_currency(core::Decimal credits, core::Decimal per_currency_unit) {
  core::Decimal out;
  if (!core::divide_decimal_half_even(credits, per_currency_unit, &out)) {
    return core::Decimal{};
  }
  return out;
}

// ---- events ------------------------------------------------------------------------------

struct LagoEvent {
  std::string transaction_id;
  std::string customer;
  std::string subscription;      // as sent ("" = none)
  bool by_subscription = false;  // the customer came from external_subscription_id
  std::string code;
  TimeUs time_us = 0;
  std::string properties = "{}";  // minified JSON object
};

// transaction_id, the event's id: mandatory, and an id Tally takes.
void read_transaction_id(const dom::object& obj, LagoEvent* out, FieldErrors* errors) {
  if (required_text(obj, "transaction_id", &out->transaction_id, errors) &&
      (out->transaction_id.size() > core::kEventIdBytesMax ||
       !core::check_event_id("transaction_id", out->transaction_id).ok())) {
    add(errors, "transaction_id", "value_is_invalid");
  }
}

// code, the event's type: mandatory, and the type of one of `meters` (a billable metric).
void read_code(const dom::object& obj, const std::vector<MeterInfo>& meters, LagoEvent* out,
               FieldErrors* errors) {
  if (required_text(obj, "code", &out->code, errors) &&
      std::none_of(meters.begin(), meters.end(),
                   [&](const MeterInfo& m) { return m.event_type == out->code; })) {
    add(errors, "code", "metric_not_found");
  }
}

// The event's customer: external_customer_id, or else the customer whose one subscription
// external_subscription_id names, which must exist.
void read_event_customer(Context& ctx, const dom::object& obj, LagoEvent* out,
                         FieldErrors* errors) {
  std::string customer;
  bool customer_wrong = false;
  bool subscription_wrong = false;
  text_field(obj, "external_customer_id", &customer, &customer_wrong);
  text_field(obj, "external_subscription_id", &out->subscription, &subscription_wrong);
  if (customer_wrong) {
    add(errors, "external_customer_id", "invalid_type");
  } else if (subscription_wrong) {
    add(errors, "external_subscription_id", "invalid_type");
  } else if (customer.empty() && out->subscription.empty()) {
    add(errors, "base", "missing_external_identifier");
  } else if (!customer.empty()) {
    out->customer = customer;
    if (!core::check_name("customer", customer).ok()) {
      add(errors, "external_customer_id", "value_is_invalid");
    }
  } else {
    // One subscription per customer: its id is the customer's, and it must exist.
    out->customer = out->subscription;
    out->by_subscription = true;
    if (!core::check_name("customer", out->customer).ok() ||
        !ctx.engine.get_customer(out->customer).has_value()) {
      add(errors, "external_subscription_id", "subscription_not_found");
    }
  }
}

// timestamp: Unix seconds, with a fraction for sub-second precision (kept to the microsecond);
// `now` without one.
void read_timestamp(const dom::object& obj, TimeUs now, LagoEvent* out, FieldErrors* errors) {
  out->time_us = now;
  std::string text;
  bool wrong_type = false;
  if (!text_field(obj, "timestamp", &text, &wrong_type) && !wrong_type) {
    return;  // absent or null
  }
  auto seconds = core::parse_decimal(text);
  if (text.empty() || !seconds || seconds->units < 0 ||
      seconds->units > static_cast<__int128>(kTimestampSecondsMax) * core::Decimal::kScale) {
    add(errors, "timestamp", "invalid_format");
  } else {
    out->time_us = static_cast<TimeUs>(seconds->units / (core::Decimal::kScale / 1'000'000));
  }
}

// properties: an object, or absent or null.
void read_properties(const dom::object& obj, LagoEvent* out, FieldErrors* errors) {
  dom::element props;
  if (obj.at_key("properties").get(props) == simdjson::SUCCESS && !props.is_null()) {
    if (props.is_object()) {
      out->properties = simdjson::minify(props);
    } else {
      add(errors, "properties", "invalid_type");
    }
  }
}

// Reads one Lago event into `out`, adding what is wrong with it to `errors`.
void read_event(Context& ctx, const dom::object& obj, const std::vector<MeterInfo>& meters,
                TimeUs now, LagoEvent* out, FieldErrors* errors) {
  read_transaction_id(obj, out, errors);
  read_code(obj, meters, out, errors);
  read_event_customer(ctx, obj, out, errors);
  read_timestamp(obj, now, out, errors);
  read_properties(obj, out, errors);
}

// Where an engine error about an event goes in Lago's error_details.
std::pair<std::string, std::string> lago_fault(const EventError& e, const LagoEvent& event) {
  if (e.code == "DUPLICATE")
    return {"transaction_id", "value_already_exist"};
  if (e.code == "UNKNOWN_CUSTOMER") {
    return event.by_subscription
               ? std::make_pair("external_subscription_id", "subscription_not_found")
               : std::make_pair("external_customer_id", "customer_not_found");
  }
  if (e.code == "INVALID_TIME")
    return {"timestamp", "invalid_format"};
  if (e.code == "TIME_IN_FUTURE")
    return {"timestamp", "too_far_in_the_future"};
  if (e.code == "UNKNOWN_EVENT_TYPE")
    return {"code", "metric_not_found"};
  std::string code = e.code;  // INVALID_TYPE, INVALID_VALUE, NEGATIVE_VALUE: the properties
  std::transform(code.begin(), code.end(), code.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return {"properties", code};
}

void write_event(common::JsonWriter& w, const LagoEvent& e, TimeUs created_us) {
  w.begin_object()
      .key("lago_id")
      .value(e.customer + "/" + e.transaction_id)
      .key("transaction_id")
      .value(e.transaction_id)
      .key("lago_customer_id")
      .value(e.customer)
      .key("external_customer_id")
      .value(e.customer)
      .key("code")
      .value(e.code)
      .key("timestamp")
      .value(time_text(e.time_us))
      .key("properties")
      .raw(e.properties)
      .key("lago_subscription_id")
      .null()
      .key("external_subscription_id")
      .value(e.subscription.empty() ? e.customer : e.subscription)
      .key("precise_total_amount_cents")
      .null()
      .key("created_at")
      .value(time_text(created_us))
      .end_object();
}

// The events as a Tally ingest body ({"id", "customer", "type", "time", "properties"} each).
std::string ingest_body(const std::vector<LagoEvent>& events) {
  common::JsonWriter body;
  body.begin_array();
  for (const auto& e : events) {
    body.begin_object()
        .key("id")
        .value(e.transaction_id)
        .key("customer")
        .value(e.customer)
        .key("type")
        .value(e.code)
        .key("time")
        .value(time_text(e.time_us))
        .key("properties")
        .raw(e.properties)
        .end_object();
  }
  body.end_array();
  return body.take();
}

// The refusal of events the engine refused: for one event, a 404 when its customer is all
// that is wrong, else 422 naming its fields; for a batch, 422 naming each event's fields by
// its index.
Response ingest_refusal(const std::vector<EventError>& errors, const std::vector<LagoEvent>& evs,
                        bool batch) {
  if (!batch) {
    FieldErrors fe;
    bool only_unknown = true;
    for (const auto& e : errors) {
      auto [field, code] = lago_fault(e, evs.at(0));
      only_unknown = only_unknown && e.code == "UNKNOWN_CUSTOMER";
      add(&fe, field, code);
    }
    if (only_unknown) {
      return lago_error(
          404, evs.at(0).by_subscription ? "subscription_not_found" : "customer_not_found");
    }
    return validation_errors(fe);
  }
  std::map<std::uint32_t, FieldErrors> by_index;
  for (const auto& e : errors) {
    auto [field, code] = lago_fault(e, evs.at(e.index));
    add(&by_index[e.index], field, code);
  }
  common::JsonWriter w;
  w.begin_object();
  for (const auto& [index, fe] : by_index) {
    w.key(std::to_string(index));
    write_field_errors(w, fe);
  }
  w.end_object();
  return lago_error(422, "validation_errors", w.take());
}

// Stores the events all or nothing, then answers {"event": ...} or {"events": [...]}.
void ingest_events(Context& ctx, Call& call, std::vector<LagoEvent> events, bool batch) {
  IngestOptions options;
  options.restrict_customer = call.identity.customer;
  options.negative_corrections = call.identity.admin();
  options.all_or_nothing = true;
  std::string body = ingest_body(events);
  auto shared = std::make_shared<std::vector<LagoEvent>>(std::move(events));
  Responder respond = std::move(call.respond);
  const Clock* clock = &ctx.engine.clock();
  ctx.engine.ingest_json_async(std::move(body), options,
                               [respond, shared, batch, clock](Result<IngestSummary> r) {
                                 if (!r) {
                                   respond(engine_error(r.error()));
                                   return;
                                 }
                                 const std::vector<LagoEvent>& evs = *shared;
                                 if (!r->errors.empty()) {
                                   respond(ingest_refusal(r->errors, evs, batch));
                                   return;
                                 }
                                 const TimeUs created = clock->now_us();
                                 common::JsonWriter w;
                                 w.begin_object();
                                 if (batch) {
                                   w.key("events").begin_array();
                                   for (const auto& e : evs) {
                                     write_event(w, e, created);
                                   }
                                   w.end_array();
                                 } else {
                                   w.key("event");
                                   write_event(w, evs.at(0), created);
                                 }
                                 w.end_object();
                                 respond(json_response(200, w.take()));
                               });
}

// ---- customers ---------------------------------------------------------------------------

void write_lago_customer(common::JsonWriter& w, const Customer& c, const std::string& currency) {
  w.begin_object()
      .key("lago_id")
      .value(c.id)
      .key("external_id")
      .value(c.id)
      .key("name")
      .value(c.name)
      .key("email");
  c.email.empty() ? w.null() : w.value(c.email);
  w.key("timezone").value(c.timezone).key("applicable_timezone").value(c.timezone);
  w.key("currency").value(currency);
  w.key("created_at").value(time_text(c.created_at_us));
  w.key("updated_at").value(time_text(c.updated_at_us));
  // Tally's metadata object as Lago's list of {key, value}.
  w.key("metadata").begin_array();
  dom::parser parser;
  dom::object meta;
  if (parser.parse(c.metadata_json).get_object().get(meta) == simdjson::SUCCESS) {
    for (auto f : meta) {
      std::string_view s;
      w.begin_object().key("key").value(f.key).key("value");
      f.value.get_string().get(s) == simdjson::SUCCESS ? w.value(s)
                                                       : w.value(simdjson::minify(f.value));
      w.key("display_in_invoice").value(false).end_object();
    }
  }
  w.end_array().end_object();
}

// Lago's "meta" of a paged list: `page` (from 1) of `pages`, `total` items in all.
void write_page_meta(common::JsonWriter& w, std::uint64_t page, std::uint64_t pages,
                     std::uint64_t total) {
  w.key("meta").begin_object().key("current_page").value(page).key("next_page");
  page < pages ? w.value(page + 1) : w.null();
  w.key("prev_page");
  page > 1 ? w.value(page - 1) : w.null();
  w.key("total_pages").value(pages).key("total_count").value(total).end_object();
}

// ---- wallets -----------------------------------------------------------------------------

std::string wallet_id(const std::string& customer) {
  return std::string(kWalletPrefix) + customer;
}

// The customer of a wallet id, or "" when it names none.
std::string wallet_customer(const std::string& lago_id) {
  if (lago_id.size() <= kWalletPrefix.size() ||
      lago_id.compare(0, kWalletPrefix.size(), kWalletPrefix) != 0) {
    return {};
  }
  return lago_id.substr(kWalletPrefix.size());
}

// The wallet a Lago wallet id names, for a key that may see it; nullopt after answering 404
// wallet_not_found (an id that names no wallet, or a customer without one), 403 (another
// customer's) or the engine's error.
std::optional<Wallet> find_wallet(Context& ctx, Call& call, const std::string& lago_id) {
  const std::string customer = wallet_customer(lago_id);
  if (customer.empty()) {
    answer(call, lago_error(404, "wallet_not_found"));
    return std::nullopt;
  }
  if (!own_customer(call, customer)) {
    return std::nullopt;
  }
  Result<Wallet> wallet = ctx.engine.wallet(customer);
  if (!wallet) {
    answer(call, wallet.error().code() == StatusCode::kNotFound
                     ? lago_error(404, "wallet_not_found")
                     : engine_error(wallet.error()));
    return std::nullopt;
  }
  return std::move(*wallet);
}

struct WalletRates {
  core::Decimal per_currency_unit;  // credits per currency unit
  core::Decimal rate;               // currency per credit
};

WalletRates rates_of(const Wallet& w) {
  WalletRates r;
  r.per_currency_unit = decimal_or_zero(w.credits_per_currency_unit);
  r.rate = credits_in_currency(core::Decimal::from_int(1), r.per_currency_unit);
  return r;
}

// Every customer has its wallet from its creation on (empty until credited).
TimeUs wallet_created_at(Context& ctx, const std::string& customer) {
  auto c = ctx.engine.get_customer(customer);
  return c ? c->created_at_us : 0;
}

void write_wallet(common::JsonWriter& w, Context& ctx, const Wallet& wallet) {
  const WalletRates rates = rates_of(wallet);
  const core::Decimal balance = decimal_or_zero(wallet.balance);
  const core::Decimal available = decimal_or_zero(wallet.available);
  const core::Decimal ongoing_usage = balance - available;
  auto cents = [&](core::Decimal credits) {
    return cents_of(credits_in_currency(credits, rates.per_currency_unit));
  };
  w.begin_object()
      .key("lago_id")
      .value(wallet_id(wallet.customer))
      .key("lago_customer_id")
      .value(wallet.customer)
      .key("external_customer_id")
      .value(wallet.customer)
      .key("status")
      .value("active")
      .key("currency")
      .value(wallet.currency)
      .key("name")
      .null()
      .key("code")
      .null()
      .key("rate_amount")
      .value(core::format_decimal(rates.rate))
      .key("credits_balance")
      .value(wallet.balance)
      .key("balance_cents")
      .value(cents(balance))
      .key("credits_ongoing_balance")
      .value(wallet.available)
      .key("ongoing_balance_cents")
      .value(cents(available))
      .key("credits_ongoing_usage_balance")
      .value(core::format_decimal(ongoing_usage))
      .key("ongoing_usage_balance_cents")
      .value(cents(ongoing_usage))
      .key("created_at")
      .value(time_text(wallet_created_at(ctx, wallet.customer)))
      .key("expiration_at")
      .null()
      .key("last_balance_sync_at")
      .null()
      .key("terminated_at")
      .null()
      .key("invoice_requires_successful_payment")
      .value(false)
      .key("recurring_transaction_rules")
      .begin_array()
      .end_array()
      .end_object();
}

// Lago's transaction_status of a credit-side ledger transaction; nullptr for burns, holds and
// releases (usage, which Lago settles per invoice and Tally per event: Tally's own ledger).
const char* txn_status(const LedgerTransaction& t) {
  const bool positive = decimal_or_zero(t.amount).units > 0;
  if (t.type == LedgerType::kTopUp)
    return "purchased";
  if (t.type == LedgerType::kGrant || t.type == LedgerType::kRefund ||
      (t.type == LedgerType::kAdjustment && positive)) {
    return "granted";
  }
  if (t.type == LedgerType::kExpiry || t.type == LedgerType::kAdjustment)
    return "voided";
  return nullptr;
}

// A credit-side ledger transaction as Lago's wallet transaction; false (nothing written) for
// the others.
bool write_wallet_txn(common::JsonWriter& w, const LedgerTransaction& t, const WalletRates& rates) {
  const char* status = txn_status(t);
  if (status == nullptr) {
    return false;
  }
  const core::Decimal amount = decimal_or_zero(t.amount);
  const core::Decimal credits = amount.units < 0 ? core::Decimal{} - amount : amount;
  w.begin_object()
      .key("lago_id")
      .value(t.id)
      .key("lago_wallet_id")
      .value(wallet_id(t.customer))
      .key("status")
      .value("settled")
      .key("transaction_status")
      .value(status)
      .key("transaction_type")
      .value(amount.units > 0 ? "inbound" : "outbound")
      .key("source")
      .value("manual")
      .key("amount")
      .value(core::format_decimal(credits_in_currency(credits, rates.per_currency_unit)))
      .key("credit_amount")
      .value(core::format_decimal(credits))
      .key("name");
  t.description.empty() ? w.null() : w.value(t.description);
  w.key("settled_at")
      .value(time_text(t.created_at_us))
      .key("created_at")
      .value(time_text(t.created_at_us))
      .key("invoice_requires_successful_payment")
      .value(false)
      .key("metadata")
      .begin_array()
      .end_array()
      .end_object();
  return true;
}

// paid_credits / granted_credits: a decimal >= 0 (string or number). False after noting why.
bool credits_field(const dom::object& obj, const char* name, core::Decimal* out,
                   FieldErrors* errors) {
  std::string text;
  bool wrong = false;
  if (!text_field(obj, name, &text, &wrong)) {
    if (wrong)
      add(errors, name, "value_is_invalid");
    return !wrong;
  }
  auto d = core::parse_decimal(text);
  if (!d || d->units < 0) {
    add(errors, name, "value_is_invalid");
    return false;
  }
  *out = *d;
  return true;
}

// The transactions of credits given to a wallet: a top_up for paid, a grant for granted.
std::vector<WalletTransactionRequest> credit_requests(core::Decimal paid, core::Decimal granted,
                                                      const std::string& description) {
  std::vector<WalletTransactionRequest> out;
  if (paid.units > 0) {
    WalletTransactionRequest r;
    r.type = LedgerType::kTopUp;
    r.amount = core::format_decimal(paid);
    r.description = description;
    out.push_back(std::move(r));
  }
  if (granted.units > 0) {
    WalletTransactionRequest r;
    r.type = LedgerType::kGrant;
    r.amount = core::format_decimal(granted);
    r.description = description;
    out.push_back(std::move(r));
  }
  return out;
}

// A field Tally has no equivalent for that would change what the wallet does: refused when set.
void refuse_if_set(const dom::object& obj, const char* name, FieldErrors* errors) {
  dom::element el;
  if (obj.at_key(name).get(el) != simdjson::SUCCESS || el.is_null()) {
    return;
  }
  dom::array arr;
  dom::object o;
  if ((el.get_array().get(arr) == simdjson::SUCCESS && arr.size() == 0) ||
      (el.get_object().get(o) == simdjson::SUCCESS && o.size() == 0)) {
    return;
  }
  add(errors, name, "not_supported");
}

// The answer to a request whose customer's wallet or usage could not be read: 404
// customer_not_found, or the engine's error.
Response customer_error(const Status& s) {
  return s.code() == StatusCode::kNotFound ? lago_error(404, "customer_not_found")
                                           : engine_error(s);
}

// {"wallet": {...}}, 200.
void answer_wallet(Context& ctx, Call& call, const Wallet& wallet) {
  common::JsonWriter w;
  w.begin_object().key("wallet");
  write_wallet(w, ctx, wallet);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

// What a new wallet starts with: paid and granted credits, under transaction_name.
struct WalletCredits {
  core::Decimal paid;
  core::Decimal granted;
  std::string description;
};

// The terms of POST /wallets beside its customer, adding what is wrong to `errors`:
// rate_amount is mandatory and, when the customer's `wallet` is known, must be its rate (one
// credit is worth what [credits] says, nothing else); currency must be the server's; the
// credits are decimals >= 0; and the fields Tally has no equivalent for must not be set.
WalletCredits read_wallet_terms(Context& ctx, const dom::object& in,
                                const std::optional<Wallet>& wallet, FieldErrors* errors) {
  std::string text;
  if (!text_field(in, "rate_amount", &text) || text.empty()) {
    add(errors, "rate_amount", "value_is_mandatory");
  } else if (wallet) {
    auto rate = core::parse_decimal(text);
    if (!rate || *rate != rates_of(*wallet).rate) {
      add(errors, "rate_amount", "value_is_invalid");
    }
  }
  if (text_field(in, "currency", &text) && text != ctx.options.currency) {
    add(errors, "currency", "currencies_does_not_match");
  }
  WalletCredits credits;
  credits_field(in, "paid_credits", &credits.paid, errors);
  credits_field(in, "granted_credits", &credits.granted, errors);
  refuse_if_set(in, "expiration_at", errors);
  refuse_if_set(in, "recurring_transaction_rules", errors);
  refuse_if_set(in, "applies_to", errors);
  text_field(in, "transaction_name", &credits.description);
  return credits;
}

// Opens the customer's `wallet` (Lago's creation: every customer has one, empty until
// credited) with its first credits. The wallet as it is then, or nullopt after answering 422
// wallet_already_exists (it was credited before) or the engine's error.
std::optional<Wallet> open_wallet(Context& ctx, Call& call, const Wallet& wallet,
                                  const WalletCredits& credits) {
  const auto requests = credit_requests(credits.paid, credits.granted, credits.description);
  if (requests.empty()) {
    if (wallet.transactions > 0) {
      answer(call, validation_error("customer", "wallet_already_exists"));
      return std::nullopt;
    }
    return wallet;
  }
  auto t = ctx.engine.wallet_transactions_atomic(wallet.customer, requests, true);
  if (!t) {
    answer(call, t.error().code() == StatusCode::kAlreadyExists
                     ? validation_error("customer", "wallet_already_exists")
                 : t.error().code() == StatusCode::kInvalidArgument
                     ? validation_error("base", "value_is_invalid")
                     : engine_error(t.error()));
    return std::nullopt;
  }
  Result<Wallet> credited = ctx.engine.wallet(wallet.customer);
  if (!credited) {
    answer(call, engine_error(credited.error()));
    return std::nullopt;
  }
  return std::move(*credited);
}

// ---- wallet transactions ------------------------------------------------------------------------

// page and per_page (1..kPerPageMax): false after answering 422 value_is_invalid.
bool read_page(Call& call, std::uint32_t* page, std::uint32_t* per_page) {
  for (const auto& [k, v] : call.request.query) {
    if (k != "page" && k != "per_page") {
      continue;
    }
    std::uint32_t n = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), n);
    if (r.ec != std::errc() || r.ptr != v.data() + v.size() || n == 0 ||
        (k == "per_page" && n > kPerPageMax)) {
      answer(call, validation_error(k, "value_is_invalid"));
      return false;
    }
    *(k == "page" ? page : per_page) = n;
  }
  return true;
}

// Every credit-side transaction of `wallet` that the transaction_type and transaction_status
// filters take, oldest first, as Lago's JSON (burns are skipped: see write_wallet_txn); nullopt
// after answering the engine's error.
std::optional<std::vector<std::string>> credit_transactions(Context& ctx, Call& call,
                                                            const Wallet& wallet) {
  const std::string* type_filter = call.request.query_param("transaction_type");
  const std::string* status_filter = call.request.query_param("transaction_status");
  const WalletRates rates = rates_of(wallet);
  std::vector<std::string> rendered;
  LedgerQuery q;
  q.customer = wallet.customer;
  q.limit = 1000;
  for (;;) {
    auto p = ctx.engine.wallet_transactions(q);
    if (!p) {
      answer(call, engine_error(p.error()));
      return std::nullopt;
    }
    for (const auto& t : p->transactions) {
      const char* status = txn_status(t);
      const bool inbound = decimal_or_zero(t.amount).units > 0;
      if (status == nullptr ||
          (type_filter != nullptr && *type_filter != (inbound ? "inbound" : "outbound")) ||
          (status_filter != nullptr && *status_filter != status)) {
        continue;
      }
      common::JsonWriter one;
      write_wallet_txn(one, t, rates);
      rendered.push_back(one.take());
    }
    if (p->next_cursor.empty()) {
      return rendered;
    }
    q.cursor = p->next_cursor;
  }
}

}  // namespace

Response lago_refusal(unsigned status, std::string_view detail) {
  (void)detail;  // Lago's refusals carry a status and a code, no message
  const char* code = status == 403   ? "forbidden"
                     : status == 404 ? "route_not_found"
                     : status == 405 ? "not_allowed"
                                     : "";
  return lago_error(status, code);
}

void lago_create_event(Context& ctx, Call& call) {
  dom::object body;
  dom::object event;
  if (!lago_body(call, &body) || !root_object(call, body, "event", &event)) {
    return;
  }
  const auto meters = ctx.engine.meters();
  std::vector<LagoEvent> events(1);
  FieldErrors errors;
  read_event(ctx, event, meters, ctx.engine.clock().now_us(), &events[0], &errors);
  if (!errors.empty()) {
    if (errors.size() == 1 && errors[0].second == "subscription_not_found") {
      answer(call, lago_error(404, "subscription_not_found"));
      return;
    }
    answer(call, validation_errors(errors));
    return;
  }
  ingest_events(ctx, call, std::move(events), false);
}

void lago_create_batch_events(Context& ctx, Call& call) {
  dom::object body;
  if (!lago_body(call, &body)) {
    return;
  }
  dom::array list;
  dom::element el;
  if (body.at_key("events").get(el) != simdjson::SUCCESS || el.is_null()) {
    answer(call, validation_error("events", "no_events"));
    return;
  }
  if (el.get_array().get(list) != simdjson::SUCCESS) {
    answer(call, validation_error("events", "invalid_type"));
    return;
  }
  if (list.size() == 0) {
    answer(call, validation_error("events", "no_events"));
    return;
  }
  if (list.size() > kBatchEventsMax) {
    answer(call, validation_error("events", "too_many_events"));
    return;
  }
  const auto meters = ctx.engine.meters();
  const TimeUs now = ctx.engine.clock().now_us();
  std::vector<LagoEvent> events(list.size());
  std::map<std::size_t, FieldErrors> by_index;
  std::size_t i = 0;
  for (dom::element item : list) {
    FieldErrors fe;
    dom::object obj;
    if (item.get_object().get(obj) != simdjson::SUCCESS) {
      add(&fe, "event", "invalid_type");
    } else {
      read_event(ctx, obj, meters, now, &events[i], &fe);
    }
    if (!fe.empty()) {
      by_index[i] = std::move(fe);
    }
    ++i;
  }
  if (!by_index.empty()) {
    common::JsonWriter w;
    w.begin_object();
    for (const auto& [index, fe] : by_index) {
      w.key(std::to_string(index));
      write_field_errors(w, fe);
    }
    w.end_object();
    answer(call, lago_error(422, "validation_errors", w.take()));
    return;
  }
  ingest_events(ctx, call, std::move(events), true);
}

namespace {

// Lago's metadata list [{key, value}] as Tally's metadata object; nullopt (and an error) when
// it is not such a list.
std::optional<std::string> lago_metadata(dom::element meta, FieldErrors* errors) {
  dom::array arr;
  if (meta.get_array().get(arr) != simdjson::SUCCESS) {
    add(errors, "metadata", "invalid_type");
    return std::nullopt;
  }
  common::JsonWriter m;
  m.begin_object();
  for (dom::element item : arr) {
    dom::object o;
    std::string k;
    std::string v;
    if (item.get_object().get(o) != simdjson::SUCCESS || !text_field(o, "key", &k) || k.empty()) {
      add(errors, "metadata", "value_is_invalid");
      break;
    }
    m.key(k);
    text_field(o, "value", &v) ? m.value(v) : m.null();
  }
  m.end_object();
  return m.take();
}

// The fields of Lago's customer object as a patch; what is wrong goes to `errors`.
CustomerPatch read_lago_customer(dom::object in, const std::string& currency, std::string* id,
                                 FieldErrors* errors) {
  if (required_text(in, "external_id", id, errors) && !core::check_name("customer", *id).ok()) {
    add(errors, "external_id", "value_is_invalid");
  }
  CustomerPatch patch;
  std::string s;
  bool wrong = false;
  if (text_field(in, "name", &s, &wrong)) {
    patch.name = s;
  } else if (wrong) {
    add(errors, "name", "invalid_type");
  }
  wrong = false;
  if (text_field(in, "email", &s, &wrong)) {
    patch.email = s;
  } else if (wrong) {
    add(errors, "email", "invalid_type");
  }
  wrong = false;
  if (text_field(in, "timezone", &s, &wrong)) {
    if (!core::TimeZone::find(s).has_value()) {
      add(errors, "timezone", "invalid_timezone");
    } else {
      patch.timezone = s;
    }
  } else if (wrong) {
    add(errors, "timezone", "invalid_type");
  }
  if (text_field(in, "currency", &s) && s != currency) {
    add(errors, "currency", "currencies_does_not_match");
  }
  dom::element meta;
  if (in.at_key("metadata").get(meta) == simdjson::SUCCESS && !meta.is_null()) {
    if (std::optional<std::string> json = lago_metadata(meta, errors)) {
      patch.metadata_json = std::move(*json);
    }
  }
  return patch;
}

// Created, or updated when it exists (Lago's POST /customers is an upsert by external_id).
Result<Customer> upsert_customer(Engine& engine, const std::string& id, const CustomerPatch& patch,
                                 const std::string& actor) {
  const bool changes = patch.name || patch.email || patch.timezone || patch.metadata_json;
  Result<Customer> r = engine.get_customer(id);
  if (!r) {
    Customer c;
    c.id = id;
    c.name = patch.name.value_or("");
    c.email = patch.email.value_or("");
    c.timezone = patch.timezone.value_or("UTC");
    c.metadata_json = patch.metadata_json.value_or("{}");
    r = engine.create_customer(c);
    if (!r && r.error().code() == StatusCode::kAlreadyExists && changes) {
      r = engine.update_customer(id, patch, actor);  // created meanwhile
    } else if (!r && r.error().code() == StatusCode::kAlreadyExists) {
      r = engine.get_customer(id);
    }
  } else if (changes) {
    r = engine.update_customer(id, patch, actor);
  }
  return r;
}

}  // namespace

void lago_create_customer(Context& ctx, Call& call) {
  dom::object body;
  dom::object in;
  if (!lago_body(call, &body) || !root_object(call, body, "customer", &in)) {
    return;
  }
  FieldErrors errors;
  std::string id;
  const std::string& currency = ctx.options.currency;
  const CustomerPatch patch = read_lago_customer(in, currency, &id, &errors);
  if (!errors.empty()) {
    answer(call, validation_errors(errors));
    return;
  }
  Result<Customer> r = upsert_customer(ctx.engine, id, patch, call.identity.key_id);
  if (!r) {
    answer(call, r.error().code() == StatusCode::kInvalidArgument
                     ? validation_error("customer", "value_is_invalid")
                     : engine_error(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer");
  write_lago_customer(w, *r, currency);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

void lago_get_customer(Context& ctx, Call& call) {
  const std::string& id = call.params.at(0);
  if (!own_customer(call, id)) {
    return;
  }
  auto r = ctx.engine.get_customer(id);
  if (!r) {
    answer(call, r.error().code() == StatusCode::kNotFound ? lago_error(404, "customer_not_found")
                                                           : engine_error(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer");
  write_lago_customer(w, *r, ctx.options.currency);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

namespace {

// Lago's charge model of the meter's price in effect ("standard" when none: a free charge).
std::string_view charge_model(const std::vector<PriceInfo>& prices, const std::string& meter) {
  std::string_view model = "standard";
  for (const auto& p : prices) {
    if (p.meter != meter || !p.configured)
      continue;
    for (const auto& v : p.versions) {
      if (v.in_effect) {
        model = v.model == PriceModel::kGraduated ? "graduated"
                : v.model == PriceModel::kVolume  ? "volume"
                : v.model == PriceModel::kPackage ? "package"
                                                  : "standard";
      }
    }
    break;
  }
  return model;
}

// One meter's usage as Lago's charge usage; `m` is the meter (nullptr when unknown).
void write_charge_usage(common::JsonWriter& charges, const UsageItem& item, const MeterInfo* m,
                        std::string_view model, const std::string& currency,
                        std::int64_t amount_cents) {
  const std::string units = item.value.empty() ? "0" : item.value;
  charges.begin_object()
      .key("units")
      .value(units)
      .key("total_aggregated_units")
      .value(units)
      .key("amount_cents")
      .value(amount_cents)
      .key("amount_currency")
      .value(currency)
      .key("charge")
      .begin_object()
      .key("lago_id")
      .value(item.meter)
      .key("charge_model")
      .value(model)
      .key("invoice_display_name");
  m != nullptr && !m->description.empty() ? charges.value(m->description) : charges.null();
  charges.end_object()
      .key("billable_metric")
      .begin_object()
      .key("lago_id")
      .value(item.meter)
      .key("name")
      .value(item.meter)
      .key("code")
      .value(m != nullptr ? m->event_type : item.meter)
      .key("aggregation_type")
      .value(std::string(to_string(item.aggregation)) + "_agg")
      .end_object()
      .key("filters")
      .begin_array()
      .end_array()
      .key("grouped_usage")
      .begin_array()
      .end_array()
      .end_object();
}

// The charges_usage array of a customer's usage; `*total_cents` is what they cost.
std::string charges_usage(Context& ctx, const CustomerUsage& usage, std::int64_t* total_cents) {
  const auto meters = ctx.engine.meters();
  const auto prices = ctx.engine.prices();
  common::JsonWriter charges;
  charges.begin_array();
  for (const auto& item : usage.meters) {
    auto m = std::find_if(meters.begin(), meters.end(),
                          [&](const MeterInfo& x) { return x.key == item.meter; });
    const std::int64_t amount_cents = item.cost.empty() ? 0 : cents_of(decimal_or_zero(item.cost));
    *total_cents += amount_cents;
    write_charge_usage(charges, item, m != meters.end() ? &*m : nullptr,
                       charge_model(prices, item.meter), ctx.options.currency, amount_cents);
  }
  charges.end_array();
  return charges.take();
}

// {"customer_usage": {...}} of the billing `period`, its charges already written.
std::string current_usage_body(const Period& period, const CustomerUsage& usage,
                               const std::string& currency, const std::string& charges,
                               std::int64_t total_cents) {
  // Lago's period bounds are inclusive: the last second of the period ends it.
  auto tz = core::TimeZone::find(usage.timezone);
  const std::int64_t offset_us =
      (tz ? tz->offset_seconds_at(period.end_us) : 0) * core::kUsPerSecond;
  common::JsonWriter w;
  w.begin_object()
      .key("customer_usage")
      .begin_object()
      .key("from_datetime")
      .value(time_text(period.start_us))
      .key("to_datetime")
      .value(time_text(period.end_us - core::kUsPerSecond))
      .key("issuing_date")
      .value(time_text(period.end_us + offset_us).substr(0, 10))
      .key("lago_invoice_id")
      .null()
      .key("currency")
      .value(currency)
      .key("amount_cents")
      .value(total_cents)
      .key("taxes_amount_cents")
      .value(std::int64_t{0})
      .key("total_amount_cents")
      .value(total_cents)
      .key("charges_usage")
      .raw(charges)
      .end_object()
      .end_object();
  return w.take();
}

}  // namespace

void lago_current_usage(Context& ctx, Call& call) {
  const std::string& id = call.params.at(0);
  if (!own_customer(call, id)) {
    return;
  }
  const TimeUs now = ctx.engine.clock().now_us();
  Result<Period> period = ctx.engine.billing_period(id, now);
  Result<CustomerUsage> usage =
      period ? ctx.engine.customer_usage(id, period->start_us, period->end_us)
             : Result<CustomerUsage>(period.error());
  if (!usage) {
    answer(call, customer_error(usage.error()));
    return;
  }
  std::int64_t total_cents = 0;
  const std::string charges = charges_usage(ctx, *usage, &total_cents);
  answer(call, json_response(200, current_usage_body(*period, *usage, ctx.options.currency, charges,
                                                     total_cents)));
}

void lago_create_wallet(Context& ctx, Call& call) {
  dom::object body;
  dom::object in;
  if (!lago_body(call, &body) || !root_object(call, body, "wallet", &in)) {
    return;
  }
  FieldErrors errors;
  std::string customer;
  std::optional<Wallet> wallet;
  if (required_text(in, "external_customer_id", &customer, &errors)) {
    auto found = ctx.engine.wallet(customer);
    if (!found) {
      answer(call, customer_error(found.error()));
      return;
    }
    wallet = std::move(*found);
  }
  const WalletCredits credits = read_wallet_terms(ctx, in, wallet, &errors);
  if (!errors.empty()) {
    answer(call, validation_errors(errors));
    return;
  }
  if (std::optional<Wallet> opened = open_wallet(ctx, call, *wallet, credits)) {
    answer_wallet(ctx, call, *opened);
  }
}

void lago_list_wallets(Context& ctx, Call& call) {
  std::string customer;
  if (const auto* c = call.request.query_param("external_customer_id")) {
    customer = *c;
  }
  if (customer.empty()) {
    customer = call.identity.customer;
  }
  if (customer.empty()) {
    answer(call, validation_error("external_customer_id", "value_is_mandatory"));
    return;
  }
  if (!own_customer(call, customer)) {
    return;
  }
  auto wallet = ctx.engine.wallet(customer);
  if (!wallet) {
    answer(call, customer_error(wallet.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("wallets").begin_array();
  write_wallet(w, ctx, *wallet);
  w.end_array();
  write_page_meta(w, 1, 1, 1);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

void lago_get_wallet(Context& ctx, Call& call) {
  const std::optional<Wallet> wallet = find_wallet(ctx, call, call.params.at(0));
  if (wallet) {
    answer_wallet(ctx, call, *wallet);
  }
}

void lago_create_wallet_transaction(Context& ctx, Call& call) {
  dom::object body;
  dom::object in;
  if (!lago_body(call, &body) || !root_object(call, body, "wallet_transaction", &in)) {
    return;
  }
  FieldErrors errors;
  std::string id;
  if (!required_text(in, "wallet_id", &id, &errors)) {
    answer(call, validation_errors(errors));
    return;
  }
  const std::optional<Wallet> wallet = find_wallet(ctx, call, id);
  if (!wallet) {
    return;
  }
  core::Decimal paid;
  core::Decimal granted;
  credits_field(in, "paid_credits", &paid, &errors);
  credits_field(in, "granted_credits", &granted, &errors);
  core::Decimal voided;
  if (credits_field(in, "voided_credits", &voided, &errors) && voided.units > 0) {
    add(&errors, "voided_credits", "not_supported");
  }
  if (!errors.empty()) {
    answer(call, validation_errors(errors));
    return;
  }
  std::string description;
  text_field(in, "name", &description);
  const auto requests = credit_requests(paid, granted, description);
  std::vector<LedgerTransaction> txns;
  if (!requests.empty()) {
    auto t = ctx.engine.wallet_transactions_atomic(wallet->customer, requests);
    if (!t) {
      answer(call, t.error().code() == StatusCode::kInvalidArgument
                       ? validation_error("base", "value_is_invalid")
                       : engine_error(t.error()));
      return;
    }
    txns = std::move(*t);
  }
  const WalletRates rates = rates_of(*wallet);
  common::JsonWriter w;
  w.begin_object().key("wallet_transactions").begin_array();
  for (const auto& t : txns) {
    write_wallet_txn(w, t, rates);
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void lago_list_wallet_transactions(Context& ctx, Call& call) {
  const std::optional<Wallet> wallet = find_wallet(ctx, call, call.params.at(0));
  std::uint32_t page = 1;
  std::uint32_t per_page = 20;
  if (!wallet || !read_page(call, &page, &per_page)) {
    return;
  }
  const std::optional<std::vector<std::string>> rendered = credit_transactions(ctx, call, *wallet);
  if (!rendered) {
    return;
  }
  const std::size_t total = rendered->size();
  const std::size_t pages = total == 0 ? 1 : (total + per_page - 1) / per_page;
  common::JsonWriter w;
  w.begin_object().key("wallet_transactions").begin_array();
  for (std::size_t i = std::size_t{page - 1} * per_page;
       i < total && i < std::size_t{page} * per_page; ++i) {
    w.raw((*rendered)[i]);
  }
  w.end_array();
  write_page_meta(w, page, pages, total);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
