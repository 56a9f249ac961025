// Shadow evaluation in the kernel program: a candidate in the idle slot
// judges every packet beside the live policy, counts exactly the packets
// whose verdict or reason it would change, never acts, never takes the live
// policy's tokens or admits flows for it, and becomes live in one switch.
#include <arpa/inet.h>

#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kDst[] = "198.18.0.10";
constexpr char kDst6[] = "2001:db8:10::10";

constexpr char kLive[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: shadow-test}
spec:
  mode: enforce
  defaultAction: deny
  sets:
    admins: [198.18.1.0/28, "2001:db8:1::/64"]
    office: [198.18.2.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [443], proto: tcp, from: any}
    - {ports: [8080], proto: tcp, from: [office]}
  icmp: allow
)";

// Closes 443 to all but the office, opens 8080 to anyone, blocklists a
// range and adds an admin port.
constexpr char kCandidate[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: shadow-test}
spec:
  mode: enforce
  defaultAction: deny
  sets:
    admins: [198.18.1.0/28, "2001:db8:1::/64"]
    office: [198.18.2.0/24]
  blocklist: [198.18.3.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [443], proto: tcp, from: [office]}
    - {ports: [8080], proto: tcp, from: any}
    - {ports: [10254], proto: tcp, from: [admins]}
  icmp: allow
)";

// (from verdict, from reason, to verdict, to reason, proto, port) -> packets
using Transitions = std::map<std::tuple<int, int, int, int, int, int>, uint64_t>;
// (from reason, to reason, source) -> packets
using Sources = std::map<std::tuple<int, int, std::string>, uint64_t>;

std::string Address(const pc_shadow_source_key& k) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(k.family == PC_FAMILY_V4 ? AF_INET : AF_INET6, k.addr, text, sizeof(text));
  return text;
}

class ShadowTest : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(datapath::ClearShadowCounts(*dp_).ok());
  }
  void TearDown() override {
    if (dp_) {
      EXPECT_TRUE(installer_->DiscardShadow().ok());
    }
  }

  void InstallShadow(absl::string_view yaml, uint64_t stamp = 100) {
    policy::CompiledPolicy compiled = CompileYaml(yaml);
    ASSERT_TRUE(installer_->InstallShadow(compiled, stamp).ok());
  }

  std::pair<Transitions, Sources> Read() {
    auto counts = datapath::ReadShadowCounts(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    Transitions t;
    Sources s;
    if (!counts.ok()) return {t, s};
    for (const auto& c : counts->transitions) {
      t[{c.key.from_verdict, c.key.from_reason, c.key.to_verdict, c.key.to_reason, c.key.proto,
         c.key.port}] += c.packets;
    }
    for (const auto& c : counts->sources) {
      s[{c.key.from_reason, c.key.to_reason, Address(c.key)}] += c.packets;
    }
    return {t, s};
  }

  uint32_t ActiveWord() {
    auto word = datapath::ReadActiveWord(*dp_);
    EXPECT_TRUE(word.ok()) << word.status();
    return word.value_or(~0u);
  }
};

constexpr int kTcp = IPPROTO_TCP;
constexpr int kPass = PC_VERDICT_PASS, kDrop = PC_VERDICT_DROP, kAudit = PC_VERDICT_AUDIT;

