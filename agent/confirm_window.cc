#include "agent/confirm_window.h"

#include "absl/time/clock.h"
#include "common/log.h"

namespace portcullis::agent {

ConfirmWindow::ConfirmWindow(Revert revert)
    : revert_(std::move(revert)), thread_([this] { Loop(); }) {}

ConfirmWindow::~ConfirmWindow() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ConfirmWindow::Arm(uint64_t version, absl::Time deadline, AppliedPolicy previous) {
  // The deadline is the service's wall clock; the wait is on this host's
  // steady one, from what is left of it now.
  const auto due =
      std::chrono::steady_clock::now() +
      absl::ToChronoNanoseconds(std::max(deadline - absl::Now(), absl::ZeroDuration()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Over a version that awaits confirmation too, going back means going
    // back to what that one replaced: the last policy known to be wanted.
    if (pending_) previous = std::move(pending_->previous);
    pending_ = Pending{version, due, std::move(previous)};
  }
  cv_.notify_all();
}

bool ConfirmWindow::Confirm(uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_ || pending_->version != version) return false;
  pending_.reset();
  return true;
}

void ConfirmWindow::Disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.reset();
}

bool ConfirmWindow::awaiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.has_value();
}

ConfirmWindow::Reverted ConfirmWindow::last_revert() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

void ConfirmWindow::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (!pending_) {
      cv_.wait(lock);
      continue;
    }
    if (std::chrono::steady_clock::now() < pending_->due) {
      cv_.wait_until(lock, pending_->due);
      continue;
    }
    // Taken out under the lock: a confirmation from now on is too late.
    Pending expired = *std::move(pending_);
    pending_.reset();
    lock.unlock();
    LogWarning("no confirmation by the deadline: going back to the previous policy",
               {{"version", expired.version}, {"to_version", expired.previous.version}});
    const absl::Status s = revert_(expired.previous);
    lock.lock();
    if (s.ok()) {
      last_ = {expired.version, expired.previous.version, absl::ToUnixNanos(absl::Now())};
    } else {
      LogError("cannot go back to the previous policy",
               {{"version", expired.version}, {"error", std::string(s.message())}});
    }
  }
}

}  // namespace portcullis::agent
