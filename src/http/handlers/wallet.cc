// Wallets and the ledger: GET /v1/customers/{id}/wallet, GET and POST
// /v1/customers/{id}/wallet/transactions.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace dom = simdjson::dom;

void get_wallet(Context& ctx, Call& call) {
  std::string customer = call.params[0];
  if (!scope_customer(call, &customer))
    return;
  Result<Wallet> r = ctx.engine.wallet(customer);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  write_wallet(w, *r);
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
  std::string type;
  bool has_amount = false;
  for (auto f : obj) {
    std::string_view s;
    const std::string key(f.key);
    if (key == "type" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      type.assign(s);
    } else if (key == "amount" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      req.amount.assign(s);
      has_amount = true;
    } else if (key == "amount" &&
               (f.value.is_int64() || f.value.is_uint64() || f.value.is_double())) {
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
  if (type.empty() || !has_amount) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'type' and 'amount' are required"));
    return;
  }
  const std::optional<LedgerType> known = parse_ledger_type(type);
  if (!known) {
    // The engine refuses the ledger's other types (burn, expiry, ...) in the same words.
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "type must be one of grant, top_up, refund, adjustment "
                                "(burns come from events)"));
    return;
  }
  req.type = *known;
  Result<LedgerTransaction> t =
      ctx.engine.wallet_transaction(call.params[0], req, call.identity.key_id);
  if (!t) {
    answer(call, status_response(t.error()));
    return;
  }
  common::JsonWriter w;
  write_ledger_transaction(w, *t);
  answer(call, json_response(201, w.take()));
}

void list_wallet_transactions(Context& ctx, Call& call) {
  if (!only_params(call, {"type", "from", "to", "limit", "cursor"}, {.list_allowed = true})) {
    return;
  }
  LedgerQuery q;
  q.customer = call.params[0];
  if (const auto* c = call.request.query_param("cursor"))
    q.cursor = *c;
  if (!scope_customer(call, &q.customer) || !time_param(call, "from", &q.from_us) ||
      !time_param(call, "to", &q.to_us) || !uint_param(call, "limit", 1000, &q.limit)) {
    return;
  }
  if (const std::string* t = call.request.query_param("type");
      t != nullptr && !t->empty() && !(q.type = parse_ledger_type(*t))) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "type '" + *t + "' is not a transaction type"));
    return;
  }
  Result<LedgerPage> page = ctx.engine.wallet_transactions(q);
  if (!page) {
    answer(call, status_response(page.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer").value(q.customer).key("transactions").begin_array();
  for (const auto& t : page->transactions) {
    write_ledger_transaction(w, t);
  }
  w.end_array().key("next_cursor");
  page->next_cursor.empty() ? w.null() : w.value(page->next_cursor);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
