// Instants, RFC 3339 text and calendar windows (see time.h for the contract).
//
// parse_rfc3339 runs once per ingested event, so it is a fixed-layout scanner: no allocation on
// success, no locale, no regex. Calendar arithmetic uses Howard Hinnant's date library; zone
// rules come from the OS tz database through date/tz.h.
//
// Window boundaries, precisely:
//   minute, hour: instants whose local wall time (UTC + the offset in force) is a whole minute
//     or hour, plus every instant at which the zone's UTC offset changes. In a zone whose offset
//     is a whole number of hours these are exactly the UTC minute and hour boundaries; in
//     Asia/Kolkata an hour starts at local :00 (UTC :30). Counting offset changes as boundaries
//     keeps the windows a partition even when a change lands mid-hour (Australia/Lord_Howe's
//     30-minute DST), and makes the repeated hour of a fall-back its own window.
//   day, week, month: the first instant of the local calendar day, ISO week (Monday) or month.
//     When local midnight does not exist (America/Havana jumps 00:00 -> 01:00) the window
//     starts at the transition; when it occurs twice, at its first occurrence.
// The date library reads a zone's file on first use and may throw then; TimeZone::find forces
// that first use inside its try block, so later calls on a found zone do not throw.
#include "core/time.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>

#include <date/date.h>
#include <date/tz.h>

#include "core/quote.h"

