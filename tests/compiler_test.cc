// The compiler's translation of a policy into map contents, without a kernel.
#include "policy/compiler.h"

#include <netinet/in.h>

#include <algorithm>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/validator.h"

namespace portcullis::policy {
namespace {

using ::testing::ElementsAre;

CompiledPolicy MustCompile(const std::string& yaml) {
  CheckedPolicyFile checked = CheckPolicyText(yaml);
  EXPECT_TRUE(checked.ok()) << checked.Format("test.yaml");
  auto compiled = Compile(checked.loaded->policy);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *std::move(compiled);
}

std::string Spec(const std::string& body) {
  return "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: t}\nspec:\n" + body;
}

// The entry for `cidr` in the compiled source tables, or mask 0 if absent.
pc_set_mask MaskOf(const CompiledPolicy& p, const std::string& cidr) {
  const IpPrefix want = *IpPrefix::Parse(cidr);
  for (const auto* table : {&p.src_v4_exact, &p.src_v6_exact, &p.src_v4_prefix, &p.src_v6_prefix}) {
    for (const PrefixEntry& e : *table) {
      if (e.prefix == want) return e.mask;
    }
  }
  return 0;
}

TEST(CompilerTest, SetsBecomeBitsAndEnclosingPrefixesFoldIn) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  sets:
    wide: [10.0.0.0/8]
    mid: [10.1.0.0/16, "2001:db8::/32"]
    host: [10.1.2.3/32, "2001:db8::1/128"]
    unused: [192.0.2.0/24]
  blocklist: [10.1.2.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [wide]}
  ports:
    - {ports: [443], proto: tcp, from: [mid, host]}
)"));
  // Bits in order of first use by a rule; unused sets get none.
  EXPECT_THAT(p.set_bits, ElementsAre("wide", "mid", "host"));
  const pc_set_mask wide = 1, mid = 2, host = 4;
  EXPECT_EQ(MaskOf(p, "10.0.0.0/8"), wide);
  EXPECT_EQ(MaskOf(p, "10.1.0.0/16"), wide | mid);
  EXPECT_EQ(MaskOf(p, "10.1.2.0/24"), wide | mid | kBlocklistMask);
  EXPECT_EQ(MaskOf(p, "10.1.2.3/32"), wide | mid | host | kBlocklistMask);
  EXPECT_EQ(MaskOf(p, "2001:db8::1/128"), mid | host);
  EXPECT_EQ(MaskOf(p, "192.0.2.0/24"), 0u);
  // Exact hosts go to the hashes, shorter prefixes to the tries, and the
  // config says which tables the datapath must look in.
  EXPECT_EQ(
      p.config.flags &
          (PC_CFG_SRC_V4_EXACT | PC_CFG_SRC_V4_PREFIX | PC_CFG_SRC_V6_EXACT | PC_CFG_SRC_V6_PREFIX),
      PC_CFG_SRC_V4_EXACT | PC_CFG_SRC_V4_PREFIX | PC_CFG_SRC_V6_EXACT | PC_CFG_SRC_V6_PREFIX);
  EXPECT_EQ(p.src_v4_exact.size(), 1u);
  EXPECT_EQ(p.src_v6_exact.size(), 1u);
  EXPECT_EQ(p.src_v4_prefix.size(), 3u);
  EXPECT_EQ(p.src_v6_prefix.size(), 1u);
}

TEST(CompilerTest, DuplicatePrefixesMergeTheirSets) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  sets:
    a: [198.18.0.0/24]
    b: [198.18.0.0/24]
  blocklist: [198.18.0.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [a]}
  ports:
    - {ports: [443], proto: tcp, from: [b]}
)"));
  ASSERT_EQ(p.src_v4_prefix.size(), 1u);
  EXPECT_EQ(p.src_v4_prefix[0].mask, 1u | 2u | kBlocklistMask);
}

