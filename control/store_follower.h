// Follows a store that other replicas change too (--store etcd): a thread
// waits on the store's changes (an etcd Watch) and calls `on_change` for
// each, so that this replica publishes to its agents whatever version
// another replica made live. Its reads double as a health check: when the
// store cannot be read, Unreachable() says so (and since when), pushes fail
// in the store, and the agents keep the last version this replica knew,
// told that it is stale (`on_reachable(false)`, then `(true)` once it can
// read again, before the change it missed is loaded).
#pragma once

#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "control/store.h"

namespace portcullis::control {

class StoreFollower {
 public:
  // Starts following at `generation` (the one the service loaded).
  StoreFollower(Store& store, uint64_t generation, std::function<void()> on_change,
                std::function<void(bool)> on_reachable, prometheus::Registry& registry,
                absl::Duration poll = absl::Seconds(2));
  ~StoreFollower();
  StoreFollower(const StoreFollower&) = delete;
  StoreFollower& operator=(const StoreFollower&) = delete;

  // Why the store cannot be read, since when; nullopt while it can.
  std::optional<std::string> Unreachable() const;

 private:
  void Run();

  Store& store_;
  const std::function<void()> on_change_;
  const std::function<void(bool)> on_reachable_;
  const absl::Duration poll_;
  prometheus::Gauge& up_;
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;    // under mu_
  std::string unreachable_;  // under mu_; "" while reachable
  uint64_t generation_;      // the follower thread's only
  std::thread thread_;
};

}  // namespace portcullis::control
