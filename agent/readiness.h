// What /readyz (and the portcullis_ready gauge) answers: start-up finished,
// the programs attached, the pins in place, and no policed interface
// missing. Each part of the agent reports its own piece.
#pragma once

#include <prometheus/gauge.h>

#include <atomic>
#include <mutex>
#include <set>
#include <string>

namespace portcullis::agent {

class Readiness {
 public:
  explicit Readiness(prometheus::Gauge& gauge) : gauge_(gauge) { gauge_.Set(0); }

  void SetStarted(bool started);
  void SetAttached(bool attached);
  void SetPinsOk(bool ok);
  void SetInterfacePresent(const std::string& ifname, bool present);

  bool ready() const { return ready_; }
  // Read by the HTTP server on every /readyz.
  const std::atomic<bool>* flag() const { return &ready_; }

 private:
  void UpdateLocked();

  prometheus::Gauge& gauge_;
  std::mutex mu_;
  bool started_ = false;
  bool attached_ = false;
  bool pins_ok_ = true;
  std::set<std::string> missing_;  // policed interfaces that are gone
  std::atomic<bool> ready_{false};
};

}  // namespace portcullis::agent
