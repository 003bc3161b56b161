// The audit log's records (see audit.h).
#include "engine/audit.h"

#include "engine/codec.h"
#include "engine/engine_impl.h"

namespace tally::engine {

namespace {

void nullable(common::JsonWriter& w, std::string_view s) {
  if (s.empty()) {
    w.null();
  } else {
    w.value(s);
  }
}

}  // namespace

std::string audit_record(std::string_view action, std::string_view customer, std::string_view actor,
                         const std::function<void(common::JsonWriter&)>& fields, core::TimeUs at) {
  common::JsonWriter w;
  w.begin_object().key("action").value(action).key("customer");
  nullable(w, customer);
  w.key("actor");
  nullable(w, actor);
  fields(w);
  w.key("at").value(core::format_rfc3339(at)).end_object();
  return w.take();
}

std::vector<std::string> customer_update_records(const Customer& before, const Customer& after,
                                                 const CustomerPatch& patch, std::string_view actor,
                                                 core::TimeUs at) {
  std::vector<std::string> out;
  if (before.plan != after.plan) {
    out.push_back(audit_record(
        "plan_change", after.id, actor,
        [&](common::JsonWriter& w) {
          w.key("from");
          nullable(w, before.plan);
          w.key("to");
          nullable(w, after.plan);
        },
        at));
  }
  if (before.status != after.status) {
    out.push_back(audit_record(
        "status_change", after.id, actor,
        [&](common::JsonWriter& w) {
          w.key("from").value(to_string(before.status)).key("to").value(to_string(after.status));
        },
        at));
  }
  std::vector<const char*> fields;
  if (patch.name && before.name != after.name)
    fields.push_back("name");
  if (patch.email && before.email != after.email)
    fields.push_back("email");
  if (patch.timezone && before.timezone != after.timezone)
    fields.push_back("timezone");
  if (patch.metadata_json && before.metadata_json != after.metadata_json) {
    fields.push_back("metadata");
  }
  if (patch.trial_started_at_us && before.trial_started_at_us != after.trial_started_at_us) {
    fields.push_back("trial_started_at");
  }
  if (patch.billing_anchor_us && before.billing_anchor_us != after.billing_anchor_us) {
    fields.push_back("billing_anchor");
  }
  if (patch.organization && before.organization != after.organization) {
    fields.push_back("organization");
  }
  if (!fields.empty()) {
    out.push_back(audit_record(
        "customer_update", after.id, actor,
        [&](common::JsonWriter& w) {
          w.key("fields").begin_array();
          for (const char* f : fields) {
            w.value(f);
          }
          w.end_array();
        },
        at));
  }
  return out;
}

std::string key_create_record(const ApiKeyInfo& info, std::string_view actor) {
  return audit_record(
      "key_create", info.customer, actor,
      [&](common::JsonWriter& w) { w.key("key").value(info.id).key("name").value(info.name); },
      info.created_at_us);
}

std::string key_revoke_record(std::string_view key, std::string_view customer,
                              std::string_view actor, core::TimeUs at) {
  return audit_record(
      "key_revoke", customer, actor, [&](common::JsonWriter& w) { w.key("key").value(key); }, at);
}

std::string overrides_record(std::string_view customer, std::size_t count, core::TimeUs at) {
  return audit_record(
      "overrides", customer, "",
      [&](common::JsonWriter& w) { w.key("count").value(std::uint64_t{count}); }, at);
}

std::string reset_record(std::string_view customer, std::string_view meter, std::string_view actor,
                         core::TimeUs at) {
  return audit_record(
      "reset", customer, actor, [&](common::JsonWriter& w) { w.key("meter").value(meter); }, at);
}

std::string wallet_record(std::string_view customer, const LedgerTransaction& t,
                          std::string_view actor, core::TimeUs at) {
  return audit_record(
      "wallet_transaction", customer, actor,
      [&](common::JsonWriter& w) {
        w.key("transaction")
            .value(t.id)
            .key("type")
            .value(to_string(t.type))
            .key("amount")
            .value(t.amount);
      },
      at);
}

void put_audit(Engine::Impl& d, store::WriteBatch& wb, std::string record, core::TimeUs at) {
  std::string key;
  put_be64(key, static_cast<std::uint64_t>(at));
  put_be64(key, d.next_seq);
  put_be64(key, d.audit_seq.fetch_add(1, std::memory_order_relaxed));
  wb.put(store::Space::kAudit, std::move(key), std::move(record));
}

}  // namespace tally::engine
