#include "agent/readiness.h"

namespace portcullis::agent {

void Readiness::SetStarted(bool started) {
  std::lock_guard<std::mutex> lock(mu_);
  started_ = started;
  UpdateLocked();
}

void Readiness::SetAttached(bool attached) {
  std::lock_guard<std::mutex> lock(mu_);
  attached_ = attached;
  UpdateLocked();
}

void Readiness::SetPinsOk(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  pins_ok_ = ok;
  UpdateLocked();
}

void Readiness::SetInterfacePresent(const std::string& ifname, bool present) {
  std::lock_guard<std::mutex> lock(mu_);
  if (present) {
    missing_.erase(ifname);
  } else {
    missing_.insert(ifname);
  }
  UpdateLocked();
}

void Readiness::UpdateLocked() {
  ready_ = started_ && attached_ && pins_ok_ && missing_.empty();
  gauge_.Set(ready_ ? 1 : 0);
}

}  // namespace portcullis::agent
