// The agent's DatapathCollector over a real datapath: buckets judged by the
// rates of their own port rule, LRU scans cached for a scrape interval, and
// the time a scrape took exported.
#include <time.h>

#include <string>

#include "agent/metrics.h"
#include "gtest/gtest.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kDst[] = "198.18.0.10";
constexpr char kClient[] = "198.18.4.1";

// tcp/443 has its own SYN rate (1/s, burst 1); the policy-wide rate is off.
constexpr char kPolicy[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: collector}
spec:
  defaultAction: deny
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [443], proto: tcp, from: any, synRate: {rate: 1, burst: 1}}
    - {ports: [80], proto: tcp, from: any}
)";

uint64_t CoarseNow() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The value of `name`{labels...} in one collection; -1 if absent.
double Metric(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
              const std::vector<std::pair<std::string, std::string>>& labels = {}) {
  for (const auto& family : families) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool match = true;
      for (const auto& [label, want] : labels) {
        bool found = false;
        for (const auto& l : m.label) found |= l.name == label && l.value == want;
        match &= found;
      }
      if (match)
        return family.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return -1;
}

class CollectorTest : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    // Buckets are stamped by the program's clock; the collector reads the
    // kernel's coarse clock: make them one.
    SetClock(CoarseNow());
    Install(kPolicy);
  }
};

// A source that ran its tcp/443 bucket dry is rate limited by that rule's
// rate, although the policy-wide rate is off.
TEST_F(CollectorTest, BucketsAreJudgedByTheirPortRulesRates) {
  agent::DatapathCollector collector(*dp_, {.scan_cache = absl::ZeroDuration()});
  collector.SetPolicy(CompileYaml(kPolicy));
  EXPECT_EQ(Metric(collector.Collect(), "portcullis_rate_limited_sources", {{"kind", "syn"}}), 0);
  EXPECT_EQ(Run(Syn(kClient, kDst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn(kClient, kDst, 443)).reason, PC_REASON_SYN_RATE_SOURCE);
  const auto families = collector.Collect();
  EXPECT_EQ(Metric(families, "portcullis_rate_limited_sources", {{"kind", "syn"}}), 1);
  EXPECT_EQ(Metric(families, "portcullis_map_entries", {{"map", "source_buckets"}}), 1);
  EXPECT_EQ(Metric(families, "portcullis_map_capacity", {{"map", "source_buckets"}}),
            PC_MAX_BUCKETS_V4 + PC_MAX_BUCKETS_V6);
}

// A source whose last token was taken is recorded in dry_buckets, shown
// beside the buckets.
TEST_F(CollectorTest, RecordsOfDryBucketsAreCounted) {
  const std::string policy =
      absl::StrCat(kPolicy, "  rateLimits:\n    syn: {perSource: {rate: 1, burst: 2}}\n");
  Install(policy, 2);
  agent::DatapathCollector collector(*dp_, {.scan_cache = absl::ZeroDuration()});
  collector.SetPolicy(CompileYaml(policy));
  EXPECT_EQ(Run(Syn(kClient, kDst, 80)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Metric(collector.Collect(), "portcullis_map_entries", {{"map", "dry_buckets"}}), 0);
  EXPECT_EQ(Run(Syn(kClient, kDst, 80)).reason, PC_REASON_ALLOWED);
  const auto families = collector.Collect();
  EXPECT_EQ(Metric(families, "portcullis_map_entries", {{"map", "dry_buckets"}}), 1);
  EXPECT_EQ(Metric(families, "portcullis_map_capacity", {{"map", "dry_buckets"}}),
            2 * PC_MAX_DRY_BUCKETS);
}

// A source over its ICMP budget is not a SYN or connection bucket gone dry,
// even with policy-wide SYN and connection rates in force.
TEST_F(CollectorTest, IcmpBudgetsAreNotCountedAsSynOrConnectionBuckets) {
  const std::string policy =
      absl::StrCat(kPolicy, "  rateLimits:\n    syn: {perSource: {rate: 1, burst: 1}}\n",
                   "    connections: {perSource: {rate: 1, burst: 1}}\n    icmp: {perSource: "
                   "{rate: 1, burst: 1}}\n");
  Install(policy, 2);
  agent::DatapathCollector collector(*dp_, {.scan_cache = absl::ZeroDuration()});
  collector.SetPolicy(CompileYaml(policy));
  EXPECT_EQ(Run(Icmp(kClient, kDst, 3, 4)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Icmp(kClient, kDst, 3, 4)).reason, PC_REASON_ICMP_RATE_SOURCE);
  const auto families = collector.Collect();
  EXPECT_EQ(Metric(families, "portcullis_map_entries", {{"map", "source_buckets"}}), 1);
  EXPECT_EQ(Metric(families, "portcullis_rate_limited_sources", {{"kind", "syn"}}), 0);
  EXPECT_EQ(Metric(families, "portcullis_rate_limited_sources", {{"kind", "conn"}}), 0);
}

// Within the cache interval a scrape reuses the last scan of the LRU maps;
// the per-CPU counters are read every time.
TEST_F(CollectorTest, ScansOfTheLruMapsAreCachedForAScrapeInterval) {
  agent::DatapathCollector collector(*dp_, {.scan_cache = absl::Hours(1)});
  collector.SetPolicy(CompileYaml(kPolicy));
  const auto before = collector.Collect();
  EXPECT_EQ(Metric(before, "portcullis_map_entries", {{"map", "source_buckets"}}), 0);
  const double passed =
      Metric(before, "portcullis_packets_total",
             {{"hook", "xdp"}, {"verdict", "drop"}, {"reason", "syn_rate_source"}});
  EXPECT_EQ(Run(Syn(kClient, kDst, 443)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn(kClient, kDst, 443)).reason, PC_REASON_SYN_RATE_SOURCE);
  const auto after = collector.Collect();
  EXPECT_EQ(Metric(after, "portcullis_map_entries", {{"map", "source_buckets"}}), 0)
      << "the bucket scan was not cached";
  EXPECT_EQ(Metric(after, "portcullis_packets_total",
                   {{"hook", "xdp"}, {"verdict", "drop"}, {"reason", "syn_rate_source"}}),
            std::max(passed, 0.0) + 1);
}

TEST_F(CollectorTest, AScrapeExportsTheTimeItTook) {
  agent::DatapathCollector collector(*dp_);
  collector.SetPolicy(CompileYaml(kPolicy));
  const double took = Metric(collector.Collect(), "portcullis_scrape_duration_seconds");
  EXPECT_GT(took, 0);
  EXPECT_LT(took, 5);
}

// Drops at a port no rule names show as "other"; at a named one, under the
// label of the first range that names it.
TEST_F(CollectorTest, DropsByPortAreLabelledByTheCompiledRanges) {
  agent::DatapathCollector collector(*dp_);
  collector.SetPolicy(CompileYaml(kPolicy));
  auto at = [&](const std::string& port) {
    return std::max(0.0, Metric(collector.Collect(), "portcullis_drops_by_port_total",
                                {{"proto", "tcp"}, {"port", port}, {"reason", "port_closed"}}));
  };
  const double other = at("other");
  EXPECT_EQ(Run(Syn(kClient, kDst, 8080)).reason, PC_REASON_PORT_CLOSED);
  EXPECT_EQ(at("other"), other + 1);
}

}  // namespace
}  // namespace portcullis::testing
