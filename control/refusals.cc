#include "control/refusals.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "control/agent_registry.h"

namespace portcullis::control {

RefusalAuditor::RefusalAuditor(Store& store, int itemised, absl::Duration window,
                               prometheus::Registry& registry)
    : store_(store),
      itemised_(itemised),
      window_(window),
      refusals_(prometheus::BuildCounter()
                    .Name("portcullis_control_refusals_total")
                    .Help("Refused calls, by method and reason: unauthenticated, "
                          "permission_denied, policy (invalid, or against the baseline)")
                    .Register(registry)) {
  flusher_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, absl::ToChronoMilliseconds(window_), [this] { return stopping_; })) {
      lock.unlock();
      FlushSummary();
      lock.lock();
    }
  });
}

RefusalAuditor::~RefusalAuditor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  FlushSummary();
}

void RefusalAuditor::Refuse(const Caller& caller, absl::string_view method,
                            absl::string_view reason, const absl::Status& why) {
  refusals_.Add({{"method", std::string(method)}, {"reason", std::string(reason)}}).Increment();
  const int64_t window = AgentRegistry::SteadyNow() / window_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (window != window_index_) {
      window_index_ = window;
      itemised_this_window_ = 0;
    }
    if (itemised_this_window_ >= itemised_) {
      ++not_itemised_[absl::StrCat(method, "/", reason)];
      return;
    }
    ++itemised_this_window_;
  }
  absl::Status s = store_.AppendAudit({caller.principal, caller.role, std::string(method),
                                       "refused", std::string(why.message()), 0});
  if (!s.ok()) LogError("cannot audit a refusal", {{"error", std::string(s.message())}});
  LogWarning("refused", {{"method", std::string(method)},
                         {"principal", caller.principal},
                         {"reason", std::string(reason)},
                         {"detail", std::string(why.message())}});
}

void RefusalAuditor::FlushSummary() {
  std::map<std::string, int64_t> counts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    counts.swap(not_itemised_);
  }
  if (counts.empty()) return;
  int64_t total = 0;
  std::vector<std::string> parts;
  for (const auto& [key, n] : counts) {
    total += n;
    parts.push_back(absl::StrCat(key, " x", n));
  }
  const std::string detail =
      absl::StrCat(total, " more refusals, over the itemised rate: ", absl::StrJoin(parts, ", "));
  if (absl::Status s = store_.AppendAudit({"", "", "(many)", "refused", detail, 0}); !s.ok()) {
    LogError("cannot audit refusals", {{"error", std::string(s.message())}});
  }
  LogWarning("refusals over the itemised rate", {{"detail", detail}});
}

}  // namespace portcullis::control
