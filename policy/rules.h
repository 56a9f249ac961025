// Facts about port rules that the loader, validator, compiler, text writer,
// baseline and metrics all rely on, defined once.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <utility>

#include "absl/strings/string_view.h"
#include "common/abi.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

inline constexpr uint32_t kMinPort = 1;
inline constexpr uint32_t kMaxPort = 65535;

// A valid port range: 1 <= first <= last <= 65535.
constexpr bool IsPortRange(uint32_t first, uint32_t last) {
  return first >= kMinPort && last <= kMaxPort && first <= last;
}
inline bool IsPortRange(const v1::PortRange& r) { return IsPortRange(r.first(), r.last()); }

// "tcp" or "udp", as the policy spells it; "" for PROTOCOL_UNSPECIFIED.
inline absl::string_view ProtocolName(v1::Protocol proto) {
  switch (proto) {
    case v1::PROTOCOL_TCP:
      return "tcp";
    case v1::PROTOCOL_UDP:
      return "udp";
    default:
      return "";
  }
}

// The pc_l4 row of the port_policy map, or -1.
inline int L4Index(v1::Protocol proto) {
  switch (proto) {
    case v1::PROTOCOL_TCP:
      return PC_L4_TCP;
    case v1::PROTOCOL_UDP:
      return PC_L4_UDP;
    default:
      return -1;
  }
}

// IPPROTO_TCP or IPPROTO_UDP, as the datapath sees them; 0 if unspecified.
inline uint8_t IpProtocol(v1::Protocol proto) {
  switch (proto) {
    case v1::PROTOCOL_TCP:
      return IPPROTO_TCP;
    case v1::PROTOCOL_UDP:
      return IPPROTO_UDP;
    default:
      return 0;
  }
}

// rateLimits.icmp.perSource when the policy leaves it out (PRODUCT.md).
inline v1::Rate DefaultIcmpPerSource() {
  v1::Rate r;
  r.set_rate(100);
  r.set_burst(200);
  return r;
}

// rateLimits.syn.cookies as the policy spells it: "off", "auto", "always";
// unset reads as "off" (so that policies written before it keep their meaning).
inline constexpr std::pair<absl::string_view, v1::Cookies> kCookiesWords[] = {
    {"off", v1::COOKIES_OFF}, {"auto", v1::COOKIES_AUTO}, {"always", v1::COOKIES_ALWAYS}};
inline absl::string_view CookiesWord(v1::Cookies c) {
  for (const auto& [word, value] : kCookiesWords) {
    if (value == c) return word;
  }
  return "off";
}

}  // namespace portcullis::policy
