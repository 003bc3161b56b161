// Error bodies and the Status -> HTTP status map of the API; the encodings of engine values
// are in json_codec.h (included here for the handlers).
#pragma once

#include <string>
#include <string_view>

#include <tally/status.h>
#include <tally/types.h>

#include "common/json_writer.h"
#include "http/json_codec.h"
#include "http/server.h"

namespace tally::http {

// {"error": code, "message": message, "details"?: details_json}
Response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string_view details_json = {});
// Maps a Status to its HTTP status and error code.
Response status_response(const Status& s);
Response json_response(unsigned status, std::string body);

// The details of a kInvalidArgument that refuses a query for having more rows than its cap:
// status_response answers it 400 QUERY_TOO_LARGE (the same query always gets the same answer,
// so it is the client's to narrow, not to retry).
inline constexpr std::string_view kQueryTooLargeDetails = "\"QUERY_TOO_LARGE\"";

// The engine's queries say a row cap with kResourceExhausted, which otherwise means "full,
// retry" (503): this names it a kInvalidArgument with kQueryTooLargeDetails. For every route
// that runs a query (meters, reports, export), until the engine says so itself.
Status query_status(Status s);
// The answer to a refused ingest body (POST /v1/events): the event parser's kInvalidArgument is
// a body that is not JSON (400 INVALID_JSON) and its kResourceExhausted a batch over
// batch_events_max (413 PAYLOAD_TOO_LARGE); anything else as status_response says.
Response ingest_refusal(const Status& s);

}  // namespace tally::http
