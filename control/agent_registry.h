// What the agents last reported, and which of them are drifted (applied hash
// differs from the live version's) or stale (not reported within the
// deadline). Kept in memory: agents report every few seconds, so after a
// restart of the control service the picture is whole again within one
// report interval. Also the source of portcullis_control_agents{state}.
#pragma once

#include <prometheus/collectable.h>

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

// Staleness is measured on a monotonic clock, so that a jump of the wall
// clock (NTP stepping it, a VM resumed) neither marks every agent stale nor
// hides a stale one; the wall clock only labels "last seen".
class AgentRegistry : public prometheus::Collectable {
 public:
  using MonotonicClock = std::function<absl::Duration()>;  // since any fixed point
  static absl::Duration SteadyNow();

  explicit AgentRegistry(absl::Duration stale_after, MonotonicClock monotonic = SteadyNow,
                         absl::Duration forget_after = absl::Hours(1))
      : stale_after_(stale_after), forget_after_(forget_after), monotonic_(std::move(monotonic)) {}

  // Keeps `status` as its node's latest. InvalidArgument for a node name
  // that is not a Kubernetes node name (at most 253 bytes of [A-Za-z0-9.-_:])
  // or a report over kMaxReportBytes; ResourceExhausted for a new node past
  // kMaxAgents. Nodes silent for `forget_after` are forgotten.
  static constexpr size_t kMaxReportBytes = 16 << 10;
  static constexpr size_t kMaxAgents = 20000;
  absl::Status Report(const v1::AgentStatus& status);
  // Keeps a report another replica received at `reported` (its wall clock;
  // --store etcd), checked as Report checks it, unless this registry holds
  // a newer one of the node. Its age is taken from the wall clock once, on
  // arrival, and measured on the monotonic one from then on.
  absl::Status Ingest(const v1::AgentStatus& status, absl::Time reported);
  absl::Duration stale_after() const { return stale_after_; }
  absl::Duration forget_after() const { return forget_after_; }
  // True the first time a reported node's revert (reverted_unix_nanos) is
  // seen: the caller audits it once, though every report repeats it.
  bool FirstReportOfRevert(const v1::AgentStatus& status);
  // What each node should run: the live version's hash, or, while a canary
  // rollout is in progress, the stable version's on the nodes it does not
  // select.
  struct Expected {
    std::string live_hash;
    std::string stable_hash;  // with a rollout only
    std::optional<v1::Rollout> rollout;
  };
  void SetExpected(Expected expected);
  // By node name.
  std::vector<v1::AgentState> States() const;
  // The node's rate (packets per second) of drops (and audits) by
  // `reasons`, between its last two reports that both ran `version`;
  // nullopt without two such reports.
  std::optional<double> DropRate(const std::string& node, uint64_t version,
                                 const std::vector<std::string>& reasons) const;

  // portcullis_control_agents{state="in_sync|drifted|stale"}: each agent in
  // one state, stale before drifted.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  // Drops by reason at one report, for rates.
  struct Sample {
    absl::Duration monotonic;
    std::map<std::string, uint64_t> drops;
  };
  struct Seen {
    v1::AgentStatus status;
    absl::Time wall;
    absl::Duration monotonic;
    // The last two samples of each of the node's latest applied versions
    // (kRateVersions of them).
    std::map<uint64_t, std::vector<Sample>> samples;
  };
  static constexpr size_t kRateVersions = 4;
  void ForgetSilent(absl::Duration now) const;  // under mu_
  // Keep sweeps at most this often (or when the registry is full): a sweep
  // walks every agent, and a replica keeps every agent's report, its own
  // and the other replicas', after each push (5,000 x 5,000 steps).
  static constexpr absl::Duration kKeepSweepEvery = absl::Seconds(1);
  // Report and Ingest: keeps `status` as seen at `wall` / `monotonic`.
  absl::Status Keep(const v1::AgentStatus& status, absl::Time wall, absl::Duration monotonic,
                    bool only_if_newer);

  const absl::Duration stale_after_;
  const absl::Duration forget_after_;
  const MonotonicClock monotonic_;
  mutable std::mutex mu_;
  Expected expected_;
  mutable std::map<std::string, Seen> agents_;
  mutable std::map<std::string, int64_t> audited_reverts_;         // node: reverted_unix_nanos
  mutable absl::Duration last_sweep_ = -absl::InfiniteDuration();  // monotonic
};

}  // namespace portcullis::control
