// Tests for core/time: RFC 3339 parsing and formatting, time zones, and calendar windows in
// zones with DST, half-hour offsets and skipped or repeated midnights.
#include "core/time.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

// Parses a timestamp the test knows to be valid.
TimeUs at(std::string_view text) {
  Result<TimeUs> r = parse_rfc3339(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << r.status().to_string();
  return r.has_value() ? *r : 0;
}

TimeZone zone(std::string_view name) {
  Result<TimeZone> r = TimeZone::find(name);
  EXPECT_TRUE(r.has_value()) << name << ": " << r.status().to_string();
  return r.has_value() ? *r : TimeZone();
}

// Expects text to be refused with a message containing `why`.
void expect_refused(std::string_view text, std::string_view why) {
  Result<TimeUs> r = parse_rfc3339(text);
  ASSERT_FALSE(r.has_value()) << text << " parsed as " << *r;
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << text;
  EXPECT_NE(r.error().message().find(why), std::string::npos)
      << text << ": \"" << r.error().message() << "\" lacks \"" << why << "\"";
}

// ---- parse_rfc3339 ----

TEST(ParseRfc3339, Epoch) {
  EXPECT_EQ(at("1970-01-01T00:00:00Z"), 0);
}

TEST(ParseRfc3339, KnownInstants) {
  EXPECT_EQ(at("2025-01-17T14:30:00Z"), 1'737'124'200 * kUsPerSecond);
  EXPECT_EQ(at("2024-02-29T12:00:00Z"), 1'709'208'000 * kUsPerSecond);
  EXPECT_EQ(at("2000-03-01T00:00:00Z"), 951'868'800 * kUsPerSecond);
  EXPECT_EQ(at("9999-12-31T23:59:59Z"), 253'402'300'799 * kUsPerSecond);
}

TEST(ParseRfc3339, LowerCaseAndSpaceSeparators) {
  const TimeUs want = at("2025-01-17T14:30:00Z");
  EXPECT_EQ(at("2025-01-17t14:30:00z"), want);
  EXPECT_EQ(at("2025-01-17 14:30:00Z"), want);
}

TEST(ParseRfc3339, Fractions) {
  const TimeUs base = at("2025-01-17T14:30:00Z");
  EXPECT_EQ(at("2025-01-17T14:30:00.1Z"), base + 100'000);
  EXPECT_EQ(at("2025-01-17T14:30:00.123Z"), base + 123'000);
  EXPECT_EQ(at("2025-01-17T14:30:00.000001Z"), base + 1);
  EXPECT_EQ(at("2025-01-17T14:30:00.999999Z"), base + 999'999);
}

TEST(ParseRfc3339, FractionBeyondMicrosecondsIsTruncated) {
  const TimeUs base = at("2025-01-17T14:30:00Z");
  EXPECT_EQ(at("2025-01-17T14:30:00.1234567Z"), base + 123'456);
  EXPECT_EQ(at("2025-01-17T14:30:00.9999999999Z"), base + 999'999);
  EXPECT_EQ(at("2025-01-17T14:30:00.0000009Z"), base);
}

TEST(ParseRfc3339, Offsets) {
  const TimeUs utc = at("2025-01-17T14:30:00Z");
  EXPECT_EQ(at("2025-01-17T16:30:00+02:00"), utc);
  EXPECT_EQ(at("2025-01-17T09:00:00-05:30"), utc);
  EXPECT_EQ(at("2025-01-17T14:30:00+00:00"), utc);
  EXPECT_EQ(at("2025-01-17T14:30:00-00:00"), utc);
  EXPECT_EQ(at("2025-01-18T00:00:00.5+09:30"), utc + 500'000);
}

TEST(ParseRfc3339, OffsetMayCrossTheDate) {
  EXPECT_EQ(at("2025-01-01T00:30:00+01:00"), at("2024-12-31T23:30:00Z"));
  EXPECT_EQ(at("2024-12-31T23:30:00-01:00"), at("2025-01-01T00:30:00Z"));
}

TEST(ParseRfc3339, LeapDays) {
  EXPECT_EQ(at("2024-02-29T00:00:00Z") + kUsPerDay, at("2024-03-01T00:00:00Z"));
  EXPECT_EQ(at("2000-02-29T00:00:00Z") + kUsPerDay, at("2000-03-01T00:00:00Z"));
  expect_refused("2023-02-29T00:00:00Z", "day");
  expect_refused("2100-02-29T00:00:00Z", "day");
}

TEST(ParseRfc3339, RefusesOutOfRangeFields) {
  expect_refused("2025-13-01T00:00:00Z", "month");
  expect_refused("2025-00-01T00:00:00Z", "month");
  expect_refused("2025-01-32T00:00:00Z", "day");
  expect_refused("2025-01-00T00:00:00Z", "day");
  expect_refused("2025-04-31T00:00:00Z", "day");
  expect_refused("2025-01-17T24:00:00Z", "hour");
  expect_refused("2025-01-17T14:60:00Z", "minute");
  expect_refused("2025-01-17T14:30:60Z", "second");
  expect_refused("1969-12-31T23:59:59Z", "year");
  expect_refused("0000-01-01T00:00:00Z", "year");
}

TEST(ParseRfc3339, RefusesBadOffsets) {
  expect_refused("2025-01-17T14:30:00", "offset");
  expect_refused("2025-01-17T14:30:00+0200", "offset");
  expect_refused("2025-01-17T14:30:00+02", "offset");
  expect_refused("2025-01-17T14:30:00+24:00", "offset");
  expect_refused("2025-01-17T14:30:00+02:60", "offset");
  expect_refused("2025-01-17T14:30:00UTC", "offset");
  expect_refused("2025-01-17T14:30:00+02:00:00", "offset");
}

// Each refusal's whole message, one per check, in the order the text is read.
TEST(ParseRfc3339, NamesEachFaultInFull) {
  const std::pair<const char*, const char*> cases[] = {
      {"2025-01-17", "too short; expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset"},
      {"2025-01-1xT14:30:00Z", "date must be YYYY-MM-DD"},
      {"2025-01-17_14:30:00Z", "date and time must be separated by 'T'"},
      {"2025-01-17T14:30:0xZ", "time must be HH:MM:SS"},
      {"1969-12-31T23:59:59Z", "year must be 1970..9999"},
      {"2025-13-01T00:00:00Z", "month must be 01..12"},
      {"2025-02-29T00:00:00Z", "day does not exist in that month"},
      {"2025-01-17T24:00:00Z", "hour must be 00..23"},
      {"2025-01-17T14:60:00Z", "minute must be 00..59"},
      {"2025-01-17T14:30:60Z", "second must be 00..59"},
      {"2025-01-17T14:30:00.Z", "'.' must be followed by fraction digits"},
      {"2025-01-17T14:30:00.5", "missing time zone offset (Z or +HH:MM)"},
      {"2025-01-17T14:30:00+02:0", "offset must be Z, +HH:MM or -HH:MM"},
      {"2025-01-17T14:30:00-02x00", "offset must be Z, +HH:MM or -HH:MM"},
      {"2025-01-17T14:30:00 02:00", "offset must be Z, +HH:MM or -HH:MM"},
      {"2025-01-17T14:30:00-24:00", "offset out of range"},
      {"2025-01-17T14:30:00zz", "unexpected text after the offset"},
  };
  for (const auto& [text, why] : cases) {
    Result<TimeUs> r = parse_rfc3339(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().message(),
              std::string("invalid RFC 3339 timestamp \"") + text + "\": " + why);
  }
  const std::string longer = "2025-01-17T14:30:00Z" + std::string(60, 'x');
  EXPECT_EQ(parse_rfc3339(longer).error().message(), "invalid RFC 3339 timestamp \"" +
                                                         longer.substr(0, 64) +
                                                         "...\": unexpected text after the offset");
  EXPECT_EQ(at("2025-01-17T14:30:00.1234567-01:30"), at("2025-01-17T16:00:00.123456Z"));
}

TEST(ParseRfc3339, RefusesBadLayout) {
  expect_refused("", "too short");
  expect_refused("2025-01-17", "too short");
  expect_refused("2025-1-17T14:30:00+01:00", "date");
  expect_refused("2025-1-17T14:30:00Z", "too short");
  expect_refused("2025/01/17T14:30:00Z", "date");
  expect_refused("2025-01-17X14:30:00Z", "'T'");
  expect_refused("2025-01-17T14-30-00Z", "time");
  expect_refused("2025-01-17T14:3a:00Z", "time");
  expect_refused("2025-01-17T14:30:00.Z", "fraction");
  expect_refused("2025-01-17T14:30:00ZZ", "after");
  expect_refused("2025-01-17T14:30:00Z ", "after");
  expect_refused(" 2025-01-17T14:30:00Z", "date");
  expect_refused("+2025-01-17T14:30:00Z", "date");
}

TEST(ParseRfc3339, ErrorQuotesAShortenedText) {
  const std::string text = "2025-01-17T14:30:00Z" + std::string(1000, 'x');
  Result<TimeUs> r = parse_rfc3339(text);
  ASSERT_FALSE(r.has_value());
  EXPECT_LT(r.error().message().size(), 200u);
}

// ---- format_rfc3339 ----

TEST(FormatRfc3339, WholeSeconds) {
  EXPECT_EQ(format_rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_rfc3339(1'737'124'200 * kUsPerSecond), "2025-01-17T14:30:00Z");
  EXPECT_EQ(format_rfc3339(253'402'300'799 * kUsPerSecond), "9999-12-31T23:59:59Z");
}

TEST(FormatRfc3339, FractionsTrimToMillisOrMicros) {
  const TimeUs base = 1'737'124'200 * kUsPerSecond;
  EXPECT_EQ(format_rfc3339(base + 500'000), "2025-01-17T14:30:00.500Z");
  EXPECT_EQ(format_rfc3339(base + 123'000), "2025-01-17T14:30:00.123Z");
  EXPECT_EQ(format_rfc3339(base + 123'400), "2025-01-17T14:30:00.123400Z");
  EXPECT_EQ(format_rfc3339(base + 1), "2025-01-17T14:30:00.000001Z");
}

TEST(FormatRfc3339, BeforeTheEpochFloorsToTheRightSecond) {
  EXPECT_EQ(format_rfc3339(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_rfc3339(-kUsPerSecond), "1969-12-31T23:59:59Z");
}

TEST(FormatRfc3339, AnyTimeOfYears1970To9999ParsesBackExactly) {
  std::mt19937_64 rng(20261206);
  const TimeUs lo = 0;                               // parse_rfc3339 takes years 1970..9999
  const TimeUs hi = 253'402'300'799 * kUsPerSecond;  // 9999-12-31T23:59:59
  std::uniform_int_distribution<TimeUs> any(lo, hi);
  for (int i = 0; i < 20'000; ++i) {
    TimeUs t = any(rng);
    if (i % 3 == 0) {
      t -= t % kUsPerSecond;  // whole seconds too
    } else if (i % 3 == 1) {
      t -= t % 1000;  // and whole milliseconds
    }
    const std::string text = format_rfc3339(t);
    Result<TimeUs> back = parse_rfc3339(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, t) << text;
    EXPECT_EQ(text.back(), 'Z');
  }
  EXPECT_EQ(format_rfc3339(-62'135'596'800 * kUsPerSecond), "0001-01-01T00:00:00Z");
}

TEST(FormatRfc3339, RoundTrips) {
  for (std::string_view text :
       {"2025-01-17T14:30:00Z", "2024-02-29T23:59:59.999Z", "2030-06-15T00:00:00.000001Z",
        "1970-01-01T00:00:00.100Z", "2099-12-31T12:34:56.789012Z"}) {
    EXPECT_EQ(format_rfc3339(at(text)), text);
  }
}

// ---- windows by name ----

TEST(WindowName, RoundTrips) {
  for (Window w : {Window::kMinute, Window::kHour, Window::kDay, Window::kWeek, Window::kMonth}) {
    Result<Window> parsed = parse_window(window_name(w));
    ASSERT_TRUE(parsed.has_value()) << window_name(w);
    EXPECT_EQ(*parsed, w);
  }
}

TEST(WindowName, RefusesUnknownNames) {
  for (std::string_view name : {"", "Day", "days", "year", "second", " hour"}) {
    Result<Window> r = parse_window(name);
    ASSERT_FALSE(r.has_value()) << name;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  }
}

// ---- TimeZone ----

TEST(TimeZone, DefaultIsUtc) {
  TimeZone tz;
  EXPECT_TRUE(tz.is_utc());
  EXPECT_EQ(tz.name(), "UTC");
  EXPECT_EQ(tz.offset_seconds_at(at("2025-07-01T00:00:00Z")), 0);
}

TEST(TimeZone, UtcSpellingsAreUtc) {
  for (std::string_view name : {"UTC", "Etc/UTC", "Z"}) {
    TimeZone tz = zone(name);
    EXPECT_TRUE(tz.is_utc()) << name;
    EXPECT_EQ(tz.name(), "UTC");
  }
}

TEST(TimeZone, FindsIanaZones) {
  TimeZone berlin = zone("Europe/Berlin");
  EXPECT_FALSE(berlin.is_utc());
  EXPECT_EQ(berlin.name(), "Europe/Berlin");
  EXPECT_EQ(berlin.offset_seconds_at(at("2025-01-15T12:00:00Z")), 3600);
  EXPECT_EQ(berlin.offset_seconds_at(at("2025-07-15T12:00:00Z")), 7200);
  EXPECT_EQ(zone("Asia/Kolkata").offset_seconds_at(at("2025-07-15T12:00:00Z")), 19800);
  EXPECT_EQ(zone("America/St_Johns").offset_seconds_at(at("2025-01-15T12:00:00Z")), -12600);
  EXPECT_EQ(zone("Etc/GMT+5").offset_seconds_at(at("2025-01-15T12:00:00Z")), -18000);
}

TEST(TimeZone, OffsetChangesAtTheTransitionInstant) {
  TimeZone berlin = zone("Europe/Berlin");
  const TimeUs change = at("2025-03-30T01:00:00Z");
  EXPECT_EQ(berlin.offset_seconds_at(change - 1), 3600);
  EXPECT_EQ(berlin.offset_seconds_at(change), 7200);
}

TEST(TimeZone, RefusesUnknownNames) {
  for (std::string_view name :
       {"", "Nowhere/Zone", "europe/berlin", "Europe/Berlin ", "../../etc/passwd", "/etc/passwd"}) {
    Result<TimeZone> r = TimeZone::find(name);
    ASSERT_FALSE(r.has_value()) << name;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << name;
  }
}

// ---- windows in UTC ----

TEST(WindowsUtc, FixedSpans) {
  TimeZone utc;
  const TimeUs t = at("2025-01-17T14:37:42.5Z");
  EXPECT_EQ(window_start(t, Window::kMinute, utc), at("2025-01-17T14:37:00Z"));
  EXPECT_EQ(window_next(at("2025-01-17T14:37:00Z"), Window::kMinute, utc),
            at("2025-01-17T14:38:00Z"));
  EXPECT_EQ(window_start(t, Window::kHour, utc), at("2025-01-17T14:00:00Z"));
  EXPECT_EQ(window_next(at("2025-01-17T14:00:00Z"), Window::kHour, utc),
            at("2025-01-17T15:00:00Z"));
}

TEST(WindowsUtc, StartOfAWindowIsItsOwnStart) {
  TimeZone utc;
  for (Window w : {Window::kMinute, Window::kHour, Window::kDay, Window::kWeek, Window::kMonth}) {
    const TimeUs s = window_start(at("2025-05-14T10:11:12Z"), w, utc);
    EXPECT_EQ(window_start(s, w, utc), s) << window_name(w);
    EXPECT_EQ(window_start(window_next(s, w, utc) - 1, w, utc), s) << window_name(w);
  }
}

TEST(WindowsUtc, DayAndMonth) {
  TimeZone utc;
  const TimeUs t = at("2025-01-31T23:59:59.999999Z");
  EXPECT_EQ(window_start(t, Window::kDay, utc), at("2025-01-31T00:00:00Z"));
  EXPECT_EQ(window_next(at("2025-01-31T00:00:00Z"), Window::kDay, utc), at("2025-02-01T00:00:00Z"));
  EXPECT_EQ(window_start(t, Window::kMonth, utc), at("2025-01-01T00:00:00Z"));
  EXPECT_EQ(window_next(at("2025-01-01T00:00:00Z"), Window::kMonth, utc),
            at("2025-02-01T00:00:00Z"));
  EXPECT_EQ(window_next(at("2025-02-01T00:00:00Z"), Window::kMonth, utc),
            at("2025-03-01T00:00:00Z"));
}

TEST(WindowsUtc, LeapFebruary) {
  TimeZone utc;
  const TimeUs t = at("2024-02-29T18:00:00Z");
  EXPECT_EQ(window_start(t, Window::kDay, utc), at("2024-02-29T00:00:00Z"));
  EXPECT_EQ(window_next(at("2024-02-29T00:00:00Z"), Window::kDay, utc), at("2024-03-01T00:00:00Z"));
  EXPECT_EQ(window_start(t, Window::kMonth, utc), at("2024-02-01T00:00:00Z"));
  const TimeUs feb = at("2024-02-01T00:00:00Z");
  EXPECT_EQ(window_next(feb, Window::kMonth, utc) - feb, 29 * kUsPerDay);
  const TimeUs feb2025 = at("2025-02-01T00:00:00Z");
  EXPECT_EQ(window_next(feb2025, Window::kMonth, utc) - feb2025, 28 * kUsPerDay);
}

TEST(WindowsUtc, IsoWeekStartsOnMonday) {
  TimeZone utc;
  // 2025-01-01 is a Wednesday; its ISO week began on Monday 2024-12-30.
  EXPECT_EQ(window_start(at("2025-01-01T12:00:00Z"), Window::kWeek, utc),
            at("2024-12-30T00:00:00Z"));
  EXPECT_EQ(window_start(at("2025-01-05T23:59:59Z"), Window::kWeek, utc),
            at("2024-12-30T00:00:00Z"));  // Sunday still belongs to it
  EXPECT_EQ(window_start(at("2025-01-06T00:00:00Z"), Window::kWeek, utc),
            at("2025-01-06T00:00:00Z"));  // Monday starts the next
  EXPECT_EQ(window_next(at("2024-12-30T00:00:00Z"), Window::kWeek, utc),
            at("2025-01-06T00:00:00Z"));
}

TEST(WindowsUtc, BeforeTheEpochFloors) {
  TimeZone utc;
  EXPECT_EQ(window_start(-1, Window::kMinute, utc), -kUsPerMinute);
  EXPECT_EQ(window_start(-1, Window::kHour, utc), -kUsPerHour);
  EXPECT_EQ(window_start(-1, Window::kDay, utc), -kUsPerDay);
}

TEST(WindowsUtc, ChainingAcrossTheYearBoundary) {
  TimeZone utc;
  TimeUs s = at("2024-12-31T22:00:00Z");
  s = window_next(s, Window::kHour, utc);
  EXPECT_EQ(s, at("2024-12-31T23:00:00Z"));
  s = window_next(s, Window::kHour, utc);
  EXPECT_EQ(s, at("2025-01-01T00:00:00Z"));

  std::vector<std::string> days;
  s = at("2024-12-29T00:00:00Z");
  for (int i = 0; i < 5; ++i) {
    days.push_back(format_rfc3339(s));
    s = window_next(s, Window::kDay, utc);
  }
  EXPECT_EQ(days, (std::vector<std::string>{"2024-12-29T00:00:00Z", "2024-12-30T00:00:00Z",
                                            "2024-12-31T00:00:00Z", "2025-01-01T00:00:00Z",
                                            "2025-01-02T00:00:00Z"}));

  s = at("2024-11-01T00:00:00Z");
  s = window_next(s, Window::kMonth, utc);
  EXPECT_EQ(s, at("2024-12-01T00:00:00Z"));
  s = window_next(s, Window::kMonth, utc);
  EXPECT_EQ(s, at("2025-01-01T00:00:00Z"));
  s = window_next(s, Window::kMonth, utc);
  EXPECT_EQ(s, at("2025-02-01T00:00:00Z"));

  EXPECT_EQ(window_next(at("2024-12-23T00:00:00Z"), Window::kWeek, utc),
            at("2024-12-30T00:00:00Z"));
}

// ---- windows in zones ----

TEST(WindowsBerlin, SpringForwardDayIs23Hours) {
  TimeZone berlin = zone("Europe/Berlin");
  const TimeUs start = window_start(at("2025-03-30T12:00:00Z"), Window::kDay, berlin);
  EXPECT_EQ(start, at("2025-03-29T23:00:00Z"));  // 00:00 CET
  const TimeUs next = window_next(start, Window::kDay, berlin);
  EXPECT_EQ(next, at("2025-03-30T22:00:00Z"));  // 00:00 CEST
  EXPECT_EQ(next - start, 23 * kUsPerHour);
}

TEST(WindowsBerlin, FallBackDayIs25Hours) {
  TimeZone berlin = zone("Europe/Berlin");
  const TimeUs start = window_start(at("2025-10-26T12:00:00Z"), Window::kDay, berlin);
  EXPECT_EQ(start, at("2025-10-25T22:00:00Z"));  // 00:00 CEST
  const TimeUs next = window_next(start, Window::kDay, berlin);
  EXPECT_EQ(next, at("2025-10-26T23:00:00Z"));  // 00:00 CET
  EXPECT_EQ(next - start, 25 * kUsPerHour);
}

TEST(WindowsBerlin, LocalMidnightBelongsToTheNewDay) {
  TimeZone berlin = zone("Europe/Berlin");
  EXPECT_EQ(window_start(at("2025-01-16T23:00:00Z"), Window::kDay, berlin),
            at("2025-01-16T23:00:00Z"));
  EXPECT_EQ(window_start(at("2025-01-16T22:59:59.999999Z"), Window::kDay, berlin),
            at("2025-01-15T23:00:00Z"));
}

TEST(WindowsBerlin, HoursStayUtcHoursAcrossFallBack) {
  TimeZone berlin = zone("Europe/Berlin");
  // Local 02:30 happens twice on 2025-10-26: 00:30Z (CEST) and 01:30Z (CET).
  EXPECT_EQ(window_start(at("2025-10-26T00:30:00Z"), Window::kHour, berlin),
            at("2025-10-26T00:00:00Z"));
  EXPECT_EQ(window_next(at("2025-10-26T00:00:00Z"), Window::kHour, berlin),
            at("2025-10-26T01:00:00Z"));
  EXPECT_EQ(window_start(at("2025-10-26T01:30:00Z"), Window::kHour, berlin),
            at("2025-10-26T01:00:00Z"));
  EXPECT_EQ(window_next(at("2025-10-26T01:00:00Z"), Window::kHour, berlin),
            at("2025-10-26T02:00:00Z"));
}

TEST(WindowsBerlin, WeekStartsAtLocalMondayMidnight) {
  TimeZone berlin = zone("Europe/Berlin");
  // Sunday 2025-01-05 23:30 UTC is already Monday 00:30 in Berlin.
  EXPECT_EQ(window_start(at("2025-01-05T23:30:00Z"), Window::kWeek, berlin),
            at("2025-01-05T23:00:00Z"));
  EXPECT_EQ(window_start(at("2025-01-05T22:30:00Z"), Window::kWeek, berlin),
            at("2024-12-29T23:00:00Z"));
  // The week holding the spring change is 167 hours long.
  const TimeUs week = window_start(at("2025-03-27T12:00:00Z"), Window::kWeek, berlin);
  EXPECT_EQ(week, at("2025-03-23T23:00:00Z"));
  EXPECT_EQ(window_next(week, Window::kWeek, berlin) - week, 167 * kUsPerHour);
}

TEST(WindowsBerlin, DaysChainAcrossTheYearBoundary) {
  TimeZone berlin = zone("Europe/Berlin");
  TimeUs s = window_start(at("2024-12-30T12:00:00Z"), Window::kDay, berlin);
  EXPECT_EQ(s, at("2024-12-29T23:00:00Z"));
  s = window_next(s, Window::kDay, berlin);
  EXPECT_EQ(s, at("2024-12-30T23:00:00Z"));
  s = window_next(s, Window::kDay, berlin);
  EXPECT_EQ(s, at("2024-12-31T23:00:00Z"));  // 2025-01-01 00:00 local
  s = window_next(s, Window::kMonth, berlin);
  EXPECT_EQ(s, at("2025-01-31T23:00:00Z"));
}

TEST(WindowsNewYork, MonthsAroundDst) {
  TimeZone ny = zone("America/New_York");
  // March 2025 begins in EST (-5) and ends in EDT (-4): 31 days less an hour.
  const TimeUs march = window_start(at("2025-03-15T12:00:00Z"), Window::kMonth, ny);
  EXPECT_EQ(march, at("2025-03-01T05:00:00Z"));
  const TimeUs april = window_next(march, Window::kMonth, ny);
  EXPECT_EQ(april, at("2025-04-01T04:00:00Z"));
  EXPECT_EQ(april - march, 31 * kUsPerDay - kUsPerHour);
  // November 2025 begins in EDT and ends in EST: 30 days and an hour.
  const TimeUs november = window_start(at("2025-11-20T00:00:00Z"), Window::kMonth, ny);
  EXPECT_EQ(november, at("2025-11-01T04:00:00Z"));
  const TimeUs december = window_next(november, Window::kMonth, ny);
  EXPECT_EQ(december, at("2025-12-01T05:00:00Z"));
  EXPECT_EQ(december - november, 30 * kUsPerDay + kUsPerHour);
  // The first hours of a UTC month still belong to the previous local month.
  EXPECT_EQ(window_start(at("2025-04-01T03:59:59Z"), Window::kMonth, ny), march);
  // Chaining across the year.
  EXPECT_EQ(window_next(december, Window::kMonth, ny), at("2026-01-01T05:00:00Z"));
}

TEST(WindowsKolkata, HoursStartAtLocalWholeHours) {
  TimeZone kolkata = zone("Asia/Kolkata");
  // 10:10Z is 15:40 IST; that hour began at 15:00 IST = 09:30Z.
  EXPECT_EQ(window_start(at("2025-01-17T10:10:00Z"), Window::kHour, kolkata),
            at("2025-01-17T09:30:00Z"));
  EXPECT_EQ(window_next(at("2025-01-17T09:30:00Z"), Window::kHour, kolkata),
            at("2025-01-17T10:30:00Z"));
  EXPECT_EQ(window_start(at("2025-01-17T10:30:00Z"), Window::kHour, kolkata),
            at("2025-01-17T10:30:00Z"));
  // Minutes are unaffected by a half-hour offset.
  EXPECT_EQ(window_start(at("2025-01-17T10:10:30Z"), Window::kMinute, kolkata),
            at("2025-01-17T10:10:00Z"));
}

TEST(WindowsKolkata, DaysStartAtLocalMidnight) {
  TimeZone kolkata = zone("Asia/Kolkata");
  EXPECT_EQ(window_start(at("2025-01-17T10:10:00Z"), Window::kDay, kolkata),
            at("2025-01-16T18:30:00Z"));
  EXPECT_EQ(window_start(at("2025-01-17T18:29:59Z"), Window::kDay, kolkata),
            at("2025-01-16T18:30:00Z"));
  EXPECT_EQ(window_start(at("2025-01-17T18:30:00Z"), Window::kDay, kolkata),
            at("2025-01-17T18:30:00Z"));
  EXPECT_EQ(window_next(at("2025-01-16T18:30:00Z"), Window::kDay, kolkata),
            at("2025-01-17T18:30:00Z"));
}

TEST(WindowsHavana, SkippedMidnightStartsTheDayAtTheTransition) {
  // Cuba springs forward at local midnight: 2025-03-09 00:00 CST becomes 01:00 CDT at 05:00Z.
  TimeZone havana = zone("America/Havana");
  const TimeUs change = at("2025-03-09T05:00:00Z");
  EXPECT_EQ(window_start(at("2025-03-09T06:00:00Z"), Window::kDay, havana), change);
  EXPECT_EQ(window_start(change, Window::kDay, havana), change);
  EXPECT_EQ(window_start(change - 1, Window::kDay, havana), at("2025-03-08T05:00:00Z"));
  EXPECT_EQ(window_next(at("2025-03-08T05:00:00Z"), Window::kDay, havana), change);
  const TimeUs next = window_next(change, Window::kDay, havana);
  EXPECT_EQ(next, at("2025-03-10T04:00:00Z"));
  EXPECT_EQ(next - change, 23 * kUsPerHour);
}

TEST(WindowsHavana, RepeatedMidnightStartsTheDayAtItsFirstOccurrence) {
  // Cuba falls back from 01:00 CDT to 00:00 CST on 2025-11-02, so local midnight happens at
  // 04:00Z and again at 05:00Z.
  TimeZone havana = zone("America/Havana");
  const TimeUs first = at("2025-11-02T04:00:00Z");
  EXPECT_EQ(window_start(at("2025-11-02T04:30:00Z"), Window::kDay, havana), first);
  EXPECT_EQ(window_start(at("2025-11-02T05:30:00Z"), Window::kDay, havana), first);
  EXPECT_EQ(window_start(first - 1, Window::kDay, havana), at("2025-11-01T04:00:00Z"));
  const TimeUs next = window_next(first, Window::kDay, havana);
  EXPECT_EQ(next, at("2025-11-03T05:00:00Z"));
  EXPECT_EQ(next - first, 25 * kUsPerHour);
}

TEST(WindowsSkippedMidnight, SantiagoSaoPauloBeirut) {
  struct Case {
    const char* zone;
    const char* during;      // an instant on the local day whose midnight was skipped
    const char* transition;  // the day's first instant
  };

  for (const Case& c : {
           Case{"America/Santiago", "2025-09-07T12:00:00Z", "2025-09-07T04:00:00Z"},
           Case{"America/Sao_Paulo", "2018-11-04T12:00:00Z", "2018-11-04T03:00:00Z"},
           Case{"Asia/Beirut", "2025-03-30T12:00:00Z", "2025-03-29T22:00:00Z"},
       }) {
    TimeZone tz = zone(c.zone);
    const TimeUs change = at(c.transition);
    EXPECT_EQ(window_start(at(c.during), Window::kDay, tz), change) << c.zone;
    const TimeUs previous = window_start(change - 1, Window::kDay, tz);
    EXPECT_EQ(window_next(previous, Window::kDay, tz), change) << c.zone;
    EXPECT_EQ(window_next(change, Window::kDay, tz) - change, 23 * kUsPerHour) << c.zone;
  }
}

TEST(WindowsHavana, MonthsStartingOnASkippedOrRepeatedMidnight) {
  TimeZone havana = zone("America/Havana");
  // 2012-04-01 00:00 CST never happened: clocks went to 01:00 CDT at 05:00Z.
  const TimeUs april = window_start(at("2012-04-15T00:00:00Z"), Window::kMonth, havana);
  EXPECT_EQ(april, at("2012-04-01T05:00:00Z"));
  const TimeUs march = window_start(april - 1, Window::kMonth, havana);
  EXPECT_EQ(march, at("2012-03-01T05:00:00Z"));
  EXPECT_EQ(window_next(march, Window::kMonth, havana), april);
  EXPECT_EQ(window_next(april, Window::kMonth, havana), at("2012-05-01T04:00:00Z"));
  // 2026-11-01 00:00 happens twice (04:00Z CDT, 05:00Z CST); the month starts at the first.
  const TimeUs november = window_start(at("2026-11-01T05:30:00Z"), Window::kMonth, havana);
  EXPECT_EQ(november, at("2026-11-01T04:00:00Z"));
  EXPECT_EQ(window_next(at("2026-10-01T04:00:00Z"), Window::kMonth, havana), november);
}

TEST(WindowsLordHowe, HalfHourDstKeepsHoursAPartition) {
  // Lord Howe Island is +10:30 in winter and +11 in summer; on 2025-10-05 local 02:00 (+10:30)
  // becomes 02:30 (+11) at 15:30Z. The local hour 02 then lasts only 30 minutes.
  TimeZone lord_howe = zone("Australia/Lord_Howe");
  const TimeUs change = at("2025-10-04T15:30:00Z");
  ASSERT_EQ(lord_howe.offset_seconds_at(change - 1), 37800);
  ASSERT_EQ(lord_howe.offset_seconds_at(change), 39600);
  EXPECT_EQ(window_start(change - 1, Window::kHour, lord_howe), at("2025-10-04T14:30:00Z"));
  EXPECT_EQ(window_next(at("2025-10-04T14:30:00Z"), Window::kHour, lord_howe), change);
  EXPECT_EQ(window_start(change + kUsPerMinute, Window::kHour, lord_howe), change);
  EXPECT_EQ(window_next(change, Window::kHour, lord_howe), at("2025-10-04T16:00:00Z"));
}

// For every window kind and a set of awkward zones, the windows tile time: each instant lies in
// [start, next), a start is its own start, and walking next from one start reaches the start
// of every later instant.
TEST(WindowsProperty, WindowsTileTime) {
  for (std::string_view name : {"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata",
                                "America/Havana", "Australia/Lord_Howe", "America/St_Johns"}) {
    TimeZone tz = zone(name);
    for (Window w : {Window::kMinute, Window::kHour, Window::kDay, Window::kWeek, Window::kMonth}) {
      // Around each zone's autumn change and spring change, in 7.5-minute steps.
      for (std::string_view from :
           {"2025-03-06T00:00:00Z", "2025-10-01T00:00:00Z", "2025-10-30T00:00:00Z"}) {
        const TimeUs t0 = at(from);
        TimeUs s = window_start(t0, w, tz);
        for (TimeUs t = t0; t < t0 + 10 * kUsPerDay; t += 450 * kUsPerSecond) {
          const TimeUs start = window_start(t, w, tz);
          while (window_next(s, w, tz) <= t) {
            s = window_next(s, w, tz);
          }
          ASSERT_EQ(start, s) << name << " " << window_name(w) << " " << format_rfc3339(t);
          ASSERT_LE(start, t);
          ASSERT_GT(window_next(start, w, tz), t);
          ASSERT_EQ(window_start(start, w, tz), start);
        }
      }
    }
  }
}

// ---- windows_align_to_hours ----

TEST(WindowsAlignToHours, UtcAlways) {
  EXPECT_TRUE(windows_align_to_hours(TimeZone(), 0, at("2099-01-01T00:00:00Z")));
}

TEST(WindowsAlignToHours, WholeHourZones) {
  EXPECT_TRUE(windows_align_to_hours(zone("Europe/Berlin"), at("2000-01-01T00:00:00Z"),
                                     at("2030-01-01T00:00:00Z")));
  EXPECT_TRUE(windows_align_to_hours(zone("America/New_York"), at("2025-01-01T00:00:00Z"),
                                     at("2026-01-01T00:00:00Z")));
}

TEST(WindowsAlignToHours, FractionalOffsets) {
  EXPECT_FALSE(windows_align_to_hours(zone("Asia/Kolkata"), at("2025-01-01T00:00:00Z"),
                                      at("2025-01-02T00:00:00Z")));
  EXPECT_FALSE(windows_align_to_hours(zone("America/St_Johns"), at("2025-01-01T00:00:00Z"),
                                      at("2026-01-01T00:00:00Z")));
  // Lord Howe is +11 in summer but +10:30 in winter.
  EXPECT_TRUE(windows_align_to_hours(zone("Australia/Lord_Howe"), at("2025-01-01T00:00:00Z"),
                                     at("2025-02-01T00:00:00Z")));
  EXPECT_FALSE(windows_align_to_hours(zone("Australia/Lord_Howe"), at("2025-01-01T00:00:00Z"),
                                      at("2025-07-01T00:00:00Z")));
}

TEST(WindowsAlignToHours, ChangeOffTheHour) {
  // Moncton (-4/-3) changed clocks at 00:01 local until 2006, which is not a UTC whole hour.
  TimeZone moncton = zone("America/Moncton");
  EXPECT_FALSE(
      windows_align_to_hours(moncton, at("2005-01-01T00:00:00Z"), at("2006-01-01T00:00:00Z")));
  EXPECT_TRUE(
      windows_align_to_hours(moncton, at("2010-01-01T00:00:00Z"), at("2011-01-01T00:00:00Z")));
}

TEST(WindowsAlignToHours, EmptyRange) {
  EXPECT_TRUE(windows_align_to_hours(zone("Asia/Kolkata"), at("2025-01-01T00:00:00Z"),
                                     at("2025-01-01T00:00:00Z")));
}

}  // namespace

TEST(FloorTo, RoundsTowardThePastAlsoBeforeTheEpoch) {
  static_assert(floor_to(0, kUsPerMinute) == 0);
  EXPECT_EQ(floor_to(kUsPerMinute - 1, kUsPerMinute), 0);
  EXPECT_EQ(floor_to(kUsPerMinute, kUsPerMinute), kUsPerMinute);
  EXPECT_EQ(floor_to(-1, kUsPerMinute), -kUsPerMinute);
  EXPECT_EQ(floor_to(-kUsPerMinute, kUsPerMinute), -kUsPerMinute);
  EXPECT_EQ(ceil_to(1, kUsPerHour), kUsPerHour);
  EXPECT_EQ(ceil_to(kUsPerHour, kUsPerHour), kUsPerHour);
  EXPECT_EQ(ceil_to(-1, kUsPerHour), 0);
  EXPECT_EQ(ceil_to(-kUsPerHour - 1, kUsPerHour), -kUsPerHour);
}

}  // namespace tally::core
