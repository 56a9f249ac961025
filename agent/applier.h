// Applies policies: validated policy -> compiled -> installed in the idle
// slot and switched to -> saved as last-known-good; numbers the versions of
// a policy file, and keeps what the agent reports as applied.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "agent/metrics.h"
#include "agent/policy_source.h"
#include "agent/state_dir.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"

namespace portcullis::agent {

class Applier {
 public:
  // `last_applied` (the state dir's) seeds the version count.
  // `interrupted` is the policy the last agent died applying
  // (StateDir::TakeApplying). A policy whose applies were begun
  // kMaxInterruptedApplies times in a row without finishing is refused: it
  // is what kills the agent (out of memory, most likely), and retrying it
  // would crash-loop every node it reached. One death (a kill -9 mid-apply
  // in a rollout) is retried. Everything passed must outlive the applier.
  static constexpr int kMaxInterruptedApplies = 2;
  Applier(datapath::Datapath& dp, const StateDir& state, AgentMetrics& metrics,
          DatapathCollector& collector, const std::optional<AppliedPolicy>& last_applied,
          std::optional<InterruptedApply> interrupted = std::nullopt);

  // Compiles, installs and switches to `update`, then saves it as
  // last-known-good (unless it awaits confirmation). On error the previous
  // policy stays, and the error is counted and kept. While it runs, the
  // state dir marks the policy as being applied. The shadow candidate ends:
  // when `update` is its policy, the switch is to the slot it is loaded in.
  absl::Status Apply(const PolicyUpdate& update);

  // Loads `shadow` as the candidate judged beside the live policy, its
  // counts from zero; on error none is loaded, and the error is kept for
  // the report.
  absl::Status ApplyShadow(const ShadowUpdate& shadow);
  // Stops judging by the shadow candidate.
  absl::Status DiscardShadow();
  // The candidate loaded (id 0: none), or the last one that failed to load.
  struct Shadow {
    uint64_t id = 0;
    std::string content_hash;
    std::string error;
  };
  Shadow shadow() const;

  // What is applied, as its text and version (empty before the first).
  std::optional<AppliedPolicy> Current() const;
  // Keeps what is applied as last-known-good: a version, applied while it
  // awaited confirmation, is confirmed.
  absl::Status SaveAsLastKnownGood();

  // An error to report (e.g. a policy the source rejected).
  void SetLastError(std::string error);

  struct Applied {
    uint64_t version = 0;
    std::string hash;
    std::string last_error;
  };
  Applied applied() const;

  // Returns once no apply is in progress (at shutdown).
  void WaitForApply();

 private:
  datapath::PolicyInstaller installer_;
  const StateDir& state_;
  AgentMetrics& metrics_;
  DatapathCollector& collector_;
  mutable std::mutex apply_mu_;  // one apply at a time
  std::string applied_text_;     // under apply_mu_
  const std::optional<InterruptedApply> interrupted_;
  mutable std::mutex status_mu_;
  Applied applied_;  // under status_mu_
  Shadow shadow_;    // under status_mu_; written under apply_mu_ too
};

}  // namespace portcullis::agent