TEST_F(ShadowTest, CountsExactlyThePacketsWhoseVerdictWouldChangeAndActsOnNone) {
  Install(kLive, 7);
  InstallShadow(kCandidate);
  // What the live policy does, and what the candidate would.
  struct Case {
    Frame frame;
    int times;
    pc_reason live, shadow;
  };
  const Case cases[] = {
      {Syn("198.18.4.1", kDst, 443), 3, PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED},
      {Syn("198.18.4.2", kDst, 443), 2, PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED},
      {Syn("198.18.2.9", kDst, 443), 4, PC_REASON_ALLOWED, PC_REASON_ALLOWED},
      {Syn("198.18.4.1", kDst, 8080), 5, PC_REASON_NOT_ALLOWLISTED, PC_REASON_ALLOWED},
      {Syn("198.18.3.3", kDst, 8080), 1, PC_REASON_NOT_ALLOWLISTED, PC_REASON_BLOCKLIST},
      {Syn("198.18.1.5", kDst, 10254), 2, PC_REASON_PORT_CLOSED, PC_REASON_ALLOWED},
      {Syn("198.18.1.5", kDst, 22), 6, PC_REASON_FAILSAFE, PC_REASON_FAILSAFE},
      {Syn("198.18.3.3", kDst, 22), 1, PC_REASON_PORT_CLOSED, PC_REASON_BLOCKLIST},
      {Syn("2001:db8:4::1", kDst6, 443), 2, PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED},
      {Icmp("198.18.3.3", kDst, 8, 0), 1, PC_REASON_ALLOWED, PC_REASON_BLOCKLIST},
  };
  for (const Case& c : cases) {
    for (int i = 0; i < c.times; ++i) {
      const datapath::Judgement j = Run(c.frame);
      // The live policy alone decides, and the live version is reported.
      EXPECT_EQ(j.reason, c.live) << c.frame.src << " -> " << c.frame.dport;
      EXPECT_EQ(j.version, 7u);
    }
  }
  // Non-IP frames are judged alike by any policy.
  EXPECT_EQ(Run(Arp()).reason, PC_REASON_NON_IP);

  const auto [transitions, sources] = Read();
  const Transitions want = {
      {{kPass, PC_REASON_ALLOWED, kDrop, PC_REASON_NOT_ALLOWLISTED, kTcp, 443}, 7},
      {{kDrop, PC_REASON_NOT_ALLOWLISTED, kPass, PC_REASON_ALLOWED, kTcp, 8080}, 5},
      {{kDrop, PC_REASON_NOT_ALLOWLISTED, kDrop, PC_REASON_BLOCKLIST, kTcp, 8080}, 1},
      {{kDrop, PC_REASON_PORT_CLOSED, kPass, PC_REASON_ALLOWED, kTcp, 10254}, 2},
      {{kDrop, PC_REASON_PORT_CLOSED, kDrop, PC_REASON_BLOCKLIST, kTcp, 22}, 1},
      {{kPass, PC_REASON_ALLOWED, kDrop, PC_REASON_BLOCKLIST, IPPROTO_ICMP, 0}, 1},
  };
  EXPECT_EQ(transitions, want);
  const Sources want_sources = {
      {{PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED, "198.18.4.1"}, 3},
      {{PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED, "198.18.4.2"}, 2},
      {{PC_REASON_ALLOWED, PC_REASON_NOT_ALLOWLISTED, "2001:db8:4::1"}, 2},
      {{PC_REASON_NOT_ALLOWLISTED, PC_REASON_ALLOWED, "198.18.4.1"}, 5},
      {{PC_REASON_NOT_ALLOWLISTED, PC_REASON_BLOCKLIST, "198.18.3.3"}, 1},
      {{PC_REASON_PORT_CLOSED, PC_REASON_ALLOWED, "198.18.1.5"}, 2},
      {{PC_REASON_PORT_CLOSED, PC_REASON_BLOCKLIST, "198.18.3.3"}, 1},
      {{PC_REASON_ALLOWED, PC_REASON_BLOCKLIST, "198.18.3.3"}, 1},
  };
  EXPECT_EQ(sources, want_sources);
  // The live counters saw each packet once, by the live policy.
  EXPECT_EQ(Counted(PC_VERDICT_PASS, PC_REASON_ALLOWED), 3u + 2 + 4 + 2 + 1);
  EXPECT_EQ(Counted(PC_VERDICT_DROP, PC_REASON_BLOCKLIST), 0u);
}

