// Token buckets on the settable clock: burst, refill, source grouping, the
// global bucket, per-port overrides, and the connection bucket. Plus the
// multi-CPU property: concurrent CPUs never take more tokens than exist.
#include <pthread.h>
#include <sched.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;
constexpr char kDst[] = "198.18.0.10";
constexpr char kDst6[] = "2001:db8:10::10";

std::string Policy(absl::string_view rate_limits, absl::string_view extra_rules = "") {
  return absl::StrCat(R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: rate-test}
spec:
  defaultAction: deny
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: [53], proto: udp, from: any}
)",
                      extra_rules, "  rateLimits:\n", rate_limits);
}

class RateLimitTest : public DatapathTest {
 protected:
  pc_reason Syn(const std::string& src, uint16_t port = 443, uint16_t sport = 40000) {
    const std::string dst = src.find(':') == std::string::npos ? kDst : kDst6;
    return Run(testing::Syn(src, dst, port, sport)).reason;
  }
  pc_reason Udp(const std::string& src, uint16_t sport, uint16_t port = 53) {
    return Run(testing::Udp(src, kDst, sport, port)).reason;
  }
  int CountAllowedSyns(const std::string& src, int n, uint16_t port = 443) {
    int allowed = 0;
    for (int i = 0; i < n; ++i) allowed += Syn(src, port, 40000 + i) == PC_REASON_ALLOWED;
    return allowed;
  }
};

TEST_F(RateLimitTest, BurstThenDropUnderSourceBucket) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_ALLOWED) << i;
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_SYN_RATE_SOURCE);
  // Another source has its own bucket.
  EXPECT_EQ(Syn("198.18.4.2"), PC_REASON_ALLOWED);
}

TEST_F(RateLimitTest, RefillsAtRateAndCapsAtBurst) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 10), 5);
  SetClock(kSecond + kSecond / 10);  // +100 ms: one token
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 3), 1);
  SetClock(kSecond + kSecond / 10 + kSecond / 20);  // +50 ms: half a token
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_SYN_RATE_SOURCE);
  SetClock(100 * kSecond);  // long idle: full again, but no more than burst
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 10), 5);
}

TEST_F(RateLimitTest, NonSynTcpIsNotRateLimited) {
  Install(Policy("    syn:\n      perSource: {rate: 1, burst: 1}\n"));
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_SYN_RATE_SOURCE);
  for (uint8_t flags : {kAck, uint8_t(kSyn | kAck), uint8_t(kFin | kAck), kRst}) {
    EXPECT_EQ(Run(Tcp("198.18.4.1", kDst, 40000, 443, flags)).reason, PC_REASON_ALLOWED)
        << "flags " << int(flags);
  }
}

TEST_F(RateLimitTest, Ipv6SourcesAreGroupedBySlash64) {
  Install(Policy("    syn:\n      perSource: {rate: 1, burst: 3}\n"));
  EXPECT_EQ(Syn("2001:db8:4:1::1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:1::2"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:1:ffff::3"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:1::4"), PC_REASON_SYN_RATE_SOURCE);  // same /64, bucket empty
  EXPECT_EQ(Syn("2001:db8:4:2::1"), PC_REASON_ALLOWED);          // next /64
}

TEST_F(RateLimitTest, SourcePrefixGroupsIpv4AndIpv6AsConfigured) {
  Install(
      Policy("    syn:\n      perSource: {rate: 1, burst: 2}\n"
             "      sourcePrefix: {ipv4: 24, ipv6: 48}\n"));
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.200"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.99"), PC_REASON_SYN_RATE_SOURCE);
  EXPECT_EQ(Syn("198.18.5.1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:1::1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:2::1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4:3::1"), PC_REASON_SYN_RATE_SOURCE);
}

TEST_F(RateLimitTest, GlobalBucketLimitsAllSourcesTogether) {
  Install(
      Policy("    syn:\n      perSource: {rate: 1000, burst: 1000}\n"
             "      global: {rate: 1, burst: 3}\n"));
  EXPECT_EQ(Syn("198.18.4.1"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.2"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("2001:db8:4::3"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.4"), PC_REASON_SYN_RATE_GLOBAL);
  SetClock(2 * kSecond);
  EXPECT_EQ(Syn("198.18.4.5"), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.6"), PC_REASON_SYN_RATE_GLOBAL);
}

TEST_F(RateLimitTest, PerPortOverrideHasItsOwnRateAndBucket) {
  Install(Policy("    syn:\n      perSource: {rate: 1, burst: 5}\n",
                 "    - {ports: [8443], proto: tcp, from: any, synRate: {rate: 1, burst: 1}}\n"));
  EXPECT_EQ(Syn("198.18.4.1", 8443), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.1", 8443), PC_REASON_SYN_RATE_SOURCE);
  // Port 443 uses the policy-wide bucket of the same source, still full.
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 6, 443), 5);
}

