// /v1/customers and /v1/keys: the admin resources. Bodies are small JSON objects read with
// simdjson's DOM parser; unknown fields are refused so a typo never passes silently.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

// Reads the string field `name` into `out`. Returns an error message, or "".
std::string read_string(dom::element v, std::string_view name, std::string* out) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS) {
    return "'" + std::string(name) + "' must be a string";
  }
  out->assign(s);
  return "";
}

std::string read_string(dom::element v, std::string_view name, std::optional<std::string>* out) {
  std::string s;
  std::string error = read_string(v, name, &s);
  if (error.empty()) {
    *out = std::move(s);
  }
  return error;
}

// status: 'active' or 'suspended'.
std::string read_status(dom::element v, std::optional<CustomerStatus>* out) {
  std::string s;
  if (std::string error = read_string(v, "status", &s); !error.empty()) {
    return error;
  }
  *out = parse_customer_status(s);
  return *out ? "" : "status must be 'active' or 'suspended'";
}

// plan, or organization: null removes it; an organization is not empty.
std::string read_removable(dom::element v, std::string_view name, std::optional<std::string>* out) {
  if (v.is_null()) {
    *out = std::string();
    return "";
  }
  std::string s;
  if (std::string error = read_string(v, name, &s); !error.empty()) {
    return error;
  }
  if (s.empty() && name == "organization") {
    return "'organization' must not be empty; send null to remove it";
  }
  *out = std::move(s);
  return "";
}

// trial_started_at, or billing_anchor: an RFC 3339 time.
std::string read_time(dom::element v, std::string_view name, std::optional<TimeUs>* out) {
  std::string s;
  if (std::string error = read_string(v, name, &s); !error.empty()) {
    return error;
  }
  auto t = core::parse_rfc3339(s);
  if (!t) {
    return "'" + std::string(name) + "': " + t.error().message();
  }
  *out = *t;
  return "";
}

// Reads the customer field `k` into `patch`, or `id` (when non-null). Returns an error
// message, or "".
std::string read_customer_field(std::string_view k, dom::element v, std::string* id,
                                CustomerPatch* patch) {
  if (k == "id" && id != nullptr) {
    return read_string(v, k, id);
  }
  if (k == "name" || k == "email" || k == "timezone") {
    return read_string(v, k,
                       k == "name"    ? &patch->name
                       : k == "email" ? &patch->email
                                      : &patch->timezone);
  }
  if (k == "status") {
    return read_status(v, &patch->status);
  }
  if (k == "plan" || k == "organization") {
    return read_removable(v, k, k == "plan" ? &patch->plan : &patch->organization);
  }
  if (k == "trial_started_at" || k == "billing_anchor") {
    return read_time(
        v, k, k == "trial_started_at" ? &patch->trial_started_at_us : &patch->billing_anchor_us);
  }
  if (k == "metadata") {
    if (!v.is_object()) {
      return "'metadata' must be an object";
    }
    patch->metadata_json = simdjson::minify(v);
    return "";
  }
  return "unknown field '" + std::string(k) + "'";
}

// Reads customer fields into `patch`; `id` (when non-null) receives the id field. False after
// answering 400 for the first field at fault.
bool read_customer_fields(Call& call, const dom::object& obj, std::string* id,
                          CustomerPatch* patch) {
  for (auto field : obj) {
    if (std::string error = read_customer_field(field.key, field.value, id, patch);
        !error.empty()) {
      answer(call, error_response(400, "VALIDATION_ERROR", error));
      return false;
    }
  }
  return true;
}

// scopes: a non-empty array of ingest, check and read.
std::string read_scopes(dom::element v, Scope* scopes) {
  dom::array arr;
  if (v.get_array().get(arr) != simdjson::SUCCESS) {
    return "'scopes' must be an array of strings";
  }
  if (arr.size() == 0) {
    return "'scopes' must name at least one of ingest, check, read; leave it out for the default";
  }
  for (auto s : arr) {
    std::string_view name;
    if (s.get_string().get(name) != simdjson::SUCCESS) {
      return "'scopes' must be an array of strings";
    }
    if (name == "ingest") {
      *scopes |= Scope::kIngest;
    } else if (name == "check") {
      *scopes |= Scope::kCheck;
    } else if (name == "read") {
      *scopes |= Scope::kRead;
    } else {
      return "unknown scope '" + std::string(name) + "'; scopes are ingest, check, read";
    }
  }
  return "";
}

