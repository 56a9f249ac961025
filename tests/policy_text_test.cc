// Policies written back as text: the YAML the agent keeps as last-known-good
// must read back into the same policy (same content hash), and diffs must
// name exactly the CIDRs, rules and settings that changed.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/diff.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "tests/support/text_edit.h"

namespace portcullis::policy {
namespace {

using ::portcullis::testing::Edit;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kFull[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: "edge: prod"}
spec:
  mode: audit
  defaultAction: allow
  destinations: [198.18.0.10/32, "2001:db8:10::/64"]
  sets:
    admins: [198.18.1.0/28]
    "odd name": ["2001:db8:1::/64"]
  blocklist: [198.18.128.0/17]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, "30000-32767"], proto: tcp, from: any, synRate: {rate: 5, burst: 10}}
    - {ports: [443], proto: udp, from: [admins, "odd name"], connRate: {rate: 1, burst: 2}}
  icmp: deny
  fragments: allow
  rateLimits:
    syn:
      perSource: {rate: 100, burst: 200}
      global: {rate: 200000, burst: 400000}
      sourcePrefix: {ipv4: 24, ipv6: 64}
    connections:
      perSource: {rate: 20, burst: 40}
    icmp:
      perSource: {rate: 50, burst: 60}
)";

v1::Policy Load(const std::string& text) {
  CheckedPolicyFile checked = CheckPolicyText(text);
  EXPECT_TRUE(checked.ok()) << checked.Format("p.yaml");
  return checked.ok() ? checked.loaded->policy : v1::Policy();
}

TEST(ToYamlTest, ReadsBackIntoTheSamePolicy) {
  const v1::Policy original = Load(kFull);
  const std::string yaml = ToYaml(original);
  const v1::Policy back = Load(yaml);
  EXPECT_EQ(back.SerializeAsString(), original.SerializeAsString()) << yaml;
  EXPECT_EQ(ContentHash(back), ContentHash(original));
}

TEST(ToYamlTest, MinimalPolicyLeavesUnsetFieldsUnset) {
  const v1::Policy original = Load(
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: m}\n"
      "spec: {defaultAction: allow}\n");
  const v1::Policy back = Load(ToYaml(original));
  EXPECT_FALSE(back.spec().has_rate_limits());
  EXPECT_EQ(ContentHash(back), ContentHash(original));
}

TEST(ContentHashTest, DiffersWhenAnythingDiffers) {
  const v1::Policy a = Load(kFull);
  v1::Policy b = a;
  b.mutable_spec()->mutable_sets(0)->set_cidrs(0, "198.18.1.0/29");
  EXPECT_THAT(ContentHash(a), ::testing::StartsWith("sha256:"));
  EXPECT_EQ(ContentHash(a).size(), 7u + 64u);
  EXPECT_NE(ContentHash(a), ContentHash(b));
}

TEST(RuleTextTest, NamesPortsProtocolSourcesAndOverrides) {
  const v1::Policy p = Load(kFull);
  EXPECT_EQ(RuleText(p.spec().ports(0)), "tcp 80,30000-32767 from any synRate 5/10");
  EXPECT_EQ(RuleText(p.spec().ports(1)), "udp 443 from [admins, odd name] connRate 1/2");
}

std::vector<std::string> Lines(const std::vector<Change>& changes) {
  std::vector<std::string> out;
  for (const Change& c : changes) {
    const char* op = c.op == Change::Op::kAdded ? "+" : c.op == Change::Op::kRemoved ? "-" : "~";
    out.push_back(std::string(op) + " " + c.section + ": " + c.text);
  }
  return out;
}

TEST(DiffTest, EqualPoliciesHaveNoChanges) {
  EXPECT_THAT(DiffPolicies(Load(kFull), Load(kFull)), IsEmpty());
}

TEST(DiffTest, NamesAddedAndRemovedCidrsPerSet) {
  const std::string after =
      Edit(kFull, "admins: [198.18.1.0/28]", "admins: [198.18.1.0/29, 198.18.9.0/24]");
  EXPECT_THAT(Lines(DiffPolicies(Load(kFull), Load(after))),
              ElementsAre("- sets.admins: 198.18.1.0/28", "+ sets.admins: 198.18.1.0/29",
                          "+ sets.admins: 198.18.9.0/24"));
}

TEST(DiffTest, NamesRulesSetsAndSettings) {
  std::string after = Edit(kFull,
                           "    - {ports: [443], proto: udp, from: [admins, \"odd name\"], "
                           "connRate: {rate: 1, burst: 2}}\n",
                           "    - {ports: [8443], proto: tcp, from: [admins]}\n");
  after = Edit(after, "    \"odd name\": [\"2001:db8:1::/64\"]\n", "");
  after = Edit(after, "defaultAction: allow", "defaultAction: deny");
  after = Edit(after, "blocklist: [198.18.128.0/17]", "blocklist: [198.18.128.0/17, 198.18.7.7]");
  after = Edit(after, "perSource: {rate: 100, burst: 200}", "perSource: {rate: 50, burst: 200}");
  EXPECT_THAT(Lines(DiffPolicies(Load(kFull), Load(after))),
              ElementsAre("~ defaultAction: allow -> deny", "- sets: odd name",
                          "- sets.odd name: 2001:db8:1::/64", "+ blocklist: 198.18.7.7",
                          "- ports: udp 443 from [admins, odd name] connRate 1/2",
                          "+ ports: tcp 8443 from [admins]",
                          "~ rateLimits.syn.perSource: 100/s burst 200 -> 50/s burst 200"));
}

TEST(DiffTest, FormatsWithSignsAndColoursOnlyWhenAsked) {
  const std::vector<Change> changes = {{Change::Op::kAdded, "blocklist", "198.18.7.7"},
                                       {Change::Op::kRemoved, "ports", "tcp 80 from any"}};
  EXPECT_EQ(FormatChanges(changes, false), "+ blocklist: 198.18.7.7\n- ports: tcp 80 from any\n");
  EXPECT_EQ(FormatChanges(changes, true),
            "\033[32m+ blocklist: 198.18.7.7\033[0m\n\033[31m- ports: tcp 80 from any\033[0m\n");
}

}  // namespace
}  // namespace portcullis::policy