TEST_F(RateLimitTest, ConnectionBucketCountsNewUdpFlowsOnly) {
  Install(Policy("    connections:\n      perSource: {rate: 1, burst: 2}\n"));
  EXPECT_EQ(Udp("198.18.4.1", 5001), PC_REASON_ALLOWED);
  EXPECT_EQ(Udp("198.18.4.1", 5002), PC_REASON_ALLOWED);
  EXPECT_EQ(Udp("198.18.4.1", 5003), PC_REASON_CONN_RATE_SOURCE);  // third new flow
  // Repeats of admitted flows take no token.
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(Udp("198.18.4.1", 5001), PC_REASON_ALLOWED);
    EXPECT_EQ(Udp("198.18.4.1", 5002), PC_REASON_ALLOWED);
  }
  // A refused flow was not admitted: it stays new.
  EXPECT_EQ(Udp("198.18.4.1", 5003), PC_REASON_CONN_RATE_SOURCE);
  SetClock(2 * kSecond);
  EXPECT_EQ(Udp("198.18.4.1", 5003), PC_REASON_ALLOWED);
  EXPECT_EQ(Udp("198.18.4.1", 5003), PC_REASON_ALLOWED);
}

TEST_F(RateLimitTest, TcpSynIsANewConnection) {
  Install(
      Policy("    syn:\n      perSource: {rate: 100, burst: 100}\n"
             "    connections:\n      perSource: {rate: 1, burst: 2}\n"));
  EXPECT_EQ(Syn("198.18.4.1", 443, 1), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.1", 443, 2), PC_REASON_ALLOWED);
  EXPECT_EQ(Syn("198.18.4.1", 443, 3), PC_REASON_CONN_RATE_SOURCE);
}

// Eviction from the LRU bucket map, as a flood that churns it causes: every
// bucket goes, the dry records stay (they are written only by sources that
// empty a bucket, which a spoofed source never does).
class BucketChurnTest : public RateLimitTest {
 protected:
  void EvictEveryBucket() {
    ClearMap(dp_->map_fd(datapath::Map::kSourceBucketsV4), sizeof(pc_bucket_key_v4));
    ClearMap(dp_->map_fd(datapath::Map::kSourceBucketsV6), sizeof(pc_bucket_key_v6));
  }
  size_t DryRecords() {
    return MapKeys<pc_bucket_key_v4>(datapath::Map::kDryBucketsV4).size() +
           MapKeys<pc_bucket_key_v6>(datapath::Map::kDryBucketsV6).size();
  }
  template <typename Key>
  std::vector<Key> MapKeys(datapath::Map m) {
    std::vector<Key> keys;
    Key key{}, next{};
    for (void* prev = nullptr; bpf_map_get_next_key(dp_->map_fd(m), prev, &next) == 0;
         prev = &key) {
      key = next;
      keys.push_back(key);
    }
    return keys;
  }
};

// A source's first SYN creates no bucket, so the one-SYN sources of a
// spoofed flood leave the bucket map alone; its second creates the bucket
// with both SYNs' tokens taken, so the limit is exact.
TEST_F(BucketChurnTest, ASourcesFirstSynCreatesNoBucket) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(Syn(absl::StrCat("198.19.", i / 100, ".", i % 100)), PC_REASON_ALLOWED);
    EXPECT_EQ(Syn(absl::StrCat("2001:db8:19:", i, "::1")), PC_REASON_ALLOWED);
  }
  EXPECT_EQ(MapKeys<pc_bucket_key_v4>(datapath::Map::kSourceBucketsV4).size(), 0u);
  EXPECT_EQ(MapKeys<pc_bucket_key_v6>(datapath::Map::kSourceBucketsV6).size(), 0u);
  for (const char* src : {"198.19.9.9", "2001:db8:19:999::1"}) {
    SCOPED_TRACE(src);
    EXPECT_EQ(CountAllowedSyns(src, 10), 5);
  }
  EXPECT_EQ(MapKeys<pc_bucket_key_v4>(datapath::Map::kSourceBucketsV4).size(), 1u);
  EXPECT_EQ(MapKeys<pc_bucket_key_v6>(datapath::Map::kSourceBucketsV6).size(), 1u);
}

// After an eviction a source is seen anew: its first packet conforms
// (first_sight), and its second gets its bucket back from the dry record.
TEST_F(BucketChurnTest, ABucketEvictedAfterItRanDryComesBackDry) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  for (const char* src : {"198.18.4.1", "2001:db8:4::1"}) {
    SCOPED_TRACE(src);
    SetClock(kSecond);
    EXPECT_EQ(CountAllowedSyns(src, 8), 5);
    EvictEveryBucket();
    EXPECT_EQ(Syn(src), PC_REASON_ALLOWED) << "seen anew";
    EXPECT_EQ(Syn(src), PC_REASON_SYN_RATE_SOURCE) << "its dry bucket back";
    SetClock(kSecond + kSecond / 10);  // +100 ms: one token, as without eviction
    EvictEveryBucket();
    EXPECT_EQ(CountAllowedSyns(src, 3), 2) << "the one seen anew, and the token";
  }
}

