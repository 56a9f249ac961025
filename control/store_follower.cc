#include "control/store_follower.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace portcullis::control {

StoreFollower::StoreFollower(Store& store, uint64_t generation, std::function<void()> on_change,
                             std::function<void(bool)> on_reachable, prometheus::Registry& registry,
                             absl::Duration poll)
    : store_(store),
      on_change_(std::move(on_change)),
      on_reachable_(std::move(on_reachable)),
      poll_(poll),
      up_(prometheus::BuildGauge()
              .Name("portcullis_control_store_up")
              .Help("1 while this replica can read its shared store (--store etcd), else 0")
              .Register(registry)
              .Add({})),
      generation_(generation) {
  up_.Set(1);
  thread_ = std::thread([this] { Run(); });
}

StoreFollower::~StoreFollower() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

std::optional<std::string> StoreFollower::Unreachable() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (unreachable_.empty()) return std::nullopt;
  return unreachable_;
}

void StoreFollower::Run() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    // Bounded by poll_ (and the store's call timeout), so that stopping
    // waits at most that long.
    absl::StatusOr<uint64_t> now = store_.AwaitChange(generation_, poll_);
    if (!now.ok()) {
      bool lost = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (unreachable_.empty()) {
          lost = true;
          unreachable_ = absl::StrCat("since ", absl::FormatTime(absl::Now(), absl::UTCTimeZone()),
                                      ": ", now.status().message());
          up_.Set(0);
          LogError(
              "the store cannot be read: pushes are refused, and the agents keep the last "
              "version this replica knew, told that it is stale",
              {{"error", std::string(now.status().message())}});
        }
      }
      if (lost) on_reachable_(false);
      std::unique_lock<std::mutex> lock(mu_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; });
      continue;
    }
    bool back = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!unreachable_.empty()) {
        back = true;
        unreachable_.clear();
        up_.Set(1);
        LogInfo("the store can be read again", {{"generation", static_cast<int64_t>(*now)}});
      }
    }
    if (back) on_reachable_(true);
    if (*now != generation_) {
      generation_ = *now;
      on_change_();
    }
  }
}

}  // namespace portcullis::control
