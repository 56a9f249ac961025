// Every verdict reason of PRODUCT.md, for IPv4 and IPv6, and every parser
// edge case, through the real XDP program (BPF_PROG_TEST_RUN). Each case
// also checks that exactly one packet was counted, under its verdict and
// reason.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "datapath/flow_seed.h"
#include "tests/support/datapath_fixture.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_link.h"

namespace portcullis::testing {
namespace {

constexpr char kPolicy[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: verdict-test}
spec:
  mode: enforce
  defaultAction: deny
  destinations: [198.18.0.0/24, "2001:db8:10::/64"]
  sets:
    admins: [198.18.1.0/28, "2001:db8:1::/64"]
    office: [198.18.2.0/24, "2001:db8:100::/48"]
    vip: [198.18.2.7/32, "2001:db8:100::7/128"]
  blocklist: [198.18.3.0/24, "2001:db8:bad::/48", 198.18.1.8/29, "2001:db8:1::8/125",
              198.18.2.66/32, "2001:db8:100::66/128"]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: ["30000-32767"], proto: tcp, from: [office]}
    - {ports: [10254], proto: tcp, from: [admins]}
    - {ports: [8443], proto: tcp, from: [vip]}
    - {ports: [443, 53], proto: udp, from: any}
  icmp: allow
  fragments: deny
)";

// The hosts of the test network, per family.
struct Hosts {
  std::string dst, unpoliced_dst, client, admin, admin_blocked, office, vip, office_blocked,
      blocked;
};
const Hosts kV4 = {"198.18.0.10", "198.18.9.9", "198.18.4.1",  "198.18.1.5", "198.18.1.9",
                   "198.18.2.9",  "198.18.2.7", "198.18.2.66", "198.18.3.3"};
const Hosts kV6 = {"2001:db8:10::10", "2001:db8:99::1",   "2001:db8:4::1",
                   "2001:db8:1::5",   "2001:db8:1::9",    "2001:db8:100::9",
                   "2001:db8:100::7", "2001:db8:100::66", "2001:db8:bad::3"};

std::string Variant(absl::string_view from, absl::string_view to) {
  return absl::StrReplaceAll(kPolicy, {{from, to}});
}

struct Case {
  std::string name;
  std::function<std::vector<uint8_t>(const Hosts&)> frame;
  pc_verdict verdict;
  pc_reason reason;
  std::string policy = kPolicy;
};

std::vector<uint8_t> Truncated(std::vector<uint8_t> f, size_t len) {
  f.resize(len);
  return f;
}

// L3 offset of an untagged frame.
constexpr size_t kL3 = 14;

// Rewrites the IP length field so the datagram ends `keep` bytes into L4,
// and cuts the frame there: a consistent IP packet with a short L4 header.
std::vector<uint8_t> ShortL4(const Frame& frame, size_t keep) {
  std::vector<uint8_t> f = frame.Build();
  const bool v6 = frame.src.find(':') != std::string::npos;
  const size_t l3_len = v6 ? 40 : 20;
  f.resize(kL3 + l3_len + keep);
  if (v6) {
    f[kL3 + 4] = 0;
    f[kL3 + 5] = static_cast<uint8_t>(keep);
  } else {
    f[kL3 + 2] = 0;
    f[kL3 + 3] = static_cast<uint8_t>(l3_len + keep);
  }
  return f;
}

Frame WithFragment(Frame f, uint16_t offset, bool more) {
  if (f.src.find(':') != std::string::npos) f.ipv6_ext.push_back({IPPROTO_FRAGMENT});
  f.frag_offset = offset;
  f.more_fragments = more;
  return f;
}

