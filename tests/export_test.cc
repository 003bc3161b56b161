// Exports against a real `tally serve` and the real `tally export`: RFC 4180 quoting of tricky
// values, CSV, JSON and JSON Lines that parse back to exactly the ingested events, streaming
// (chunked) over several engine pages, aggregates, XLSX files, default file names, and every
// error a user can cause.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "chat_calls"
event_type = "api_call"
aggregation = "count"
filter = { service = "chat" }
)";

// One ingested event and what its export must hold.
struct Sent {
  // properties_json: exactly as the export must write it (numbers as sent, UTF-8 unescaped).
  std::string id, customer, time, properties_json;
};

// The tricky events: every CSV special character, in ids and property values.
const std::vector<Sent>& tricky() {
  static const std::vector<Sent> kSent = {
      {"comma,id", "exp-a", "2025-01-17T14:30:00Z", R"({"service":"chat","n":1.50,"ok":true})"},
      {"quote\"id", "exp-a", "2025-01-17T14:31:00Z", R"({"service":"say \"hi\", twice"})"},
      {"line\nbreak", "exp-a", "2025-01-17T14:32:00.250Z", R"({"service":"chat","none":null})"},
      {"cr\rid", "exp-b", "2025-01-17T15:00:00Z", R"({"service":"héllo ✓"})"},
      {"plain", "exp-b", "2025-01-18T09:00:00Z", R"({"service":"search"})"},
  };
  return kSent;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The event as ingested: the properties object with the envelope fields added in front.
std::string ingest_json(const Sent& s) {
  return R"({"event_id":)" + json_string(s.id) + R"(,"customer_id":")" + s.customer +
         R"(","event_type":"api_call","timestamp":")" + s.time + R"(",)" +
         s.properties_json.substr(1);
}

std::string minify(const std::string& json) {
  simdjson::dom::parser p;
  simdjson::dom::element e;
  if (p.parse(json).get(e) != simdjson::SUCCESS)
    return "<invalid JSON: " + json + ">";
  return simdjson::minify(e);
}

// A strict RFC 4180 reader: CRLF records, quoted fields with doubled quotes. Fails the test
// (and returns what it read) on anything else.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '"') {
      ++i;
      while (true) {
        if (i >= text.size()) {
          ADD_FAILURE() << "unterminated quoted field";
          return rows;
        }
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += text[i++];
      }
    } else {
      while (i < text.size() && text[i] != ',' && text[i] != '\r' && text[i] != '\n') {
        if (text[i] == '"')
          ADD_FAILURE() << "quote inside an unquoted field at " << i;
        field += text[i++];
      }
    }
    row.push_back(std::move(field));
    field.clear();
    if (i < text.size() && text[i] == ',') {
      ++i;
      continue;
    }
    if (text.compare(i, 2, "\r\n") != 0) {
      ADD_FAILURE() << "a record does not end with CRLF at " << i;
      return rows;
    }
    i += 2;
    rows.push_back(std::move(row));
    row.clear();
  }
  return rows;
}

const std::vector<std::string> kEventHeader = {"id",          "customer",  "type",     "time",
                                               "received_at", "flagged",   "quantity", "cost",
                                               "credits",     "properties"};

