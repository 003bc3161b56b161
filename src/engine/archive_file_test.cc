// Archive lines and manifests: every field and property kind round-trips exactly (quotes,
// control characters, non-ASCII), and malformed lines and manifests are refused by name.
#include "engine/archive_file.h"

#include <filesystem>
#include <random>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

TEST(ArchiveFileTest, LineRoundTripsEveryField) {
  BlockEvent e;
  e.seq = 42;
  e.time_us = 1'705'312'800'123'456;
  e.flagged = true;
  e.id = "id \"quoted\"\n\t\x01 é";
  e.type = "api_call";
  e.priced = true;
  e.cost = *core::parse_decimal("0.000000001");
  e.credits = *core::parse_decimal("-12345678901234567.5");
  e.props = {{core::PropKind::kString, "route", "/v1/chat?x=\"y\""},
             {core::PropKind::kNumber, "tokens", "1.5e3"},
             {core::PropKind::kBool, "cached", "true"},
             {core::PropKind::kNull, "user.tier", ""}};
  const std::string line = encode_archive_line("acme ☃", 1'705'312'801'000'000, e);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  ArchivedEvent a;
  ASSERT_TRUE(decode_archive_line(line, &a).ok()) << line;
  EXPECT_EQ(a.customer, "acme ☃");
  EXPECT_EQ(a.seq, 42u);
  EXPECT_EQ(a.id, e.id);
  EXPECT_EQ(a.type, "api_call");
  EXPECT_EQ(a.time_us, e.time_us);
  EXPECT_EQ(a.received_at_us, 1'705'312'801'000'000);
  EXPECT_TRUE(a.flagged);
  EXPECT_TRUE(a.priced);
  EXPECT_EQ(a.cost, e.cost);
  EXPECT_EQ(a.credits, e.credits);
  ASSERT_EQ(a.props.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.props[i].kind, e.props[i].kind) << i;
    EXPECT_EQ(a.props[i].key, e.props[i].key) << i;
    EXPECT_EQ(a.props[i].text, e.props[i].text) << i;
  }
}

TEST(ArchiveFileTest, AQuantityRoundTripsAndIsAbsentWhenOne) {
  BlockEvent e;
  e.seq = 7;
  e.time_us = 1'705'312'800'000'000;
  e.id = "chk-1";
  e.type = "api_call";
  e.quantity = 10'000;
  ArchivedEvent a;
  std::string line = encode_archive_line("acme", e.time_us, e);
  ASSERT_TRUE(decode_archive_line(line, &a).ok()) << line;
  EXPECT_EQ(a.quantity, 10'000u);
  e.quantity = 1;
  line = encode_archive_line("acme", e.time_us, e);
  EXPECT_EQ(line.find("quantity"), std::string::npos) << line;
  ASSERT_TRUE(decode_archive_line(line, &a).ok());
  EXPECT_EQ(a.quantity, 1u);
  for (const char* bad : {R"({"customer":"c","seq":1,"id":"x","time_us":1,"quantity":0})",
                          R"({"customer":"c","seq":1,"id":"x","time_us":1,"quantity":-2})",
                          R"({"customer":"c","seq":1,"id":"x","time_us":1,"quantity":1000001})"}) {
    EXPECT_FALSE(decode_archive_line(bad, &a).ok()) << bad;
  }
}

TEST(ArchiveFileTest, BadLinesAreRefused) {
  ArchivedEvent a;
  for (const char* bad : {
           "",
           "not json",
           "[1,2]",
           R"({"customer":"c","id":"x","time_us":1})",                       // no seq
           R"({"customer":"c","seq":0,"id":"x","time_us":1})",               // seq 0
           R"({"customer":"c","seq":"1","id":"x","time_us":1})",             // seq a string
           R"({"customer":"c","seq":1,"id":"x","time_us":1,"cost":"abc"})",  // not a decimal
           R"({"customer":"c","seq":1,"id":"x","time_us":1,"properties":[["k","date","t"]]})",
           R"({"customer":"c","seq":1,"id":"x","time_us":1,"properties":[["k","string"]]})",
           R"({"customer":"c","seq":1,"id":"x","time_us":1,"properties":{"k":1}})",
       }) {
    Status s = decode_archive_line(bad, &a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ArchiveFileTest, ManifestRoundTripsAndIsChecked) {
  ArchiveManifest m;
  m.archive_id = 7;
  m.file = "events-a-b-c-7.jsonl.zst";
  m.sha256 = std::string(64, 'a');
  m.bytes = 100;
  m.events = 3;
  m.cutoff_us = 3;
  m.from_us = 1;
  m.to_us = 2;
  m.first_seq = 10;
  m.last_seq = 12;
  m.customers = {"a", "b"};
  m.created_at_us = 4;
  ArchiveManifest back;
  ASSERT_TRUE(decode_manifest(encode_manifest(m), &back).ok());
  EXPECT_EQ(back.archive_id, 7u);
  EXPECT_EQ(back.file, m.file);
  EXPECT_EQ(back.sha256, m.sha256);
  EXPECT_EQ(back.events, 3u);
  EXPECT_EQ(back.customers, m.customers);
  EXPECT_EQ(back.cutoff_us, 3);
  EXPECT_EQ(back.created_at_us, 4);

  std::string v2 = encode_manifest(m);
  v2.replace(v2.find("\"format_version\":1"), 18, "\"format_version\":2");
  Status s = decode_manifest(v2, &back);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("format version 2"), std::string::npos) << s.message();
  std::string slash = encode_manifest(m);
  slash.replace(slash.find("events-a"), 8, "../x/eve");
  EXPECT_EQ(decode_manifest(slash, &back).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decode_manifest("{}", &back).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decode_manifest("[]", &back).code(), StatusCode::kInvalidArgument);
  std::string customers = encode_manifest(m);
  customers.replace(customers.find("[\"a\",\"b\"]"), 9, "{\"a\":1}");
  EXPECT_EQ(decode_manifest(customers, &back).code(), StatusCode::kInvalidArgument) << customers;
  std::string numbers = encode_manifest(m);
  numbers.replace(numbers.find("[\"a\",\"b\"]"), 9, "[1,2]");
  EXPECT_EQ(decode_manifest(numbers, &back).code(), StatusCode::kInvalidArgument) << numbers;
}

TEST(ArchiveFileTest, WriterAndReaderStreamManyLines) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("tally-archive-file-" + std::to_string(std::random_device{}())))
                               .string();
  std::string last;
  {
    ArchiveWriter w;
    ASSERT_TRUE(w.open(path).ok());
    EXPECT_EQ(w.open(path).code(), StatusCode::kInternal);  // this writer has its file
    for (int i = 0; i < 100'000; ++i) {
      last = "{\"n\":" + std::to_string(i) + ",\"pad\":\"" + std::string(i % 50, 'x') + "\"}";
      ASSERT_TRUE(w.write_line(last).ok());
    }
    ASSERT_TRUE(w.finish().ok());
    ArchiveWriter again;
    EXPECT_EQ(again.open(path).code(), StatusCode::kAlreadyExists);  // never replaced
  }
  ArchiveReader r;
  ASSERT_TRUE(r.open(path).ok());
  std::string line;
  int n = 0;
  std::string seen;
  for (;;) {
    auto more = r.next_line(&line);
    ASSERT_TRUE(more.has_value()) << more.error().message();
    if (!*more) {
      break;
    }
    seen = line;
    ++n;
  }
  EXPECT_EQ(n, 100'000);
  EXPECT_EQ(seen, last);
  EXPECT_EQ(r.bytes(), std::filesystem::file_size(path));
  std::filesystem::remove(path);
  ArchiveReader missing;
  EXPECT_EQ(missing.open(path).code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tally::engine