// Reads the field `k` of a new key into `req`. Returns an error message, or "".
std::string read_key_field(std::string_view k, dom::element v, NewApiKeyRequest* req) {
  if (k == "customer") {
    return v.is_null() ? "" : read_string(v, k, &req->customer);
  }
  if (k == "name") {
    return read_string(v, k, &req->name);
  }
  if (k == "scopes") {
    return read_scopes(v, &req->scopes);
  }
  return "unknown field '" + std::string(k) + "'";
}

// The body of POST /v1/keys (none: an admin key): false after answering 400.
bool read_key_request(Call& call, NewApiKeyRequest* req) {
  if (call.request.body.empty()) {
    return true;
  }
  dom::object obj;
  if (!body_object(call, &obj)) {
    return false;
  }
  for (auto field : obj) {
    if (std::string error = read_key_field(field.key, field.value, req); !error.empty()) {
      answer(call, error_response(400, "VALIDATION_ERROR", error));
      return false;
    }
  }
  return true;
}

Response customer_response(unsigned status, const Customer& c) {
  common::JsonWriter w;
  write_customer(w, c);
  return json_response(status, w.take());
}

}  // namespace

void create_customer(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj)) {
    return;
  }
  std::string id;
  CustomerPatch p;
  if (!read_customer_fields(call, obj, &id, &p)) {
    return;
  }
  if (id.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'id' is required"));
    return;
  }
  Customer c;
  c.id = id;
  c.name = p.name.value_or("");
  c.email = p.email.value_or("");
  c.timezone = p.timezone.value_or("UTC");
  c.status = p.status.value_or(CustomerStatus::kActive);
  c.metadata_json = p.metadata_json.value_or("{}");
  c.plan = p.plan.value_or("");
  c.trial_started_at_us = p.trial_started_at_us.value_or(0);
  c.billing_anchor_us = p.billing_anchor_us.value_or(0);
  c.organization = p.organization.value_or("");
  auto r = ctx.engine.create_customer(c);
  answer(call, r ? customer_response(201, *r) : status_response(r.error()));
}

void list_customers(Context& ctx, Call& call) {
  common::JsonWriter w;
  w.begin_object().key("customers").begin_array();
  for (const auto& c : ctx.engine.list_customers()) {
    write_customer(w, c);
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void get_customer(Context& ctx, Call& call) {
  std::string id = call.params.at(0);
  if (!scope_customer(call, &id)) {
    return;
  }
  auto r = ctx.engine.get_customer(id);
  answer(call, r ? customer_response(200, *r) : status_response(r.error()));
}

void update_customer(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj)) {
    return;
  }
  CustomerPatch p;
  if (!read_customer_fields(call, obj, nullptr, &p)) {
    return;
  }
  auto r = ctx.engine.update_customer(call.params.at(0), p, call.identity.key_id);
  answer(call, r ? customer_response(200, *r) : status_response(r.error()));
}

void create_key(Context& ctx, Call& call) {
  NewApiKeyRequest req;
  if (!read_key_request(call, &req)) {
    return;
  }
  auto r = ctx.engine.create_key(req, call.identity.key_id);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("id").value(r->info.id).key("key").value(r->secret);
  w.key("prefix").value(r->info.prefix).key("customer");
  r->info.customer.empty() ? w.null() : w.value(r->info.customer);
  w.key("name").value(r->info.name).key("scopes");
  write_scopes(w, r->info.scopes);
  w.key("created_at").value(time_text(r->info.created_at_us)).end_object();
  answer(call, json_response(201, w.take()));
}

void list_keys(Context& ctx, Call& call) {
  common::JsonWriter w;
  w.begin_object().key("keys").begin_array();
  for (const auto& k : ctx.engine.list_keys()) {
    write_key(w, k);
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void revoke_key(Context& ctx, Call& call) {
  const std::string id = call.params.at(0);
  Status s = ctx.engine.revoke_key(id, call.identity.key_id);
  if (!s.ok()) {
    answer(call, status_response(s));
    return;
  }
  ctx.sessions.end_key(id);  // the dashboard sessions made from it end with it
  common::JsonWriter w;
  w.begin_object().key("id").value(id).key("revoked").value(true).end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
