// How interfaces and protocols are named in metric labels and log lines.
#pragma once

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/abi.h"

namespace portcullis::agent {

// The interface's name, or "ifindexN" when it is gone.
inline std::string IfaceName(uint32_t ifindex) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(ifindex, name) != nullptr) return name;
  return absl::StrCat("ifindex", ifindex);
}

// The port label of a policy's port range: "443", or "30000-32767".
inline std::string PortRangeLabel(uint32_t first, uint32_t last) {
  return first == last ? absl::StrCat(first) : absl::StrCat(first, "-", last);
}

// "tcp", "udp", "icmp", "icmpv6", or the protocol number.
inline std::string ProtoName(uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_ICMP:
      return "icmp";
    case IPPROTO_ICMPV6:
      return "icmpv6";
    default:
      return absl::StrCat(proto);
  }
}

// An address as the datapath stores it (PC_FAMILY_*, 16 bytes; IPv4 in the
// first 4), as text.
inline std::string AddressName(uint8_t family, const uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == PC_FAMILY_V6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf));
  return buf;
}

}  // namespace portcullis::agent
