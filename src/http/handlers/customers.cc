// /v1/customers and /v1/keys: the admin resources. Bodies are small JSON objects read with
// simdjson's DOM parser; unknown fields are refused so a typo never passes silently.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

bool string_field(Call& call, dom::element v, std::string_view name, std::string* out) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "'" + std::string(name) + "' must be a string"));
    return false;
  }
  out->assign(s);
  return true;
}

// Reads customer fields into `patch`; `id` (when non-null) receives the id field.
bool read_customer_fields(Call& call, const dom::object& obj, std::string* id,
                          CustomerPatch* patch) {
  for (auto field : obj) {
    const std::string_view k = field.key;
    std::string s;
    if (k == "id" && id != nullptr) {
      if (!string_field(call, field.value, k, id))
        return false;
    } else if (k == "name") {
      if (!string_field(call, field.value, k, &s))
        return false;
      patch->name = s;
    } else if (k == "email") {
      if (!string_field(call, field.value, k, &s))
        return false;
      patch->email = s;
    } else if (k == "timezone") {
      if (!string_field(call, field.value, k, &s))
        return false;
      patch->timezone = s;
    } else if (k == "status") {
      if (!string_field(call, field.value, k, &s))
        return false;
      patch->status = parse_customer_status(s);
      if (!patch->status) {
        answer(call,
               error_response(400, "VALIDATION_ERROR", "status must be 'active' or 'suspended'"));
        return false;
      }
    } else if (k == "plan") {
      if (field.value.is_null()) {
        patch->plan = std::string();
      } else {
        if (!string_field(call, field.value, k, &s))
          return false;
        patch->plan = s;
      }
    } else if (k == "organization") {
      if (field.value.is_null()) {
        patch->organization = std::string();
      } else {
        if (!string_field(call, field.value, k, &s))
          return false;
        if (s.empty()) {
          answer(call, error_response(400, "VALIDATION_ERROR",
                                      "'organization' must not be empty; send null to remove it"));
          return false;
        }
        patch->organization = s;
      }
    } else if (k == "trial_started_at" || k == "billing_anchor") {
      if (!string_field(call, field.value, k, &s))
        return false;
      auto t = core::parse_rfc3339(s);
      if (!t) {
        answer(call, error_response(400, "VALIDATION_ERROR",
                                    "'" + std::string(k) + "': " + t.error().message()));
        return false;
      }
      (k == "trial_started_at" ? patch->trial_started_at_us : patch->billing_anchor_us) = *t;
    } else if (k == "metadata") {
      if (!field.value.is_object()) {
        answer(call, error_response(400, "VALIDATION_ERROR", "'metadata' must be an object"));
        return false;
      }
      patch->metadata_json = simdjson::minify(field.value);
    } else {
      answer(call,
             error_response(400, "VALIDATION_ERROR", "unknown field '" + std::string(k) + "'"));
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
  dom::object obj;
  NewApiKeyRequest req;
  if (!call.request.body.empty()) {
    if (!body_object(call, &obj)) {
      return;
    }
    for (auto field : obj) {
      const std::string_view k = field.key;
      if (k == "customer") {
        if (field.value.is_null())
          continue;
        if (!string_field(call, field.value, k, &req.customer))
          return;
      } else if (k == "name") {
        if (!string_field(call, field.value, k, &req.name))
          return;
      } else if (k == "scopes") {
        dom::array arr;
        if (field.value.get_array().get(arr) != simdjson::SUCCESS) {
          answer(call,
                 error_response(400, "VALIDATION_ERROR", "'scopes' must be an array of strings"));
          return;
        }
        if (arr.size() == 0) {
          answer(call, error_response(400, "VALIDATION_ERROR",
                                      "'scopes' must name at least one of ingest, check, read; "
                                      "leave it out for the default"));
          return;
        }
        for (auto s : arr) {
          std::string_view name;
          if (s.get_string().get(name) != simdjson::SUCCESS) {
            answer(call,
                   error_response(400, "VALIDATION_ERROR", "'scopes' must be an array of strings"));
            return;
          }
          if (name == "ingest") {
            req.scopes |= Scope::kIngest;
          } else if (name == "check") {
            req.scopes |= Scope::kCheck;
          } else if (name == "read") {
            req.scopes |= Scope::kRead;
          } else {
            answer(call, error_response(400, "VALIDATION_ERROR",
                                        "unknown scope '" + std::string(name) +
                                            "'; scopes are ingest, check, read"));
            return;
          }
        }
      } else {
        answer(call,
               error_response(400, "VALIDATION_ERROR", "unknown field '" + std::string(k) + "'"));
        return;
      }
    }
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
