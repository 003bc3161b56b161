#include "engine/archive_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/json_writer.h"
#include "core/time.h"

namespace tally::engine {

namespace {

namespace od = simdjson::ondemand;

// zstd level 3 (its default): most of the ratio of higher levels at a fraction of the CPU.
constexpr int kZstdLevel = 3;
// Lines are handed to zstd in pieces of about this size.
constexpr std::size_t kPendingBytesMax = 256u << 10;
constexpr std::size_t kReadBytes = 256u << 10;

Status errno_status(const std::string& what, const std::string& path) {
  const int e = errno;
  std::string msg = what + " " + path + ": " + std::strerror(e);
  return e == ENOENT ? Status::not_found(msg) : Status::io_error(msg);
}

const char* kind_name(core::PropKind k) {
  switch (k) {
    case core::PropKind::kString:
      return "string";
    case core::PropKind::kNumber:
      return "number";
    case core::PropKind::kBool:
      return "bool";
    case core::PropKind::kNull:
      return "null";
  }
  return "string";
}

bool kind_from_name(std::string_view s, core::PropKind* k) {
  for (auto kind : {core::PropKind::kString, core::PropKind::kNumber, core::PropKind::kBool,
                    core::PropKind::kNull}) {
    if (s == kind_name(kind)) {
      *k = kind;
      return true;
    }
  }
  return false;
}

// simdjson's on-demand parser needs padding after the text.
simdjson::padded_string padded(std::string_view text) {
  return simdjson::padded_string(text);
}

Status bad_line(std::string_view what) {
  return Status::invalid_argument("an archive line " + std::string(what));
}

// A field of the wrong type.
Status bad_line_field(std::string_view key) {
  return bad_line("has a bad '" + std::string(key) + "'");
}

// A property: [key, kind, text].
Status decode_prop(simdjson::simdjson_result<od::value> p, ArchivedEvent::Prop* prop) {
  od::array triple;
  if (p.get_array().get(triple) != simdjson::SUCCESS) {
    return bad_line("has a property that is not [key, kind, text]");
  }
  std::string_view parts[3];
  std::size_t n = 0;
  for (auto part : triple) {
    if (n == 3 || part.get_string().get(parts[n]) != simdjson::SUCCESS) {
      return bad_line("has a property that is not [key, kind, text]");
    }
    ++n;
  }
  if (n != 3 || !kind_from_name(parts[1], &prop->kind)) {
    return bad_line("has a property that is not [key, kind, text]");
  }
  prop->key.assign(parts[0]);
  prop->text.assign(parts[2]);
  return Status();
}

// "properties": an array of [key, kind, text].
Status decode_props(od::value v, ArchivedEvent* out) {
  od::array props;
  // Iterating an array that failed to parse is undefined in simdjson: only a good one.
  if (v.get_array().get(props) != simdjson::SUCCESS) {
    return bad_line_field("properties");
  }
  for (auto p : props) {
    ArchivedEvent::Prop prop;
    TALLY_TRY(decode_prop(p, &prop));
    out->props.push_back(std::move(prop));
  }
  return Status();
}

// "cost" or "credits": a decimal as text.
Status decode_amount(od::value v, std::string_view key, core::Decimal* amount) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS) {
    return bad_line_field(key);
  }
  if (!core::try_parse_decimal(s, amount)) {
    return bad_line("has a bad " + std::string(key));
  }
  return Status();
}

// "quantity": 1..kEventQuantityMax (absent: 1).
Status decode_quantity(od::value v, std::uint32_t* quantity) {
  std::uint64_t q = 0;
  if (v.get_uint64().get(q) != simdjson::SUCCESS) {
    return bad_line_field("quantity");
  }
  if (q < 1 || q > core::kEventQuantityMax) {
    return bad_line("has a quantity outside 1.." + std::to_string(core::kEventQuantityMax));
  }
  *quantity = static_cast<std::uint32_t>(q);
  return Status();
}

// Which of the fields every archive line has were read.
struct LineRequired {
  bool customer = false;
  bool seq = false;
  bool id = false;
  bool time = false;
};

// A text, number or flag field of an archive line into *out: simdjson's error when its value has
// the wrong type. "time" (for people) and fields of later versions are skipped: on-demand skips
// what is not read.
simdjson::error_code decode_plain_field(std::string_view key, od::value v, ArchivedEvent* out,
                                        LineRequired* has) {
  std::string_view s;
  std::int64_t i = 0;
  simdjson::error_code err = simdjson::SUCCESS;
  if (key == "customer" || key == "id" || key == "type") {
    err = v.get_string().get(s);
    (key == "customer" ? out->customer : key == "id" ? out->id : out->type).assign(s);
    has->customer = has->customer || key == "customer";
    has->id = has->id || key == "id";
  } else if (key == "seq") {
    err = v.get_uint64().get(out->seq);
    has->seq = true;
  } else if (key == "time_us" || key == "received_at_us") {
    err = v.get_int64().get(i);
    (key == "time_us" ? out->time_us : out->received_at_us) = i;
    has->time = has->time || key == "time_us";
  } else if (key == "flagged" || key == "priced") {
    err = v.get_bool().get(key == "flagged" ? out->flagged : out->priced);
  }
  return err;
}