TEST_F(ShadowTest, ANewCandidateStartsFromZeroAndALiveInstallEndsTheShadow) {
  Install(kLive, 7);
  InstallShadow(kCandidate);
  Run(Syn("198.18.4.1", kDst, 443));
  EXPECT_EQ(Read().first.size(), 1u);
  InstallShadow(kCandidate, 101);
  EXPECT_TRUE(Read().first.empty()) << "a new candidate's counts start from zero";
  EXPECT_EQ(ActiveWord() & PC_ACTIVE_SHADOW, PC_ACTIVE_SHADOW);

  // A live install takes the idle slot: the shadow is judged by no more.
  Install(kLive, 8);
  EXPECT_EQ(ActiveWord() & PC_ACTIVE_SHADOW, 0u);
  Run(Syn("198.18.4.1", kDst, 443));
  EXPECT_TRUE(Read().first.empty());

  InstallShadow(kCandidate);
  ASSERT_TRUE(installer_->DiscardShadow().ok());
  EXPECT_EQ(Run(Syn("198.18.4.1", kDst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_TRUE(Read().first.empty()) << "a discarded shadow counts nothing";
  EXPECT_TRUE(absl::IsFailedPrecondition(installer_->PromoteShadow(9)));
}

TEST_F(ShadowTest, PromotionMakesTheCandidateLiveWithTheVerdictsItPredicted) {
  Install(kLive, 7);
  InstallShadow(kCandidate);
  const Frame frames[] = {Syn("198.18.4.1", kDst, 443), Syn("198.18.2.9", kDst, 443),
                          Syn("198.18.4.1", kDst, 8080), Syn("198.18.3.3", kDst, 8080),
                          Syn("198.18.1.5", kDst, 10254)};
  for (const Frame& f : frames) Run(f);
  const Transitions predicted = Read().first;

  ASSERT_TRUE(installer_->PromoteShadow(8).ok());
  EXPECT_EQ(ActiveWord() & PC_ACTIVE_SHADOW, 0u);
  // What changed is exactly what the shadow predicted; the rest is as it was.
  Transitions seen;
  for (const Frame& f : frames) {
    const datapath::Judgement j = Run(f);
    EXPECT_EQ(j.version, 8u);
    if (j.reason == PC_REASON_ALLOWED && f.src == "198.18.2.9") continue;  // unchanged
    seen[{0, 0, j.verdict, j.reason, kTcp, f.dport}] += 1;
  }
  Transitions predicted_to;
  for (const auto& [k, n] : predicted) {
    predicted_to[{0, 0, std::get<2>(k), std::get<3>(k), std::get<4>(k), std::get<5>(k)}] += n;
  }
  EXPECT_EQ(seen, predicted_to);
  EXPECT_TRUE(Read().first == predicted) << "nothing is judged in shadow after promotion";
}

TEST_F(ShadowTest, TheShadowsRateLimitsRunOnBucketsOfTheirOwn) {
  const std::string live =
      absl::StrCat(kLive,
                   "  rateLimits:\n    syn:\n      perSource: {rate: 1, burst: 3}\n"
                   "      global: {rate: 1, burst: 4}\n");
  const std::string candidate =
      absl::StrCat(kCandidate, "  rateLimits:\n    syn:\n      perSource: {rate: 1, burst: 1}\n");
  Install(live, 7);
  InstallShadow(candidate);
  // The live bucket allows 3; the shadow's (burst 1) would allow 1.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Run(Syn("198.18.2.9", kDst, 8080, 40000 + i)).reason, PC_REASON_ALLOWED) << i;
  }
  EXPECT_EQ(Run(Syn("198.18.2.9", kDst, 8080, 40003)).reason, PC_REASON_SYN_RATE_SOURCE);
  // The global budget (4) is the live one's alone: the shadow took none.
  EXPECT_EQ(Run(Syn("198.18.2.10", kDst, 8080)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn("198.18.2.11", kDst, 8080)).reason, PC_REASON_SYN_RATE_GLOBAL);
  // SYNs 2 and 3 pass live but not in the shadow; the 4th is dropped by
  // both alike; the last passes in the shadow, which has no global budget.
  const Transitions want = {
      {{kPass, PC_REASON_ALLOWED, kDrop, PC_REASON_SYN_RATE_SOURCE, kTcp, 8080}, 2},
      {{kDrop, PC_REASON_SYN_RATE_GLOBAL, kPass, PC_REASON_ALLOWED, kTcp, 8080}, 1},
  };
  EXPECT_EQ(Read().first, want);
}

TEST_F(ShadowTest, TheShadowAdmitsNoUdpFlowForTheLivePolicy) {
  const std::string live = absl::StrCat(
      kLive, "  rateLimits:\n    connections:\n      perSource: {rate: 1, burst: 1}\n");
  const std::string candidate =
      absl::StrReplaceAll(live, {{"    - {ports: [8080], proto: tcp, from: [office]}\n",
                                  "    - {ports: [8080], proto: tcp, from: [office]}\n"
                                  "    - {ports: [53], proto: udp, from: any}\n"}});
  Install(live, 7);
  InstallShadow(candidate);
  EXPECT_EQ(Run(Udp("198.18.4.1", kDst, 5353, 53)).reason, PC_REASON_PORT_CLOSED);
  EXPECT_EQ(Run(Udp("198.18.4.1", kDst, 5353, 53)).reason, PC_REASON_PORT_CLOSED);
  // Its first datagram took the shadow's connection token; the second, a new
  // flow again (the shadow records none), finds the shadow's bucket empty.
  const Transitions want = {
      {{kDrop, PC_REASON_PORT_CLOSED, kPass, PC_REASON_ALLOWED, IPPROTO_UDP, 53}, 1},
      {{kDrop, PC_REASON_PORT_CLOSED, kDrop, PC_REASON_CONN_RATE_SOURCE, IPPROTO_UDP, 53}, 1},
  };
  EXPECT_EQ(Read().first, want);
  std::vector<uint8_t> key(sizeof(pc_flow_key));
  EXPECT_NE(bpf_map_get_next_key(dp_->map_fd(datapath::Map::kIngressFlows), nullptr, key.data()), 0)
      << "no UDP flow was admitted";
}

TEST_F(ShadowTest, AVerdictChangeWithTheSameReasonIsCounted) {
  Install(absl::StrReplaceAll(kLive, {{"mode: enforce", "mode: audit"}}), 7);
  InstallShadow(kLive);
  EXPECT_EQ(Run(Syn("198.18.4.1", kDst, 8080)).verdict, PC_VERDICT_AUDIT);
  EXPECT_EQ(Run(Syn("198.18.4.1", kDst, 443)).verdict, PC_VERDICT_PASS);
  const Transitions want = {
      {{kAudit, PC_REASON_NOT_ALLOWLISTED, kDrop, PC_REASON_NOT_ALLOWLISTED, kTcp, 8080}, 1},
  };
  EXPECT_EQ(Read().first, want);
}

}  // namespace
}  // namespace portcullis::testing