class ExportTest : public ApiTest {
 protected:
  static void SetUpTestSuite() {
    start_server(kConfig);
    auto client = server_->client();
    std::string body = R"({"events":[)";
    for (std::size_t i = 0; i < tricky().size(); ++i) {
      body += (i > 0 ? "," : "") + ingest_json(tricky()[i]);
    }
    body += "]}";
    auto r = client->request("POST", "/v1/events", body, key_header(kAdminKey));
    ASSERT_EQ(r.status, 202) << r.body;
    ASSERT_EQ(Json(r.body).num("accepted"), 5) << r.body;
    // A second customer with 2,500 events: an export of them spans three engine pages.
    for (int batch = 0; batch < 5; ++batch) {
      body = R"({"events":[)";
      for (int i = 0; i < 500; ++i) {
        const int n = batch * 500 + i;
        body += (i > 0 ? "," : "");
        body +=
            R"({"event_id":"bulk-)" + std::to_string(n) +
            R"(","customer_id":"exp-bulk","event_type":"api_call","timestamp":"2025-02-01T00:00:00Z","service":"s)" +
            std::to_string(n % 3) + R"("})";
      }
      body += "]}";
      r = client->request("POST", "/v1/events", body, key_header(kAdminKey));
      ASSERT_EQ(r.status, 202) << r.body;
    }
  }

  HttpResponse get(const std::string& target, const std::string& key = kAdminKey) {
    return as(key, target);
  }

  void expect_error(const std::string& target, int status, const std::string& code,
                    const std::string& key = kAdminKey) {
    SCOPED_TRACE(target);
    auto r = get(target, key);
    EXPECT_TRUE(Json(r.body).ok()) << r.body;
    EXPECT_FALSE(Json(r.body).str("message").empty()) << r.body;
    ApiTest::expect_error(r, status, code);
  }

  std::vector<std::string> cli_args(std::vector<std::string> args) {
    args.insert(args.begin(), {"export", "--config", server_->dir() + "/tally.toml", "--data",
                               server_->dir() + "/data"});
    return args;
  }

  std::string path(const std::string& name) { return server_->dir() + "/" + name; }
};

// The tricky events' CSV rows, by id, checking every field against what was sent.
void expect_tricky_csv(const std::string& csv) {
  auto rows = parse_csv(csv);
  ASSERT_EQ(rows.size(), tricky().size() + 1) << csv;
  EXPECT_EQ(rows[0], kEventHeader);
  for (std::size_t i = 0; i < tricky().size(); ++i) {
    const Sent& s = tricky()[i];
    const auto& row = rows[i + 1];
    ASSERT_EQ(row.size(), kEventHeader.size()) << csv;
    EXPECT_EQ(row[0], s.id);
    EXPECT_EQ(row[1], s.customer);
    EXPECT_EQ(row[2], "api_call");
    EXPECT_EQ(row[3], s.time);
    EXPECT_FALSE(row[4].empty());
    EXPECT_EQ(row[5], "false");
    EXPECT_EQ(row[6], "1");
    EXPECT_EQ(row[7], "");
    EXPECT_EQ(row[8], "");
    EXPECT_EQ(row[9], s.properties_json);
  }
}

TEST_F(ExportTest, CsvIsRfc4180AndHoldsExactlyTheEvents) {
  auto r = get("/v1/export?format=csv&to=2025-01-19T00:00:00Z");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/csv; charset=utf-8; header=present");
  EXPECT_NE(r.header("content-disposition").find("tally-events-start-20250119T000000Z-"),
            std::string::npos)
      << r.header("content-disposition");
  expect_tricky_csv(r.body);
  // The exact bytes of the quoting: a comma, a doubled quote, a raw LF and CR inside quotes.
  EXPECT_EQ(
      r.body.rfind("id,customer,type,time,received_at,flagged,quantity,cost,credits,properties\r\n"
                   "\"comma,id\",exp-a,api_call,2025-01-17T14:30:00Z,",
                   0),
      0u)
      << r.body;
  EXPECT_NE(r.body.find("\r\n\"quote\"\"id\",exp-a,"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\r\n\"line\nbreak\",exp-a,"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\r\n\"cr\rid\",exp-b,"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"(,"{""service"":""say \""hi\"", twice""}")"), std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("\r\nplain,exp-b,api_call,2025-01-18T09:00:00Z,"), std::string::npos);
}

