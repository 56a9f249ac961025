#include "common/ip_prefix.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace portcullis {
namespace {

// Keeps the first `length` bits of `bytes`.
void MaskTo(std::array<uint8_t, 16>& bytes, int length) {
  for (int i = 0; i < 16; ++i) {
    const int start = i * 8;
    if (length <= start) {
      bytes[i] = 0;
    } else if (length < start + 8) {
      bytes[i] &= static_cast<uint8_t>(0xFF << (start + 8 - length));
    }
  }
}

}  // namespace

absl::StatusOr<IpPrefix> IpPrefix::Parse(absl::string_view text) {
  IpPrefix p;
  absl::string_view addr = text;
  absl::string_view len_text;
  const size_t slash = text.find('/');
  if (slash != absl::string_view::npos) {
    addr = text.substr(0, slash);
    len_text = text.substr(slash + 1);
  }
  const std::string addr_str(addr);
  if (inet_pton(AF_INET, addr_str.c_str(), p.bytes_.data()) == 1) {
    p.family_ = Family::kV4;
  } else if (inet_pton(AF_INET6, addr_str.c_str(), p.bytes_.data()) == 1) {
    p.family_ = Family::kV6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not an IPv4 or IPv6 address or CIDR"));
  }
  int length = p.max_length();
  if (slash != absl::string_view::npos) {
    const bool all_digits =
        !len_text.empty() && len_text.size() <= 3 &&
        std::all_of(len_text.begin(), len_text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!all_digits || !absl::SimpleAtoi(len_text, &length) || length > p.max_length()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" has a bad prefix length (0 to ", p.max_length(), ")"));
    }
  }
  p.length_ = static_cast<uint8_t>(length);
  return p;
}

IpPrefix IpPrefix::FromBytes(Family family, const uint8_t* bytes, int length) {
  IpPrefix p;
  p.family_ = family;
  p.length_ = static_cast<uint8_t>(length);
  std::memcpy(p.bytes_.data(), bytes, family == Family::kV4 ? 4 : 16);
  return p;
}

bool IpPrefix::HasHostBits() const { return Canonical().bytes_ != bytes_; }

IpPrefix IpPrefix::Canonical() const {
  IpPrefix p = *this;
  MaskTo(p.bytes_, length_);
  return p;
}

bool IpPrefix::Contains(const IpPrefix& other) const {
  if (family_ != other.family_ || other.length_ < length_) return false;
  std::array<uint8_t, 16> masked = other.bytes_;
  MaskTo(masked, length_);
  return masked == Canonical().bytes_;
}

std::string IpPrefix::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(family_ == Family::kV4 ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof(buf));
  return absl::StrCat(buf, "/", length_);
}

}  // namespace portcullis
