#include "tests/support/frame.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <stdexcept>

namespace portcullis::testing {
namespace {

bool IsV6(const std::string& addr) { return addr.find(':') != std::string::npos; }

void Put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(v >> 8);
  b.push_back(v & 0xFF);
}

uint32_t SumWords(const uint8_t* data, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (len & 1) sum += data[len - 1] << 8;
  return sum;
}

uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::vector<uint8_t> Addr(const std::string& text) {
  std::vector<uint8_t> out(IsV6(text) ? 16 : 4);
  if (inet_pton(IsV6(text) ? AF_INET6 : AF_INET, text.c_str(), out.data()) != 1) {
    throw std::invalid_argument("bad address in test frame: " + text);
  }
  return out;
}

}  // namespace

std::vector<uint8_t> Frame::Build() const {
  const bool v6 = IsV6(src);
  const std::vector<uint8_t> s = Addr(src), d = Addr(dst);

  // Transport header and payload.
  std::vector<uint8_t> l4;
  const bool first_fragment = frag_offset == 0;
  if (first_fragment && proto == IPPROTO_TCP) {
    Put16(l4, sport);
    Put16(l4, dport);
    for (uint32_t word : {tcp_seq, tcp_ack}) {
      Put16(l4, static_cast<uint16_t>(word >> 16));
      Put16(l4, static_cast<uint16_t>(word));
    }
    const size_t words = (tcp_options.size() + 3) / 4;
    l4.push_back(static_cast<uint8_t>((5 + words) << 4));  // doff
    l4.push_back(tcp_flags);
    Put16(l4, 65535);  // window
    Put16(l4, 0);      // checksum
    Put16(l4, 0);      // urgent
    l4.insert(l4.end(), tcp_options.begin(), tcp_options.end());
    l4.resize(20 + words * 4, 0);
  } else if (first_fragment && proto == IPPROTO_UDP) {
    Put16(l4, sport);
    Put16(l4, dport);
    Put16(l4, static_cast<uint16_t>(8 + payload));
    Put16(l4, 0);
  } else if (first_fragment && (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)) {
    l4 = {icmp_type, icmp_code, 0, 0, 0, 0, 0, 0};
  }
  l4.insert(l4.end(), payload, 0xAB);

  if (first_fragment && (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMPV6 ||
                         (proto == IPPROTO_ICMP && !v6))) {
    uint32_t sum = 0;
    if (proto != IPPROTO_ICMP) {  // pseudo-header
      sum = SumWords(s.data(), s.size(), sum);
      sum = SumWords(d.data(), d.size(), sum);
      sum += proto + static_cast<uint32_t>(l4.size());
    }
    sum = SumWords(l4.data(), l4.size(), sum);
    const size_t at = proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : 2;
    if (l4.size() >= at + 2) {
      const uint16_t c = Fold(sum);
      l4[at] = c >> 8;
      l4[at + 1] = c & 0xFF;
    }
  }

  std::vector<uint8_t> l3;
  if (!v6) {
    const uint8_t ihl = 5 + ipv4_option_words;
    l3.push_back(0x40 | ihl);
    l3.push_back(0);
    Put16(l3, static_cast<uint16_t>(ihl * 4 + l4.size()));
    Put16(l3, 0x1234);  // id
    Put16(l3, static_cast<uint16_t>((more_fragments ? 0x2000 : 0) | frag_offset));
    l3.push_back(hop_limit);
    l3.push_back(proto);
    Put16(l3, 0);
    l3.insert(l3.end(), s.begin(), s.end());
    l3.insert(l3.end(), d.begin(), d.end());
    l3.insert(l3.end(), ipv4_option_words * 4, 0x01);  // NOP options
    const uint16_t c = Fold(SumWords(l3.data(), l3.size()));
    l3[10] = c >> 8;
    l3[11] = c & 0xFF;
  } else {
    std::vector<uint8_t> ext;
    for (size_t i = 0; i < ipv6_ext.size(); ++i) {
      const uint8_t next = i + 1 < ipv6_ext.size() ? ipv6_ext[i + 1].type : proto;
      if (ipv6_ext[i].type == IPPROTO_FRAGMENT) {
        ext.push_back(next);
        ext.push_back(0);
        Put16(ext, static_cast<uint16_t>((frag_offset << 3) | (more_fragments ? 1 : 0)));
        for (int k = 0; k < 4; ++k) ext.push_back(0x11);
      } else {
        const size_t len = (ipv6_ext[i].len8 + 1) * 8;
        ext.push_back(next);
        ext.push_back(ipv6_ext[i].len8);
        ext.push_back(1);  // PadN option covering the rest
        ext.push_back(static_cast<uint8_t>(len - 4));
        ext.insert(ext.end(), len - 4, 0);
      }
    }
    l3 = {0x60, 0, 0, 0};
    Put16(l3, static_cast<uint16_t>(ext.size() + l4.size()));
    l3.push_back(ipv6_ext.empty() ? proto : ipv6_ext[0].type);
    l3.push_back(hop_limit);
    l3.insert(l3.end(), s.begin(), s.end());
    l3.insert(l3.end(), d.begin(), d.end());
    l3.insert(l3.end(), ext.begin(), ext.end());
  }

  std::vector<uint8_t> frame = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};
  for (size_t i = 0; i < vlan_tpids.size(); ++i) {
    Put16(frame, vlan_tpids[i]);
    Put16(frame, static_cast<uint16_t>(100 + i));  // TCI: VLAN id
  }
  Put16(frame, ethertype ? ethertype : (v6 ? 0x86DD : 0x0800));
  frame.insert(frame.end(), l3.begin(), l3.end());
  frame.insert(frame.end(), l4.begin(), l4.end());
  return frame;
}

Frame Tcp(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport,
          uint8_t flags) {
  Frame f;
  f.src = src;
  f.dst = dst;
  f.proto = IPPROTO_TCP;
  f.sport = sport;
  f.dport = dport;
  f.tcp_flags = flags;
  return f;
}

Frame Syn(const std::string& src, const std::string& dst, uint16_t dport, uint16_t sport) {
  return Tcp(src, dst, sport, dport, kSyn);
}

Frame Udp(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport) {
  Frame f;
  f.src = src;
  f.dst = dst;
  f.proto = IPPROTO_UDP;
  f.sport = sport;
  f.dport = dport;
  f.payload = 16;
  return f;
}

Frame Icmp(const std::string& src, const std::string& dst, uint8_t type, uint8_t code) {
  Frame f;
  f.src = src;
  f.dst = dst;
  f.proto = IsV6(src) ? uint8_t{IPPROTO_ICMPV6} : uint8_t{IPPROTO_ICMP};
  f.icmp_type = type;
  f.icmp_code = code;
  f.payload = 8;
  // Neighbour discovery is sent with hop limit 255 (RFC 4861).
  if (f.proto == IPPROTO_ICMPV6 && type >= 133 && type <= 137) f.hop_limit = 255;
  return f;
}

std::vector<uint8_t> Arp() {
  // Broadcast who-has 198.18.0.2 tell 198.18.0.1.
  return {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0,  0, 0, 0, 1, 0x08, 0x06,  // Ethernet
          0,    1,    8,    0,    6,    4,    0,    1,                           // ARP request
          2,    0,    0,    0,    0,    1,    198,  18, 0, 1, 0, 0, 0,    0,
          0,    0,    198,  18,   0,    2};
}

}  // namespace portcullis::testing