TEST_F(ExportTest, JsonAndJsonLinesParseBackToTheEvents) {
  auto listed = get("/v1/events?customer=exp-a&limit=10");
  ASSERT_EQ(listed.status, 200) << listed.body;
  for (const char* format : {"json", "jsonl"}) {
    auto r = get(std::string("/v1/export?to=2025-01-19T00:00:00Z&format=") + format);
    ASSERT_EQ(r.status, 200) << r.body;
    std::vector<std::string> objects;  // minified (numbers normalised) for comparisons
    std::vector<std::string> raw;      // as exported, one object per line in both formats
    if (std::string(format) == "json") {
      EXPECT_EQ(r.header("content-type"), "application/json");
      Json doc(r.body);
      ASSERT_TRUE(doc.ok()) << r.body;
      simdjson::dom::array array;
      ASSERT_EQ(doc.root().get_array().get(array), simdjson::SUCCESS);
      for (auto e : array)
        objects.push_back(simdjson::minify(e));
      std::size_t start = 2;  // after "[\n"
      while (start < r.body.size()) {
        const auto nl = r.body.find('\n', start);
        ASSERT_NE(nl, std::string::npos);
        raw.push_back(r.body.substr(start, nl - start));
        start = nl + 1;
      }
      ASSERT_EQ(raw.back(), "]");
      raw.pop_back();
    } else {
      EXPECT_EQ(r.header("content-type"), "application/jsonl");
      std::size_t start = 0;
      while (start < r.body.size()) {
        const auto nl = r.body.find('\n', start);
        ASSERT_NE(nl, std::string::npos) << "the last line has no newline";
        raw.push_back(r.body.substr(start, nl - start));
        objects.push_back(minify(raw.back()));
        start = nl + 1;
      }
    }
    ASSERT_EQ(objects.size(), tricky().size()) << r.body;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const Sent& s = tricky()[i];
      Json e(objects[i]);
      ASSERT_TRUE(e.ok()) << objects[i];
      EXPECT_EQ(e.str("id"), s.id);
      EXPECT_EQ(e.str("customer"), s.customer);
      EXPECT_EQ(e.str("type"), "api_call");
      EXPECT_EQ(e.str("time"), s.time);
      EXPECT_NE(raw[i].find(R"("properties":)" + s.properties_json + "}"), std::string::npos)
          << raw[i];
      EXPECT_FALSE(e.has("flagged"));
    }
    // The same objects as GET /v1/events gives.
    Json l(listed.body);
    std::size_t i = 0;
    simdjson::dom::array events;
    ASSERT_EQ(l["events"].get_array().get(events), simdjson::SUCCESS);
    for (auto e : events) {
      ASSERT_LT(i, objects.size());
      EXPECT_EQ(simdjson::minify(e), objects[i++]) << format;
    }
    EXPECT_EQ(i, 3u);
  }
}

TEST_F(ExportTest, StreamsManyPagesChunked) {
  auto r = get("/v1/export?format=jsonl&customer=exp-bulk");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_FALSE(r.has_header("content-length"));
  std::size_t lines = 0, start = 0;
  while (start < r.body.size()) {
    const auto nl = r.body.find('\n', start);
    ASSERT_NE(nl, std::string::npos);
    Json e(r.body.substr(start, nl - start));
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e.str("id"), "bulk-" + std::to_string(lines));
    ++lines;
    start = nl + 1;
  }
  EXPECT_EQ(lines, 2500u);
  // An empty export is a complete, valid document too.
  auto empty = get("/v1/export?format=json&customer=exp-bulk&to=2025-01-01T00:00:00Z");
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(minify(empty.body), "[]");
  // HEAD answers the head only.
  auto head = client_->request("HEAD", "/v1/export?customer=exp-bulk", {}, key_header(kAdminKey));
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  // The connection is still usable after streamed answers.
  EXPECT_EQ(get("/v1/export?format=csv&customer=exp-a").status, 200);
}