std::vector<Case> Cases() {
  using H = const Hosts&;
  std::vector<Case> c = {
      {"allowed_any_source", [](H h) { return Syn(h.client, h.dst, 443).Build(); }, PC_VERDICT_PASS,
       PC_REASON_ALLOWED},
      {"allowed_set_member_in_range", [](H h) { return Syn(h.office, h.dst, 31000).Build(); },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
      {"allowed_exact_host_rule", [](H h) { return Syn(h.vip, h.dst, 8443).Build(); },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
      {"exact_host_keeps_enclosing_sets", [](H h) { return Syn(h.vip, h.dst, 30000).Build(); },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
      {"allowed_udp", [](H h) { return Udp(h.client, h.dst, 5000, 443).Build(); }, PC_VERDICT_PASS,
       PC_REASON_ALLOWED},
      {"allowed_icmp_echo",
       [](H h) {
         return Icmp(h.client, h.dst, h.client.find(':') == std::string::npos ? 8 : 128, 0).Build();
       },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
      {"failsafe", [](H h) { return Syn(h.admin, h.dst, 22).Build(); }, PC_VERDICT_PASS,
       PC_REASON_FAILSAFE},
      {"failsafe_before_blocklist", [](H h) { return Syn(h.admin_blocked, h.dst, 22).Build(); },
       PC_VERDICT_PASS, PC_REASON_FAILSAFE},
      {"not_policed", [](H h) { return Syn(h.blocked, h.unpoliced_dst, 443).Build(); },
       PC_VERDICT_PASS, PC_REASON_NOT_POLICED},
      {"non_ip_arp", [](H) { return Arp(); }, PC_VERDICT_PASS, PC_REASON_NON_IP},
      // An 802.3 frame whose length field is 0, bare and inside a tag: not
      // IP, not malformed (found by the differential test).
      {"non_ip_ethertype_zero",
       [](H) {
         std::vector<uint8_t> f = Arp();
         f[12] = f[13] = 0;
         return f;
       },
       PC_VERDICT_PASS, PC_REASON_NON_IP},
      {"non_ip_ethertype_zero_in_vlan",
       [](H) {
         std::vector<uint8_t> f = Arp();
         f[12] = 0x81;
         f[13] = 0x00;
         f.insert(f.begin() + 14, {0x00, 0x05, 0x00, 0x00});
         return f;
       },
       PC_VERDICT_PASS, PC_REASON_NON_IP},
      {"blocklist", [](H h) { return Syn(h.blocked, h.dst, 443).Build(); }, PC_VERDICT_DROP,
       PC_REASON_BLOCKLIST},
      {"blocklist_inside_allowed_set",
       [](H h) { return Syn(h.admin_blocked, h.dst, 10254).Build(); }, PC_VERDICT_DROP,
       PC_REASON_BLOCKLIST},
      {"blocklist_exact_host", [](H h) { return Syn(h.office_blocked, h.dst, 31000).Build(); },
       PC_VERDICT_DROP, PC_REASON_BLOCKLIST},
      {"not_allowlisted", [](H h) { return Syn(h.client, h.dst, 10254).Build(); }, PC_VERDICT_DROP,
       PC_REASON_NOT_ALLOWLISTED},
      {"not_allowlisted_set_member_not_vip", [](H h) { return Syn(h.office, h.dst, 8443).Build(); },
       PC_VERDICT_DROP, PC_REASON_NOT_ALLOWLISTED},
      {"failsafe_port_other_source", [](H h) { return Syn(h.client, h.dst, 22).Build(); },
       PC_VERDICT_DROP, PC_REASON_PORT_CLOSED},
      {"port_closed_tcp", [](H h) { return Syn(h.client, h.dst, 8080).Build(); }, PC_VERDICT_DROP,
       PC_REASON_PORT_CLOSED},
      {"port_closed_udp_proto_differs", [](H h) { return Udp(h.client, h.dst, 5000, 80).Build(); },
       PC_VERDICT_DROP, PC_REASON_PORT_CLOSED},
      {"port_closed_other_protocol",
       [](H h) {
         Frame f = Syn(h.client, h.dst, 443);
         f.proto = 47;  // GRE: no ports, no rule
         return f.Build();
       },
       PC_VERDICT_DROP, PC_REASON_PORT_CLOSED},
      {"default_allow_opens_unlisted_ports", [](H h) { return Syn(h.client, h.dst, 8080).Build(); },
       PC_VERDICT_PASS, PC_REASON_ALLOWED, Variant("defaultAction: deny", "defaultAction: allow")},
      {"fragment_non_first",
       [](H h) { return WithFragment(Syn(h.client, h.dst, 443), 100, false).Build(); },
       PC_VERDICT_DROP, PC_REASON_FRAGMENT},
      {"fragment_allowed_by_policy",
       [](H h) { return WithFragment(Syn(h.client, h.dst, 443), 100, true).Build(); },
       PC_VERDICT_PASS, PC_REASON_ALLOWED, Variant("fragments: deny", "fragments: allow")},
      {"fragment_first_is_judged_by_ports",
       [](H h) { return WithFragment(Syn(h.client, h.dst, 10254), 0, true).Build(); },
       PC_VERDICT_DROP, PC_REASON_NOT_ALLOWLISTED},
      {"fragment_blocklist_first",
       [](H h) { return WithFragment(Syn(h.blocked, h.dst, 443), 100, false).Build(); },
       PC_VERDICT_DROP, PC_REASON_BLOCKLIST},
      {"icmp_denied",
       [](H h) {
         return Icmp(h.client, h.dst, h.client.find(':') == std::string::npos ? 8 : 128, 0).Build();
       },
       PC_VERDICT_DROP, PC_REASON_ICMP_DENIED, Variant("icmp: allow", "icmp: deny")},
      {"icmp_essential_passes_when_denied",
       [](H h) {
         const bool v4 = h.client.find(':') == std::string::npos;
         return Icmp(h.client, h.dst, v4 ? 3 : 2, v4 ? 4 : 0).Build();  // frag needed / PTB
       },
       PC_VERDICT_PASS, PC_REASON_ALLOWED, Variant("icmp: allow", "icmp: deny")},
      {"malformed_truncated_tcp", [](H h) { return ShortL4(Syn(h.client, h.dst, 443), 12); },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"malformed_truncated_udp", [](H h) { return ShortL4(Udp(h.client, h.dst, 1, 443), 6); },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"malformed_truncated_icmp",
       [](H h) {
         return ShortL4(Icmp(h.client, h.dst, h.client.find(':') == std::string::npos ? 8 : 128, 0),
                        4);
       },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"malformed_tcp_doff_below_5",
       [](H h) {
         std::vector<uint8_t> f = Syn(h.client, h.dst, 443).Build();
         const size_t l4 = kL3 + (h.client.find(':') == std::string::npos ? 20 : 40);
         f[l4 + 12] = 4 << 4;
         return f;
       },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"malformed_ip_length_beyond_frame",
       [](H h) {
         std::vector<uint8_t> f = Syn(h.client, h.dst, 443).Build();
         return Truncated(f, f.size() - 1);
       },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"malformed_l3_header_cut",
       [](H h) { return Truncated(Syn(h.client, h.dst, 443).Build(), kL3 + 10); }, PC_VERDICT_DROP,
       PC_REASON_MALFORMED},
      {"vlan_single_tag",
       [](H h) {
         Frame f = Syn(h.client, h.dst, 443);
         f.vlan_tpids = {0x8100};
         return f.Build();
       },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
      {"vlan_qinq",
       [](H h) {
         Frame f = Syn(h.client, h.dst, 10254);
         f.vlan_tpids = {0x88A8, 0x8100};
         return f.Build();
       },
       PC_VERDICT_DROP, PC_REASON_NOT_ALLOWLISTED},
      {"vlan_three_tags_malformed",
       [](H h) {
         Frame f = Syn(h.client, h.dst, 443);
         f.vlan_tpids = {0x88A8, 0x8100, 0x8100};
         return f.Build();
       },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"vlan_tag_truncated",
       [](H h) {
         Frame f = Syn(h.client, h.dst, 443);
         f.vlan_tpids = {0x8100};
         return Truncated(f.Build(), 16);
       },
       PC_VERDICT_DROP, PC_REASON_MALFORMED},
      {"trailing_ethernet_padding_ok",
       [](H h) {
         std::vector<uint8_t> f = Syn(h.client, h.dst, 443).Build();
         f.resize(f.size() + 18, 0);
         return f;
       },
       PC_VERDICT_PASS, PC_REASON_ALLOWED},
  };
  return c;
}

class VerdictTest : public DatapathTest,
                    public ::testing::WithParamInterface<std::tuple<Case, bool>> {};

TEST_P(VerdictTest, JudgesAndCountsOnePacket) {
  const auto& [c, v6] = GetParam();
  Install(c.policy);
  const std::vector<uint8_t> frame = c.frame(v6 ? kV6 : kV4);
  const uint64_t before = Counted(c.verdict, c.reason);
  const uint64_t total_before = CountedTotal();
  datapath::Judgement j = Run(frame);
  EXPECT_EQ(ReasonName(j.reason), ReasonName(c.reason));
  EXPECT_EQ(VerdictName(j.verdict), VerdictName(c.verdict));
  EXPECT_EQ(j.action, c.verdict == PC_VERDICT_DROP ? XDP_DROP : XDP_PASS);
  EXPECT_EQ(j.version, 1u);
  EXPECT_EQ(Counted(c.verdict, c.reason), before + 1);
  EXPECT_EQ(CountedTotal(), total_before + 1);

  // The pod-facing TC program runs the same verdict function. The kernel's skb
  // test harness refuses frames cut inside the IP header, so those are
  // checked at XDP only.
  auto t = runner_->Run(frame, PC_HOOK_TC);
  if (!t.ok() && t.status().code() == absl::StatusCode::kInvalidArgument &&
      c.name == "malformed_l3_header_cut") {
    return;
  }
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ReasonName(t->reason), ReasonName(c.reason));
  EXPECT_EQ(t->action, c.verdict == PC_VERDICT_DROP ? TC_ACT_SHOT : TC_ACT_OK);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

INSTANTIATE_TEST_SUITE_P(AllReasons, VerdictTest,
                         ::testing::Combine(::testing::ValuesIn(Cases()), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<Case, bool>>& info) {
                           return std::get<0>(info.param).name +
                                  (std::get<1>(info.param) ? "_v6" : "_v4");
                         });

// ---- family-specific parser edges ----

class ParserTest : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (IsSkipped()) return;
    Install(kPolicy);
  }
};

TEST_F(ParserTest, Ipv4OptionsAreSkippedToTheTransportHeader) {
  for (uint8_t words : {1, 5, 10}) {
    Frame f = Syn(kV4.client, kV4.dst, 10254);
    f.ipv4_option_words = words;
    EXPECT_EQ(Run(f).reason, PC_REASON_NOT_ALLOWLISTED) << int(words) << " option words";
  }
}

TEST_F(ParserTest, Ipv4HeaderLengthBelowFiveIsMalformed) {
  for (uint8_t ihl : {0, 1, 4}) {
    std::vector<uint8_t> f = Syn(kV4.client, kV4.dst, 443).Build();
    f[kL3] = static_cast<uint8_t>(0x40 | ihl);
    EXPECT_EQ(Run(f).reason, PC_REASON_MALFORMED) << "ihl " << int(ihl);
  }
}

TEST_F(ParserTest, Ipv4TotalLengthBelowHeaderIsMalformed) {
  std::vector<uint8_t> f = Syn(kV4.client, kV4.dst, 443).Build();
  f[kL3 + 2] = 0;
  f[kL3 + 3] = 19;
  EXPECT_EQ(Run(f).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, Ipv4HeaderOptionsBeyondFrameAreMalformed) {
  Frame f = Syn(kV4.client, kV4.dst, 443);
  f.ipv4_option_words = 10;
  EXPECT_EQ(Run(Truncated(f.Build(), kL3 + 30)).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, WrongIpVersionIsMalformed) {
  std::vector<uint8_t> f4 = Syn(kV4.client, kV4.dst, 443).Build();
  f4[kL3] = 0x65;
  EXPECT_EQ(Run(f4).reason, PC_REASON_MALFORMED);
  std::vector<uint8_t> f6 = Syn(kV6.client, kV6.dst, 443).Build();
  f6[kL3] = 0x40;
  EXPECT_EQ(Run(f6).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, EachIpv6ExtensionHeaderIsWalked) {
  for (uint8_t type : {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT}) {
    Frame f = Syn(kV6.client, kV6.dst, 10254);
    f.ipv6_ext = {{type, 1}};
    EXPECT_EQ(Run(f).reason, PC_REASON_NOT_ALLOWLISTED) << "extension header " << int(type);
  }
}

TEST_F(ParserTest, Ipv6ChainUpToTheBoundIsWalkedAndLongerIsMalformed) {
  Frame f = Syn(kV6.client, kV6.dst, 10254);
  for (int i = 0; i < PC_MAX_IPV6_EXT_HEADERS; ++i) {
    f.ipv6_ext.push_back({static_cast<uint8_t>(i % 2 ? IPPROTO_DSTOPTS : IPPROTO_HOPOPTS), 0});
  }
  EXPECT_EQ(Run(f).reason, PC_REASON_NOT_ALLOWLISTED);
  f.ipv6_ext.push_back({IPPROTO_DSTOPTS, 0});
  EXPECT_EQ(Run(f).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, Ipv6ExtensionHeaderBeyondPayloadIsMalformed) {
  Frame f = Syn(kV6.client, kV6.dst, 443);
  f.ipv6_ext = {{IPPROTO_DSTOPTS, 3}};  // 32 bytes
  EXPECT_EQ(Run(Truncated(f.Build(), kL3 + 40 + 16)).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, Ipv6PayloadLengthBeyondFrameIsMalformed) {
  std::vector<uint8_t> f = Syn(kV6.client, kV6.dst, 443).Build();
  f[kL3 + 5] += 1;
  EXPECT_EQ(Run(f).reason, PC_REASON_MALFORMED);
}

TEST_F(ParserTest, NeighbourDiscoveryPassesOnlyFromANeighbour) {
  // Step 7: hop limit 255, as RFC 4861 requires of receivers. Sent from
  // further away (hop limit 64), it is ordinary ICMP and icmp: deny drops it.
  Install(Variant("icmp: allow", "icmp: deny"), 2);
  for (uint8_t type = 133; type <= 137; ++type) {
    Frame nd = Icmp(kV6.client, kV6.dst, type, 0);
    ASSERT_EQ(nd.hop_limit, 255);
    datapath::Judgement j = Run(nd);
    EXPECT_EQ(j.reason, PC_REASON_ALLOWED) << "ICMPv6 type " << int(type);
    EXPECT_EQ(j.verdict, PC_VERDICT_PASS);
    nd.hop_limit = 64;
    EXPECT_EQ(Run(nd).reason, PC_REASON_ICMP_DENIED) << "ICMPv6 type " << int(type);
  }
  EXPECT_EQ(Run(Icmp(kV6.client, kV6.dst, 128, 0)).reason, PC_REASON_ICMP_DENIED);
}

TEST_F(ParserTest, EssentialIcmpComesAfterTheBlocklist) {
  // Step 6 before step 7: a blocklisted host's "fragmentation needed" and
  // "packet too big" are dropped; anyone else's pass under icmp: deny.
  Install(Variant("icmp: allow", "icmp: deny"), 2);
  EXPECT_EQ(Run(Icmp(kV4.blocked, kV4.dst, 3, 4)).reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(Run(Icmp(kV6.blocked, kV6.dst, 2, 0)).reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(Run(Icmp(kV6.blocked, kV6.dst, 135, 0)).reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(Run(Icmp(kV4.client, kV4.dst, 3, 4)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Icmp(kV6.client, kV6.dst, 2, 0)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Icmp(kV4.client, kV4.dst, 3, 1)).reason, PC_REASON_ICMP_DENIED);
}

TEST_F(ParserTest, EssentialIcmpTakesATokenFromTheSourcesBudget) {
  // The default budget (rate 100, burst 200): the 201st packet of a burst
  // is icmp_rate_source, another source has its own budget, and tokens
  // come back at 100 a second.
  for (const Hosts* h : {&kV4, &kV6}) {
    SetUp();
    const Frame pmtu = h == &kV4 ? Icmp(h->client, h->dst, 3, 4) : Icmp(h->client, h->dst, 2, 0);
    for (int i = 0; i < 200; ++i) ASSERT_EQ(Run(pmtu).reason, PC_REASON_ALLOWED) << i;
    datapath::Judgement over = Run(pmtu);
    EXPECT_EQ(over.reason, PC_REASON_ICMP_RATE_SOURCE);
    EXPECT_EQ(over.verdict, PC_VERDICT_DROP);
    Frame other = pmtu;
    other.src = h->office;
    EXPECT_EQ(Run(other).reason, PC_REASON_ALLOWED);
    SetClock(1'000'000'000 + 20'000'000);  // 20 ms: two tokens
    EXPECT_EQ(Run(pmtu).reason, PC_REASON_ALLOWED);
    EXPECT_EQ(Run(pmtu).reason, PC_REASON_ALLOWED);
    EXPECT_EQ(Run(pmtu).reason, PC_REASON_ICMP_RATE_SOURCE);
    // Ordinary ICMP is judged by icmp:, never by the budget.
    EXPECT_EQ(Run(Icmp(h->client, h->dst, h == &kV4 ? 8 : 128, 0)).reason, PC_REASON_ALLOWED);
  }
}

TEST_F(ParserTest, TheIcmpBudgetIsThePolicysAndAuditOnlyCountsIt) {
  Install(absl::StrCat(kPolicy, "  rateLimits:\n    icmp:\n      perSource: {rate: 1, burst: 3}\n"),
          2);
  const Frame nd = Icmp(kV6.client, kV6.dst, 135, 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Run(nd).reason, PC_REASON_ALLOWED) << i;
  EXPECT_EQ(Run(nd).reason, PC_REASON_ICMP_RATE_SOURCE);
  Install(
      absl::StrReplaceAll(
          absl::StrCat(kPolicy, "  rateLimits:\n    icmp:\n      perSource: {rate: 1, burst: 3}\n"),
          {{"mode: enforce", "mode: audit"}}),
      3);
  const datapath::Judgement audited = Run(nd);
  EXPECT_EQ(audited.reason, PC_REASON_ICMP_RATE_SOURCE);
  EXPECT_EQ(audited.verdict, PC_VERDICT_AUDIT);
}

TEST_F(ParserTest, SourcesThatNeverAppearOnTheWireAreMalformed) {
  // Step 2: IPv4-mapped and IPv4-compatible IPv6 sources (a dual-stack socket
  // would see the embedded IPv4 address: here a blocklisted one), and
  // multicast sources of either family. Checked before anything else, so
  // even a port open to any is no way in.
  for (const char* src :
       {"::ffff:198.18.3.3", "::ffff:198.18.4.1", "::198.18.3.3", "::1", "ff02::1", "ff0e::5"}) {
    EXPECT_EQ(Run(Syn(src, kV6.dst, 443)).reason, PC_REASON_MALFORMED) << src;
    EXPECT_EQ(Run(Udp(src, kV6.dst, 5353, 53)).reason, PC_REASON_MALFORMED) << src;
  }
  for (const char* src : {"224.0.0.5", "239.255.255.250", "233.1.2.3"}) {
    EXPECT_EQ(Run(Syn(src, kV4.dst, 443)).reason, PC_REASON_MALFORMED) << src;
  }
  // Their neighbours are ordinary sources.
  EXPECT_EQ(Run(Syn("::fffe:198.18.4.1", kV6.dst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn("::1:0:0:1", kV6.dst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn("223.255.255.255", kV4.dst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn("240.0.0.1", kV4.dst, 443)).reason, PC_REASON_ALLOWED);
  // Duplicate address detection sends its neighbour solicitation from ::.
  EXPECT_EQ(Run(Icmp("::", "ff02::1:ff00:10", 135, 0)).reason, PC_REASON_NOT_POLICED);
  Install(Variant("  destinations: [198.18.0.0/24, \"2001:db8:10::/64\"]\n", ""), 2);
  EXPECT_EQ(Run(Icmp("::", "ff02::1:ff00:10", 135, 0)).reason, PC_REASON_ALLOWED);
}

TEST_F(ParserTest, ReturnTrafficOfEgressFlowIsEstablished) {
  for (const Hosts* h : {&kV4, &kV6}) {
    // A reply from the node's API server on a port the policy closes.
    Frame reply = Tcp(h->client, h->dst, 6443, 41000, kSyn | kAck);
    EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED);
    pc_flow_key key{};
    key.family = h == &kV4 ? PC_FAMILY_V4 : PC_FAMILY_V6;
    key.proto = IPPROTO_TCP;
    key.sport = htons(6443);
    key.dport = htons(41000);
    ASSERT_EQ(inet_pton(h == &kV4 ? AF_INET : AF_INET6, h->client.c_str(), key.src), 1);
    ASSERT_EQ(inet_pton(h == &kV4 ? AF_INET : AF_INET6, h->dst.c_str(), key.dst), 1);
    const pc_flow opened = {.opened_at = 1'000'000'000, .seen_at = 1'000'000'000};
    ASSERT_EQ(bpf_map_update_elem(dp_->map_fd(datapath::Map::kEgressFlows), &key, &opened, BPF_ANY),
              0);
    datapath::Judgement j = Run(reply);
    EXPECT_EQ(j.reason, PC_REASON_ESTABLISHED);
    EXPECT_EQ(j.verdict, PC_VERDICT_PASS);
    // Other ports of the same peer are not.
    EXPECT_EQ(Run(Tcp(h->client, h->dst, 6443, 41001, kAck)).reason, PC_REASON_PORT_CLOSED);
  }
}

// The recorder (on an uplink's egress, and on what a pod sends) makes the
// replies of flows the node or the pod opened established.
TEST_F(ParserTest, TcEgressRecordsFlowsWhoseRepliesAreEstablished) {
  for (const Hosts* h : {&kV4, &kV6}) {
    // The node (dst) connects out to the client's port 8080, then to 53/udp.
    const Frame tcp_reply = Tcp(h->client, h->dst, 8080, 42000, kSyn | kAck);
    const Frame udp_reply = Udp(h->client, h->dst, 53, 42001);
    EXPECT_EQ(Run(tcp_reply).reason, PC_REASON_PORT_CLOSED);
    EXPECT_EQ(Run(udp_reply).reason, PC_REASON_PORT_CLOSED);
    ASSERT_TRUE(runner_->RunEgress(Syn(h->dst, h->client, 8080, 42000).Build()).ok());
    ASSERT_TRUE(runner_->RunEgress(Udp(h->dst, h->client, 42001, 53).Build()).ok());
    EXPECT_EQ(Run(tcp_reply).reason, PC_REASON_ESTABLISHED);
    EXPECT_EQ(Run(udp_reply).reason, PC_REASON_ESTABLISHED);
    // Only the reverse of the recorded flow: another port of the peer is not.
    EXPECT_EQ(Run(Tcp(h->client, h->dst, 8081, 42000, kSyn | kAck)).reason, PC_REASON_PORT_CLOSED);
    // And a bare SYN from the peer is a new connection, never established.
    EXPECT_EQ(Run(Syn(h->client, h->dst, 42000, 8080)).reason, PC_REASON_PORT_CLOSED);
  }
}

TEST_F(ParserTest, TcEgressDoesNotRecordConnectionsTheNodeServes) {
  // The client connects to 10254 (admins only): the node answers with a
  // SYN-ACK and data; the client's next packets are still judged by policy.
  const Frame client_ack = Tcp(kV4.client, kV4.dst, 43000, 10254, kAck);
  ASSERT_TRUE(runner_->RunEgress(Tcp(kV4.dst, kV4.client, 10254, 43000, kSyn | kAck).Build()).ok());
  ASSERT_TRUE(runner_->RunEgress(Tcp(kV4.dst, kV4.client, 10254, 43000, kAck).Build()).ok());
  EXPECT_EQ(Run(client_ack).reason, PC_REASON_NOT_ALLOWLISTED);
  // A reply to an admitted inbound UDP flow is not a flow the node opened.
  const Frame query = Udp(kV4.client, kV4.dst, 43001, 53);
  EXPECT_EQ(Run(query).reason, PC_REASON_ALLOWED);  // admitted: now in ingress_flows
  ASSERT_TRUE(runner_->RunEgress(Udp(kV4.dst, kV4.client, 53, 43001).Build()).ok());
  EXPECT_EQ(Run(query).reason, PC_REASON_ALLOWED);
  // Only a SYN opens a TCP flow: the node's ACKs and data on a connection it
  // did not open (or that predates the agent) record nothing.
  ASSERT_TRUE(runner_->RunEgress(Tcp(kV4.dst, kV4.client, 44000, 6443, kAck).Build()).ok());
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 6443, 44000, kAck)).reason, PC_REASON_PORT_CLOSED);
}

uint64_t FlowEntries(const datapath::Datapath& dp) {
  uint64_t n = 0;
  pc_flow_key key{}, next{};
  const int fd = dp.map_fd(datapath::Map::kEgressFlows);
  for (void* prev = nullptr; bpf_map_get_next_key(fd, prev, &next) == 0; prev = &key) {
    key = next;
    ++n;
  }
  return n;
}

// The red team's priming: unsolicited ACKs make the kernel answer with RSTs
// (and a SYN-ACK answers a SYN). None of what leaves is a flow the node
// opened, so the attacker's packets on those 5-tuples stay judged, and the
// flow table does not grow.
TEST_F(ParserTest, WhatAnAttackerMakesTheNodeSendOpensNoFlow) {
  for (const Hosts* h : {&kV4, &kV6}) {
    for (uint16_t sport = 50000; sport < 50100; ++sport) {
      // 50000 -> 10254: admins only; the attacker is the client.
      ASSERT_TRUE(
          runner_->RunEgress(Tcp(h->dst, h->client, 10254, sport, kRst | kAck).Build()).ok());
      ASSERT_TRUE(runner_->RunEgress(Tcp(h->dst, h->client, 10254, sport, kRst).Build()).ok());
      ASSERT_TRUE(
          runner_->RunEgress(Tcp(h->dst, h->client, 10254, sport, kSyn | kAck).Build()).ok());
      ASSERT_TRUE(runner_->RunEgress(Tcp(h->dst, h->client, 10254, sport, kAck).Build()).ok());
      ASSERT_EQ(Run(Tcp(h->client, h->dst, sport, 10254, kAck)).reason, PC_REASON_NOT_ALLOWLISTED)
          << h->client << ":" << sport;
    }
  }
  EXPECT_EQ(FlowEntries(*dp_), 0u);
}

// A RST either way ends a flow at once; a FIN starts its close, after which
// it lives PC_FLOW_CLOSING_NS from the node's last packet. Idle flows expire.
TEST_F(ParserTest, FlowsEndWithRstFinOrIdleness) {
  const uint64_t t0 = 1'000'000'000;
  const Frame reply = Tcp(kV4.client, kV4.dst, 8080, 42000, kAck);
  auto open = [&] {
    ASSERT_TRUE(runner_->RunEgress(Syn(kV4.dst, kV4.client, 8080, 42000).Build()).ok());
  };
  open();
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 8080, 42000, kRst)).reason, PC_REASON_ESTABLISHED);
  EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED) << "the peer's RST did not end the flow";
  open();
  ASSERT_TRUE(runner_->RunEgress(Tcp(kV4.dst, kV4.client, 42000, 8080, kRst).Build()).ok());
  EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED) << "the node's RST did not end the flow";

  open();
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 8080, 42000, kFin | kAck)).reason, PC_REASON_ESTABLISHED);
  SetClock(t0 + PC_FLOW_CLOSING_NS);
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED);
  SetClock(t0 + PC_FLOW_CLOSING_NS + 1);
  EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED) << "a closing flow outlived its close";

  SetClock(t0);
  open();
  SetClock(t0 + PC_FLOW_TCP_IDLE_NS);
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED);
  // The node's packets keep it alive.
  ASSERT_TRUE(runner_->RunEgress(Tcp(kV4.dst, kV4.client, 42000, 8080, kAck).Build()).ok());
  SetClock(t0 + 2 * PC_FLOW_TCP_IDLE_NS);
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED);
  SetClock(t0 + 3 * PC_FLOW_TCP_IDLE_NS + 1);
  EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED) << "an idle TCP flow never expired";

  SetClock(t0);
  const Frame dns = Udp(kV4.client, kV4.dst, 53, 42001);
  ASSERT_TRUE(runner_->RunEgress(Udp(kV4.dst, kV4.client, 42001, 53).Build()).ok());
  SetClock(t0 + PC_FLOW_UDP_IDLE_NS);
  EXPECT_EQ(Run(dns).reason, PC_REASON_ESTABLISHED);
  SetClock(t0 + PC_FLOW_UDP_IDLE_NS + 1);
  EXPECT_EQ(Run(dns).reason, PC_REASON_PORT_CLOSED) << "an idle UDP flow never expired";
  EXPECT_EQ(FlowEntries(*dp_), 0u) << "expired entries are removed";
}

