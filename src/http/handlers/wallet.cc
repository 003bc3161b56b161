// Wallets and the ledger: GET /v1/customers/{id}/wallet, GET and POST
// /v1/customers/{id}/wallet/transactions.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

void write_txn(common::JsonWriter& w, const LedgerTransaction& t) {
  w.begin_object().key("id").value(t.id).key("customer").value(t.customer).key("type").value(
      t.type);
  w.key("amount");
  write_decimal(w, t.amount);
  w.key("balance_before");
  write_decimal(w, t.balance_before);
  w.key("balance_after");
  write_decimal(w, t.balance_after);
  w.key("event_id");
  t.event_id.empty() ? w.null() : w.value(t.event_id);
  if (!t.grant_id.empty()) {
    w.key("grant_id").value(t.grant_id);
  }
  if (!t.reservation_id.empty()) {
    w.key("reservation_id").value(t.reservation_id);
  }
  if (!t.held.empty()) {
    w.key("held");
    write_decimal(w, t.held);
  }
  if (t.period_end_us != 0) {
    w.key("period_start").value(time_text(t.period_start_us));
    w.key("period_end").value(time_text(t.period_end_us));
  }
  if (t.type == "grant" || t.type == "top_up") {
    w.key("priority").value(t.priority).key("expires_at");
    t.expires_at_us == 0 ? w.null() : w.value(time_text(t.expires_at_us));
  }
  w.key("description").value(t.description).key("created_at").value(time_text(t.created_at_us));
  w.end_object();
}

}  // namespace

void get_wallet(Context& ctx, Call& call) {
  std::string customer = call.params[0];
  if (!scope_customer(call, &customer)) return;
  Result<Wallet> r = ctx.engine.wallet(customer);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer").value(r->customer);
  w.key("balance");
  write_decimal(w, r->balance);
  w.key("available");
  write_decimal(w, r->available);
  w.key("held");
  write_decimal(w, r->held);
  w.key("exhausted").value(r->exhausted);
  w.key("currency").value(r->currency).key("credits_per_currency_unit");
  write_decimal(w, r->credits_per_currency_unit);
  w.key("transactions").value(r->transactions);
  w.key("grants").begin_array();
  for (const auto& g : r->grants) {
    w.begin_object().key("id").value(g.id).key("type").value(g.type).key("amount");
    write_decimal(w, g.amount);
    w.key("remaining");
    write_decimal(w, g.remaining);
    w.key("priority").value(g.priority).key("expires_at");
    g.expires_at_us == 0 ? w.null() : w.value(time_text(g.expires_at_us));
    w.key("created_at").value(time_text(g.created_at_us)).end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void create_wallet_transaction(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj,
                   "the body must be an object such as {\"type\": \"top_up\", "
                   "\"amount\": 1000}")) {
    return;
  }
  WalletTransactionRequest req;
  bool has_amount = false;
  for (auto f : obj) {
    std::string_view s;
    const std::string key(f.key);
    if (key == "type" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      req.type.assign(s);
    } else if (key == "amount" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      req.amount.assign(s);
      has_amount = true;
    } else if (key == "amount" && (f.value.is_int64() || f.value.is_uint64() || f.value.is_double())) {
      req.amount = simdjson::minify(f.value);
      has_amount = true;
    } else if (key == "description" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      req.description.assign(s);
    } else if (key == "priority" && f.value.is_int64()) {
      const std::int64_t p = f.value.get_int64().value();
      if (p < 0 || p > 1'000'000) {
        answer(call, error_response(400, "VALIDATION_ERROR", "priority must be 0..1000000"));
        return;
      }
      req.priority = p;
    } else if (key == "expires_at" && f.value.is_null()) {
      req.expires_at_us = 0;
    } else if (key == "expires_at" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      auto t = core::parse_rfc3339(s);
      if (!t) {
        answer(call, error_response(400, "VALIDATION_ERROR", "expires_at: " + t.error().message()));
        return;
      }
      req.expires_at_us = *t;
    } else {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown or mistyped field '" + key +
                                      "'; allowed: type, amount, description, priority, "
                                      "expires_at"));
      return;
    }
  }
  if (req.type.empty() || !has_amount) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'type' and 'amount' are required"));
    return;
  }
  Result<LedgerTransaction> t = ctx.engine.wallet_transaction(call.params[0], req, call.identity.key_id);
  if (!t) {
    answer(call, t.error().code() == StatusCode::kInvalidArgument
                     ? error_response(400, "VALIDATION_ERROR", t.error().message())
                     : status_response(t.error()));
    return;
  }
  common::JsonWriter w;
  write_txn(w, *t);
  answer(call, json_response(201, w.take()));
}

void list_wallet_transactions(Context& ctx, Call& call) {
  for (const auto& [k, v] : call.request.query) {
    if (k != "type" && k != "from" && k != "to" && k != "limit" && k != "cursor") {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown query parameter '" + k +
                                      "'; allowed: type, from, to, limit, cursor"));
      return;
    }
  }
  LedgerQuery q;
  q.customer = call.params[0];
  if (const auto* t = call.request.query_param("type")) q.type = *t;
  if (const auto* c = call.request.query_param("cursor")) q.cursor = *c;
  if (!scope_customer(call, &q.customer) || !time_param(call, "from", &q.from_us) ||
      !time_param(call, "to", &q.to_us) || !uint_param(call, "limit", 1000, &q.limit)) {
    return;
  }
  Result<LedgerPage> page = ctx.engine.wallet_transactions(q);
  if (!page) {
    answer(call, page.error().code() == StatusCode::kInvalidArgument
                     ? error_response(400, "VALIDATION_ERROR", page.error().message())
                     : status_response(page.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer").value(q.customer).key("transactions").begin_array();
  for (const auto& t : page->transactions) {
    write_txn(w, t);
  }
  w.end_array().key("next_cursor");
  page->next_cursor.empty() ? w.null() : w.value(page->next_cursor);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
