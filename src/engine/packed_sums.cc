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

#include <cstring>
#include <limits>

#include "common/assert.h"
#include "common/coding.h"
#include "engine/codec.h"

namespace tally::engine {

namespace {

constexpr std::int64_t kPow10[10] = {1,       10,        100,        1'000,       10'000,
                                     100'000, 1'000'000, 10'000'000, 100'000'000, 1'000'000'000};
constexpr std::uint8_t kUniform = 0x10;
constexpr std::uint8_t kWide = 0x20;

// An entry's bytes, gathered before one append to the segment (at most 1 + 1 + 10 + 4 x 16 +
// 10 + 10 bytes).
class EntryBytes {
 public:
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      buf_[n_++] = static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    buf_[n_++] = static_cast<char>(v);
  }

  void zigzag(std::int64_t v) {
    varint((static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
  }

  void byte(std::uint8_t b) { buf_[n_++] = static_cast<char>(b); }

  void wide(__int128 v) {
    std::string s;
    common::put_i128(s, v);
    std::memcpy(buf_ + n_, s.data(), s.size());
    n_ += s.size();
  }

  void append_to(std::string& out) const { out.append(buf_, n_); }

 private:
  char buf_[112];
  std::size_t n_ = 0;
};

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
  EntryBytes b;
  b.varint(static_cast<std::uint64_t>(gap_us / core::kUsPerMinute));
  const bool one = uniform(s);
  const __int128 values[4] = {s.sum.units, s.min.units, s.max.units, s.latest.units};
  const __int128* first = one ? &values[1] : &values[0];
  const int n = one ? 1 : 4;
  int k = 9;
  for (int i = 0; i < n && k > 0; ++i) {
    k = std::min(k, decimal_zeros(first[i]));
  }
  __int128 scaled[4] = {0, 0, 0, 0};
  bool wide = false;
  for (int i = 0; i < n; ++i) {
    // 64-bit division where the value allows: a 128-bit one is a library call.
    scaled[i] = fits_int64(first[i]) ? static_cast<std::int64_t>(first[i]) / kPow10[k]
                                     : first[i] / kPow10[k];
    wide = wide || !fits_int64(scaled[i]);
  }
  b.byte(static_cast<std::uint8_t>(k | (one ? kUniform : 0) | (wide ? kWide : 0)));
  b.zigzag(s.count);
  for (int i = 0; i < n; ++i) {
    if (wide) {
      b.wide(scaled[i]);
    } else {
      b.zigzag(static_cast<std::int64_t>(scaled[i]));
    }
  }
  b.zigzag(s.latest_time_us - start);
  b.zigzag(static_cast<std::int64_t>(s.latest_seq - prev_seq));
  b.append_to(out);
}

// The readers of EntryBytes' writing. The bytes are the engine's own, written just before, so
// they are not checked as input from outside would be (a bad one is a bug: asserted).
std::uint64_t read_varint(const char*& p) {
  std::uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    TALLY_DASSERT(shift < 64, "a packed varint ends within 10 bytes");
    const auto b = static_cast<std::uint8_t>(*p++);
    v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if (b < 0x80) {
      return v;
    }
  }
}

std::int64_t read_zigzag(const char*& p) {
  const std::uint64_t u = read_varint(p);
  return static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
}

__int128 read_wide(const char*& p) {
  __int128 v = 0;
  common::Reader r(std::string_view(p, 16));
  [[maybe_unused]] const bool ok = r.get_i128(&v);
  TALLY_DASSERT(ok, "a packed 16-byte value is whole");
  p += 16;
  return v;
}

}  // namespace

bool PackedSums::Cursor::next(core::TimeUs* start, core::AggState* state) {
  if (p_ == end_) {
    return false;
  }
  const std::uint64_t gap = read_varint(p_);
  const auto header = static_cast<std::uint8_t>(*p_++);
  const std::int64_t count = read_zigzag(p_);
  const int k = header & 0x0F;
  const int n = (header & kUniform) != 0 ? 1 : 4;
  TALLY_DASSERT(k <= 9, "a packed entry's power of ten is 0..9");
  __int128 values[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    values[i] = ((header & kWide) != 0 ? read_wide(p_) : read_zigzag(p_)) * kPow10[k];
  }
  const std::int64_t time_delta = read_zigzag(p_);
  const std::int64_t seq_delta = read_zigzag(p_);
  TALLY_DASSERT(p_ <= end_, "a packed entry ends within its segment");
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

std::size_t PackedSums::drop_before(core::TimeUs t) {
  std::size_t dropped = 0;
  const auto reaching = segment_reaching(t);
  for (auto it = segments_.cbegin(); it != reaching; ++it) {
    dropped += it->entries;
  }
  if (reaching != segments_.cbegin()) {
    segments_.erase(segments_.cbegin(), reaching);
    segments_.shrink_to_fit();
  }
  if (!segments_.empty() && segments_.front().first < t) {
    // Its last entry starts at or after t (segment_reaching), so what is kept is not empty.
    std::vector<Entry> kept;
    Cursor c(segments_.front());
    Entry e;
    while (c.next(&e.first, &e.second)) {
      if (e.first >= t) {
        kept.push_back(e);
      }
    }
    TALLY_ASSERT(!kept.empty(), "the segment reaching t keeps its last entry");
    dropped += segments_.front().entries - kept.size();
    segments_.front() = encode(kept.data(), kept.size());
  }
  const auto tail_end = entry_at_or_after(tail_, t);
  dropped += static_cast<std::size_t>(tail_end - tail_.begin());
  tail_.erase(tail_.begin(), tail_end);
  return dropped;
}

std::size_t PackedSums::size() const {
  std::size_t n = tail_.size();
  for (const auto& s : segments_) {
    n += s.entries;
  }
  return n;
}

void PackedSums::save(std::string& out) const {
  common::put_varint(out, segments_.size());
  for (const auto& seg : segments_) {
    common::put_zigzag(out, seg.first);
    common::put_zigzag(out, seg.last);
    common::put_varint(out, seg.last_seq);
    common::put_varint(out, seg.entries);
    common::put_bytes(out, seg.bytes);
  }
  common::put_varint(out, tail_.size());
  for (const auto& [start, state] : tail_) {
    common::put_zigzag(out, start);
    common::put_bytes(out, encode_agg_state(state));
  }
}

bool PackedSums::restore(common::Reader& in) {
  std::uint64_t n = 0;
  if (!segments_.empty() || !tail_.empty() || !in.get_varint(&n) || n > in.remaining()) {
    return false;
  }
  segments_.resize(n);
  for (auto& seg : segments_) {
    std::uint64_t entries = 0;
    std::string_view bytes;
    if (!in.get_zigzag(&seg.first) || !in.get_zigzag(&seg.last) || !in.get_varint(&seg.last_seq) ||
        !in.get_varint(&entries) || entries == 0 || entries > kSegmentEntries * 2 ||
        !in.get_bytes(&bytes) || seg.first > seg.last) {
      return false;
    }
    seg.entries = static_cast<std::uint32_t>(entries);
    seg.bytes.assign(bytes);
  }
  if (!in.get_varint(&n) || n > kTailMax) {
    return false;
  }
  tail_.resize(n);
  for (auto& [start, state] : tail_) {
    std::string_view bytes;
    if (!in.get_zigzag(&start) || !in.get_bytes(&bytes) || !decode_agg_state(bytes, &state)) {
      return false;
    }
  }
  return true;
}

}  // namespace tally::engine