// Connections the node had open before the recorder ran are read from the
// socket table (here a fake one): outbound ones become established, served
// ones (a listener holds their port) do not, and dual-stack sockets' mapped
// addresses are IPv4 on the wire.
TEST_F(ParserTest, ConnectionsOpenBeforeTheAgentAreSeededFromTheSocketTable) {
  TempDir proc;
  // 198.18.0.10:41000 -> 198.18.4.1:6443 (outbound), :443 served, and a
  // dual-stack ::ffff:198.18.0.10:41001 -> ::ffff:198.18.4.1:8080.
  proc.Write("tcp",
             "  sl  local_address rem_address   st\n"
             "   0: 00000000:01BB 00000000:0000 0A 00000000:00000000\n"
             "   1: 0A0012C6:A028 010412C6:192B 01 00000000:00000000\n"
             "   2: 0A0012C6:01BB 010412C6:A000 01 00000000:00000000\n");
  proc.Write(
      "tcp6",
      "  sl  local_address                         remote_address                        st\n"
      "   0: 0000000000000000FFFF00000A0012C6:A029 0000000000000000FFFF0000010412C6:1F90 01 0\n");
  auto seeded = datapath::SeedOpenedFlows(*dp_, proc.path());
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  EXPECT_EQ(*seeded, 2u);
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 6443, 41000, kAck)).reason, PC_REASON_ESTABLISHED);
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 8080, 41001, kAck)).reason, PC_REASON_ESTABLISHED);
  EXPECT_EQ(Run(Tcp(kV4.client, kV4.dst, 40960, 443, kAck)).reason, PC_REASON_ALLOWED)
      << "a served connection is judged by the policy";
}

