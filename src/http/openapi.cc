// The OpenAPI document of Tally's own API. docs/openapi.json is its only copy: the build turns
// it into a header (cmake/embed_file.cmake), so the binary serves the document its sources
// were built with, and src/http/openapi_test.cc checks it against the route table.
#include "http/api.h"
#include "openapi_json.h"

namespace tally::http {

std::string_view openapi_document() {
  return {reinterpret_cast<const char*>(kOpenApiJson), kOpenApiJson_size};
}

}  // namespace tally::http
