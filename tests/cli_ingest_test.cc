// `tally ingest` on JSON Lines: each line is judged alone, so a bad line is refused with its own
// line number and code while every other line is stored, and the final counts say so.
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "bytes"
event_type = "api_call"
aggregation = "sum"
value = "$.bytes"
)";

TEST(CliIngestTest, ABadLineIsRefusedAloneWithItsNumberAndTheOthersAreStored) {
  const std::string dir = make_temp_dir("tally-cli-ingest-");
  std::ofstream(dir + "/tally.toml") << kConfig;
  std::ofstream(dir + "/events.jsonl")
      << R"({"id":"a","customer":"co","type":"api_call","time":"2024-01-15T10:00:00Z","properties":{"bytes":5}})"
      << "\n"
      << "[1, 2]\n"                                         // line 2: not an object
      << "\n"                                               // line 3: blank, skipped
      << R"({"id":"b","customer":"co","type":"api_call",)"  // line 4: cut short
      << "\n"
      << R"({"id":"c","customer":"co","type":"api_call","time":"not a time"})"  // line 5
      << "\n"
      << R"({"id":"d","customer":"co","type":"api_call","time":"2024-01-15T10:01:00Z","properties":{"bytes":7}})"
      << "\n";
  const std::vector<std::string> data = {"--config", dir + "/tally.toml", "--data-dir",
                                         dir + "/data"};
  std::vector<std::string> args = {"ingest", dir + "/events.jsonl", "--batch", "2"};
  args.insert(args.end(), data.begin(), data.end());
  std::string out;
  EXPECT_EQ(run_tally(args, &out, dir), 1) << out;
  EXPECT_NE(out.find("line 2: INVALID_TYPE: a line must hold one event object"), std::string::npos)
      << out;
  EXPECT_NE(out.find("line 4: INVALID_JSON: malformed JSON"), std::string::npos) << out;
  EXPECT_NE(out.find("line 5: INVALID_TIME"), std::string::npos) << out;
  EXPECT_EQ(out.find("line 3:"), std::string::npos) << out;
  EXPECT_NE(out.find("6 lines, 2 accepted, 0 duplicates, 3 rejected in "), std::string::npos)
      << out;

  // The two good lines are stored: 5 + 7 bytes.
  std::vector<std::string> query = {"query",      "bytes",
                                    "--customer", "co",
                                    "--from",     "2024-01-15T00:00:00Z",
                                    "--to",       "2024-01-16T00:00:00Z"};
  query.insert(query.end(), data.begin(), data.end());
  std::remove((dir + "/cli.log").c_str());
  ASSERT_EQ(run_tally(query, &out, dir), 0) << out;
  EXPECT_NE(out.find("\"value\":12"), std::string::npos) << out;
  remove_tree(dir);
}

}  // namespace
}  // namespace tally::testing