TEST_F(ExportTest, MeterSelectsItsEventsAndAggregates) {
  // Events a meter reads: its type and its filter (service = chat).
  auto r = get("/v1/export?format=csv&meter=chat_calls&to=2025-01-19T00:00:00Z");
  ASSERT_EQ(r.status, 200) << r.body;
  auto rows = parse_csv(r.body);
  ASSERT_EQ(rows.size(), 3u) << r.body;
  EXPECT_EQ(rows[1][0], "comma,id");
  EXPECT_EQ(rows[2][0], "line\nbreak");

  auto a =
      get("/v1/export?kind=aggregates&meter=calls&window=day&format=csv&"
          "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z");
  ASSERT_EQ(a.status, 200) << a.body;
  auto arows = parse_csv(a.body);
  ASSERT_EQ(arows.size(), 5u) << a.body;
  EXPECT_EQ(arows[0],
            (std::vector<std::string>{"window_start", "window_end", "customer", "group", "value"}));
  EXPECT_EQ(arows[1], (std::vector<std::string>{"2025-01-17T00:00:00Z", "2025-01-18T00:00:00Z",
                                                "exp-a", "{}", "3"}));
  EXPECT_EQ(arows[2][2], "exp-b");
  EXPECT_EQ(arows[3], (std::vector<std::string>{"2025-01-18T00:00:00Z", "2025-01-19T00:00:00Z",
                                                "exp-b", "{}", "1"}));
  EXPECT_EQ(arows[4], (std::vector<std::string>{"2025-02-01T00:00:00Z", "2025-02-02T00:00:00Z",
                                                "exp-bulk", "{}", "2500"}));
  auto j =
      get("/v1/export?kind=aggregates&meter=calls&format=json&customer=exp-bulk&"
          "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z");
  ASSERT_EQ(j.status, 200) << j.body;
  EXPECT_EQ(minify(j.body),
            R"([{"window_start":"2025-01-01T00:00:00Z","window_end":"2025-03-01T00:00:00Z",)"
            R"("customer":"exp-bulk","group":{},"value":2500}])");
}

