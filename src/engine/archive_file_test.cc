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

// Each refusal of a line by its whole message.
TEST(ArchiveFileTest, BadLinesAreNamedInFull) {
  const std::string head = R"({"customer":"c","seq":1,"id":"x","time_us":1,)";
  const std::pair<std::string, const char*> cases[] = {
      {"not json", "an archive line is not a JSON object"},  // on-demand: found at the object
      {"[1,2]", "an archive line is not a JSON object"},
      {R"({"customer":"c","id":"x","time_us":1})",
       "an archive line lacks customer, seq, id or time_us"},
      {R"({"seq":1,"id":"x","time_us":1})", "an archive line lacks customer, seq, id or time_us"},
      {R"({"customer":"c","seq":1,"time_us":1})",
       "an archive line lacks customer, seq, id or time_us"},
      {R"({"customer":"c","seq":1,"id":"x"})",
       "an archive line lacks customer, seq, id or time_us"},
      {R"({"customer":"c","seq":0,"id":"x","time_us":1})",
       "an archive line lacks customer, seq, id or time_us"},
      {R"({"customer":1,"seq":1,"id":"x","time_us":1})", "an archive line has a bad 'customer'"},
      {R"({"customer":"c","seq":"1","id":"x","time_us":1})", "an archive line has a bad 'seq'"},
      {R"({"customer":"c","seq":1,"id":2,"time_us":1})", "an archive line has a bad 'id'"},
      {R"({"customer":"c","seq":1,"id":"x","time_us":"1"})", "an archive line has a bad 'time_us'"},
      {head + R"("type":3})", "an archive line has a bad 'type'"},
      {head + R"("received_at_us":true})", "an archive line has a bad 'received_at_us'"},
      {head + R"("flagged":1})", "an archive line has a bad 'flagged'"},
      {head + R"("priced":"yes"})", "an archive line has a bad 'priced'"},
      {head + R"("cost":1})", "an archive line has a bad 'cost'"},
      {head + R"("cost":"abc"})", "an archive line has a bad cost"},
      {head + R"("credits":"1e99"})", "an archive line has a bad credits"},
      {head + R"("quantity":"2"})", "an archive line has a bad 'quantity'"},
      {head + R"("quantity":0})", "an archive line has a quantity outside 1..1000000"},
      {head + R"("properties":{"k":1}})", "an archive line has a bad 'properties'"},
      {head + R"("properties":[["k","date","t"]]})",
       "an archive line has a property that is not [key, kind, text]"},
      {head + R"("properties":[["k","string","t","u"]]})",
       "an archive line has a property that is not [key, kind, text]"},
      {head + R"("properties":["k"]})",
       "an archive line has a property that is not [key, kind, text]"},
  };
  ArchivedEvent a;
  for (const auto& [line, why] : cases) {
    Status s = decode_archive_line(line, &a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << line;
    EXPECT_EQ(s.message(), why) << line;
  }
  // The time for people and fields of later versions are skipped.
  ASSERT_TRUE(
      decode_archive_line(head + R"("time":"1970-01-01T00:00:00.000001Z","later":{"a":[1]}})", &a)
          .ok());
  EXPECT_EQ(a.customer, "c");
  EXPECT_EQ(a.time_us, 1);
  EXPECT_EQ(a.quantity, 1u);
}

// Each refusal of a manifest by its whole message, and every field read back.
TEST(ArchiveFileTest, ManifestsAreReadInFullAndRefusedByName) {
  ArchiveManifest m;
  m.archive_id = 9;
  m.file = "events-9.jsonl.zst";
  m.sha256 = std::string(64, 'b');
  m.bytes = 1234;
  m.events = 5;
  m.cutoff_us = 40;
  m.from_us = 10;
  m.to_us = 20;
  m.first_seq = 100;
  m.last_seq = 104;
  m.customers = {"x"};
  m.created_at_us = 50;
  const std::string good = encode_manifest(m);
  ArchiveManifest back;
  ASSERT_TRUE(decode_manifest(good, &back).ok()) << good;
  EXPECT_EQ(back.format_version, kArchiveFormatVersion);
  EXPECT_EQ(back.archive_id, 9u);
  EXPECT_EQ(back.file, m.file);
  EXPECT_EQ(back.sha256, m.sha256);
  EXPECT_EQ(back.bytes, 1234u);
  EXPECT_EQ(back.events, 5u);
  EXPECT_EQ(back.cutoff_us, 40);
  EXPECT_EQ(back.from_us, 10);
  EXPECT_EQ(back.to_us, 20);
  EXPECT_EQ(back.first_seq, 100u);
  EXPECT_EQ(back.last_seq, 104u);
  EXPECT_EQ(back.customers, m.customers);
  EXPECT_EQ(back.created_at_us, 50);
  // One field changed in the good manifest.
  auto with = [&](const std::string& field, const std::string& value) {
    std::string text = good;
    const std::size_t at = text.find("\"" + field + "\":");
    EXPECT_NE(at, std::string::npos) << field;
    const std::size_t begin = at + field.size() + 3;
    std::size_t end = begin;
    int depth = 0;
    while (end < text.size() && (depth > 0 || (text[end] != ',' && text[end] != '}'))) {
      depth += text[end] == '[' ? 1 : text[end] == ']' ? -1 : 0;
      ++end;
    }
    return text.replace(begin, end - begin, value);
  };
  const std::pair<std::string, const char*> cases[] = {
      {"[]", "the manifest is not a JSON object"},
      {"nope", "the manifest is not a JSON object"},
      {"{}", "not a Tally archive manifest"},
      {with("format", "\"other\""), "not a Tally archive manifest"},
      {with("format", "1"), "the manifest has a bad 'format'"},
      {with("format_version", "\"1\""), "the manifest has a bad 'format_version'"},
      {with("format_version", "2"), "archive format version 2 is not one this Tally reads (1)"},
      {with("archive_id", "-1"), "the manifest has a bad 'archive_id'"},
      {with("archive_id", "0"), "the manifest lacks its file name, sha256 or archive id"},
      {with("file", "1"), "the manifest has a bad 'file'"},
      {with("file", "\"\""), "the manifest lacks its file name, sha256 or archive id"},
      {with("file", "\"a/b\""), "the manifest lacks its file name, sha256 or archive id"},
      {with("sha256", "\"ab\""), "the manifest lacks its file name, sha256 or archive id"},
      {with("sha256", "[]"), "the manifest has a bad 'sha256'"},
      {with("bytes", "-1"), "the manifest has a bad 'bytes'"},
      {with("events", "\"5\""), "the manifest has a bad 'events'"},
      {with("cutoff_us", "1.5"), "the manifest has a bad 'cutoff_us'"},
      {with("from_us", "null"), "the manifest has a bad 'from_us'"},
      {with("to_us", "true"), "the manifest has a bad 'to_us'"},
      {with("created_at_us", "\"x\""), "the manifest has a bad 'created_at_us'"},
      {with("first_seq", "-3"), "the manifest has a bad 'first_seq'"},
      {with("last_seq", "{}"), "the manifest has a bad 'last_seq'"},
      {with("customers", "{\"a\":1}"), "the manifest has a bad 'customers'"},
      {with("customers", "[\"a\",2]"), "the manifest has a bad 'customers'"},
  };
  for (const auto& [text, why] : cases) {
    Status s = decode_manifest(text, &back);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(s.message(), why) << text;
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
