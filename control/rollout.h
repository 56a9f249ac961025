// Canary rollouts (a push with --nodes or --node-selector): which nodes a
// rollout selects, and how it is named in messages. The one definition,
// used by the policy streams (which version each node is sent) and by the
// agent registry (which version each node should run).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/map.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

using Labels = google::protobuf::Map<std::string, std::string>;

// The node is named by the rollout, or its labels include every pair of the
// rollout's selector.
bool Selects(const v1::Rollout& rollout, absl::string_view node, const Labels& labels);

// "nodes a, b" or "nodes labelled k=v".
std::string DescribeTargets(const v1::Rollout& rollout);

// Parses "k=v,k2=v2" (--node-labels, --node-selector): Kubernetes label
// keys (an optional DNS prefix and '/', then at most 63 of [A-Za-z0-9._-])
// and values (at most 63 of the same). At most 64 pairs. `what` names the
// flag in errors.
absl::StatusOr<std::map<std::string, std::string>> ParseLabels(absl::string_view text,
                                                               absl::string_view what);

// The nodes a staged step of `percent` runs the version on: that share of
// `agents` (rounded up), chosen by a hash of their names, so that a node
// chosen at one step stays chosen at the next and across restarts.
std::vector<std::string> ChooseShare(std::vector<std::string> agents, uint32_t percent);

// Checks staged steps ("10%,50%,100%" as numbers): each in 1..100, strictly
// increasing, the last 100; at most 10.
absl::Status CheckSteps(const std::vector<uint32_t>& steps);

// The drop reasons a change from `from` to `to` can move, by the sections
// it changes: what an automatic abort watches.
std::vector<std::string> ReasonsTouched(const v1::Policy& from, const v1::Policy& to);

// Drops below this rate (packets per second) never abort a rollout: a node
// that dropped nothing before must not abort on its first few packets.
inline constexpr double kDropRateFloor = 1.0;

}  // namespace portcullis::control
