// The audit log's records (see audit.h).
#include "engine/audit.h"

#include "engine/codec.h"

namespace tally::engine {

void put_audit(Engine::Impl& d, store::WriteBatch& wb, std::string_view action,
               std::string_view customer, std::string_view actor,
               const std::function<void(common::JsonWriter&)>& fields, core::TimeUs at) {
  common::JsonWriter w;
  w.begin_object().key("action").value(action).key("customer");
  if (customer.empty()) {
    w.null();
  } else {
    w.value(customer);
  }
  w.key("actor");
  if (actor.empty()) {
    w.null();
  } else {
    w.value(actor);
  }
  fields(w);
  w.key("at").value(core::format_rfc3339(at)).end_object();
  std::string key;
  put_be64(key, static_cast<std::uint64_t>(at));
  put_be64(key, d.next_seq);
  put_be64(key, d.audit_seq.fetch_add(1, std::memory_order_relaxed));
  wb.put(store::Space::kAudit, std::move(key), w.take());
}

}  // namespace tally::engine
