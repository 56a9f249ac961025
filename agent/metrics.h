// The agent's Prometheus metrics, with exactly the names and labels of
// PRODUCT.md. Datapath counters are read from the per-CPU maps at scrape
// time (DatapathCollector), in batches, so they are never stale and never
// duplicated in user space; the agent's own state is kept in a registry (AgentMetrics).
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "absl/time/time.h"
#include "datapath/datapath.h"
#include "policy/compiler.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::agent {

class AgentMetrics {
 public:
  explicit AgentMetrics(prometheus::Registry& registry);

  prometheus::Gauge& policy_version;
  prometheus::Histogram& apply_seconds;
  prometheus::Gauge& last_applied_timestamp;
  prometheus::Gauge& control_connected;
  prometheus::Gauge& control_stale;  // the stream's replica cannot read its store
  prometheus::Gauge& ready;          // what /readyz answers, for alerts
  prometheus::Family<prometheus::Counter>& sync_errors;  // label kind
  prometheus::Counter& samples_suppressed;
  prometheus::Counter& policy_reverts;                  // unconfirmed versions gone back from
  prometheus::Family<prometheus::Gauge>& xdp_attached;  // labels iface, mode
};

struct CollectorOptions {
  // The bucket and flow maps are scanned at most once per this interval;
  // scrapes in between (a second Prometheus, a curl loop) reuse the last
  // scan. A full scan is a few hundred thousand entries in ~100 batched
  // reads, and the node may be under attack. Shorter than any sane scrape
  // interval, so that one scraper always sees a fresh scan.
  absl::Duration scan_cache = absl::Seconds(2);
};

class DatapathCollector : public prometheus::Collectable {
 public:
  explicit DatapathCollector(datapath::Datapath& dp, CollectorOptions options = {})
      : dp_(dp), options_(options) {}

  // Called after each apply: the live policy's port ranges, rates and table
  // sizes.
  void SetPolicy(const policy::CompiledPolicy& compiled);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  // What Collect needs of the live policy.
  struct LivePolicy {
    std::vector<uint16_t> counted_range;  // as CompiledPolicy's
    std::vector<pc_counted_port> counted_ports;
    std::set<std::tuple<uint8_t, uint16_t, uint16_t>> ranges;  // (proto, first, last)
    std::vector<pc_rate_override> rate_overrides;
    pc_config config{};
    std::vector<std::pair<datapath::Map, uint64_t>> entries;  // policy map -> entries
  };
  // One scan of the LRU maps.
  struct Scan {
    uint64_t buckets = 0, dry_buckets = 0, egress_flows = 0, ingress_flows = 0;
    uint64_t syn_over = 0, conn_over = 0;
    absl::Time at = absl::InfinitePast();
  };

  // The drops-by-port label of (proto, port): the label of the first range
  // that names it, or "other".
  static std::string PortLabel(const LivePolicy& p, uint8_t proto, uint16_t port);
  // The last scan, or a new one when it is older than options_.scan_cache.
  Scan ScanLruMaps(const LivePolicy& p) const;

  datapath::Datapath& dp_;
  const CollectorOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<const LivePolicy> policy_;  // under mu_
  mutable std::mutex scan_mu_;                // one scan at a time
  mutable Scan scan_;                         // under scan_mu_
};

}  // namespace portcullis::agent
