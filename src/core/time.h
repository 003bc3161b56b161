// Time in Tally's core: instants, RFC 3339 text, and calendar windows in IANA time zones.
//
// An instant is an int64 count of microseconds since the Unix epoch (UTC). Core never reads a
// clock: "now" always arrives as a parameter. Calendar windows (day, week, month) follow the
// wall clock of a time zone, so a day may last 23 or 25 hours across a DST change; minute and
// hour windows are fixed spans of UTC time, except that an hour in a zone whose offset is not
// a whole number of hours (Asia/Kolkata, +05:30) starts at that zone's wall-clock hour.
//
// Weeks start on Monday (ISO 8601).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <tally/status.h>
#include <tally/types.h>

namespace date {
class time_zone;
}

namespace tally::core {

using TimeUs = std::int64_t;  // microseconds since 1970-01-01T00:00:00Z

inline constexpr TimeUs kUsPerSecond = 1'000'000;
inline constexpr TimeUs kUsPerMinute = 60 * kUsPerSecond;
inline constexpr TimeUs kUsPerHour = 60 * kUsPerMinute;
inline constexpr TimeUs kUsPerDay = 24 * kUsPerHour;

// t rounded down (floor_to) or up (ceil_to) to a multiple of `unit` since the epoch, also for
// t before it. REQUIRES: unit > 0.
constexpr TimeUs floor_to(TimeUs t, TimeUs unit) {
  return t - (((t % unit) + unit) % unit);
}

constexpr TimeUs ceil_to(TimeUs t, TimeUs unit) {
  const TimeUs f = floor_to(t, unit);
  return f == t ? t : f + unit;
}

// Parses an RFC 3339 date-time ("2025-01-17T14:30:00Z", "2025-01-17T14:30:00.123+02:00",
// lower-case 't'/'z' and a space separator accepted). Fractions beyond microseconds are
// truncated. Errors: kInvalidArgument naming what is wrong. Years 1970..9999 only.
Result<TimeUs> parse_rfc3339(std::string_view text);

// Formats as UTC RFC 3339: "2025-01-17T14:30:00Z", with ".ffffff" only when the instant has a
// sub-second part (trailing zeros trimmed to milliseconds or microseconds).
std::string format_rfc3339(TimeUs t);

// The public window (include/tally/types.h), whose texts are tally::to_string and
// tally::parse_window_name.
using Window = tally::Window;

// "minute" | "hour" | "day" | "week" | "month". Errors: kInvalidArgument naming the text.
Result<Window> parse_window(std::string_view name);
// The same as tally::to_string(w).
std::string_view window_name(Window w);

// An IANA time zone, or UTC. Cheap to copy; the zone data is owned by the tz database.
class TimeZone {
 public:
  TimeZone() = default;  // UTC
  // Looks up an IANA name ("Europe/Berlin", "UTC", "Etc/GMT+5"). Errors: kInvalidArgument.
  static Result<TimeZone> find(std::string_view name);

  bool is_utc() const { return zone_ == nullptr; }

  std::string name() const;
  // Offset of local wall-clock time from UTC at instant t, in seconds.
  std::int64_t offset_seconds_at(TimeUs t) const;

  // The tz database zone, or nullptr for UTC. For core's own calendar code.
  const date::time_zone* zone() const { return zone_; }

 private:
  explicit TimeZone(const date::time_zone* zone) : zone_(zone) {}

  const date::time_zone* zone_ = nullptr;
};

// The start of the window of kind w that contains instant t, in zone tz.
TimeUs window_start(TimeUs t, Window w, const TimeZone& tz);
// The start of the window after the one starting at `start`. REQUIRES: start is a window start.
TimeUs window_next(TimeUs start, Window w, const TimeZone& tz);

// The billing period containing t: monthly from the local day of month of `anchor_us`, at
// midnight in tz, clamped to the month's last day (an anchor on the 31st renews on April 30th
// and February 28th or 29th, and on the 31st again where a month has one).
// REQUIRES: start and end are not null.
void billing_period_span(TimeUs t, TimeUs anchor_us, const TimeZone& tz, TimeUs* start,
                         TimeUs* end);

// True when every window boundary of kind w in zone tz falls on a UTC hour boundary for
// instants in [from, to): then the window can be assembled from hour aggregates alone.
bool windows_align_to_hours(const TimeZone& tz, TimeUs from, TimeUs to);

}  // namespace tally::core
