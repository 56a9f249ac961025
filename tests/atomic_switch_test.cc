// Policies are switched in a loop while another thread runs packets through
// the program; every verdict must belong wholly to one policy.
//
// The two policies disagree in every map a packet reads: A admits the source
// through an exact-host set entry and a port class; B has the source's /24 in
// its blocklist (LPM) and a different port class, and a different mode. The
// version comes from the config the packet read first; the reason comes from
// the other maps. (odd version, allowed) and (even version, audit blocklist)
// are the only consistent outcomes; anything else is a mix.
#include <atomic>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kPolicyA[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: a}
spec:
  mode: enforce
  sets:
    clients: [198.18.7.7/32]
  failsafe:
    - {ports: [22], proto: tcp, from: [clients]}
  ports:
    - {ports: [443], proto: tcp, from: [clients]}
)";

constexpr char kPolicyB[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: b}
spec:
  mode: audit
  sets:
    others: [198.18.9.0/24]
  blocklist: [198.18.7.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [others]}
  ports:
    - {ports: [443], proto: tcp, from: [others]}
)";

class AtomicSwitchTest : public DatapathTest {};

TEST_F(AtomicSwitchTest, EveryVerdictBelongsWhollyToOnePolicy) {
  const policy::CompiledPolicy a = CompileYaml(kPolicyA);
  const policy::CompiledPolicy b = CompileYaml(kPolicyB);
  ASSERT_TRUE(installer_->Install(a, 1).ok());

  constexpr int kSwitches = 200;
  std::atomic<bool> done{false};
  std::atomic<int> switches{0};
  std::thread switcher([&] {
    // Done however the thread ends: an ASSERT below returns early, and the
    // loop of the test's thread waits for `done`.
    auto set_done = absl::MakeCleanup([&] { done = true; });
    for (int v = 2; v <= kSwitches + 1; ++v) {
      const absl::Status s = installer_->Install(v % 2 ? a : b, v);
      ASSERT_TRUE(s.ok()) << s;
      switches = v - 1;
    }
  });
  // Joined on every way out of the test (an ASSERT in the loop below), or
  // std::terminate would end the whole suite.
  auto join_switcher = absl::MakeCleanup([&] {
    if (switcher.joinable()) switcher.join();
  });

  const std::vector<uint8_t> frame = Syn("198.18.7.7", "198.18.0.10", 443).Build();
  uint64_t judged = 0, under_a = 0, under_b = 0, last_version = 0;
  while (!done) {
    auto j = runner_->Run(frame);
    ASSERT_TRUE(j.ok()) << j.status();
    ++judged;
    ASSERT_GE(j->version, last_version) << "a packet saw an older policy after a newer one";
    last_version = j->version;
    if (j->version % 2 == 1) {
      ASSERT_EQ(j->reason, PC_REASON_ALLOWED) << "version " << j->version;
      ASSERT_EQ(j->verdict, PC_VERDICT_PASS) << "version " << j->version;
      ++under_a;
    } else {
      ASSERT_EQ(j->reason, PC_REASON_BLOCKLIST) << "version " << j->version;
      ASSERT_EQ(j->verdict, PC_VERDICT_AUDIT) << "version " << j->version;
      ++under_b;
    }
  }
  switcher.join();
  EXPECT_EQ(switches.load(), kSwitches);
  // Both policies really judged packets while the switcher ran.
  EXPECT_GT(under_a, 0u);
  EXPECT_GT(under_b, 0u);
  RecordProperty("judged", std::to_string(judged));
}

TEST_F(AtomicSwitchTest, RejectedInstallLeavesTheLivePolicyUntouched) {
  ASSERT_TRUE(installer_->Install(CompileYaml(kPolicyA), 7).ok());
  // Too many override ids would spill into the other slot's part of the array.
  policy::CompiledPolicy oversized = CompileYaml(kPolicyB);
  oversized.rate_overrides.resize(PC_MAX_RATE_OVERRIDES + 1);
  EXPECT_EQ(installer_->Install(oversized, 8).code(), absl::StatusCode::kInvalidArgument);
  datapath::Judgement j = Run(Syn("198.18.7.7", "198.18.0.10", 443));
  EXPECT_EQ(j.version, 7u);
  EXPECT_EQ(j.reason, PC_REASON_ALLOWED);
}

TEST_F(AtomicSwitchTest, InstallFailingPartWayLeavesTheLivePolicyAndRecovers) {
  ASSERT_TRUE(installer_->Install(CompileYaml(kPolicyA), 7).ok());
  // The kernel refuses a /33 in the trie, after the hashes were written.
  policy::CompiledPolicy broken = CompileYaml(kPolicyB);
  const uint8_t addr[4] = {198, 18, 8, 0};
  broken.src_v4_exact.push_back({IpPrefix::FromBytes(Family::kV4, addr, 32), 1});
  broken.src_v4_prefix.push_back({IpPrefix::FromBytes(Family::kV4, addr, 33), 1});
  const absl::Status s = installer_->Install(broken, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  datapath::Judgement j = Run(Syn("198.18.7.7", "198.18.0.10", 443));
  EXPECT_EQ(j.version, 7u);
  EXPECT_EQ(j.reason, PC_REASON_ALLOWED);
  // The next good install reads back what the failed one left and cleans it.
  ASSERT_TRUE(installer_->Install(CompileYaml(kPolicyB), 9).ok());
  j = Run(Syn("198.18.7.7", "198.18.0.10", 443));
  EXPECT_EQ(j.version, 9u);
  EXPECT_EQ(j.reason, PC_REASON_BLOCKLIST);
  EXPECT_EQ(Run(Syn("198.18.8.0", "198.18.0.10", 443)).reason, PC_REASON_NOT_ALLOWLISTED);
  ASSERT_TRUE(installer_->Install(CompileYaml(kPolicyA), 10).ok());
  EXPECT_EQ(Run(Syn("198.18.7.7", "198.18.0.10", 443)).reason, PC_REASON_ALLOWED);
}

}  // namespace
}  // namespace portcullis::testing