// One field of an archive line into *out.
Status decode_line_field(std::string_view key, od::value v, ArchivedEvent* out, LineRequired* has) {
  if (key == "cost" || key == "credits") {
    return decode_amount(v, key, key == "cost" ? &out->cost : &out->credits);
  }
  if (key == "quantity") {
    return decode_quantity(v, &out->quantity);
  }
  if (key == "properties") {
    return decode_props(v, out);
  }
  if (decode_plain_field(key, v, out, has) != simdjson::SUCCESS) {
    return bad_line_field(key);
  }
  return Status();
}

}  // namespace

// ---- lines ----------------------------------------------------------------------------------

std::string encode_archive_line(std::string_view customer, TimeUs received_at_us,
                                const BlockEvent& e) {
  common::JsonWriter w;
  w.begin_object();
  w.key("customer").value(customer);
  w.key("seq").value(e.seq);
  w.key("id").value(e.id);
  w.key("type").value(e.type);
  w.key("time").value(core::format_rfc3339(e.time_us));
  w.key("time_us").value(static_cast<std::int64_t>(e.time_us));
  w.key("received_at_us").value(static_cast<std::int64_t>(received_at_us));
  w.key("flagged").value(e.flagged);
  w.key("priced").value(e.priced);
  if (e.priced) {
    w.key("cost").value(core::format_decimal(e.cost));
    w.key("credits").value(core::format_decimal(e.credits));
  }
  if (e.quantity != 1) {
    w.key("quantity").value(static_cast<std::uint64_t>(e.quantity));
  }
  // [key, kind, text] keeps each property's kind and exact text, and its order.
  w.key("properties").begin_array();
  for (const auto& p : e.props) {
    w.begin_array().value(p.key).value(kind_name(p.kind)).value(p.text).end_array();
  }
  w.end_array();
  w.end_object();
  return w.take();
}

Status decode_archive_line(std::string_view line, ArchivedEvent* out) {
  *out = ArchivedEvent{};
  simdjson::padded_string text = padded(line);
  od::parser parser;
  od::document doc;
  if (parser.iterate(text).get(doc) != simdjson::SUCCESS) {
    return bad_line("is not JSON");
  }
  od::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) {
    return bad_line("is not a JSON object");
  }
  LineRequired has;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) {
      return bad_line("has a bad key");
    }
    TALLY_TRY(decode_line_field(key, field.value(), out, &has));
  }
  if (!has.customer || !has.seq || !has.id || !has.time || out->seq == 0) {
    return bad_line("lacks customer, seq, id or time_us");
  }
  return Status();
}

// ---- manifest -------------------------------------------------------------------------------

std::string encode_manifest(const ArchiveManifest& m) {
  common::JsonWriter w;
  w.begin_object();
  w.key("format").value("tally-archive");
  w.key("format_version").value(m.format_version);
  w.key("archive_id").value(m.archive_id);
  w.key("file").value(m.file);
  w.key("sha256").value(m.sha256);
  w.key("bytes").value(m.bytes);
  w.key("events").value(m.events);
  w.key("cutoff").value(core::format_rfc3339(m.cutoff_us));
  w.key("cutoff_us").value(static_cast<std::int64_t>(m.cutoff_us));
  w.key("from_us").value(static_cast<std::int64_t>(m.from_us));
  w.key("to_us").value(static_cast<std::int64_t>(m.to_us));
  w.key("from").value(core::format_rfc3339(m.from_us));
  w.key("to").value(core::format_rfc3339(m.to_us));
  w.key("first_seq").value(m.first_seq);
  w.key("last_seq").value(m.last_seq);
  w.key("customers").begin_array();
  for (const auto& c : m.customers) {
    w.value(c);
  }
  w.end_array();
  w.key("created_at").value(core::format_rfc3339(m.created_at_us));
  w.key("created_at_us").value(static_cast<std::int64_t>(m.created_at_us));
  w.end_object();
  return w.take() + "\n";
}

