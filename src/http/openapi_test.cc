// docs/openapi.json against the route table: every route of Tally's own API is in the document
// with the method, path and security it has, the document names no route the server lacks, and
// the server answers GET /openapi.json, without a key, with that very file.
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <simdjson.h>

#include "http/api.h"

namespace tally::http {
namespace {

namespace dom = simdjson::dom;

// The prefixes of other systems' APIs (docs/compat.md): they answer in those systems' shapes and
// are documented by those systems, not in Tally's document. Nor is the dashboard's web
// application (its page, assets and cookie session: docs/dashboard.md), whose data comes from the
// documented routes.
constexpr std::string_view kOtherSystems[] = {"/unkey/", "/openmeter/", "/lago/", "/dashboard"};

bool other_system(std::string_view pattern) {
  for (std::string_view prefix : kOtherSystems) {
    if (pattern.substr(0, prefix.size()) == prefix) {
      return true;
    }
  }
  return false;
}

// "/v1/customers/{id}/usage" -> "/v1/customers/{}/usage": the route table's form, where a
// placeholder is matched by position, not by name.
std::string positional(std::string_view path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      const std::size_t close = path.find('}', i);
      if (close == std::string_view::npos) {
        return std::string(path) + " (unclosed '{')";
      }
      out += "{}";
      i = close;
    } else {
      out += path[i];
    }
  }
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

// The roles an operation's security asks for: "none" when it needs no key (security: []), "key"
// when any key will do, else the one role each alternative names. "?" when the alternatives
// disagree or the shape is not one of these.
std::string security_needs(dom::element operation, dom::element document) {
  dom::array alternatives;
  if (operation["security"].get_array().get(alternatives) != simdjson::SUCCESS &&
      document["security"].get_array().get(alternatives) != simdjson::SUCCESS) {
    return "? (no security)";
  }
  if (alternatives.size() == 0) {
    return "none";
  }
  std::set<std::string> seen;
  for (dom::element alternative : alternatives) {
    dom::object schemes;
    if (alternative.get_object().get(schemes) != simdjson::SUCCESS || schemes.size() != 1) {
      return "? (each alternative must name one scheme)";
    }
    for (auto scheme : schemes) {
      dom::array roles;
      if (scheme.value.get_array().get(roles) != simdjson::SUCCESS || roles.size() > 1) {
        return "? (at most one role per scheme)";
      }
      std::string_view role = "key";
      if (roles.size() == 1 && roles.at(0).get_string().get(role) != simdjson::SUCCESS) {
        return "? (a role must be a string)";
      }
      seen.emplace(role);
    }
  }
  return seen.size() == 1 ? *seen.begin() : "? (alternatives name different roles)";
}

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(parser_.parse(openapi_document()).get(document_), simdjson::SUCCESS)
        << "the embedded docs/openapi.json is not valid JSON";
  }

  dom::parser parser_;
  dom::element document_;
};

TEST_F(OpenApiTest, IsTheFileInDocs) {
  std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/docs/openapi.json", std::ios::binary);
  ASSERT_TRUE(in) << "docs/openapi.json is missing";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_TRUE(text.str() == openapi_document())
      << "the binary embeds another docs/openapi.json than the one in the tree: rebuild";
}

TEST_F(OpenApiTest, IsOpenApi31) {
  std::string_view version;
  ASSERT_EQ(document_["openapi"].get_string().get(version), simdjson::SUCCESS);
  EXPECT_EQ(version.substr(0, 4), "3.1.");
  std::string_view title;
  EXPECT_EQ(document_["info"]["title"].get_string().get(title), simdjson::SUCCESS);
  std::string_view api_version;
  ASSERT_EQ(document_["info"]["version"].get_string().get(api_version), simdjson::SUCCESS);
  EXPECT_EQ(api_version, TALLY_VERSION);
}