TEST(CompilerTest, PortsGetTheUnionOfTheirRules) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  sets:
    office: [192.0.2.0/24]
    admins: [198.51.100.0/28]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: ["30000-30002"], proto: tcp, from: [office]}
    - {ports: [443], proto: udp, from: any}
    - {ports: [443], proto: tcp, from: [office], synRate: {rate: 4, burst: 8}}
)"));
  auto port = [&](int l4, int number) -> const pc_port_policy& {
    return p.ports[l4 * PC_PORTS_PER_PROTO + number];
  };
  ASSERT_EQ(p.ports.size(), size_t{PC_PORT_ENTRIES});
  EXPECT_EQ(port(PC_L4_TCP, 8080).flags, 0u);  // no rule
  EXPECT_EQ(port(PC_L4_UDP, 80).flags, 0u);
  EXPECT_EQ(port(PC_L4_TCP, 80).flags, PC_PORT_HAS_RULE | PC_PORT_ALLOW_ANY | PC_PORT_NAMED);
  for (int n : {30000, 30001, 30002}) {
    EXPECT_EQ(port(PC_L4_TCP, n).flags, PC_PORT_HAS_RULE | PC_PORT_NAMED) << n;
    EXPECT_EQ(port(PC_L4_TCP, n).allow_from, 1u << 1) << n;  // office: bit 1 (admins first)
  }
  EXPECT_EQ(port(PC_L4_TCP, 30003).flags, 0u);
  EXPECT_EQ(port(PC_L4_TCP, 22).flags, PC_PORT_HAS_FAILSAFE | PC_PORT_NAMED);
  EXPECT_EQ(port(PC_L4_TCP, 22).failsafe_from, 1u);
  // tcp/443: rules combine (any + office), and the override applies.
  const pc_port_policy& https = port(PC_L4_TCP, 443);
  EXPECT_EQ(https.flags, PC_PORT_HAS_RULE | PC_PORT_ALLOW_ANY | PC_PORT_NAMED);
  EXPECT_EQ(https.allow_from, 1u << 1);
  ASSERT_EQ(https.rate_override_id, 1u);
  ASSERT_EQ(p.rate_overrides.size(), 2u);
  EXPECT_EQ(p.rate_overrides[1].syn_per_source.interval_ns, 250'000'000u);
  EXPECT_EQ(p.rate_overrides[1].syn_per_source.burst, 8u);
  EXPECT_EQ(p.rate_overrides[1].conn_per_source.interval_ns, 0u);  // nothing to inherit
  EXPECT_EQ(port(PC_L4_TCP, 80).rate_override_id, 0u);
  EXPECT_EQ(port(PC_L4_UDP, 443).flags, PC_PORT_HAS_RULE | PC_PORT_ALLOW_ANY | PC_PORT_NAMED);
}

// Each (proto, range) a rule names is one counted range, once; a port counts
// under the first range that names it (failsafe rules first, then port
// rules), as the agent labels it.
TEST(CompilerTest, EachNamedRangeIsCountedOnceUnderTheFirstRuleThatNamesIt) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  sets:
    office: [198.18.2.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [office]}
  ports:
    - {ports: ["30000-30010", 22], proto: tcp, from: [office]}
    - {ports: ["30005"], proto: tcp, from: any}
    - {ports: [22], proto: udp, from: any}
)"));
  auto range = [](uint16_t first, uint16_t last, uint8_t proto) {
    return std::make_tuple(first, last, proto);
  };
  std::vector<std::tuple<uint16_t, uint16_t, uint8_t>> ranges;
  for (const pc_counted_port& c : p.counted_ports) {
    EXPECT_EQ(c.in_use, 1);
    ranges.push_back(range(c.first, c.last, c.proto));
  }
  EXPECT_THAT(ranges, ElementsAre(range(22, 22, IPPROTO_TCP), range(30000, 30010, IPPROTO_TCP),
                                  range(30005, 30005, IPPROTO_TCP), range(22, 22, IPPROTO_UDP)));
  auto row = [&](int l4, int port) { return p.counted_range[l4 * PC_PORTS_PER_PROTO + port]; };
  EXPECT_EQ(row(PC_L4_TCP, 22), 1);
  EXPECT_EQ(row(PC_L4_TCP, 30000), 2);
  EXPECT_EQ(row(PC_L4_TCP, 30005), 2);  // the range named it first
  EXPECT_EQ(row(PC_L4_TCP, 30010), 2);
  EXPECT_EQ(row(PC_L4_UDP, 22), 4);
  EXPECT_EQ(row(PC_L4_TCP, 30011), 0);
  EXPECT_EQ(row(PC_L4_UDP, 30000), 0);
  // The map row is the installer's to choose: the compiler leaves it unset.
  for (const pc_port_policy& port : p.ports) ASSERT_EQ(port.counter_row, 0);
}

TEST(CompilerTest, ConfigDefaultsAreSecure) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  failsafe:
    - {ports: [22], proto: tcp, from: any}
)"));
  // enforce, default deny, fragments denied, ICMP allowed, no SYN or
  // connection limits, and the essential ICMP's budget of PRODUCT.md.
  EXPECT_EQ(p.config.flags, PC_CFG_VALID | PC_CFG_FRAGMENTS_DENY);
  EXPECT_EQ(p.config.syn_per_source.interval_ns, 0u);
  EXPECT_EQ(p.config.syn_global.interval_ns, 0u);
  EXPECT_EQ(p.config.conn_per_source.interval_ns, 0u);
  EXPECT_EQ(p.config.icmp_per_source.interval_ns, 10'000'000u);
  EXPECT_EQ(p.config.icmp_per_source.burst, 200u);
  EXPECT_EQ(p.config.source_prefix_v4, 32);
  EXPECT_EQ(p.config.source_prefix_v6, 64);
}

