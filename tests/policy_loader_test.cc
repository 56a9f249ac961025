// `portcullisctl validate` findings: one test per class of bad input, each
// asserting the exact line:column and message.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/abi.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/limits.h"
#include "policy/validator.h"
#include "tests/support/text_edit.h"

namespace portcullis::policy {
namespace {

using ::portcullis::testing::Edit;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A valid policy to start from; every test breaks one thing.
constexpr char kGood[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata:
  name: edge
spec:
  mode: enforce
  defaultAction: deny
  sets:
    admins: [198.51.100.0/28]
    office: [192.0.2.0/24, "2001:db8:100::/48"]
  blocklist: [203.0.113.128/25]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: ["30000-32767"], proto: tcp, from: [office]}
)";

// The findings for `text`, formatted as `portcullisctl validate` prints them.
std::vector<std::string> Findings(const std::string& text) {
  CheckedPolicyFile checked = CheckPolicyText(text);
  std::string out = checked.Format("p.yaml");
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  return lines;
}

TEST(ValidateTest, GoodPolicyHasNoFindings) {
  EXPECT_THAT(Findings(kGood), IsEmpty());
  EXPECT_TRUE(CheckPolicyText(kGood).ok());
}

// Found by fuzzing: protobuf strings must be UTF-8, so a policy that is not
// would pass validate and then be refused on the wire.
TEST(ValidateTest, TextThatIsNotUtf8IsAnErrorAtItsPosition) {
  EXPECT_THAT(Findings("apiVersion: portcullis/v1\nmetadata: {name: ed\xfc\xfcge}\n"),
              ElementsAre("p.yaml:2:20: error: the file is not valid UTF-8 here"));
  EXPECT_THAT(Findings("metadata: {name: \xc0\xafx}\n"),  // an overlong '/'
              ElementsAre("p.yaml:1:18: error: the file is not valid UTF-8 here"));
  EXPECT_THAT(Findings(Edit(kGood, "name: edge",
                            "name: \xc3\xa9"
                            "dge")),
              IsEmpty());
}

// Found by fuzzing: yaml-cpp's LoadAll builds documents without end on this
// input (187 bytes) until memory runs out; the loader must answer.
TEST(ValidateTest, MalformedInputThatMadeLoadAllRunAwayIsAnError) {
  const std::string text =
      ",apiVapiVersion: portirst-look\nspec:\n  mode: audZit\n  defaultActiction: d`eny\n"
      "  se{defaultAcpoersion: portirst-look\nspec:\n  mode: audZit\n  dgfaultActiction: "
      "d`eny\n  se{defaultAcportsPoy\n\n";
  // One error, at once (yaml-cpp reads the flow mapping's broken first
  // document as no document at all).
  EXPECT_THAT(Findings(text), ElementsAre("p.yaml:1:1: error: the document is empty"));
}

TEST(ValidateTest, YamlSyntaxError) {
  EXPECT_THAT(Findings("apiVersion: portcullis/v1\nspec: {mode: [enforce\n"),
              ElementsAre("p.yaml:3:1: error: end of sequence flow not found"));
}

TEST(ValidateTest, UnknownKey) {
  EXPECT_THAT(Findings(Edit(kGood, "  mode: enforce", "  mode: enforce\n  colour: red")),
              ElementsAre("p.yaml:7:3: error: spec: unknown key \"colour\" (expected one of: "
                          "mode, defaultAction, destinations, sets, blocklist, failsafe, ports, "
                          "icmp, fragments, rateLimits)"));
}

TEST(ValidateTest, DuplicateKey) {
  EXPECT_THAT(Findings(Edit(kGood, "  mode: enforce", "  mode: enforce\n  mode: audit")),
              ElementsAre("p.yaml:7:3: error: spec.mode: duplicate key"));
}

TEST(ValidateTest, WrongTypes) {
  EXPECT_THAT(
      Findings(Edit(kGood, "  blocklist: [203.0.113.128/25]", "  blocklist: 203.0.113.128/25")),
      ElementsAre("p.yaml:11:14: error: spec.blocklist: expected a list"));
  EXPECT_THAT(
      Findings(absl::StrCat(kGood,
                            "  rateLimits:\n    syn:\n      perSource: {rate: fast, "
                            "burst: 10}\n")),
      ElementsAre("p.yaml:19:25: error: spec.rateLimits.syn.perSource.rate: expected a whole "
                  "number"));
  EXPECT_THAT(Findings(Edit(kGood, "    - {ports: [22], proto: tcp, from: [admins]}",
                            "    - {ports: [22], proto: tcp, from: admins}")),
              ElementsAre("p.yaml:9:5: warning: spec.sets.admins: set \"admins\" is not used "
                          "by any rule",
                          "p.yaml:13:39: error: spec.failsafe[0].from: expected \"any\" or a "
                          "list of set names"));
}

TEST(ValidateTest, UnknownEnumWord) {
  EXPECT_THAT(Findings(Edit(kGood, "mode: enforce", "mode: enforcing")),
              ElementsAre("p.yaml:6:9: error: spec.mode: \"enforcing\" is not one of: enforce, "
                          "audit"));
  EXPECT_THAT(Findings(Edit(kGood, "proto: tcp, from: any", "proto: sctp, from: any")),
              ElementsAre("p.yaml:15:33: error: spec.ports[0].proto: \"sctp\" is not one of: "
                          "tcp, udp"));
}

TEST(ValidateTest, BadCidrs) {
  EXPECT_THAT(Findings(Edit(kGood, "[198.51.100.0/28]",
                            "[198.51.100.0/33, 10.1.2.300, "
                            "\"2001:db8::/129\"]")),
              ElementsAre("p.yaml:9:14: error: spec.sets.admins[0]: \"198.51.100.0/33\" has a "
                          "bad prefix length (0 to 32)",
                          "p.yaml:9:31: error: spec.sets.admins[1]: \"10.1.2.300\" is not an "
                          "IPv4 or IPv6 address or CIDR",
                          "p.yaml:9:43: error: spec.sets.admins[2]: \"2001:db8::/129\" has a bad "
                          "prefix length (0 to 128)"));
}

TEST(ValidateTest, CidrWithHostBitsSet) {
  EXPECT_THAT(Findings(Edit(kGood, "[198.51.100.0/28]", "[198.51.100.5/28]")),
              ElementsAre("p.yaml:9:14: error: spec.sets.admins[0]: \"198.51.100.5/28\" has "
                          "host bits set; write 198.51.100.0/28 for the network, or /32 for "
                          "the host"));
}

TEST(ValidateTest, BadPorts) {
  EXPECT_THAT(Findings(Edit(kGood, "ports: [80, 443]", "ports: [0, 70000, \"9-3\", http]")),
              ElementsAre("p.yaml:15:16: error: spec.ports[0].ports[0]: ports are 1 to 65535",
                          "p.yaml:15:19: error: spec.ports[0].ports[1]: ports are 1 to 65535",
                          "p.yaml:15:26: error: spec.ports[0].ports[2]: range 9-3 runs "
                          "backwards",
                          "p.yaml:15:33: error: spec.ports[0].ports[3]: \"http\" is not a port "
                          "or a \"FIRST-LAST\" range"));
}

TEST(ValidateTest, DanglingSetName) {
  EXPECT_THAT(Findings(Edit(kGood, "from: [office]", "from: [ofice]")),
              ElementsAre("p.yaml:10:5: warning: spec.sets.office: set \"office\" is not used "
                          "by any rule",
                          "p.yaml:16:51: error: spec.ports[1].from[0]: unknown set \"ofice\" "
                          "(define it under spec.sets)"));
}

TEST(ValidateTest, MissingRequiredFields) {
  EXPECT_THAT(Findings(Edit(kGood, "    - {ports: [80, 443], proto: tcp, from: any}",
                            "    - {ports: [80, 443]}")),
              ElementsAre("p.yaml:15:7: error: spec.ports[0].proto: missing (tcp or udp)",
                          "p.yaml:15:7: error: spec.ports[0].from: missing (any, or a list of "
                          "set names)"));
  EXPECT_THAT(Findings(Edit(kGood, "apiVersion: portcullis/v1\n", "")),
              ElementsAre("p.yaml:1:1: error: apiVersion: missing (must be portcullis/v1)"));
  EXPECT_THAT(Findings(Edit(kGood, "kind: IngressPolicy", "kind: Ingress")),
              ElementsAre("p.yaml:2:7: error: kind: \"Ingress\" is not IngressPolicy"));
}

TEST(ValidateTest, BadRates) {
  EXPECT_THAT(
      Findings(absl::StrCat(kGood,
                            "  rateLimits:\n    syn:\n      perSource: {rate: 0, burst: "
                            "0}\n      sourcePrefix: {ipv4: 33, ipv6: 200}\n")),
      ElementsAre("p.yaml:19:25: error: spec.rateLimits.syn.perSource.rate: rate must be 1 to "
                  "1000000000 per second",
                  "p.yaml:19:35: error: spec.rateLimits.syn.perSource.burst: burst must be 1 to "
                  "1000000000",
                  "p.yaml:20:28: error: spec.rateLimits.syn.sourcePrefix.ipv4: must be 1 to 32",
                  "p.yaml:20:38: error: spec.rateLimits.syn.sourcePrefix.ipv6: must be 1 to "
                  "128"));
}

TEST(ValidateTest, BadIcmpBudget) {
  EXPECT_THAT(Findings(absl::StrCat(kGood,
                                    "  rateLimits:\n    icmp:\n      perSource: {rate: 0, burst: "
                                    "5}\n      global: {rate: 1, burst: 1}\n")),
              ElementsAre("p.yaml:19:25: error: spec.rateLimits.icmp.perSource.rate: rate must be "
                          "1 to 1000000000 per second",
                          "p.yaml:20:7: error: spec.rateLimits.icmp: unknown key \"global\" "
                          "(expected one of: perSource)"));
}

TEST(ValidateTest, FailsafeRulesCannotBeRateLimited) {
  EXPECT_THAT(Findings(Edit(kGood, "{ports: [22], proto: tcp, from: [admins]}",
                            "{ports: [22], proto: tcp, from: [admins], synRate: {rate: 1, "
                            "burst: 1}}")),
              ElementsAre("p.yaml:13:58: error: spec.failsafe[0].synRate: failsafe rules are "
                          "never rate-limited"));
}

TEST(ValidateTest, ConflictingRateOverridesOnOnePort) {
  const std::string text =
      Edit(kGood, "    - {ports: [\"30000-32767\"], proto: tcp, from: [office]}",
           "    - {ports: [443], proto: tcp, from: [office], synRate: {rate: 1, burst: 1}}\n"
           "    - {ports: [443], proto: tcp, from: [admins], synRate: {rate: 2, burst: 2}}");
  EXPECT_THAT(Findings(text),
              ElementsAre("p.yaml:6:3: error: spec: rules 1 and 2 set different rate "
                          "overrides for tcp/443"));
}

TEST(ValidateTest, DuplicateAndShadowedRulesAreWarnings) {
  const std::string text =
      Edit(kGood, "    - {ports: [\"30000-32767\"], proto: tcp, from: [office]}",
           "    - {ports: [\"30000-32767\"], proto: tcp, from: [office]}\n"
           "    - {ports: [\"30000-32767\"], proto: tcp, from: [office]}\n"
           "    - {ports: [443], proto: tcp, from: [office]}\n"
           "    - {ports: [31000, 443], proto: tcp, from: [office]}\n"
           "    - {ports: [31000, 8080], proto: tcp, from: [office]}");
  EXPECT_THAT(Findings(text),
              ElementsAre("p.yaml:17:7: warning: spec.ports[2]: duplicates spec.ports[1]",
                          "p.yaml:18:7: warning: spec.ports[3]: is shadowed: earlier rules (up "
                          "to spec.ports[0]) already admit these sources on all of its ports",
                          "p.yaml:19:7: warning: spec.ports[4]: is shadowed: earlier rules (up "
                          "to spec.ports[3]) already admit these sources on all of its ports"));
  EXPECT_TRUE(CheckPolicyText(text).ok());  // warnings do not reject
}

// Overlaps are judged on ranges as written, whatever ports they span: the
// same ports in another order are a duplicate, and a range is shadowed only
// when every one of its ports is.
TEST(ValidateTest, OverlapsAreJudgedOnRanges) {
  const std::string text =
      Edit(kGood, "    - {ports: [\"30000-32767\"], proto: tcp, from: [office]}",
           "    - {ports: [\"1-100\"], proto: udp, from: [office]}\n"
           "    - {ports: [\"50-150\"], proto: udp, from: [office]}\n"
           "    - {ports: [\"1-150\"], proto: udp, from: [office]}\n"
           "    - {ports: [\"1-151\"], proto: udp, from: [office]}\n"
           "    - {ports: [443, 80], proto: tcp, from: any}\n"
           "    - {ports: [\"1-65535\"], proto: tcp, from: any}\n"
           "    - {ports: [\"1000-2000\", 7], proto: tcp, from: [office]}");
  EXPECT_THAT(Findings(text),
              ElementsAre("p.yaml:18:7: warning: spec.ports[3]: is shadowed: earlier rules (up "
                          "to spec.ports[2]) already admit these sources on all of its ports",
                          "p.yaml:20:7: warning: spec.ports[5]: duplicates spec.ports[0]",
                          "p.yaml:22:7: warning: spec.ports[7]: is shadowed: earlier rules (up "
                          "to spec.ports[6]) already admit these sources on all of its ports"));
}

// Each limit of policy/limits.h is an error that names it, and nothing else
// is checked past it.
TEST(ValidateTest, AdmissionLimitsAreErrorsThatNameTheLimit) {
  std::string many_rules = "  ports:\n";
  for (int i = 0; i <= kMaxRules; ++i)
    absl::StrAppend(&many_rules, "    - {ports: [", 1 + i, "], proto: tcp, from: any}\n");
  std::string many_sets = "  sets:\n";
  for (int i = 0; i <= kMaxSetsDefined; ++i) absl::StrAppend(&many_sets, "    s", i, ": []\n");
  const std::string head =
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: x}\nspec:\n";
  EXPECT_THAT(
      Findings(head + many_rules),
      ElementsAre("p.yaml:5:3: error: spec: 4097 port ranges in the rules; the limit is 4096",
                  "p.yaml:6:5: error: spec.ports: 4097 rules; the limit is 4096"));
  EXPECT_THAT(Findings(head + many_sets),
              ElementsAre("p.yaml:6:5: error: spec.sets: 1025 sets; the limit is 1024"));
  EXPECT_THAT(
      Findings(absl::StrCat("apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: ",
                            std::string(254, 'n'), "}\nspec: {}\n")),
      ElementsAre("p.yaml:3:18: error: metadata.name: 254 bytes; the limit is 253"));
  EXPECT_THAT(Findings(std::string(kMaxPolicyBytes + 1, ' ')),
              ElementsAre("p.yaml:1:1: error: the policy is 33554433 bytes; the limit is 33554432 "
                          "(32 MiB)"));
}

