// Builds Ethernet frames for BPF_PROG_TEST_RUN tests, benchmarks and the
// demo capture: VLAN tags, IPv4 options, IPv6 extension headers, fragments,
// TCP/UDP/ICMP. Checksums are filled in so that captures look right in
// Wireshark; the datapath does not check them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace portcullis::testing {

struct Ipv6Ext {
  uint8_t type;      // IPPROTO_HOPOPTS, _ROUTING, _DSTOPTS, _FRAGMENT
  uint8_t len8 = 0;  // hdrlen field: (len8 + 1) * 8 bytes (ignored for fragment)
};

struct Frame {
  // Layer 2
  std::vector<uint16_t> vlan_tpids;  // outermost first: 0x8100 or 0x88a8
  uint16_t ethertype = 0;            // set by Ipv4()/Ipv6(); override for ARP etc.
  // Layer 3
  std::string src, dst;           // textual addresses
  uint8_t hop_limit = 64;         // IPv4 TTL, IPv6 hop limit
  uint8_t ipv4_option_words = 0;  // 4-byte NOP words of IPv4 options
  std::vector<Ipv6Ext> ipv6_ext;
  uint16_t frag_offset = 0;  // in 8-byte units
  bool more_fragments = false;
  // Layer 4
  uint8_t proto = 0;
  uint16_t sport = 0, dport = 0;
  uint8_t tcp_flags = 0;
  uint32_t tcp_seq = 1, tcp_ack = 0;
  std::vector<uint8_t> tcp_options;  // as sent; padded with EOL to 4-byte words
  uint8_t icmp_type = 0, icmp_code = 0;
  size_t payload = 0;

  std::vector<uint8_t> Build() const;
};

Frame Tcp(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport,
          uint8_t flags);
Frame Syn(const std::string& src, const std::string& dst, uint16_t dport, uint16_t sport = 40000);
Frame Udp(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport);
Frame Icmp(const std::string& src, const std::string& dst, uint8_t type, uint8_t code);
std::vector<uint8_t> Arp();

inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kAck = 0x10;
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kRst = 0x04;

}  // namespace portcullis::testing
