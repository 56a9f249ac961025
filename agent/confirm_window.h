// A version from a push with --confirm-within: unless the agent learns by
// its deadline that it was confirmed, it goes back to the policy the
// version replaced, through the same atomic switch. The lock-out case is
// the one this is for: a policy that cuts the agent off from the control
// service can never be confirmed to it, and the agent reverts by itself.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/state_dir.h"

namespace portcullis::agent {

class ConfirmWindow {
 public:
  // Applies `previous` (the policy to go back to); called on this class's
  // thread when a deadline passes unconfirmed.
  using Revert = std::function<absl::Status(const AppliedPolicy& previous)>;
  explicit ConfirmWindow(Revert revert);
  ~ConfirmWindow();  // stops the timer; reverts nothing
  ConfirmWindow(const ConfirmWindow&) = delete;
  ConfirmWindow& operator=(const ConfirmWindow&) = delete;

  // `version` is applied and awaits confirmation until `deadline` (the
  // service's clock); `previous` is what it replaced (unless it replaced a
  // version that awaited confirmation too: then what that one replaced).
  void Arm(uint64_t version, absl::Time deadline, AppliedPolicy previous);
  // A confirmation of `version`. True if this window awaited it: it is
  // closed, nothing will be reverted.
  bool Confirm(uint64_t version);
  // A version that needs no confirmation replaced the awaited one.
  void Disarm();
  bool awaiting() const;

  struct Reverted {
    uint64_t from = 0, to = 0;
    int64_t at_unix_nanos = 0;
  };
  // The last revert this agent made (zeros if none), for its status reports.
  Reverted last_revert() const;

 private:
  struct Pending {
    uint64_t version;
    std::chrono::steady_clock::time_point due;
    AppliedPolicy previous;
  };
  void Loop();

  const Revert revert_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Pending> pending_;  // under mu_
  Reverted last_;                   // under mu_
  bool stopping_ = false;           // under mu_
  std::thread thread_;
};

}  // namespace portcullis::agent
