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
// Maps a Status to its HTTP status and error code: the one map of the API, total (a route does
// not answer its own variant of an engine error). kInvalidArgument is 400 VALIDATION_ERROR
// with its details, or, by its details, 400 QUERY_TOO_LARGE or INVALID_JSON (status.h).
Response status_response(const Status& s);
Response json_response(unsigned status, std::string body);

}  // namespace tally::http