TEST_F(ExportTest, AggregatesKeepTheGroupsAsked) {
  auto j =
      get("/v1/export?kind=aggregates&meter=calls&format=jsonl&customer=exp-bulk&"
          "group_by=service&from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z");
  ASSERT_EQ(j.status, 200) << j.body;
  std::int64_t total = 0;
  std::size_t rows = 0;
  std::size_t start = 0;
  while (start < j.body.size()) {
    std::size_t end = j.body.find('\n', start);
    if (end == std::string::npos)
      end = j.body.size();
    const std::string line = j.body.substr(start, end - start);
    start = end + 1;
    if (line.empty())
      continue;
    Json row(line);
    ASSERT_TRUE(row.ok()) << line;
    EXPECT_TRUE(row["group"]["service"].is_string()) << line;
    total += row.num("value");
    ++rows;
  }
  EXPECT_GE(rows, 1u);
  EXPECT_EQ(total, 2500) << j.body;
  expect_error("/v1/export?kind=aggregates&meter=calls&group_by=colour", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?group_by=service", 400, "VALIDATION_ERROR");
}

TEST_F(ExportTest, CustomerKeySeesOnlyItsOwnCustomer) {
  auto k = client_->request("POST", "/v1/keys", R"({"customer":"exp-b"})", key_header(kAdminKey));
  ASSERT_EQ(k.status, 201) << k.body;
  const std::string key = Json(k.body).str("key");
  auto r = get("/v1/export?format=csv", key);
  ASSERT_EQ(r.status, 200) << r.body;
  auto rows = parse_csv(r.body);
  ASSERT_EQ(rows.size(), 3u) << r.body;
  EXPECT_EQ(rows[1][1], "exp-b");
  EXPECT_EQ(rows[2][1], "exp-b");
  expect_error("/v1/export?customer=exp-a", 403, "FORBIDDEN", key);
  expect_error("/v1/export?kind=aggregates&meter=calls&customer=exp-a", 403, "FORBIDDEN", key);
}

TEST_F(ExportTest, ErrorsAreClearJson) {
  expect_error("/v1/export?format=xml", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?format=xlsx&kind=aggregates&meter=nope", 404, "NOT_FOUND");
  expect_error("/v1/export?kind=invoices", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?from=yesterday", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z", 400,
               "VALIDATION_ERROR");
  expect_error("/v1/export?limit=10", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?kind=aggregates", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?kind=aggregates&meter=calls&window=fortnight", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?window=day", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?meter=calls&type=api_call", 400, "VALIDATION_ERROR");
  expect_error("/v1/export?customer=nobody", 404, "NOT_FOUND");
  expect_error("/v1/export?meter=nothing", 404, "NOT_FOUND");
  expect_error("/v1/export?kind=aggregates&meter=nothing", 404, "NOT_FOUND");
  auto r = client_->request("GET", "/v1/export", {}, {});
  EXPECT_EQ(r.status, 401) << r.body;
}

TEST_F(ExportTest, CliWritesTheSameAsTheApi) {
  std::string out;
  ASSERT_EQ(run_tally(cli_args({"--to", "2025-01-19T00:00:00Z", "-o", path("e.csv")}), &out,
                      server_->dir()),
            0)
      << out;
  EXPECT_NE(out.find("exported 5 rows to " + path("e.csv")), std::string::npos) << out;
  auto csv = read_file(path("e.csv"));
  ASSERT_TRUE(csv.has_value());
  expect_tricky_csv(*csv);
  EXPECT_EQ(*csv, get("/v1/export?to=2025-01-19T00:00:00Z").body);
  EXPECT_FALSE(std::filesystem::exists(path("e.csv.partial")));

  ASSERT_EQ(run_tally(cli_args({"-f", "jsonl", "--customer", "exp-bulk", "-o", path("b.jsonl")}),
                      &out, server_->dir()),
            0)
      << out;
  EXPECT_EQ(read_file(path("b.jsonl")).value_or(""),
            get("/v1/export?format=jsonl&customer=exp-bulk").body);

  ASSERT_EQ(run_tally(cli_args({"-k", "aggregates", "--meter", "calls", "--window", "day", "--from",
                                "2025-01-01T00:00:00Z", "--to", "2025-03-01T00:00:00Z", "-f",
                                "json", "-o", path("a.json")}),
                      &out, server_->dir()),
            0)
      << out;
  EXPECT_EQ(minify(read_file(path("a.json")).value_or("")),
            minify(get("/v1/export?kind=aggregates&meter=calls&window=day&format=json&"
                       "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z")
                       .body));
}

TEST_F(ExportTest, CliXlsxIsAWorkbookWithTheRows) {
  std::string out;
  ASSERT_EQ(run_tally(cli_args({"-f", "xlsx", "--customer", "exp-bulk", "-o", path("b.xlsx")}),
                      &out, server_->dir()),
            0)
      << out;
  auto xlsx = read_file(path("b.xlsx"));
  ASSERT_TRUE(xlsx.has_value());
  ASSERT_GT(xlsx->size(), 1000u);
  EXPECT_EQ(xlsx->substr(0, 2), "PK");
  if (!std::filesystem::exists("/usr/bin/unzip")) {
    GTEST_SKIP() << "no unzip: checked the zip signature only";
  }
  ASSERT_EQ(std::system(
                ("unzip -p " + path("b.xlsx") + " xl/worksheets/sheet1.xml > " + path("sheet1.xml"))
                    .c_str()),
            0);
  auto sheet = read_file(path("sheet1.xml")).value_or("");
  EXPECT_NE(sheet.find(">properties<"), std::string::npos);
  EXPECT_NE(sheet.find(">bulk-0<"), std::string::npos);
  EXPECT_NE(sheet.find(">bulk-2499<"), std::string::npos);
  EXPECT_NE(sheet.find("<row r=\"2501\""), std::string::npos);  // header + 2,500 rows
  EXPECT_EQ(sheet.find("<row r=\"2502\""), std::string::npos);
}

TEST_F(ExportTest, HttpXlsxIsAWorkbookWithTheRows) {
  auto r = get("/v1/export?format=xlsx&customer=exp-bulk");
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 200);
  EXPECT_EQ(r.header("content-type"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
  EXPECT_NE(r.header("content-disposition").find(".xlsx\""), std::string::npos);
  ASSERT_GT(r.body.size(), 1000u);
  EXPECT_EQ(r.body.substr(0, 2), "PK");
  if (!std::filesystem::exists("/usr/bin/unzip")) {
    GTEST_SKIP() << "no unzip: checked the zip signature only";
  }
  std::ofstream(path("h.xlsx"), std::ios::binary) << r.body;
  ASSERT_EQ(std::system(("unzip -p " + path("h.xlsx") + " xl/worksheets/sheet1.xml > " +
                         path("h-sheet1.xml"))
                            .c_str()),
            0);
  auto sheet = read_file(path("h-sheet1.xml")).value_or("");
  EXPECT_NE(sheet.find(">bulk-0<"), std::string::npos);
  EXPECT_NE(sheet.find("<row r=\"2501\""), std::string::npos);  // header + 2,500 rows
  EXPECT_EQ(sheet.find("<row r=\"2502\""), std::string::npos);
}

TEST_F(ExportTest, CliDefaultFileNameHasTheRangeAndATimestamp) {
  const std::string dir = make_temp_dir("tally-export-name-");
  ProcessOptions o;
  o.executable = TALLY_BINARY;
  o.args = cli_args({"--customer", "exp-a", "--from", "2025-01-17T00:00:00Z", "-q"});
  o.working_dir = dir;
  o.log_path = dir + "/cli.log";
  auto p = ChildProcess::start(o);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->wait_exit(60000), 0) << read_file(o.log_path).value_or("");
  int found = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "cli.log")
      continue;
    EXPECT_EQ(name.rfind("tally-events-20250117T000000Z-end-", 0), 0u) << name;
    EXPECT_EQ(name.substr(name.size() - 4), ".csv") << name;
    EXPECT_EQ(name.size(),
              std::string("tally-events-20250117T000000Z-end-20250101T000000Z.csv").size())
        << name;
    ++found;
  }
  EXPECT_EQ(found, 1);
  EXPECT_EQ(read_file(o.log_path).value_or("x"), "");  // --quiet
  remove_tree(dir);
}

