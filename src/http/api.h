// Tally's HTTP API: routes, authentication, JSON codecs, and the translation of engine
// results and Status codes into HTTP answers. Thin by design: every decision of substance is
// the engine's. docs/api.md is the reference for what each route accepts and answers.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include <tally/engine.h>

#include "http/server.h"

namespace tally::http {

struct ApiOptions {
  std::int64_t future_skew_seconds_max = 300;  // default `to` of queries reaches this far
};

class Api {
 public:
  Api(Engine& engine, ApiOptions options);

  // The server's Handler.
  void handle(Request&& request, Responder respond);

  // The Prometheus text exposition of the server's and the engine's counters.
  std::string metrics_text() const;

  // Context handed to every route handler.
  struct Call {
    Request request;
    Responder respond;
    Identity identity;
    std::vector<std::string> params;  // the {placeholders} of the route, in order
    const char* route = "";
  };

 private:
  void count(const char* route, unsigned status);
  Responder counting(const char* route, Responder respond);

  Engine& engine_;
  ApiOptions options_;
  mutable std::mutex metrics_mutex_;
  std::map<std::pair<std::string, unsigned>, std::uint64_t> requests_;
};

}  // namespace tally::http
