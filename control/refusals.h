// Audits refused calls at a bounded cost: up to N refusals a second are
// written to the audit log one row each; beyond that they are counted and
// written as one summary row a second, by a thread of this class. Every
// refusal is accounted for, and a flood of bad calls costs bounded fsyncs.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "control/revocation.h"
#include "control/store.h"

namespace portcullis::control {

// Who made a call, as the service audits it.
struct Caller {
  std::string principal;  // the certificate's common name, "" if none
  std::string role;
  std::optional<PeerCertificate> certificate;  // what it presented, over TLS
};

class RefusalAuditor {
 public:
  // Up to `itemised` refusals a `window` are audited one row each; the rest
  // are counted and summarised in one row at the end of the window.
  RefusalAuditor(Store& store, int itemised, absl::Duration window, prometheus::Registry& registry);
  // Writes what is still counted, then stops the thread.
  ~RefusalAuditor();
  RefusalAuditor(const RefusalAuditor&) = delete;
  RefusalAuditor& operator=(const RefusalAuditor&) = delete;

  // Audits (and counts, by method and reason) one refused call.
  void Refuse(const Caller& caller, absl::string_view method, absl::string_view reason,
              const absl::Status& why);

 private:
  // Writes the summary of the refusals not itemised since the last one.
  void FlushSummary();

  Store& store_;
  const int itemised_;
  const absl::Duration window_;
  prometheus::Family<prometheus::Counter>& refusals_;  // method, reason
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int64_t window_index_ = 0;  // which window (monotonic) is being counted
  int itemised_this_window_ = 0;
  std::map<std::string, int64_t> not_itemised_;  // "method/reason" -> count
  std::thread flusher_;
};

}  // namespace portcullis::control