TEST_F(BucketChurnTest, ABucketEvictedBeforeItRanDryComesBackFull) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 3), 3);
  EXPECT_EQ(DryRecords(), 0u);
  EvictEveryBucket();
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 8), 5);
}

// The issue's measurement (bursts of 300 a second, about twice the limit
// under churn), scaled down: bursts of 30 a second against rate 10, burst
// 20, every bucket evicted between bursts. The first burst gets the burst,
// each later one the second's refill and the one packet of a source seen
// anew; a bucket that came back full would pass 20 a burst, 200 in all.
TEST_F(BucketChurnTest, ABurstySourceStaysAtItsLimitWhileTheTableChurns) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 20}\n"));
  int allowed = 0;
  for (int second = 1; second <= 10; ++second) {
    SetClock(second * kSecond);
    allowed += CountAllowedSyns("198.18.4.1", 30);
    EvictEveryBucket();
  }
  EXPECT_EQ(allowed, 20 + 9 * (10 + 1));
}

// Writes stay bounded: one record per source that ran dry, none for the
// one-SYN sources of a spoofed flood, and the record follows the bucket.
TEST_F(BucketChurnTest, OnlySourcesThatRanDryAreRecorded) {
  Install(Policy("    syn:\n      perSource: {rate: 10, burst: 5}\n"));
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(Syn(absl::StrCat("198.19.", i / 100, ".", i % 100)), PC_REASON_ALLOWED);
  }
  EXPECT_EQ(DryRecords(), 0u);
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 100), 5);
  EXPECT_EQ(CountAllowedSyns("198.18.4.2", 100), 5);
  EXPECT_EQ(DryRecords(), 2u);
  // The record is the bucket as the last token left it.
  for (const pc_bucket_key_v4& key : MapKeys<pc_bucket_key_v4>(datapath::Map::kDryBucketsV4)) {
    pc_bucket live{}, dry{};
    ASSERT_EQ(bpf_map_lookup_elem(dp_->map_fd(datapath::Map::kSourceBucketsV4), &key, &live), 0);
    ASSERT_EQ(bpf_map_lookup_elem(dp_->map_fd(datapath::Map::kDryBucketsV4), &key, &dry), 0);
    EXPECT_EQ(dry.syn_empty_at, live.syn_empty_at);
  }
}

TEST_F(RateLimitTest, DroppedPacketsTakeNoToken) {
  Install(Policy("    syn:\n      perSource: {rate: 1, burst: 3}\n"));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Syn("198.18.4.1", 8080), PC_REASON_PORT_CLOSED);
  EXPECT_EQ(CountAllowedSyns("198.18.4.1", 4), 3);
}

TEST_F(RateLimitTest, FailsafeIsNeverRateLimited) {
  Install(
      Policy("    syn:\n      perSource: {rate: 1, burst: 1}\n"
             "      global: {rate: 1, burst: 1}\n"));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(Syn("198.18.4.1", 22, 40000 + i), PC_REASON_FAILSAFE);
}

// Two CPUs hammer one bucket with the clock frozen: exactly `burst` SYNs may
// pass in total. A lost update (two CPUs taking the same token) would let
// more through.
TEST_F(RateLimitTest, ConcurrentCpusNeverOverdrawABucket) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two CPUs";
  constexpr int kBurst = 5000;
  constexpr uint32_t kRepeat = 100000;
  Install(Policy(absl::StrCat("    syn:\n      perSource: {rate: 1, burst: ", kBurst, "}\n")));
  const std::vector<uint8_t> frame = testing::Syn("198.18.4.1", kDst, 443).Build();
  const uint64_t pass_before = Counted(PC_VERDICT_PASS, PC_REASON_ALLOWED);
  const uint64_t drop_before = Counted(PC_VERDICT_DROP, PC_REASON_SYN_RATE_SOURCE);
  auto hammer = [&](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    EXPECT_TRUE(runner_->RunRepeated(frame, kRepeat).ok());
  };
  std::thread a(hammer, 0), b(hammer, 1);
  a.join();
  b.join();
  EXPECT_EQ(Counted(PC_VERDICT_PASS, PC_REASON_ALLOWED) - pass_before, uint64_t{kBurst});
  EXPECT_EQ(Counted(PC_VERDICT_DROP, PC_REASON_SYN_RATE_SOURCE) - drop_before,
            2 * kRepeat - kBurst);
}

}  // namespace
}  // namespace portcullis::testing
