// What the agents last reported, and which of them are drifted (applied hash
// differs from the live version's) or stale (not reported within the
// deadline). Kept in memory: agents report every few seconds, so after a
// restart of the control service the picture is whole again within one
// report interval. Also the source of portcullis_control_agents{state}.
#pragma once

#include <prometheus/collectable.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

class AgentRegistry : public prometheus::Collectable {
 public:
  explicit AgentRegistry(absl::Duration stale_after) : stale_after_(stale_after) {}

  void Report(const v1::AgentStatus& status, absl::Time now);
  void SetLiveHash(std::string hash);
  // By node name.
  std::vector<v1::AgentState> States(absl::Time now) const;

  // portcullis_control_agents{state="in_sync|drifted|stale"}: each agent in
  // one state, stale before drifted.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const absl::Duration stale_after_;
  mutable std::mutex mu_;
  std::string live_hash_;
  std::map<std::string, std::pair<v1::AgentStatus, absl::Time>> agents_;
};

}  // namespace portcullis::control
