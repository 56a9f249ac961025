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
#include <string>
#include <vector>

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

  explicit AgentRegistry(absl::Duration stale_after, MonotonicClock monotonic = SteadyNow)
      : stale_after_(stale_after), monotonic_(std::move(monotonic)) {}

  void Report(const v1::AgentStatus& status);
  void SetLiveHash(std::string hash);
  // By node name.
  std::vector<v1::AgentState> States() const;

  // portcullis_control_agents{state="in_sync|drifted|stale"}: each agent in
  // one state, stale before drifted.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct Seen {
    v1::AgentStatus status;
    absl::Time wall;
    absl::Duration monotonic;
  };
  const absl::Duration stale_after_;
  const MonotonicClock monotonic_;
  mutable std::mutex mu_;
  std::string live_hash_;
  std::map<std::string, Seen> agents_;
};

}  // namespace portcullis::control
