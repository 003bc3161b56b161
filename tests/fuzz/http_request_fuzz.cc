// Fuzzes HTTP/1.1 request framing and target decoding (http::frame_requests): Beast's request
// parser with the server's limits and read algorithm, then the server's own percent-decoding of
// the path and query, over a byte stream that may hold several pipelined requests.
//
// The first byte picks how many bytes each read delivers (1..128, so requests split across
// reads at every point) and whether the body limit is small (1 KiB, to reach 413). Every
// request handed on must have a method, a path that is "*" or starts with '/', no NUL in its
// path or query, lower-case header names, no CR or LF inside a header, and a body within the
// limit; a refusal is 400, 413, 431 or 501 with a JSON body.
#include <algorithm>

#include <simdjson.h>

#include "fuzz_util.h"
#include "http/server.h"

namespace {

bool has_any(std::string_view s, std::string_view chars) {
  return s.find_first_of(chars) != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  tally::http::ServerOptions options;
  options.header_bytes_max = 16384;
  options.body_bytes_max = (data[0] & 0x80) != 0 ? 1024 : 10 << 20;
  const std::size_t read_bytes_max = (data[0] & 0x7F) + 1u;
  const std::string_view bytes = tally::fuzz::as_text(data + 1, size - 1);
  const tally::http::FramedStream out = tally::http::frame_requests(bytes, options, read_bytes_max);

  using namespace std::string_view_literals;
  for (const auto& r : out.requests) {
    FUZZ_EXPECT(!r.method.empty(), r.target);
    FUZZ_EXPECT(r.path == "*" || (!r.path.empty() && r.path.front() == '/'), r.path);
    FUZZ_EXPECT(!has_any(r.path, "\0"sv), "NUL in path of " + r.target);
    for (const auto& [name, value] : r.query) {
      FUZZ_EXPECT(!has_any(name, "\0"sv) && !has_any(value, "\0"sv), "NUL in query " + r.target);
    }
    for (const auto& [name, value] : r.headers) {
      FUZZ_EXPECT(!name.empty(), "empty header name");
      FUZZ_EXPECT(
          std::none_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; }),
          name);
      FUZZ_EXPECT(!has_any(name, "\r\n\0"sv) && !has_any(value, "\r\n\0"sv),
                  "CR, LF or NUL in header " + name);
    }
    FUZZ_EXPECT(r.body.size() <= options.body_bytes_max, std::to_string(r.body.size()));
  }
  if (out.error_status != 0) {
    FUZZ_EXPECT(out.error_status == 400 || out.error_status == 413 || out.error_status == 431 ||
                    out.error_status == 501,
                std::to_string(out.error_status));
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    FUZZ_EXPECT(parser.parse(out.error_body).get(root) == simdjson::SUCCESS, out.error_body);
  }
  return 0;
}
