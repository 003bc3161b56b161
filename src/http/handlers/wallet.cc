// Wallets and the ledger: GET /v1/customers/{id}/wallet, GET and POST
// /v1/customers/{id}/wallet/transactions.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace dom = simdjson::dom;

namespace {

// A transaction request as read, its type still text.
struct TransactionFields {
  WalletTransactionRequest req;
  std::string type;
  bool has_amount = false;
};

// Reads the field `key` of a wallet transaction into `out`. Returns an error message, or "".
std::string read_transaction_field(const std::string& key, dom::element v, TransactionFields* out) {
  std::string_view s;
  const bool text = v.get_string().get(s) == simdjson::SUCCESS;
  if (key == "type" && text) {
    out->type.assign(s);
  } else if (key == "amount" && (text || v.is_int64() || v.is_uint64() || v.is_double())) {
    out->req.amount = text ? std::string(s) : simdjson::minify(v);
    out->has_amount = true;
  } else if (key == "description" && text) {
    out->req.description.assign(s);
  } else if (key == "priority" && v.is_int64()) {
    const std::int64_t p = v.get_int64().value();
    if (p < 0 || p > 1'000'000) {
      return "priority must be 0..1000000";
    }
    out->req.priority = p;
  } else if (key == "expires_at" && v.is_null()) {
    out->req.expires_at_us = 0;
  } else if (key == "expires_at" && text) {
    auto t = core::parse_rfc3339(s);
    if (!t) {
      return "expires_at: " + t.error().message();
    }
    out->req.expires_at_us = *t;
  } else {
    return "unknown or mistyped field '" + key +
           "'; allowed: type, amount, description, priority, expires_at";
  }
  return "";
}

// The body of POST /v1/customers/{id}/wallet/transactions: false after answering 400.
bool read_wallet_transaction(Call& call, WalletTransactionRequest* req) {
  dom::object obj;
  if (!body_object(call, &obj,
                   "the body must be an object such as {\"type\": \"top_up\", "
                   "\"amount\": 1000}")) {
    return false;
  }
  TransactionFields fields;
  for (auto f : obj) {
    if (std::string error = read_transaction_field(std::string(f.key), f.value, &fields);
        !error.empty()) {
      answer(call, error_response(400, "VALIDATION_ERROR", error));
      return false;
    }
  }
  if (fields.type.empty() || !fields.has_amount) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'type' and 'amount' are required"));
    return false;
  }
  const std::optional<LedgerType> known = parse_ledger_type(fields.type);
  if (!known) {
    // The engine refuses the ledger's other types (burn, expiry, ...) in the same words.
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "type must be one of grant, top_up, refund, adjustment "
                                "(burns come from events)"));
    return false;
  }
  *req = std::move(fields.req);
  req->type = *known;
  return true;
}

}  // namespace

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
  WalletTransactionRequest req;
  if (!read_wallet_transaction(call, &req)) {
    return;
  }
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