// Anchors for small pieces are fine; aliases that reach past the limit are
// refused before the tree is walked.
TEST(ValidateTest, AliasesAreBoundedByTheNodesTheyReach) {
  EXPECT_THAT(Findings(Edit(kGood, "    office: [192.0.2.0/24, \"2001:db8:100::/48\"]",
                            "    office: &office [192.0.2.0/24, \"2001:db8:100::/48\"]\n"
                            "    office2: *office")),
              ElementsAre("p.yaml:11:5: warning: spec.sets.office2: set \"office2\" is not used "
                          "by any rule"));
  std::string bomb =
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: b}\n"
      "spec:\n  sets:\n    a0: &a0 [198.18.0.0/24]\n";
  for (int i = 1; i < 6; ++i) {
    absl::StrAppend(&bomb, "    a", i, ": &a", i, " [");
    for (int k = 0; k < 10; ++k) absl::StrAppend(&bomb, k ? ", " : "", "*a", i - 1);
    absl::StrAppend(&bomb, "]\n");
  }
  EXPECT_THAT(
      Findings(bomb),
      ElementsAre("p.yaml:10:29: error: aliases here expand to more than 10000 YAML nodes, "
                  "the limit: write large lists out once (a set can be used by many rules)"));
}

TEST(ValidateTest, UnusedSetIsAWarning) {
  EXPECT_THAT(Findings(Edit(kGood, "    office:", "    spare: [198.18.0.0/15]\n    office:")),
              ElementsAre("p.yaml:10:5: warning: spec.sets.spare: set \"spare\" is not used by "
                          "any rule"));
}