// The test the issue asks for: a route missing from the document, or a documented route the
// server does not have, fails here by name.
TEST_F(OpenApiTest, DescribesEveryRouteOfTheTableAndNoOther) {
  std::map<std::string, std::string> table;  // "GET /v1/customers/{}" -> needs
  for (const RouteInfo& r : route_table()) {
    if (!other_system(r.pattern)) {
      table.emplace(r.method + " " + r.pattern, r.needs);
    }
  }
  ASSERT_TRUE(table.count("GET /openapi.json") == 1) << "GET /openapi.json is not a route";

  std::map<std::string, std::string> documented;  // the same, from the document
  dom::object paths;
  ASSERT_EQ(document_["paths"].get_object().get(paths), simdjson::SUCCESS);
  for (auto path : paths) {
    dom::object item;
    ASSERT_EQ(path.value.get_object().get(item), simdjson::SUCCESS) << path.key;
    for (auto field : item) {
      static const std::set<std::string_view> kMethods = {"get",     "put",  "post",  "delete",
                                                          "options", "head", "patch", "trace"};
      if (kMethods.count(field.key) == 0) {
        continue;  // parameters, summary, description, servers
      }
      const std::string route = upper(field.key) + " " + positional(path.key);
      documented.emplace(route, security_needs(field.value, document_));
    }
  }

  for (const auto& [route, needs] : table) {
    auto it = documented.find(route);
    if (it == documented.end()) {
      ADD_FAILURE() << route << " is in the route table (src/http/api.cc) but not in "
                    << "docs/openapi.json";
    } else {
      EXPECT_EQ(it->second, needs) << route << ": the document's security says '" << it->second
                                   << "', the route table '" << needs << "'";
    }
  }
  for (const auto& [route, needs] : documented) {
    if (table.count(route) == 0) {
      ADD_FAILURE() << route << " is in docs/openapi.json but the server has no such route";
    }
  }
}

// Each {placeholder} of a path is a declared path parameter, so the names the document gives
// the route table's "{}" are all defined.
TEST_F(OpenApiTest, DeclaresEveryPathParameter) {
  dom::object paths;
  ASSERT_EQ(document_["paths"].get_object().get(paths), simdjson::SUCCESS);
  for (auto path : paths) {
    std::set<std::string> placeholders;
    const std::string_view p = path.key;
    for (std::size_t open = p.find('{'); open != std::string_view::npos;
         open = p.find('{', open + 1)) {
      placeholders.emplace(p.substr(open + 1, p.find('}', open) - open - 1));
    }
    dom::object item;
    ASSERT_EQ(path.value.get_object().get(item), simdjson::SUCCESS) << p;
    auto declared_in = [this](dom::element holder, std::set<std::string>* declared) {
      dom::array list;
      if (holder["parameters"].get_array().get(list) != simdjson::SUCCESS) {
        return;
      }
      for (dom::element parameter : list) {
        // A reference to a component: "#/components/parameters/X" is a JSON pointer.
        std::string_view target;
        if (parameter["$ref"].get_string().get(target) == simdjson::SUCCESS) {
          ASSERT_EQ(target.substr(0, 1), "#") << target;
          ASSERT_EQ(document_.at_pointer(target.substr(1)).get(parameter), simdjson::SUCCESS)
              << "unresolved " << target;
        }
        std::string_view in;
        std::string_view name;
        if (parameter["in"].get_string().get(in) == simdjson::SUCCESS && in == "path" &&
            parameter["name"].get_string().get(name) == simdjson::SUCCESS) {
          declared->emplace(name);
        }
      }
    };
    std::set<std::string> shared;
    declared_in(path.value, &shared);
    for (auto field : item) {
      if (field.key == "parameters" || !field.value.is_object()) {
        continue;
      }
      std::set<std::string> declared = shared;
      declared_in(field.value, &declared);
      EXPECT_EQ(declared, placeholders) << field.key << " " << p;
    }
  }
}

TEST_F(OpenApiTest, ServedWithoutAKey) {
  EngineOptions o;
  o.in_memory = true;
  auto engine = Engine::open(o);
  ASSERT_TRUE(engine.has_value()) << engine.error().message();
  Api api(**engine, ApiOptions{});
  for (const char* method : {"GET", "HEAD"}) {
    Request r;
    r.method = method;
    r.path = "/openapi.json";
    r.target = "/openapi.json";
    std::promise<Response> answered;
    auto f = answered.get_future();
    api.handle(std::move(r), [&answered](Response resp) { answered.set_value(std::move(resp)); });
    const Response resp = f.get();
    EXPECT_EQ(resp.status, 200u) << method << ": " << resp.body;
    EXPECT_EQ(resp.content_type, "application/json") << method;
    if (std::string_view(method) == "GET") {
      EXPECT_TRUE(resp.body == openapi_document());
    }
  }
}

}  // namespace
}  // namespace tally::http
