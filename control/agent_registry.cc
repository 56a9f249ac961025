#include "control/agent_registry.h"

#include <prometheus/metric_family.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/rollout.h"

namespace portcullis::control {

absl::Duration AgentRegistry::SteadyNow() {
  return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

absl::Status AgentRegistry::Report(const v1::AgentStatus& status) {
  return Keep(status, absl::Now(), monotonic_(), /*only_if_newer=*/false);
}

absl::Status AgentRegistry::Ingest(const v1::AgentStatus& status, absl::Time reported) {
  const absl::Duration now = monotonic_();
  const absl::Duration age = std::max(absl::ZeroDuration(), absl::Now() - reported);
  return Keep(status, reported, now - age, /*only_if_newer=*/true);
}

absl::Status AgentRegistry::Keep(const v1::AgentStatus& status, absl::Time wall,
                                 absl::Duration monotonic, bool only_if_newer) {
  const std::string& node = status.node();
  const bool name_ok =
      !node.empty() && node.size() <= 253 && std::all_of(node.begin(), node.end(), [](char c) {
        return absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':';
      });
  if (!name_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(node.substr(0, 64)),
                     "\" is not a node name (at most 253 letters, digits, '.', '-', '_', ':')"));
  }
  if (status.ByteSizeLong() > kMaxReportBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the status is ", status.ByteSizeLong(),
                                                   " bytes; the limit is ", kMaxReportBytes));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (const absl::Duration now = monotonic_();
      now - last_sweep_ >= kKeepSweepEvery || agents_.size() >= kMaxAgents) {
    ForgetSilent(now);
  }
  if (auto held = agents_.find(node);
      only_if_newer && held != agents_.end() && held->second.wall >= wall) {
    return absl::OkStatus();
  }
  if (!agents_.contains(node) && agents_.size() >= kMaxAgents) {
    return absl::ResourceExhaustedError(
        absl::StrCat("more than ", kMaxAgents, " agents report to this service"));
  }
  Seen& seen = agents_[node];
  Sample sample{monotonic, {}};
  for (const v1::CounterSummary& c : status.counters()) {
    if (c.verdict() == "drop" || c.verdict() == "audit") sample.drops[c.reason()] += c.packets();
  }
  std::vector<Sample>& last = seen.samples[status.applied_version()];
  last.push_back(std::move(sample));
  if (last.size() > 2) last.erase(last.begin());
  while (seen.samples.size() > kRateVersions) seen.samples.erase(seen.samples.begin());
  seen.status = status;
  seen.wall = wall;
  seen.monotonic = monotonic;
  return absl::OkStatus();
}

bool AgentRegistry::FirstReportOfRevert(const v1::AgentStatus& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!agents_.contains(status.node())) return false;  // refused by Report
  int64_t& seen = audited_reverts_[status.node()];
  if (seen == status.reverted_unix_nanos()) return false;
  seen = status.reverted_unix_nanos();
  return true;
}

void AgentRegistry::ForgetSilent(absl::Duration now) const {
  last_sweep_ = now;
  for (auto it = agents_.begin(); it != agents_.end();) {
    if (now - it->second.monotonic > forget_after_) {
      audited_reverts_.erase(it->first);
      it = agents_.erase(it);
    } else {
      ++it;
    }
  }
}

void AgentRegistry::SetExpected(Expected expected) {
  std::lock_guard<std::mutex> lock(mu_);
  expected_ = std::move(expected);
}

std::vector<v1::AgentState> AgentRegistry::States() const {
  const absl::Duration now = monotonic_();
  std::lock_guard<std::mutex> lock(mu_);
  ForgetSilent(now);
  std::vector<v1::AgentState> out;
  for (const auto& [node, seen] : agents_) {
    v1::AgentState& s = out.emplace_back();
    *s.mutable_status() = seen.status;
    s.set_last_seen_unix_nanos(absl::ToUnixNanos(seen.wall));
    const bool canary =
        expected_.rollout && Selects(*expected_.rollout, node, seen.status.node_labels());
    s.set_canary(canary);
    s.set_drifted(seen.status.applied_hash() !=
                  (expected_.rollout && !canary ? expected_.stable_hash : expected_.live_hash));
    s.set_stale(now - seen.monotonic > stale_after_);
  }
  return out;
}

std::optional<double> AgentRegistry::DropRate(const std::string& node, uint64_t version,
                                              const std::vector<std::string>& reasons) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = agents_.find(node);
  if (it == agents_.end()) return std::nullopt;
  auto v = it->second.samples.find(version);
  if (v == it->second.samples.end() || v->second.size() < 2) return std::nullopt;
  const Sample &a = v->second[0], &b = v->second[1];
  const double seconds = absl::ToDoubleSeconds(b.monotonic - a.monotonic);
  if (seconds <= 0) return std::nullopt;
  uint64_t dropped = 0;
  for (const std::string& r : reasons) {
    auto at = [&](const Sample& s) {
      auto f = s.drops.find(r);
      return f == s.drops.end() ? uint64_t{0} : f->second;
    };
    // Counters go down only when the agent's maps were replaced.
    if (at(b) > at(a)) dropped += at(b) - at(a);
  }
  return static_cast<double>(dropped) / seconds;
}

std::vector<prometheus::MetricFamily> AgentRegistry::Collect() const {
  std::map<std::string, double> counts = {{"in_sync", 0}, {"drifted", 0}, {"stale", 0}};
  for (const v1::AgentState& s : States()) {
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
