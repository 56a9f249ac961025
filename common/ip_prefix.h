// IPv4/IPv6 prefixes as the policy names them ("198.51.100.0/28", "2001:db8::/48",
// or a bare address for a single host).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace portcullis {

enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

class IpPrefix {
 public:
  // Parses "ADDR/LEN" or "ADDR". Host bits beyond LEN are kept, so that a
  // validator can report them; Canonical() clears them.
  static absl::StatusOr<IpPrefix> Parse(absl::string_view text);

  // A prefix from raw bytes (network order; IPv4 uses the first 4 bytes).
  static IpPrefix FromBytes(Family family, const uint8_t* bytes, int length);

  Family family() const { return family_; }
  int length() const { return length_; }
  int max_length() const { return family_ == Family::kV4 ? 32 : 128; }
  bool is_host() const { return length_ == max_length(); }
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }

  // True if any bit past length() is set.
  bool HasHostBits() const;
  // This prefix with the host bits cleared.
  IpPrefix Canonical() const;
  // True if `other` lies wholly inside this prefix (same family).
  bool Contains(const IpPrefix& other) const;

  std::string ToString() const;

  // Orders by family, then address, then length: a prefix sorts before every
  // longer prefix it contains.
  auto operator<=>(const IpPrefix&) const = default;

 private:
  Family family_ = Family::kV4;
  uint8_t length_ = 0;
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace portcullis
