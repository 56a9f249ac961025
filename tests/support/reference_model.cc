#include "tests/support/reference_model.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <set>
#include <string>

#include "common/ip_prefix.h"

namespace portcullis::testing {
namespace {

// IP protocol numbers and ethertypes, as the RFCs give them.
constexpr uint8_t kTcp = 6, kUdp = 17, kIcmp = 1, kIcmp6 = 58;
constexpr uint8_t kSynFlag = 0x02, kAckFlag = 0x10;  // RFC 9293
constexpr uint8_t kHopByHop = 0, kRouting = 43, kFragment = 44, kDestOpts = 60;
constexpr int kMaxVlanTags = 2;        // PRODUCT.md
constexpr int kMaxIpv6ExtHeaders = 8;  // docs/POLICY.md: "to a fixed bound"

enum class Parse { kOk, kNonIp, kMalformed };

struct Packet {
  bool v6 = false;
  std::array<uint8_t, 16> src{}, dst{};
  uint8_t proto = 0;
  uint8_t hop_limit = 0;
  bool non_first_fragment = false;
  bool has_ports = false;
  uint16_t dport = 0;
  uint8_t tcp_flags = 0;
  bool icmp = false;  // ICMP in IPv4 or ICMPv6 in IPv6, with type and code
  uint8_t icmp_type = 0, icmp_code = 0;
};

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// PRODUCT.md step 2: sources that never appear on the wire.
bool ForbiddenSource(const Packet& p) {
  const auto& s = p.src;
  if (!p.v6) return s[0] >= 224 && s[0] <= 239;  // 224.0.0.0/4
  if (s[0] == 0xff) return true;                 // ff00::/8
  bool zero80 = true;
  for (int i = 0; i < 10; ++i) zero80 = zero80 && s[i] == 0;
  if (!zero80) return false;
  if (s[10] == 0xff && s[11] == 0xff) return true;  // ::ffff:0:0/96
  if (s[10] != 0 || s[11] != 0) return false;
  bool unspecified = true;
  for (int i = 12; i < 16; ++i) unspecified = unspecified && s[i] == 0;
  return !unspecified;  // ::/96 but ::
}

bool IsIpv6Ext(uint8_t h) {
  return h == kHopByHop || h == kRouting || h == kFragment || h == kDestOpts;
}

Parse ParseFrame(const std::vector<uint8_t>& f, Packet& p) {
  size_t at = 0;
  if (f.size() < 14) return Parse::kMalformed;
  uint16_t type = Be16(&f[12]);
  at = 14;
  int tags = 0;
  while (type == 0x8100 || type == 0x88a8) {
    if (++tags > kMaxVlanTags) return Parse::kMalformed;
    if (f.size() < at + 4) return Parse::kMalformed;
    type = Be16(&f[at + 2]);
    at += 4;
  }
  // The datagram's transport bytes, as the IP layer states them.
  size_t l4_at = 0, l4_len = 0;
  if (type == 0x0800) {
    if (f.size() < at + 20) return Parse::kMalformed;
    const uint8_t* ip = &f[at];
    if ((ip[0] >> 4) != 4) return Parse::kMalformed;
    const size_t ihl = (ip[0] & 15) * 4u, total = Be16(ip + 2);
    if (ihl < 20 || total < ihl || at + total > f.size()) return Parse::kMalformed;
    p.v6 = false;
    p.proto = ip[9];
    p.hop_limit = ip[8];
    std::memcpy(p.src.data(), ip + 12, 4);
    std::memcpy(p.dst.data(), ip + 16, 4);
    p.non_first_fragment = (Be16(ip + 6) & 0x1fff) != 0;
    l4_at = at + ihl;
    l4_len = total - ihl;
  } else if (type == 0x86dd) {
    if (f.size() < at + 40) return Parse::kMalformed;
    const uint8_t* ip = &f[at];
    if ((ip[0] >> 4) != 6) return Parse::kMalformed;
    size_t remaining = Be16(ip + 4);
    size_t pos = at + 40;
    if (pos + remaining > f.size()) return Parse::kMalformed;
    p.v6 = true;
    p.hop_limit = ip[7];
    std::memcpy(p.src.data(), ip + 8, 16);
    std::memcpy(p.dst.data(), ip + 24, 16);
    uint8_t next = ip[6];
    for (int i = 0; i < kMaxIpv6ExtHeaders && IsIpv6Ext(next); ++i) {
      if (next == kFragment) {
        if (remaining < 8) return Parse::kMalformed;
        const bool first = (Be16(&f[pos + 2]) & 0xfff8) == 0;
        next = f[pos];
        pos += 8;
        remaining -= 8;
        if (!first) {
          p.non_first_fragment = true;
          break;
        }
      } else {
        if (remaining < 2) return Parse::kMalformed;
        const size_t len = (f[pos + 1] + 1u) * 8u;
        if (remaining < len) return Parse::kMalformed;
        next = f[pos];
        pos += len;
        remaining -= len;
      }
    }
    if (!p.non_first_fragment && IsIpv6Ext(next)) return Parse::kMalformed;  // chain too long
    p.proto = next;
    l4_at = pos;
    l4_len = remaining;
  } else {
    return Parse::kNonIp;
  }
  if (ForbiddenSource(p)) return Parse::kMalformed;
  if (p.non_first_fragment) return Parse::kOk;  // no transport header to read
  const uint8_t* l4 = &f[std::min(l4_at, f.size() - 1)];
  if (p.proto == kTcp) {
    if (l4_len < 20) return Parse::kMalformed;
    const size_t doff = (l4[12] >> 4) * 4u;
    if (doff < 20 || doff > l4_len) return Parse::kMalformed;
    p.has_ports = true;
    p.dport = Be16(l4 + 2);
    p.tcp_flags = l4[13];
  } else if (p.proto == kUdp) {
    if (l4_len < 8) return Parse::kMalformed;
    p.has_ports = true;
    p.dport = Be16(l4 + 2);
  } else if ((p.proto == kIcmp && !p.v6) || (p.proto == kIcmp6 && p.v6)) {
    if (l4_len < 8) return Parse::kMalformed;
    p.icmp = true;
    p.icmp_type = l4[0];
    p.icmp_code = l4[1];
  }
  return Parse::kOk;
}

IpPrefix AddressOf(const Packet& p, bool source) {
  const auto& a = source ? p.src : p.dst;
  return IpPrefix::FromBytes(p.v6 ? Family::kV6 : Family::kV4, a.data(), p.v6 ? 128 : 32);
}

bool InAny(const google::protobuf::RepeatedPtrField<std::string>& cidrs, const IpPrefix& addr) {
  for (const std::string& c : cidrs) {
    auto prefix = IpPrefix::Parse(c);
    if (prefix.ok() && prefix->Contains(addr)) return true;
  }
  return false;
}

// The names of the sets that hold the source.
std::set<std::string> SourceSets(const v1::Policy& policy, const IpPrefix& src) {
  std::set<std::string> out;
  for (const v1::CidrSet& set : policy.spec().sets()) {
    if (InAny(set.cidrs(), src)) out.insert(set.name());
  }
  return out;
}

bool Covers(const v1::PortRule& rule, uint8_t proto, uint16_t port) {
  if ((rule.proto() == v1::PROTOCOL_TCP) != (proto == kTcp)) return false;
  for (const v1::PortRange& r : rule.ports()) {
    if (r.first() <= port && port <= r.last()) return true;
  }
  return false;
}

bool Admits(const v1::PortRule& rule, const std::set<std::string>& sets) {
  if (rule.from().any()) return true;
  for (const std::string& s : rule.from().sets()) {
    if (sets.contains(s)) return true;
  }
  return false;
}

pc_reason Evaluate(const v1::Policy& policy, const Packet& p) {
  const v1::PolicySpec& spec = policy.spec();
  // 3. destinations
  if (spec.destinations_size() > 0 && !InAny(spec.destinations(), AddressOf(p, false))) {
    return PC_REASON_NOT_POLICED;
  }
  // 4. established: the model's node has opened no flows.
  const IpPrefix src = AddressOf(p, true);
  const std::set<std::string> sets = SourceSets(policy, src);
  const bool port_rules_apply = p.has_ports && (p.proto == kTcp || p.proto == kUdp);
  // 5. failsafe
  if (port_rules_apply) {
    for (const v1::PortRule& rule : spec.failsafe()) {
      if (Covers(rule, p.proto, p.dport) && Admits(rule, sets)) return PC_REASON_FAILSAFE;
    }
  }
  // 6. blocklist
  if (InAny(spec.blocklist(), src)) return PC_REASON_BLOCKLIST;
  // 7. ICMPv6 neighbour discovery from a neighbour, and packet too big; ICMP
  // fragmentation needed. The model's budgets never run dry.
  if (p.icmp && ((!p.v6 && p.icmp_type == 3 && p.icmp_code == 4) ||
                 (p.v6 && (p.icmp_type == 2 ||
                           (p.icmp_type >= 133 && p.icmp_type <= 137 && p.hop_limit == 255))))) {
    return PC_REASON_ALLOWED;
  }
  // 8. non-first fragments (docs/POLICY.md: allowed when fragments: allow)
  if (p.non_first_fragment) {
    return spec.fragments() == v1::ACTION_ALLOW ? PC_REASON_ALLOWED : PC_REASON_FRAGMENT;
  }
  // 9. ICMP
  if (p.icmp) return spec.icmp() == v1::ACTION_DENY ? PC_REASON_ICMP_DENIED : PC_REASON_ALLOWED;
  // 10-11. port rules
  bool has_rule = false, admitted = false;
  if (port_rules_apply) {
    for (const v1::PortRule& rule : spec.ports()) {
      if (!Covers(rule, p.proto, p.dport)) continue;
      has_rule = true;
      admitted = admitted || Admits(rule, sets);
    }
  }
  // A port with no rule under `defaultAction: allow` goes on to the rate
  // limits, as a port whose rule admits the source does.
  if (!has_rule && spec.default_action() != v1::ACTION_ALLOW) return PC_REASON_PORT_CLOSED;
  if (has_rule && !admitted) return PC_REASON_NOT_ALLOWLISTED;
  // 12. The model's policies have no SYN or connection buckets, so `auto`
  // never answers (the global budget never runs dry) and `always` answers
  // every SYN that got this far. The model's node has a listener behind
  // every port (the test loads the program with assume_listeners).
  const bool syn = p.proto == kTcp && (p.tcp_flags & (kSynFlag | kAckFlag)) == kSynFlag;
  if (syn && spec.rate_limits().syn().cookies() == v1::COOKIES_ALWAYS) {
    return PC_REASON_SYN_COOKIE;
  }
  // 13: no connection limits. 14.
  return PC_REASON_ALLOWED;
}

}  // namespace

ModelVerdict ModelJudge(const v1::Policy& policy, const std::vector<uint8_t>& frame) {
  Packet p;
  pc_reason reason;
  switch (ParseFrame(frame, p)) {
    case Parse::kNonIp:
      reason = PC_REASON_NON_IP;
      break;
    case Parse::kMalformed:
      reason = PC_REASON_MALFORMED;
      break;
    default:
      reason = Evaluate(policy, p);
      break;
  }
  // PRODUCT.md's reason table, written out rather than taken from abi.h's
  // pc_reason_drops(), so that the model checks it.
  const bool drop = reason == PC_REASON_BLOCKLIST || reason == PC_REASON_NOT_ALLOWLISTED ||
                    reason == PC_REASON_PORT_CLOSED || reason == PC_REASON_SYN_RATE_SOURCE ||
                    reason == PC_REASON_SYN_RATE_GLOBAL || reason == PC_REASON_CONN_RATE_SOURCE ||
                    reason == PC_REASON_FRAGMENT || reason == PC_REASON_ICMP_DENIED ||
                    reason == PC_REASON_MALFORMED || reason == PC_REASON_ICMP_RATE_SOURCE;
  const bool audit = policy.spec().mode() == v1::MODE_AUDIT;
  if (reason == PC_REASON_SYN_COOKIE) return {audit ? PC_VERDICT_AUDIT : PC_VERDICT_COOKIE, reason};
  if (!drop) return {PC_VERDICT_PASS, reason};
  return {audit ? PC_VERDICT_AUDIT : PC_VERDICT_DROP, reason};
}

}  // namespace portcullis::testing
