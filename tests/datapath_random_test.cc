// Thousands of random and mutated frames through the XDP program: it always
// returns, every verdict is a valid one, and the counters add up to the
// number of frames. Deterministic (fixed seed) so that a failure reproduces.
#include <linux/bpf.h>
#include <netinet/in.h>

#include <random>

#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kPolicy[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: random-test}
spec:
  mode: enforce
  defaultAction: deny
  sets:
    office: [198.18.2.0/24, "2001:db8:100::/48", 198.18.3.3/32]
  blocklist: [198.18.5.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: [office]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: ["1000-2000"], proto: udp, from: [office]}
  rateLimits:
    syn:
      perSource: {rate: 5, burst: 10}
      global: {rate: 100, burst: 200}
    connections:
      perSource: {rate: 5, burst: 10}
)";

class RandomFrameTest : public DatapathTest {};

std::vector<uint8_t> Seed(std::mt19937& rng) {
  static const char* kSrc4[] = {"198.18.2.5", "198.18.3.3", "198.18.5.1", "198.18.9.9"};
  static const char* kSrc6[] = {"2001:db8:100::5", "2001:db8:9::1"};
  const bool v6 = rng() % 3 == 0;
  const std::string src = v6 ? kSrc6[rng() % 2] : kSrc4[rng() % 4];
  const std::string dst = v6 ? "2001:db8:10::10" : "198.18.0.10";
  Frame f;
  switch (rng() % 4) {
    case 0:
      f = Tcp(src, dst, 1024 + rng() % 60000, rng() % 3 ? 443 : rng() % 65536,
              static_cast<uint8_t>(rng()));
      break;
    case 1:
      f = Udp(src, dst, 1024 + rng() % 60000, 900 + rng() % 1200);
      break;
    case 2:
      f = Icmp(src, dst, rng() % 256, rng() % 16);
      break;
    default:
      f = Syn(src, dst, 22);
      break;
  }
  if (rng() % 4 == 0) f.vlan_tpids.push_back(rng() % 2 ? 0x8100 : 0x88A8);
  if (rng() % 8 == 0) f.vlan_tpids.push_back(0x8100);
  if (!v6 && rng() % 4 == 0) f.ipv4_option_words = rng() % 11;
  if (v6 && rng() % 3 == 0) {
    static const uint8_t kExt[] = {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS,
                                   IPPROTO_FRAGMENT};
    for (int i = 0, n = rng() % 11; i < n; ++i) {
      f.ipv6_ext.push_back({kExt[rng() % 4], static_cast<uint8_t>(rng() % 4)});
    }
  }
  if (rng() % 6 == 0) {
    f.frag_offset = rng() % 3 ? rng() % 8192 : 0;
    f.more_fragments = rng() % 2;
  }
  f.payload = rng() % 64;
  return f.Build();
}

void Mutate(std::vector<uint8_t>& frame, std::mt19937& rng) {
  switch (rng() % 4) {
    case 0:  // flip bytes, mostly in the headers
      for (int i = 0, n = 1 + rng() % 4; i < n; ++i) {
        frame[rng() % std::min<size_t>(frame.size(), 80)] ^= static_cast<uint8_t>(1 + rng() % 255);
      }
      break;
    case 1:  // truncate
      frame.resize(14 + rng() % (frame.size() - 13));
      break;
    case 2:  // random garbage after Ethernet
      for (size_t i = 14; i < frame.size(); ++i) frame[i] = static_cast<uint8_t>(rng());
      break;
    default:  // unmodified
      break;
  }
}

TEST_F(RandomFrameTest, EveryFrameGetsAValidVerdictAndIsCountedOnce) {
  Install(kPolicy);
  constexpr int kFrames = 5000;
  const uint32_t seed = 20261126;
  std::mt19937 rng(seed);
  const uint64_t before = CountedTotal();
  std::array<int, PC_REASON_COUNT> seen{};
  for (int i = 0; i < kFrames; ++i) {
    std::vector<uint8_t> frame = Seed(rng);
    Mutate(frame, rng);
    if (i % 500 == 0) SetClock(1'000'000'000ULL + i * 1'000'000ULL);
    auto j = runner_->Run(frame);
    ASSERT_TRUE(j.ok()) << "seed " << seed << " frame " << i << ": " << j.status();
    ASSERT_LT(j->reason, PC_REASON_COUNT);
    // The verdict follows from the reason (enforce mode) and matches the action.
    ASSERT_EQ(j->verdict, IsDropReason(j->reason) ? PC_VERDICT_DROP : PC_VERDICT_PASS)
        << "frame " << i << " reason " << ReasonName(j->reason);
    ASSERT_EQ(j->action, j->verdict == PC_VERDICT_DROP ? XDP_DROP : XDP_PASS);
    ++seen[j->reason];
  }
  EXPECT_EQ(CountedTotal() - before, uint64_t{kFrames});
  // The mix really exercises the program: most reasons occur.
  int distinct = 0;
  for (int n : seen) distinct += n > 0;
  EXPECT_GE(distinct, 9) << "the random frames reach too few verdicts";
  EXPECT_GT(seen[PC_REASON_MALFORMED], 0);
  EXPECT_GT(seen[PC_REASON_ALLOWED], 0);
}

}  // namespace
}  // namespace portcullis::testing
