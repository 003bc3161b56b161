// GET /health, GET /ready, GET /metrics, GET /openapi.json.
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

void health(Context& ctx, Call& call) {
  common::JsonWriter w;
  w.begin_object()
      .key("status")
      .value("ok")
      .key("timestamp")
      .value(time_text(ctx.engine.clock().now_us()))
      .key("version")
      .value(TALLY_VERSION)
      .end_object();
  answer(call, json_response(200, w.take()));
}

void ready(Context& ctx, Call& call) {
  const Status s = ctx.engine.ready();
  // A full disk leaves the store readable: only writes are refused (docs/operations.md).
  const bool disk_full = s.code() == StatusCode::kInsufficientStorage;
  common::JsonWriter w;
  w.begin_object().key("status").value(s.ok() ? "ready" : "not_ready");
  if (!s.ok()) {
    w.key("reason").value(disk_full ? "disk_full" : "store_unavailable");
    w.key("message").value(s.message());
  }
  w.key("timestamp")
      .value(time_text(ctx.engine.clock().now_us()))
      .key("services")
      .begin_object()
      .key("store")
      .value(s.ok() || disk_full ? "connected" : s.message())
      .key("writes")
      .value(disk_full ? "refused" : "accepted")
      .end_object()
      .end_object();
  answer(call, json_response(s.ok() ? 200 : 503, w.take()));
}

void metrics(Context& ctx, Call& call) {
  Response r;
  r.status = 200;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = ctx.api.metrics_text();
  answer(call, std::move(r));
}

// The document is docs/openapi.json as it was when the binary was built (src/http/openapi.cc).
void openapi(Context&, Call& call) {
  answer(call, json_response(200, std::string(openapi_document())));
}

}  // namespace tally::http::handlers