namespace {

// What a manifest must say of itself: that it is an archive's, and its format version.
struct ManifestRequired {
  bool is_archive = false;
  bool has_version = false;
};

// "customers": an array of texts.
simdjson::error_code decode_customers(od::value v, std::vector<std::string>* customers) {
  od::array a;
  simdjson::error_code err = v.get_array().get(a);
  if (err) {
    return err;
  }
  for (auto c : a) {
    std::string_view s;
    if ((err = c.get_string().get(s))) {
      return err;
    }
    customers->emplace_back(s);
  }
  return simdjson::SUCCESS;
}

// The manifest's instants, by name; null for another key.
TimeUs* manifest_time(std::string_view key, ArchiveManifest* m) {
  return key == "cutoff_us"       ? &m->cutoff_us
         : key == "from_us"       ? &m->from_us
         : key == "to_us"         ? &m->to_us
         : key == "created_at_us" ? &m->created_at_us
                                  : nullptr;
}

// The manifest's counts and sequence numbers, by name; null for another key.
std::uint64_t* manifest_number(std::string_view key, ArchiveManifest* m) {
  return key == "archive_id"  ? &m->archive_id
         : key == "bytes"     ? &m->bytes
         : key == "events"    ? &m->events
         : key == "first_seq" ? &m->first_seq
         : key == "last_seq"  ? &m->last_seq
                              : nullptr;
}

// One field of a manifest into *out: simdjson's error when its value has the wrong type.
// Unknown fields are skipped by the on-demand parser.
simdjson::error_code decode_manifest_field(std::string_view key, od::value v, ArchiveManifest* out,
                                           ManifestRequired* has) {
  std::string_view s;
  std::int64_t i = 0;
  simdjson::error_code err = simdjson::SUCCESS;
  if (key == "format") {
    err = v.get_string().get(s);
    has->is_archive = s == "tally-archive";
  } else if (key == "format_version") {
    err = v.get_int64().get(i);
    out->format_version = static_cast<int>(i);
    has->has_version = true;
  } else if (key == "file" || key == "sha256") {
    err = v.get_string().get(s);
    (key == "file" ? out->file : out->sha256).assign(s);
  } else if (std::uint64_t* n = manifest_number(key, out); n != nullptr) {
    err = v.get_uint64().get(*n);
  } else if (TimeUs* t = manifest_time(key, out); t != nullptr) {
    err = v.get_int64().get(i);
    *t = i;
  } else if (key == "customers") {
    err = decode_customers(v, &out->customers);
  }
  return err;
}

// Whether a manifest read whole is one this Tally restores from.
Status check_manifest(const ArchiveManifest& m, const ManifestRequired& has) {
  if (!has.is_archive || !has.has_version) {
    return Status::invalid_argument("not a Tally archive manifest");
  }
  if (m.format_version != kArchiveFormatVersion) {
    return Status::invalid_argument("archive format version " + std::to_string(m.format_version) +
                                    " is not one this Tally reads (" +
                                    std::to_string(kArchiveFormatVersion) + ")");
  }
  if (m.file.empty() || m.file.find('/') != std::string::npos || m.sha256.size() != 64 ||
      m.archive_id == 0) {
    return Status::invalid_argument("the manifest lacks its file name, sha256 or archive id");
  }
  return Status();
}

}  // namespace

Status decode_manifest(std::string_view text, ArchiveManifest* out) {
  *out = ArchiveManifest{};
  simdjson::padded_string buf = padded(text);
  od::parser parser;
  od::document doc;
  od::object obj;
  if (parser.iterate(buf).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(obj) != simdjson::SUCCESS) {
    return Status::invalid_argument("the manifest is not a JSON object");
  }
  ManifestRequired has;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) {
      return Status::invalid_argument("the manifest has a bad key");
    }
    if (decode_manifest_field(key, field.value(), out, &has) != simdjson::SUCCESS) {
      return Status::invalid_argument("the manifest has a bad '" + std::string(key) + "'");
    }
  }
  return check_manifest(*out, has);
}

// ---- writer ---------------------------------------------------------------------------------

ArchiveWriter::ArchiveWriter() : cctx_(ZSTD_createCCtx()) {}

ArchiveWriter::~ArchiveWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_));
}

Status ArchiveWriter::open(const std::string& path) {
  if (fd_ >= 0) {
    return Status::internal("an archive writer opens one file");  // a bug of the caller
  }
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    if (errno == EEXIST) {
      return Status::already_exists("archive file " + path + " exists already");
    }
    return errno_status("cannot create", path);
  }
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  if (c == nullptr ||
      ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, kZstdLevel)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1))) {
    return Status::internal("zstd could not be set up");
  }
  out_.resize(ZSTD_CStreamOutSize());
  return Status();
}

Status ArchiveWriter::write_line(std::string_view line) {
  pending_ += line;
  pending_ += '\n';
  return pending_.size() >= kPendingBytesMax ? drain(false) : Status();
}

