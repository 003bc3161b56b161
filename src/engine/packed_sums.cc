// An encoded entry of a segment (in memory only; the store keeps whole AggStates, see
// docs/storage.md):
//
//   varint  (start - the previous entry's start) / kUsPerMinute; the segment's first entry
//           counts from the segment's `first`, so it writes 0
//   byte    header: bits 0-3 k, the values below are the Decimal units divided by 10^k (0..9);
//           bit 4 uniform, min == max == latest and sum == count x min, so one value follows;
//           bit 5 wide, the values are 16-byte integers instead of zigzag varints
//   zigzag  count
//   values  uniform: min; otherwise sum, min, max, latest
//   zigzag  latest_time_us - start
//   zigzag  latest_seq - the previous entry's latest_seq (0 for a segment's first), wrapping
//
// A minute with one event of an integer value, the common case, takes 8 to 12 bytes.
#include "engine/packed_sums.h"

#include <limits>

#include "common/assert.h"

namespace tally::engine {

namespace {

constexpr std::int64_t kPow10[10] = {1,       10,        100,        1'000,       10'000,
                                     100'000, 1'000'000, 10'000'000, 100'000'000, 1'000'000'000};
constexpr std::uint8_t kUniform = 0x10;
constexpr std::uint8_t kWide = 0x20;

bool fits_int64(__int128 v) {
  return v >= std::numeric_limits<std::int64_t>::min() &&
         v <= std::numeric_limits<std::int64_t>::max();
}

// The largest k <= 9 such that 10^k divides v (9 for zero).
int decimal_zeros(__int128 v) {
  if (fits_int64(v)) {
    auto n = static_cast<std::int64_t>(v);  // 64-bit division by a constant is cheap
    if (n % kPow10[9] == 0) {
      return 9;
    }
    int k = 0;
    while (n % 10 == 0) {
      n /= 10;
      ++k;
    }
    return k;
  }
  int k = 0;
  while (k < 9 && v % 10 == 0) {
    v /= 10;
    ++k;
  }
  return k;
}

// Whether one value stands for all four: every event had the same value.
bool uniform(const core::AggState& s) {
  if (s.min != s.max || s.max != s.latest) {
    return false;
  }
  __int128 product = 0;
  return !__builtin_mul_overflow(s.min.units, static_cast<__int128>(s.count), &product) &&
         product == s.sum.units;
}

void put_entry(std::string& out, core::TimeUs gap_us, std::uint64_t prev_seq, core::TimeUs start,
               const core::AggState& s) {
  TALLY_DASSERT(gap_us >= 0 && gap_us % core::kUsPerMinute == 0, "entries are in minute order");
  common::put_varint(out, static_cast<std::uint64_t>(gap_us / core::kUsPerMinute));
  const bool one = uniform(s);
  const __int128 values[4] = {s.sum.units, s.min.units, s.max.units, s.latest.units};
  const __int128* first = one ? &values[1] : &values[0];
  const int n = one ? 1 : 4;
  int k = 9;
  for (int i = 0; i < n && k > 0; ++i) {
    k = std::min(k, decimal_zeros(first[i]));
  }
  bool wide = false;
  for (int i = 0; i < n; ++i) {
    wide = wide || !fits_int64(first[i] / kPow10[k]);
  }
  out.push_back(static_cast<char>(k | (one ? kUniform : 0) | (wide ? kWide : 0)));
  common::put_zigzag(out, s.count);
  for (int i = 0; i < n; ++i) {
    const __int128 scaled = first[i] / kPow10[k];
    if (wide) {
      common::put_i128(out, scaled);
    } else {
      common::put_zigzag(out, static_cast<std::int64_t>(scaled));
    }
  }
  common::put_zigzag(out, s.latest_time_us - start);
  common::put_zigzag(out, static_cast<std::int64_t>(s.latest_seq - prev_seq));
}

}  // namespace

bool PackedSums::Cursor::next(core::TimeUs* start, core::AggState* state) {
  if (in_.done()) {
    return false;
  }
  std::uint64_t gap = 0;
  std::uint8_t header = 0;
  std::int64_t count = 0;
  bool ok = in_.get_varint(&gap) && in_.get_u8(&header) && in_.get_zigzag(&count);
  const int k = header & 0x0F;
  const int n = (header & kUniform) != 0 ? 1 : 4;
  __int128 values[4] = {0, 0, 0, 0};
  for (int i = 0; ok && i < n; ++i) {
    std::int64_t narrow = 0;
    ok = (header & kWide) != 0 ? in_.get_i128(&values[i]) : in_.get_zigzag(&narrow);
    if ((header & kWide) == 0) {
      values[i] = narrow;
    }
    values[i] *= kPow10[k];
  }
  std::int64_t time_delta = 0;
  std::int64_t seq_delta = 0;
  ok = ok && in_.get_zigzag(&time_delta) && in_.get_zigzag(&seq_delta);
  TALLY_DASSERT(ok && k <= 9, "a packed segment decodes");
  if (!ok) {
    return false;
  }
  start_ += static_cast<core::TimeUs>(gap) * core::kUsPerMinute;
  seq_ += static_cast<std::uint64_t>(seq_delta);
  *start = start_;
  state->count = count;
  if (n == 1) {
    state->min.units = values[0];
    state->max.units = values[0];
    state->latest.units = values[0];
    state->sum.units = values[0] * count;
  } else {
    state->sum.units = values[0];
    state->min.units = values[1];
    state->max.units = values[2];
    state->latest.units = values[3];
  }
  state->latest_time_us = start_ + time_delta;
  state->latest_seq = seq_;
  return true;
}

void PackedSums::append(Segment* s, core::TimeUs start, const core::AggState& state) {
  if (s->entries == 0) {
    s->first = start;
    s->last = start;
  }
  put_entry(s->bytes, start - s->last, s->entries == 0 ? 0 : s->last_seq, start, state);
  s->last = start;
  s->last_seq = state.latest_seq;
  ++s->entries;
}

PackedSums::Segment PackedSums::encode(const Entry* entries, std::size_t n) {
  Segment s;
  for (std::size_t i = 0; i < n; ++i) {
    append(&s, entries[i].first, entries[i].second);
  }
  s.bytes.shrink_to_fit();
  return s;
}

void PackedSums::seal_oldest() {
  const Entry& e = tail_.front();
  if (segments_.empty() || segments_.back().entries >= kSegmentEntries) {
    if (!segments_.empty()) {
      segments_.back().bytes.shrink_to_fit();
    }
    segments_.emplace_back();
  }
  append(&segments_.back(), e.first, e.second);
  tail_.erase(tail_.begin());
}

bool PackedSums::merge(core::TimeUs start, const core::AggState& delta) {
  TALLY_DASSERT(start % core::kUsPerMinute == 0, "entries start on minutes");
  if (in_segments(start)) {
    return merge_into_segment(start, delta);
  }
  auto it = entry_at_or_after(tail_, start);
  if (it != tail_.end() && it->first == start) {
    it->second.merge(delta);
    return false;
  }
  tail_.emplace(it, start, core::AggState{})->second.merge(delta);
  while (tail_.size() > kTailMax) {
    seal_oldest();
  }
  return true;
}

bool PackedSums::merge_into_segment(core::TimeUs start, const core::AggState& delta) {
  // The last segment starting at or before `start` holds it or takes it (the first segment when
  // it comes before them all).
  auto it = std::partition_point(segments_.begin(), segments_.end(),
                                 [start](const Segment& s) { return s.first <= start; });
  if (it != segments_.begin()) {
    --it;
  }
  const auto index = static_cast<std::size_t>(it - segments_.begin());
  thread_local std::vector<Entry> entries;
  entries.clear();
  Entry e;
  for (Cursor c(*it); c.next(&e.first, &e.second);) {
    entries.push_back(e);
  }
  auto pos = entry_at_or_after(entries, start);
  const bool made = pos == entries.end() || pos->first != start;
  if (made) {
    pos = entries.emplace(pos, start, core::AggState{});
  }
  pos->second.merge(delta);
  if (entries.size() <= kSegmentEntries) {
    segments_[index] = encode(entries.data(), entries.size());
    return made;
  }
  const std::size_t half = entries.size() / 2;
  segments_[index] = encode(entries.data(), half);
  segments_.insert(segments_.begin() + static_cast<std::ptrdiff_t>(index) + 1,
                   encode(entries.data() + half, entries.size() - half));
  return made;
}

bool PackedSums::get(core::TimeUs start, core::AggState* out) const {
  if (!in_segments(start)) {
    auto it = entry_at_or_after(tail_, start);
    if (it == tail_.end() || it->first != start) {
      return false;
    }
    *out = it->second;
    return true;
  }
  auto it = segment_reaching(start);  // exists: start is not after the last segment's end
  if (it->first > start) {
    return false;
  }
  Entry e;
  for (Cursor c(*it); c.next(&e.first, &e.second) && e.first <= start;) {
    if (e.first == start) {
      *out = e.second;
      return true;
    }
  }
  return false;
}

std::optional<core::TimeUs> PackedSums::first_in(core::TimeUs from, core::TimeUs to) const {
  if (from >= to) {
    return std::nullopt;
  }
  auto it = segment_reaching(from);
  if (it != segments_.end()) {
    // Its last entry is at or after `from`, so the walk finds one.
    Entry e;
    for (Cursor c(*it); c.next(&e.first, &e.second);) {
      if (e.first >= from) {
        return e.first < to ? std::optional<core::TimeUs>(e.first) : std::nullopt;
      }
    }
  }
  auto t = entry_at_or_after(tail_, from);
  if (t != tail_.end() && t->first < to) {
    return t->first;
  }
  return std::nullopt;
}

std::size_t PackedSums::size() const {
  std::size_t n = tail_.size();
  for (const auto& s : segments_) {
    n += s.entries;
  }
  return n;
}

}  // namespace tally::engine