TEST_F(ExportTest, CliErrors) {
  std::string out;
  EXPECT_EQ(run_tally(cli_args({"-f", "xml", "-o", path("x.csv")}), &out, server_->dir()), 2);
  EXPECT_NE(out.find("--format must be"), std::string::npos) << out;
  EXPECT_EQ(
      run_tally(cli_args({"--customer", "nobody", "-o", path("x.csv")}), &out, server_->dir()), 1);
  EXPECT_NE(out.find("customer 'nobody' does not exist"), std::string::npos) << out;
  EXPECT_EQ(run_tally(cli_args({"-k", "aggregates", "-o", path("x.csv")}), &out, server_->dir()),
            2);
  EXPECT_NE(out.find("needs a meter"), std::string::npos) << out;
  EXPECT_EQ(run_tally(cli_args({"--from", "soon", "-o", path("x.csv")}), &out, server_->dir()), 2);
  EXPECT_EQ(run_tally(cli_args({"-f", "xlsx", "-o", "-"}), &out, server_->dir()), 2);
  EXPECT_EQ(run_tally({"export", "--data", server_->dir() + "/data", "--meter", "calls", "-o",
                       path("x.csv")},
                      &out, server_->dir()),
            2);
  EXPECT_NE(out.find("--meter needs --config"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(path("x.csv")));
  EXPECT_FALSE(std::filesystem::exists(path("x.csv.partial")));
}

}  // namespace
}  // namespace tally::testing