Status ArchiveWriter::drain(bool end) {
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_inBuffer in{pending_.data(), pending_.size(), 0};
  for (;;) {
    ZSTD_outBuffer out{out_.data(), out_.size(), 0};
    const std::size_t left = ZSTD_compressStream2(c, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
    if (ZSTD_isError(left)) {
      return Status::internal(std::string("zstd: ") + ZSTD_getErrorName(left));
    }
    TALLY_TRY(write_out(out_.data(), out.pos));
    if (end ? left == 0 : in.pos == in.size) {
      break;
    }
  }
  pending_.clear();
  return Status();
}

Status ArchiveWriter::write_out(const char* data, std::size_t n) {
  sha_.update(std::string_view(data, n));
  bytes_ += n;
  while (n > 0) {
    const ssize_t w = ::write(fd_, data, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno_status("cannot write", path_);
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return Status();
}

Status ArchiveWriter::finish() {
  TALLY_TRY(drain(true));
  if (::fsync(fd_) != 0) {
    return errno_status("cannot fsync", path_);
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    return errno_status("cannot close", path_);
  }
  return sync_dir(std::filesystem::path(path_).parent_path().string());
}

// ---- reader ---------------------------------------------------------------------------------

ArchiveReader::ArchiveReader() : dctx_(ZSTD_createDCtx()) {}

ArchiveReader::~ArchiveReader() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_));
}

Status ArchiveReader::open(const std::string& path) {
  if (fd_ >= 0) {
    return Status::internal("an archive reader opens one file");
  }
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    return errno_status("cannot open", path);
  }
  if (dctx_ == nullptr) {
    return Status::internal("zstd could not be set up");
  }
  return Status();
}

Status ArchiveReader::fill() {
  if (in_pos_ == in_.size()) {
    in_.resize(kReadBytes);
    ssize_t n = 0;
    do {
      n = ::read(fd_, in_.data(), in_.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      return Status::io_error(std::string("cannot read an archive file: ") + std::strerror(errno));
    }
    in_.resize(static_cast<std::size_t>(n));
    in_pos_ = 0;
    if (n == 0) {
      eof_ = true;
      return frame_done_ ? Status() : Status::corruption("the archive file is truncated");
    }
    sha_.update(in_);
    bytes_ += static_cast<std::uint64_t>(n);
  }
  std::string out(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer in{in_.data(), in_.size(), in_pos_};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  const std::size_t r = ZSTD_decompressStream(static_cast<ZSTD_DCtx*>(dctx_), &o, &in);
  if (ZSTD_isError(r)) {
    return Status::corruption(std::string("the archive file is not valid zstd: ") +
                              ZSTD_getErrorName(r));
  }
  frame_done_ = r == 0;
  in_pos_ = in.pos;
  text_.append(out.data(), o.pos);
  return Status();
}

Result<bool> ArchiveReader::next_line(std::string* line) {
  for (;;) {
    const std::size_t nl = text_.find('\n', text_pos_);
    if (nl != std::string::npos) {
      line->assign(text_, text_pos_, nl - text_pos_);
      text_pos_ = nl + 1;
      if (text_pos_ > kPendingBytesMax) {  // keep the buffer small
        text_.erase(0, text_pos_);
        text_pos_ = 0;
      }
      return true;
    }
    if (text_.size() - text_pos_ > kArchiveLineBytesMax) {
      return Status::corruption("an archive line is longer than 16 MiB");
    }
    if (eof_) {
      if (text_pos_ != text_.size()) {
        return Status::corruption("the archive file ends inside a line");
      }
      return false;
    }
    TALLY_TRY(fill());
  }
}

// ---- small files ----------------------------------------------------------------------------

Status sync_dir(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return errno_status("cannot open directory", dir);
  }
  const int r = ::fsync(fd);
  ::close(fd);
  return r == 0 ? Status() : errno_status("cannot fsync directory", dir);
}

Status write_file_synced(const std::string& path, std::string_view text) {
  return write_file_synced(path, std::span<const std::string_view>(&text, 1));
}

Status write_file_synced(const std::string& path, std::span<const std::string_view> parts) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return errno_status("cannot create", tmp);
  }
  for (const std::string_view text : parts) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
      if (w < 0 && errno == EINTR) {
        continue;
      }
      if (w < 0) {
        Status s = errno_status("cannot write", tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return s;
      }
      done += static_cast<std::size_t>(w);
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    Status s = errno_status("cannot fsync", tmp);
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = errno_status("cannot rename to", path);
    ::unlink(tmp.c_str());
    return s;
  }
  return sync_dir(std::filesystem::path(path).parent_path().string());
}

Result<std::string> read_small_file(const std::string& path, std::size_t bytes_max) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno_status("cannot open", path);
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      Status s = errno_status("cannot read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > bytes_max) {
      ::close(fd);
      return Status::invalid_argument(path + " is too large for a manifest");
    }
  }
  ::close(fd);
  return out;
}

}  // namespace tally::engine