// An upgrade from a build whose egress_flows held only a last-seen time
// carries the node's flows over into the new map: its connections go on.
TEST_F(ParserTest, AnUpgradeCarriesOverTheFlowsTheNodeOpened) {
  const std::string dir = absl::StrCat("/sys/fs/bpf/pc-carry-", getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0) << dir << ": " << strerror(errno);
  const std::string pin = dir + "/egress_flows";
  absl::Cleanup remove = [&] {
    unlink(pin.c_str());
    rmdir(dir.c_str());
  };
  const int old = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "egress_flows", sizeof(pc_flow_key),
                                 sizeof(uint64_t), 16, nullptr);
  ASSERT_GE(old, 0);
  absl::Cleanup close_old = [old] { close(old); };
  pc_flow_key key{};
  key.family = PC_FAMILY_V4;
  key.proto = IPPROTO_TCP;
  key.sport = htons(6443);
  key.dport = htons(41000);
  ASSERT_EQ(inet_pton(AF_INET, kV4.client.c_str(), key.src), 1);
  ASSERT_EQ(inet_pton(AF_INET, kV4.dst.c_str(), key.dst), 1);
  const uint64_t seen = 900'000'000;
  ASSERT_EQ(bpf_map_update_elem(old, &key, &seen, BPF_ANY), 0);
  ASSERT_EQ(bpf_obj_pin(old, pin.c_str()), 0);

  const Frame reply = Tcp(kV4.client, kV4.dst, 6443, 41000, kAck);
  EXPECT_EQ(Run(reply).reason, PC_REASON_PORT_CLOSED);
  auto carried = dp_->CarryOverFlows(dir);
  ASSERT_TRUE(carried.ok()) << carried.status();
  EXPECT_EQ(*carried, 1u);
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED);
  auto none = dp_->CarryOverFlows(dir + "-missing");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0u);
}

