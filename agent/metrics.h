// The agent's Prometheus metrics, with exactly the names and labels of
// PRODUCT.md. Datapath counters are read from the per-CPU maps at scrape
// time (DatapathCollector), so they are never stale and never duplicated in
// user space; the agent's own state is kept in a registry (AgentMetrics).
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
  prometheus::Gauge& ready;                              // what /readyz answers, for alerts
  prometheus::Family<prometheus::Counter>& sync_errors;  // label kind
  prometheus::Counter& samples_suppressed;
  prometheus::Family<prometheus::Gauge>& xdp_attached;  // labels iface, mode
};

// Label values for drops by port: ports the policy names, by (IP protocol,
// port); others are "other".
using PortLabels = std::map<std::pair<uint8_t, uint16_t>, std::string>;
PortLabels PortLabelsOf(const v1::Policy& policy);

class DatapathCollector : public prometheus::Collectable {
 public:
  explicit DatapathCollector(datapath::Datapath& dp) : dp_(dp) {}

  // Called after each apply: the port labels and table sizes of the policy.
  void SetPolicy(PortLabels labels, const policy::CompiledPolicy& compiled);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  datapath::Datapath& dp_;
  mutable std::mutex mu_;
  PortLabels labels_;
  // The (proto, first, last) port ranges the live policy names: the rows of
  // named_port_drops that show.
  std::set<std::tuple<uint8_t, uint16_t, uint16_t>> live_ranges_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> policy_maps_;  // name -> entries, capacity
  pc_config config_{};
};

}  // namespace portcullis::agent
