// The dashboard's files, compiled into the binary (one binary stays one binary).
//
// web/dashboard/ (the page, its script and styles, written for Tally) and the charting library
// (Chart.js, from Debian's libjs-chart.js) are turned into a generated source at build time
// by cmake/embed_assets.cmake. Each asset is served under a name carrying its content's hash
// (`app.0123456789abcdef.js`), so it may be cached forever; the page names them by those URLs
// and is itself never cached.
#pragma once

#include <span>
#include <string_view>

namespace tally::dashboard {

struct Asset {
  std::string_view name;          // hashed: "app.0123456789abcdef.js"
  std::string_view source_name;   // as in web/dashboard/: "app.js"
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view sha256_hex;    // of the body
  std::string_view body;
};

// Every embedded asset, in build order.
std::span<const Asset> assets();
// The asset named `hashed_name`, or nullptr.
const Asset* find_asset(std::string_view hashed_name);
// The page at /dashboard/, its asset URLs filled in.
std::string_view index_html();

}  // namespace tally::dashboard
