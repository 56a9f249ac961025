#include "control/agent_registry.h"

#include <prometheus/metric_family.h>

#include "absl/time/clock.h"

namespace portcullis::control {

void AgentRegistry::Report(const v1::AgentStatus& status, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  agents_[status.node()] = {status, now};
}

void AgentRegistry::SetLiveHash(std::string hash) {
  std::lock_guard<std::mutex> lock(mu_);
  live_hash_ = std::move(hash);
}

std::vector<v1::AgentState> AgentRegistry::States(absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::AgentState> out;
  for (const auto& [node, entry] : agents_) {
    v1::AgentState& s = out.emplace_back();
    *s.mutable_status() = entry.first;
    s.set_last_seen_unix_nanos(absl::ToUnixNanos(entry.second));
    s.set_drifted(entry.first.applied_hash() != live_hash_);
    s.set_stale(now - entry.second > stale_after_);
  }
  return out;
}

std::vector<prometheus::MetricFamily> AgentRegistry::Collect() const {
  std::map<std::string, double> counts = {{"in_sync", 0}, {"drifted", 0}, {"stale", 0}};
  for (const v1::AgentState& s : States(absl::Now())) {
    ++counts[s.stale() ? "stale" : s.drifted() ? "drifted" : "in_sync"];
  }
  prometheus::MetricFamily family{"portcullis_control_agents",
                                  "Agents by state: in_sync, drifted (applied policy differs "
                                  "from the live version), stale (not reported in time)",
                                  prometheus::MetricType::Gauge,
                                  {}};
  for (const auto& [state, n] : counts) {
    prometheus::ClientMetric m;
    m.label = {{"state", state}};
    m.gauge.value = n;
    family.metric.push_back(std::move(m));
  }
  return {std::move(family)};
}

}  // namespace portcullis::control