// A blocklisted source is established only on flows the node opened after
// the blocklist last changed. Policies that keep the blocklist keep that
// moment, so they do not cut such flows.
TEST_F(ParserTest, ABlocklistedSourceIsEstablishedOnlyOnFlowsOpenedSinceTheBlocklisting) {
  const std::string peer = "198.18.7.7";
  const std::string unlisted = Variant("198.18.3.0/24", "198.18.3.0/24, 198.18.250.0/24");
  const std::string listed = Variant("198.18.3.0/24", "198.18.3.0/24, 198.18.7.0/24");
  const Frame reply = Tcp(peer, kV4.dst, 443, 42000, kAck);
  Install(unlisted, 2);
  ASSERT_TRUE(runner_->RunEgress(Syn(kV4.dst, peer, 443, 42000).Build()).ok());
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED);
  SetClock(2'000'000'000);
  Install(listed, 3);
  EXPECT_EQ(Run(reply).reason, PC_REASON_BLOCKLIST) << "a flow opened before the blocklisting";
  SetClock(3'000'000'000);
  ASSERT_TRUE(runner_->RunEgress(Syn(kV4.dst, peer, 443, 42000).Build()).ok());
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED) << "the node reopened it since";
  SetClock(4'000'000'000);
  Install(Variant("icmp: allow", "icmp: deny") + "", 4);  // another blocklist: the base one
  Install(absl::StrReplaceAll(listed, {{"icmp: allow", "icmp: deny"}}), 5);
  EXPECT_EQ(Run(reply).reason, PC_REASON_BLOCKLIST) << "the blocklist changed twice since";
  ASSERT_TRUE(runner_->RunEgress(Syn(kV4.dst, peer, 443, 42000).Build()).ok());
  SetClock(5'000'000'000);
  Install(absl::StrReplaceAll(
              listed, {{"icmp: allow", "icmp: deny"}, {"fragments: deny", "fragments: allow"}}),
          6);
  EXPECT_EQ(Run(reply).reason, PC_REASON_ESTABLISHED) << "an unchanged blocklist kept its moment";
  // Sources not in the blocklist never need the moment.
  const Frame other = Tcp(kV4.client, kV4.dst, 443, 42002, kAck);
  SetClock(1'000'000'000);
  ASSERT_TRUE(runner_->RunEgress(Syn(kV4.dst, kV4.client, 443, 42002).Build()).ok());
  SetClock(6'000'000'000);
  Install(unlisted, 7);
  EXPECT_EQ(Run(other).reason, PC_REASON_ESTABLISHED);
}

// The pod-facing program (a pod interface's egress) does not judge again
// what arrived on an interface XDP judges: no verdict, no count, no token.
// What arrived elsewhere (an overlay device, another pod) or came from the
// node itself is judged, on the headers the pod receives.
TEST_F(ParserTest, ThePodHookPassesWhatXdpJudgedAndJudgesTheRest) {
  constexpr uint32_t kUplink = 7001, kVxlan = 7002;
  ASSERT_TRUE(dp_->SetXdpInterface(kUplink, true).ok());
  const std::vector<uint8_t> closed = Syn(kV4.client, kV4.dst, 8080).Build();
  const uint64_t total = CountedTotal();
  const uint64_t closed_tc = Counted(PC_VERDICT_DROP, PC_REASON_PORT_CLOSED);
  auto skipped = runner_->Run(closed, PC_HOOK_TC, kUplink);
  ASSERT_FALSE(skipped.ok()) << "judged a packet that XDP had judged: "
                             << ReasonName(skipped->reason);
  EXPECT_EQ(skipped.status().message(), "the program returned without recording a verdict");
  EXPECT_EQ(CountedTotal(), total) << "counted twice";
  for (uint32_t from : {kVxlan, 0u}) {
    auto judged = runner_->Run(closed, PC_HOOK_TC, from);
    ASSERT_TRUE(judged.ok()) << judged.status();
    EXPECT_EQ(judged->reason, PC_REASON_PORT_CLOSED) << "from ifindex " << from;
    EXPECT_EQ(judged->action, TC_ACT_SHOT);
  }
  EXPECT_EQ(Counted(PC_VERDICT_DROP, PC_REASON_PORT_CLOSED), closed_tc + 2);
  // Once the uplink is forgotten (deleted; its index may be reused by a
  // pod's interface), what arrives there is judged.
  ASSERT_TRUE(dp_->SetXdpInterface(kUplink, false).ok());
  auto after = runner_->Run(closed, PC_HOOK_TC, kUplink);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->reason, PC_REASON_PORT_CLOSED);
}

// No token is taken twice: SYNs XDP judged do not drain the source's bucket
// at the pod hook.
TEST_F(ParserTest, ThePodHookTakesNoTokenForWhatXdpJudged) {
  Install(std::string(kPolicy) + "  rateLimits:\n    syn:\n      perSource: {rate: 1, burst: 2}\n",
          2);
  constexpr uint32_t kUplink = 7003;
  ASSERT_TRUE(dp_->SetXdpInterface(kUplink, true).ok());
  const std::vector<uint8_t> syn = Syn(kV4.client, kV4.dst, 443).Build();
  EXPECT_EQ(Run(syn).reason, PC_REASON_ALLOWED);              // XDP: one token
  EXPECT_FALSE(runner_->Run(syn, PC_HOOK_TC, kUplink).ok());  // the pod hook: none
  EXPECT_EQ(Run(syn).reason, PC_REASON_ALLOWED);              // XDP: the second token
  EXPECT_EQ(Run(syn).reason, PC_REASON_SYN_RATE_SOURCE);
  ASSERT_TRUE(dp_->SetXdpInterface(kUplink, false).ok());
}

TEST_F(ParserTest, AuditModePassesWouldBeDropsUnderTheirReason) {
  Install(Variant("mode: enforce", "mode: audit"), 2);
  const uint64_t before = Counted(PC_VERDICT_AUDIT, PC_REASON_BLOCKLIST);
  datapath::Judgement j = Run(Syn(kV4.blocked, kV4.dst, 443));
  EXPECT_EQ(j.verdict, PC_VERDICT_AUDIT);
  EXPECT_EQ(j.reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(j.action, XDP_PASS);
  EXPECT_EQ(Counted(PC_VERDICT_AUDIT, PC_REASON_BLOCKLIST), before + 1);
  EXPECT_EQ(Run(Syn(kV4.client, kV4.dst, 443)).verdict, PC_VERDICT_PASS);
}

TEST_F(ParserTest, DropsAreCountedByNamedPortOrOther) {
  auto port_counts = [&](uint16_t port, pc_reason reason) {
    auto counts = datapath::ReadPortDropCounters(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    uint64_t n = 0;
    for (const auto& c : counts.value_or(std::vector<datapath::PortDropCount>{})) {
      if (c.key.proto == IPPROTO_TCP && c.key.port == port && c.key.reason == reason) {
        n += c.packets;
      }
    }
    return n;
  };
  const uint64_t named = port_counts(10254, PC_REASON_NOT_ALLOWLISTED);
  const uint64_t other = port_counts(0, PC_REASON_PORT_CLOSED);
  Run(Syn(kV4.client, kV4.dst, 10254));  // a port the policy names
  Run(Syn(kV4.client, kV4.dst, 10254));
  Run(Syn(kV4.client, kV4.dst, 9999));  // one it does not
  EXPECT_EQ(port_counts(10254, PC_REASON_NOT_ALLOWLISTED), named + 2);
  EXPECT_EQ(port_counts(0, PC_REASON_PORT_CLOSED), other + 1);
  EXPECT_EQ(port_counts(9999, PC_REASON_PORT_CLOSED), 0u);
}

// An interface counts in its own block of a per-CPU array, or in the hash
// when another interface holds that block; all must show up per interface,
// exactly.
TEST_F(ParserTest, VerdictsAreCountedPerInterfaceOnBothCounterPaths) {
  // The loopback (ifindex 1) counts first and so owns block 1: the test's
  // block must be another one, or `first` would take the hash path too.
  // Blocks 2..127, and ifindexes far above what a host allocates itself.
  const unsigned block = 2 + getpid() % (PC_IFACE_SLOTS - 2);
  const unsigned base = PC_IFACE_SLOTS * 40 + block;
  ASSERT_NE(base % PC_IFACE_SLOTS, 1u % PC_IFACE_SLOTS);
  TestLink first(base);
  TestLink same_block(base + PC_IFACE_SLOTS);  // block (ifindex % slots) already taken
  ASSERT_NE(first.ifindex(), 0u) << "could not create a veth pair";
  ASSERT_NE(same_block.ifindex(), 0u) << "could not create a veth pair";
  const std::vector<uint8_t> closed = Syn(kV4.client, kV4.dst, 8080).Build();
  auto count_on = [&](uint32_t ifindex) {
    auto counts = datapath::ReadVerdictCounters(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    uint64_t n = 0, bytes = 0;
    for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
      if (c.key.ifindex == ifindex && c.key.hook == PC_HOOK_XDP &&
          c.key.verdict == PC_VERDICT_DROP && c.key.reason == PC_REASON_PORT_CLOSED) {
        n += c.total.packets;
        bytes += c.total.bytes;
      }
    }
    return std::make_pair(n, bytes);
  };
  const std::vector<std::pair<uint32_t, int>> sends = {
      {1, 3}, {first.ifindex(), 2}, {same_block.ifindex(), 4}};
  std::vector<std::pair<uint64_t, uint64_t>> before;
  for (const auto& [ifindex, n] : sends) before.push_back(count_on(ifindex));
  for (const auto& [ifindex, n] : sends) {
    for (int i = 0; i < n; ++i) {
      auto j = runner_->Run(closed, PC_HOOK_XDP, ifindex);
      ASSERT_TRUE(j.ok()) << j.status();
      EXPECT_EQ(j->reason, PC_REASON_PORT_CLOSED);
    }
  }
  for (size_t i = 0; i < sends.size(); ++i) {
    const auto [ifindex, n] = sends[i];
    EXPECT_EQ(count_on(ifindex).first, before[i].first + n) << "ifindex " << ifindex;
    EXPECT_EQ(count_on(ifindex).second, before[i].second + n * closed.size())
        << "ifindex " << ifindex;
  }
  // The two interfaces of one block really took the two paths.
  uint32_t owner = 0;
  ASSERT_EQ(first.ifindex() % PC_IFACE_SLOTS, block);
  ASSERT_EQ(bpf_map_lookup_elem(dp_->map_fd(datapath::Map::kIfaceSlots), &block, &owner), 0);
  EXPECT_EQ(owner, first.ifindex());
}

// Drops (and audits) are sampled into the ring buffer with the packet's
// addresses and ports, at most `sample_burst` at once and then at the sample
// rate; passes are not sampled.
TEST_F(ParserTest, DropsAreSampledToTheRingBufferAtABoundedRate) {
  std::vector<pc_sample> samples;
  auto on_sample = [](void* ctx, void* data, size_t size) -> int {
    if (size == sizeof(pc_sample)) {
      static_cast<std::vector<pc_sample>*>(ctx)->push_back(*static_cast<pc_sample*>(data));
    }
    return 0;
  };
  struct ring_buffer* rb =
      ring_buffer__new(dp_->map_fd(datapath::Map::kDropSamples), on_sample, &samples, nullptr);
  ASSERT_NE(rb, nullptr);
  ring_buffer__consume(rb);  // what earlier tests left
  samples.clear();

  Run(Syn(kV4.client, kV4.dst, 443));  // a pass: not sampled
  Run(Tcp(kV6.blocked, kV6.dst, 41234, 443, kAck));
  ring_buffer__consume(rb);
  ASSERT_EQ(samples.size(), 1u);
  const pc_sample& s = samples[0];
  EXPECT_EQ(s.reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(s.verdict, PC_VERDICT_DROP);
  EXPECT_EQ(s.hook, PC_HOOK_XDP);
  EXPECT_EQ(s.family, PC_FAMILY_V6);
  EXPECT_EQ(s.proto, IPPROTO_TCP);
  EXPECT_EQ(s.sport, 41234);
  EXPECT_EQ(s.dport, 443);
  uint8_t src[16], dst[16];
  ASSERT_EQ(inet_pton(AF_INET6, kV6.blocked.c_str(), src), 1);
  ASSERT_EQ(inet_pton(AF_INET6, kV6.dst.c_str(), dst), 1);
  EXPECT_EQ(std::memcmp(s.src, src, 16), 0);
  EXPECT_EQ(std::memcmp(s.dst, dst, 16), 0);
  EXPECT_EQ(s.timestamp_ns, 1'000'000'000u);  // the test clock

  // A flood at one instant: the burst (100) is sampled, the rest is not.
  samples.clear();
  SetClock(50'000'000'000);  // long after: the sample bucket is full again
  const std::vector<uint8_t> drop = Syn(kV4.blocked, kV4.dst, 443).Build();
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(runner_->Run(drop).ok());
  ring_buffer__consume(rb);
  EXPECT_EQ(samples.size(), 100u);
  // 100 samples/s: 50 ms later, 5 more.
  samples.clear();
  SetClock(50'050'000'000);
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(runner_->Run(drop).ok());
  ring_buffer__consume(rb);
  EXPECT_EQ(samples.size(), 5u);
  ring_buffer__free(rb);
}

TEST_F(ParserTest, NoPolicyPolicesNothing) {
  auto fresh = datapath::Datapath::Load({.use_user_clock = true, .record_last_verdict = true});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  datapath::TestRunner runner(**fresh);
  auto j = runner.Run(Syn(kV4.blocked, kV4.dst, 443).Build());
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->reason, PC_REASON_NOT_POLICED);
  EXPECT_EQ(j->verdict, PC_VERDICT_PASS);
  EXPECT_EQ(j->version, 0u);
}

}  // namespace
}  // namespace portcullis::testing