namespace tally::core {
namespace {

using Micros = std::chrono::microseconds;
using SysUs = date::sys_time<Micros>;
using LocalUs = date::local_time<Micros>;

constexpr TimeUs floor_div(TimeUs a, TimeUs b) {
  TimeUs q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

constexpr TimeUs floor_mod(TimeUs a, TimeUs b) {
  return a - floor_div(a, b) * b;
}

// Error messages quote the offending text, shortened so a hostile body cannot bloat logs.
Status time_error(std::string_view text, std::string_view what) {
  return quoted_error("invalid RFC 3339 timestamp", text, what);
}

// Reads `n` ASCII digits at text[pos..pos+n); false when any is not a digit.
bool read_digits(std::string_view text, std::size_t pos, std::size_t n, int* out) {
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

TimeUs to_us(SysUs t) {
  return t.time_since_epoch().count();
}

SysUs from_us(TimeUs t) {
  return SysUs{Micros{t}};
}

// Seconds since the epoch of a zone record boundary, clamped so it can be compared with an
// instant in microseconds without overflow (the first and last records reach far out).
TimeUs boundary_us(date::sys_seconds s) {
  constexpr std::int64_t kSecondsLimit = INT64_MAX / kUsPerSecond;
  const std::int64_t sec = s.time_since_epoch().count();
  if (sec >= kSecondsLimit) {
    return INT64_MAX;
  }
  if (sec <= -kSecondsLimit) {
    return INT64_MIN;
  }
  return sec * kUsPerSecond;
}

// The local calendar day containing instant t.
date::local_days local_day_of(TimeUs t, const date::time_zone* zone) {
  if (zone == nullptr) {
    return date::local_days{date::days{static_cast<int>(floor_div(t, kUsPerDay))}};
  }
  return date::floor<date::days>(zone->to_local(from_us(t)));
}

// The first instant of local day d: its midnight, or the transition that skips that midnight.
TimeUs day_start_utc(date::local_days d, const date::time_zone* zone) {
  if (zone == nullptr) {
    return static_cast<TimeUs>(d.time_since_epoch().count()) * kUsPerDay;
  }
  return to_us(zone->to_sys(LocalUs{d}, date::choose::earliest));
}

// The first local day of the calendar window of kind w (day, week or month) containing d.
date::local_days calendar_window_day(date::local_days d, Window w) {
  switch (w) {
    case Window::kWeek: {
      // weekday - Monday is a count of days in 0..6, Monday giving 0.
      return d - (date::weekday{d} - date::Monday);
    }
    case Window::kMonth: {
      const date::year_month_day ymd{d};
      return date::local_days{ymd.year() / ymd.month() / 1};
    }
    default:
      return d;
  }
}

TimeUs span_us(Window w) {
  return w == Window::kMinute ? kUsPerMinute : kUsPerHour;
}

// Latest minute/hour boundary at or before t (see the file comment for what a boundary is).
TimeUs fixed_window_start(TimeUs t, TimeUs span, const date::time_zone* zone) {
  if (zone == nullptr) {
    return t - floor_mod(t, span);
  }
  const date::sys_info info = zone->get_info(from_us(t));
  const TimeUs offset_us = info.offset.count() * kUsPerSecond;
  const TimeUs candidate = t - floor_mod(t + offset_us, span);
  // Walk back over records with the same offset (a change of abbreviation alone is no
  // boundary); the first record with another offset ends at a boundary.
  date::sys_seconds run_begin = info.begin;
  while (candidate < boundary_us(run_begin)) {
    const date::sys_info prev = zone->get_info(run_begin - std::chrono::seconds{1});
    if (prev.offset != info.offset) {
      return boundary_us(run_begin);
    }
    run_begin = prev.begin;
  }
  return candidate;
}

// Earliest minute/hour boundary after `start`.
TimeUs fixed_window_next(TimeUs start, TimeUs span, const date::time_zone* zone) {
  if (zone == nullptr) {
    return start - floor_mod(start, span) + span;
  }
  const date::sys_info info = zone->get_info(from_us(start));
  const TimeUs offset_us = info.offset.count() * kUsPerSecond;
  const TimeUs candidate = start - floor_mod(start + offset_us, span) + span;
  date::sys_seconds run_end = info.end;
  while (boundary_us(run_end) < candidate) {
    const date::sys_info next = zone->get_info(run_end);
    if (next.offset != info.offset) {
      return boundary_us(run_end);
    }
    run_end = next.end;
  }
  return candidate;
}

// The fields of a timestamp up to its seconds.
struct DateTime {
  int year = 0;
  int month = 0;
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
};

// The bytes of the fixed layout up to the seconds: YYYY-MM-DDTHH:MM:SS.
constexpr std::size_t kSecondsEnd = 19;

// The fixed layout up to the seconds, at the start of `text` (which is longer); returns why
// not, or nullptr.
const char* read_date_time(std::string_view text, DateTime* t) {
  if (!read_digits(text, 0, 4, &t->year) || text[4] != '-' || !read_digits(text, 5, 2, &t->month) ||
      text[7] != '-' || !read_digits(text, 8, 2, &t->day)) {
    return "date must be YYYY-MM-DD";
  }
  const char sep = text[10];
  if (sep != 'T' && sep != 't' && sep != ' ') {
    return "date and time must be separated by 'T'";
  }
  if (!read_digits(text, 11, 2, &t->hour) || text[13] != ':' ||
      !read_digits(text, 14, 2, &t->minute) || text[16] != ':' ||
      !read_digits(text, 17, 2, &t->second)) {
    return "time must be HH:MM:SS";
  }
  return nullptr;
}

// Whether each field is in its range, the day in its month (*ymd); returns why not, or nullptr.
const char* check_date_time(const DateTime& t, date::year_month_day* ymd) {
  if (t.year < 1970) {
    return "year must be 1970..9999";
  }
  if (t.month < 1 || t.month > 12) {
    return "month must be 01..12";
  }
  *ymd = date::year_month_day{date::year{t.year}, date::month{static_cast<unsigned>(t.month)},
                              date::day{static_cast<unsigned>(t.day)}};
  if (t.day < 1 || !ymd->ok()) {
    return "day does not exist in that month";
  }
  if (t.hour > 23) {
    return "hour must be 00..23";
  }
  if (t.minute > 59) {
    return "minute must be 00..59";
  }
  // Leap seconds (":60") are refused: Unix time has no place for them.
  if (t.second > 59) {
    return "second must be 00..59";
  }
  return nullptr;
}

// An optional fraction of a second at text[*pos] ('.' and digits), moving *pos past it; returns
// why not, or nullptr.
const char* read_fraction(std::string_view text, std::size_t* pos, TimeUs* fraction_us) {
  if (text[*pos] != '.') {
    return nullptr;
  }
  ++*pos;
  const std::size_t digits_begin = *pos;
  TimeUs scale = 100'000;
  while (*pos < text.size() && text[*pos] >= '0' && text[*pos] <= '9') {
    // Digits past microseconds are checked but truncated, as documented.
    *fraction_us += (text[*pos] - '0') * scale;
    scale /= 10;
    ++*pos;
  }
  return *pos == digits_begin ? "'.' must be followed by fraction digits" : nullptr;
}

// The offset that ends the text from text[pos]: Z, +HH:MM or -HH:MM; returns why not, or
// nullptr.
const char* read_offset(std::string_view text, std::size_t pos, TimeUs* offset_us) {
  if (pos >= text.size()) {
    return "missing time zone offset (Z or +HH:MM)";
  }
  const char zone = text[pos];
  if (zone == 'Z' || zone == 'z') {
    ++pos;
  } else if (zone == '+' || zone == '-') {
    int offset_hours = 0;
    int offset_minutes = 0;
    if (text.size() - pos != 6 || !read_digits(text, pos + 1, 2, &offset_hours) ||
        text[pos + 3] != ':' || !read_digits(text, pos + 4, 2, &offset_minutes)) {
      return "offset must be Z, +HH:MM or -HH:MM";
    }
    if (offset_hours > 23 || offset_minutes > 59) {
      return "offset out of range";
    }
    *offset_us = offset_hours * kUsPerHour + offset_minutes * kUsPerMinute;
    if (zone == '-') {
      *offset_us = -*offset_us;
    }
    pos += 6;
  } else {
    return "offset must be Z, +HH:MM or -HH:MM";
  }
  return pos != text.size() ? "unexpected text after the offset" : nullptr;
}

// Why `text` is not a timestamp Tally takes, or nullptr with its instant in *out.
const char* parse_timestamp(std::string_view text, TimeUs* out) {
  if (text.size() < kSecondsEnd + 1) {
    return "too short; expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset";
  }
  DateTime t;
  date::year_month_day ymd;
  std::size_t pos = kSecondsEnd;
  TimeUs fraction_us = 0;
  TimeUs offset_us = 0;
  const char* why = read_date_time(text, &t);
  why = why != nullptr ? why : check_date_time(t, &ymd);
  why = why != nullptr ? why : read_fraction(text, &pos, &fraction_us);
  why = why != nullptr ? why : read_offset(text, pos, &offset_us);
  if (why != nullptr) {
    return why;
  }
  const TimeUs days = date::sys_days{ymd}.time_since_epoch().count();
  *out = days * kUsPerDay + t.hour * kUsPerHour + t.minute * kUsPerMinute +
         t.second * kUsPerSecond + fraction_us - offset_us;
  return nullptr;
}

}  // namespace

Result<TimeUs> parse_rfc3339(std::string_view text) {
  TimeUs t = 0;
  if (const char* why = parse_timestamp(text, &t); why != nullptr) {
    return time_error(text, why);
  }
  return t;
}

std::string format_rfc3339(TimeUs t) {
  const TimeUs days = floor_div(t, kUsPerDay);
  TimeUs rest = t - days * kUsPerDay;
  const date::year_month_day ymd{date::sys_days{date::days{static_cast<int>(days)}}};
  const int hour = static_cast<int>(rest / kUsPerHour);
  rest %= kUsPerHour;
  const int minute = static_cast<int>(rest / kUsPerMinute);
  rest %= kUsPerMinute;
  const int second = static_cast<int>(rest / kUsPerSecond);
  const int micros = static_cast<int>(rest % kUsPerSecond);

  const int year = int{ymd.year()};
  char buf[48];
  int n = 0;
  if (year < 0 || year > 9999) {  // not on the hot path: answers carry times of this era
    n = std::snprintf(buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d", year,
                      unsigned{ymd.month()}, unsigned{ymd.day()}, hour, minute, second);
  } else {
    // Written digit by digit: answers carry several times each, and snprintf was a measurable
    // part of a check's cost.
    auto put = [&buf, &n](int v, int digits) {
      for (int i = digits - 1; i >= 0; --i) {
        buf[n + i] = static_cast<char>('0' + v % 10);
        v /= 10;
      }
      n += digits;
    };
    auto sep = [&buf, &n](char c) {
      buf[n++] = c;
    };
    put(year, 4);
    sep('-');
    put(static_cast<int>(unsigned{ymd.month()}), 2);
    sep('-');
    put(static_cast<int>(unsigned{ymd.day()}), 2);
    sep('T');
    put(hour, 2);
    sep(':');
    put(minute, 2);
    sep(':');
    put(second, 2);
  }
  if (micros != 0) {
    buf[n++] = '.';
    const bool millis = micros % 1000 == 0;
    int v = millis ? micros / 1000 : micros;
    const int digits = millis ? 3 : 6;
    for (int i = digits - 1; i >= 0; --i) {
      buf[n + i] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
    n += digits;
  }
  std::string out(buf, static_cast<std::size_t>(n));
  out.push_back('Z');
  return out;
}

Result<Window> parse_window(std::string_view name) {
  if (std::optional<Window> w = parse_window_name(name)) {
    return *w;
  }
  return Status::invalid_argument("unknown window \"" + std::string(name.substr(0, 64)) +
                                  "\"; expected minute, hour, day, week or month");
}

std::string_view window_name(Window w) {
  return to_string(w);
}

Result<TimeZone> TimeZone::find(std::string_view name) {
  if (name == "UTC" || name == "Etc/UTC" || name == "Z") {
    return TimeZone();
  }
  if (name.empty()) {
    return Status::invalid_argument("time zone name is empty");
  }
  // date/tz reports unknown names and unreadable zone files by throwing; this is the one place
  // that calls into it with untrusted input, so the exceptions stop here.
  try {
    const date::time_zone* zone = date::locate_zone(name);
    // Loads the zone's rules now, so later queries on this zone cannot throw.
    static_cast<void>(zone->get_info(date::sys_seconds{}));
    return TimeZone(zone);
  } catch (const std::exception& e) {
    return Status::invalid_argument("unknown time zone \"" + std::string(name.substr(0, 64)) +
                                    "\": " + e.what());
  } catch (...) {
    return Status::invalid_argument("unknown time zone \"" + std::string(name.substr(0, 64)) +
                                    "\"");
  }
}

std::string TimeZone::name() const {
  if (zone_ == nullptr) {
    return "UTC";
  }
  return std::string(zone_->name());
}

std::int64_t TimeZone::offset_seconds_at(TimeUs t) const {
  if (zone_ == nullptr) {
    return 0;
  }
  return zone_->get_info(from_us(t)).offset.count();
}

TimeUs window_start(TimeUs t, Window w, const TimeZone& tz) {
  const date::time_zone* zone = tz.zone();
  if (w == Window::kMinute || w == Window::kHour) {
    return fixed_window_start(t, span_us(w), zone);
  }
  const date::local_days first_day = calendar_window_day(local_day_of(t, zone), w);
  return day_start_utc(first_day, zone);
}

TimeUs window_next(TimeUs start, Window w, const TimeZone& tz) {
  const date::time_zone* zone = tz.zone();
  if (w == Window::kMinute || w == Window::kHour) {
    return fixed_window_next(start, span_us(w), zone);
  }
  const date::local_days first_day = calendar_window_day(local_day_of(start, zone), w);
  date::local_days next_day = first_day;
  switch (w) {
    case Window::kWeek:
      next_day = first_day + date::days{7};
      break;
    case Window::kMonth: {
      const date::year_month_day ymd{first_day};
      next_day = date::local_days{(ymd.year() / ymd.month() + date::months{1}) / 1};
      break;
    }
    default:
      next_day = first_day + date::days{1};
      break;
  }
  return day_start_utc(next_day, zone);
}

bool windows_align_to_hours(const TimeZone& tz, TimeUs from, TimeUs to) {
  const date::time_zone* zone = tz.zone();
  if (zone == nullptr || from >= to) {
    return true;
  }
  // Every boundary is a local whole hour or an offset change (see the file comment). Local
  // whole hours are UTC whole hours while the offset is a whole number of hours; an offset
  // change must itself fall on a UTC hour. Records number a few per year, so this is short.
  date::sys_info info = zone->get_info(from_us(from));
  while (true) {
    if (info.offset.count() % 3600 != 0) {
      return false;
    }
    const TimeUs end_us = boundary_us(info.end);
    if (end_us >= to) {
      return true;
    }
    const date::sys_info next = zone->get_info(info.end);
    if (next.offset != info.offset && end_us % kUsPerHour != 0) {
      return false;
    }
    info = next;
  }
}

}  // namespace tally::core

namespace tally::core {
namespace {

// The local day in month (y, m) on which a billing period anchored on day-of-month `anchor_day`
// starts: the anchor day, or the month's last day when the month is shorter.
date::local_days billing_day(date::year y, date::month m, unsigned anchor_day) {
  const unsigned last = static_cast<unsigned>((y / m / date::last).day());
  return date::local_days{y / m / date::day{std::min(anchor_day, last)}};
}

}  // namespace

void billing_period_span(TimeUs t, TimeUs anchor_us, const TimeZone& tz, TimeUs* start,
                         TimeUs* end) {
  const date::time_zone* zone = tz.zone();
  const unsigned anchor_day =
      static_cast<unsigned>(date::year_month_day{local_day_of(anchor_us, zone)}.day());
  const date::year_month_day today{local_day_of(t, zone)};
  date::year_month ym = today.year() / today.month();
  date::local_days first = billing_day(ym.year(), ym.month(), anchor_day);
  if (day_start_utc(first, zone) > t) {
    ym -= date::months{1};
    first = billing_day(ym.year(), ym.month(), anchor_day);
  }
  const date::year_month next = ym + date::months{1};
  *start = day_start_utc(first, zone);
  *end = day_start_utc(billing_day(next.year(), next.month(), anchor_day), zone);
}

}  // namespace tally::core
