#include "engine/dedup_file.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/archive_file.h"

namespace tally::engine {

namespace {

using Slot = DedupIndex::Slot;
static_assert(sizeof(Slot) == 16 && std::is_trivially_copyable_v<Slot>,
              "the file holds the slots exactly as the table does");

constexpr std::string_view kFileName = "dedup.checkpoint";
constexpr std::string_view kMagic = "TALLYDDX";
constexpr std::uint64_t kVersion = 1;
constexpr std::uint64_t kByteOrder = 0x0102030405060708ull;

// The header's words.
enum Word : std::size_t {
  kMagicWord,
  kVersionWord,
  kOrderWord,
  kSeqWord,
  kEntriesWord,
  kSlotsWord,
  kChecksumWord,
  kReservedWord,
  kHeaderWords
};

using Header = std::array<std::uint64_t, kHeaderWords>;

std::uint64_t magic_word() {
  std::uint64_t w = 0;
  std::memcpy(&w, kMagic.data(), sizeof w);
  return w;
}

// The checksum of the header's words before kChecksumWord and of the table, read as two lanes
// (the slots' hashes and locations) whose multiplies overlap: about 40 ms for the 268 MB table
// of 10 M entries, where SHA-256 would take most of a second. It catches a torn or damaged file,
// not a forged one: the file is the server's own, in its data directory.
std::uint64_t checksum_of(const Header& h, std::span<const Slot> table) {
  constexpr std::uint64_t kMul = 0x9e3779b97f4a7c15ull;
  auto mix = [](std::uint64_t acc, std::uint64_t w) {
    acc = (acc ^ w) * kMul;
    return acc ^ (acc >> 29);
  };
  std::uint64_t a = 0x243f6a8885a308d3ull;
  std::uint64_t b = 0x13198a2e03707344ull;
  for (std::size_t i = 0; i < kChecksumWord; ++i) {
    a = mix(a, h[i]);
  }
  for (const Slot& s : table) {
    a = mix(a, s.hash);
    b = mix(b, s.packed);
  }
  return mix(a, b);
}

// Reads exactly `n` bytes; false on an error or an early end.
bool read_exactly(int fd, void* to, std::size_t n) {
  auto* p = static_cast<char*>(to);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}

  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }

 private:
  int fd_;
};

// The header of an open file when it is this version's, in this byte order.
bool read_header(int fd, Header* h) {
  return read_exactly(fd, h->data(), sizeof(Header)) && (*h)[kMagicWord] == magic_word() &&
         (*h)[kVersionWord] == kVersion && (*h)[kOrderWord] == kByteOrder;
}

}  // namespace

std::string dedup_file_path(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / kFileName).string();
}

Status write_dedup_file(const std::string& path, const DedupIndex& index, std::uint64_t seq) {
  const std::span<const Slot> table = index.table();
  Header h{};
  h[kMagicWord] = magic_word();
  h[kVersionWord] = kVersion;
  h[kOrderWord] = kByteOrder;
  h[kSeqWord] = seq;
  h[kEntriesWord] = index.size();
  h[kSlotsWord] = table.size();
  h[kChecksumWord] = checksum_of(h, table);
  const std::array<std::string_view, 2> parts = {
      std::string_view(reinterpret_cast<const char*>(h.data()), sizeof(Header)),
      std::string_view(reinterpret_cast<const char*>(table.data()), table.size() * sizeof(Slot))};
  return write_file_synced(path, parts);
}

std::optional<std::uint64_t> dedup_file_seq(const std::string& path) {
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  Header h{};
  if (fd.get() < 0 || !read_header(fd.get(), &h)) {
    return std::nullopt;
  }
  return h[kSeqWord];
}

std::optional<std::uint64_t> read_dedup_file(const std::string& path, std::uint64_t next_seq,
                                             std::uint32_t next_customer, DedupIndex* index,
                                             std::string* why) {
  why->clear();
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno != ENOENT) {
      *why = std::string("it cannot be opened: ") + std::strerror(errno);
    }
    return std::nullopt;
  }
  auto unusable = [why](const char* reason) {
    *why = reason;
    return std::nullopt;
  };

  struct stat st {};

  Header h{};
  if (::fstat(fd.get(), &st) != 0 || !read_header(fd.get(), &h)) {
    return unusable("not a dedup table of this version and byte order");
  }
  const std::uint64_t seq = h[kSeqWord];
  const std::uint64_t slots = h[kSlotsWord];
  // The size first: the memory taken below is exactly the file's table.
  if (slots > (std::uint64_t{1} << 40) ||
      static_cast<std::uint64_t>(st.st_size) != sizeof(Header) + slots * sizeof(Slot)) {
    return unusable("its size is not that of its table");
  }
  if (seq > next_seq) {
    return unusable("written after entries the store does not hold");
  }
  // Read into memory of its own rather than a vector, which would zero every page first (on this
  // kind of machine the kernel handing out and clearing fresh pages costs more than inserting the
  // entries), and rather than a private mapping of the file, whose pages would be copied one by
  // one as the first commits after the open write to them (100,000 inserts took 13 s there). On
  // 2 MB pages where the kernel allows: a tenth of the page faults here, and fewer TLB misses
  // for the lookups of a table this size.
  const std::size_t table_bytes = static_cast<std::size_t>(slots) * sizeof(Slot);
  void* memory =
      ::mmap(nullptr, table_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    return unusable("no memory for its table");
  }
  ::madvise(memory, table_bytes, MADV_HUGEPAGE);
  SlotTable table = SlotTable::of_mapping(memory, table_bytes, static_cast<Slot*>(memory), slots);
  if (!read_exactly(fd.get(), memory, table_bytes)) {
    return unusable("its table cannot be read");
  }
  if (checksum_of(h, table.span()) != h[kChecksumWord]) {
    return unusable("its checksum does not match");
  }
  std::uint64_t entries = 0;
  for (const Slot& s : table.span()) {
    if (s.hash == 0) {
      if (s.packed != 0) {
        return unusable("an empty slot holds a location");
      }
      continue;
    }
    ++entries;
    if ((s.packed & DedupIndex::kSeqMax) >= seq ||
        (s.packed >> DedupIndex::kSeqBits) >= next_customer) {
      return unusable("an entry is numbered past the file's sequence or customer numbers");
    }
  }
  if (entries != h[kEntriesWord] || !index->adopt_table(std::move(table), entries)) {
    return unusable("its table is not one the index makes");
  }
  return seq;
}

}  // namespace tally::engine