TEST(CompilerTest, ConfigCarriesModeActionsAndRates) {
  const CompiledPolicy p = MustCompile(Spec(R"(
  mode: audit
  defaultAction: allow
  destinations: [203.0.113.10/32, "2001:db8:10::/64"]
  icmp: deny
  fragments: allow
  rateLimits:
    syn:
      perSource: {rate: 100, burst: 200}
      global: {rate: 200000, burst: 400000}
      sourcePrefix: {ipv4: 24, ipv6: 56}
    connections:
      perSource: {rate: 3, burst: 40}
    icmp:
      perSource: {rate: 4, burst: 8}
)"));
  EXPECT_EQ(p.config.flags, PC_CFG_VALID | PC_CFG_AUDIT | PC_CFG_DEFAULT_ALLOW | PC_CFG_ICMP_DENY |
                                PC_CFG_HAS_DESTINATIONS);
  EXPECT_EQ(p.config.syn_per_source.interval_ns, 10'000'000u);
  EXPECT_EQ(p.config.syn_per_source.burst, 200u);
  EXPECT_EQ(p.config.syn_global.interval_ns, 5'000u);
  EXPECT_EQ(p.config.conn_per_source.interval_ns, 333'333'333u);
  EXPECT_EQ(p.config.icmp_per_source.interval_ns, 250'000'000u);
  EXPECT_EQ(p.config.icmp_per_source.burst, 8u);
  EXPECT_EQ(p.config.source_prefix_v4, 24);
  EXPECT_EQ(p.config.source_prefix_v6, 56);
  ASSERT_EQ(p.dst_v4.size(), 1u);
  EXPECT_EQ(p.dst_v4[0].prefix.ToString(), "203.0.113.10/32");
  ASSERT_EQ(p.dst_v6.size(), 1u);
  EXPECT_EQ(p.dst_v6[0].prefix.ToString(), "2001:db8:10::/64");
}

TEST(CompilerTest, TooManyExactSourcesIsResourceExhausted) {
  v1::Policy policy;
  policy.set_api_version("portcullis/v1");
  policy.set_kind("IngressPolicy");
  policy.mutable_metadata()->set_name("big");
  v1::PortRule* rule = policy.mutable_spec()->add_ports();
  rule->set_proto(v1::PROTOCOL_TCP);
  rule->add_ports()->set_first(443);
  rule->mutable_ports(0)->set_last(443);
  rule->mutable_from()->add_sets("many");
  v1::CidrSet* set = policy.mutable_spec()->add_sets();
  set->set_name("many");
  for (uint32_t i = 0; i <= PC_MAX_SRC_EXACT_V4; ++i) {
    set->add_cidrs(std::to_string(10 + (i >> 24)) + "." + std::to_string((i >> 16) & 255) + "." +
                   std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255));
  }
  auto compiled = Compile(policy);
  EXPECT_EQ(compiled.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(compiled.status().message(),
            "the policy has 1048577 exact IPv4 sources; the datapath holds at most 1048576");
}

TEST(CompilerTest, ToBucketRoundsTheInterval) {
  v1::Rate r;
  r.set_rate(3);
  r.set_burst(0);
  EXPECT_EQ(ToBucket(r).interval_ns, 333'333'333u);
  EXPECT_EQ(ToBucket(r).burst, 1u);  // a bucket always holds at least one token
  r.set_rate(0);
  EXPECT_EQ(ToBucket(r).interval_ns, 0u);  // off
}

TEST(IpPrefixTest, ParsesHostsAndPrefixesOfBothFamilies) {
  EXPECT_EQ(IpPrefix::Parse("198.18.0.1")->ToString(), "198.18.0.1/32");
  EXPECT_EQ(IpPrefix::Parse("2001:db8::1")->ToString(), "2001:db8::1/128");
  EXPECT_EQ(IpPrefix::Parse("2001:db8::/32")->length(), 32);
  EXPECT_TRUE(IpPrefix::Parse("10.0.0.1/8")->HasHostBits());
  EXPECT_EQ(IpPrefix::Parse("10.0.0.1/8")->Canonical().ToString(), "10.0.0.0/8");
  EXPECT_TRUE(IpPrefix::Parse("10.0.0.0/8")->Contains(*IpPrefix::Parse("10.200.0.0/16")));
  EXPECT_FALSE(IpPrefix::Parse("10.0.0.0/16")->Contains(*IpPrefix::Parse("10.0.0.0/8")));
  EXPECT_FALSE(IpPrefix::Parse("::/0")->Contains(*IpPrefix::Parse("10.0.0.0/8")));
  for (const char* bad : {"10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0/8", "x", ""}) {
    EXPECT_FALSE(IpPrefix::Parse(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace portcullis::policy