TEST(ValidateTest, DenyWithoutFailsafeWarnsOfLockOut) {
  const std::string text =
      Edit(Edit(kGood, "  failsafe:\n    - {ports: [22], proto: tcp, from: [admins]}\n", ""),
           "from: [office]}", "from: [office, admins]}");
  EXPECT_THAT(Findings(text),
              ElementsAre("p.yaml:6:3: warning: spec.failsafe: defaultAction is deny and there "
                          "is no failsafe rule: a mistake in this policy can lock administrators "
                          "out of the node"));
  EXPECT_THAT(Findings(Edit(text, "defaultAction: deny", "defaultAction: allow")), IsEmpty());
}

TEST(ValidateTest, PolicyTooLargeForTheMapsIsAnError) {
  std::string sets = "  sets:\n";
  std::string from;
  for (int i = 0; i < PC_MAX_SETS + 1; ++i) {
    absl::StrAppend(&sets, "    s", i, ": [198.18.", i, ".0/24]\n");
    absl::StrAppend(&from, i ? ", " : "", "s", i);
  }
  const std::string text =
      absl::StrCat("apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: big}\nspec:\n",
                   sets, "  failsafe:\n    - {ports: [22], proto: tcp, from: any}\n",
                   "  ports:\n    - {ports: [443], proto: tcp, from: [", from, "]}\n");
  EXPECT_THAT(Findings(text),
              ElementsAre("p.yaml:5:3: error: spec: the rules use more than 63 distinct sets, "
                          "the datapath's limit"));
}

TEST(ValidateTest, UnreadableFileIsNamed) {
  CheckedPolicyFile checked = CheckPolicyFile("/nonexistent/p.yaml");
  EXPECT_FALSE(checked.ok());
  EXPECT_EQ(checked.Format("/nonexistent/p.yaml"),
            "/nonexistent/p.yaml: error: cannot read: No such file or directory\n");
}

TEST(ValidateTest, EmptyAndMultiDocumentFiles) {
  EXPECT_THAT(Findings(""), ElementsAre("p.yaml:1:1: error: the document is empty"));
  EXPECT_THAT(Findings(absl::StrCat(kGood, "---\n", kGood)),
              ElementsAre("p.yaml:17:1: error: a policy file holds exactly one YAML document"));
}

}  // namespace
}  // namespace portcullis::policy
