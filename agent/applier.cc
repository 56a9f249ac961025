#include "agent/applier.h"

#include <malloc.h>

#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "policy/compiler.h"
#include "policy/text.h"

namespace portcullis::agent {

Applier::Applier(datapath::Datapath& dp, const StateDir& state, AgentMetrics& metrics,
                 DatapathCollector& collector, const std::optional<AppliedPolicy>& last_applied,
                 std::optional<InterruptedApply> interrupted)
    : installer_(dp),
      state_(state),
      metrics_(metrics),
      collector_(collector),
      interrupted_(std::move(interrupted)) {
  if (last_applied) {
    applied_.version = last_applied->version;
    applied_text_ = last_applied->yaml;
  }
}

void Applier::SetLastError(std::string error) {
  std::lock_guard<std::mutex> lock(status_mu_);
  applied_.last_error = std::move(error);
}

Applier::Applied Applier::applied() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return applied_;
}

void Applier::WaitForApply() { std::lock_guard<std::mutex> lock(apply_mu_); }

std::optional<AppliedPolicy> Applier::Current() const {
  std::lock_guard<std::mutex> lock(apply_mu_);
  if (applied_text_.empty()) return std::nullopt;
  return AppliedPolicy{applied_text_, applied().version};
}

absl::Status Applier::SaveAsLastKnownGood() {
  std::lock_guard<std::mutex> lock(apply_mu_);
  return state_.SaveApplied({applied_text_, applied().version});
}

absl::Status Applier::Apply(const PolicyUpdate& update) {
  std::lock_guard<std::mutex> lock(apply_mu_);
  const auto start = std::chrono::steady_clock::now();
  auto fail = [&](absl::string_view kind, const absl::Status& s) {
    metrics_.sync_errors.Add({{"kind", std::string(kind)}}).Increment();
    SetLastError(absl::StrCat(update.origin, ": ", s.message()));
    LogError("policy not applied; the previous policy stays",
             {{"origin", update.origin}, {"error", std::string(s.message())}});
    return s;
  };
  const std::string hash = policy::ContentHash(update.policy);
  int attempts = 1;
  if (interrupted_ && interrupted_->hash == hash) {
    if (interrupted_->attempts >= kMaxInterruptedApplies) {
      return fail("fatal", absl::FailedPreconditionError(absl::StrCat(
                               "the agent died ", interrupted_->attempts,
                               " times in a row while applying this policy (killed for memory, "
                               "most likely): it is not applied again")));
    }
    attempts = interrupted_->attempts + 1;
  }
  if (absl::Status s = state_.MarkApplying({hash, attempts}); !s.ok()) return fail("state", s);
  absl::Cleanup unmark = [&] {
    if (absl::Status s = state_.ClearApplying(); !s.ok()) {
      LogWarning("cannot clear the apply marker", {{"error", std::string(s.message())}});
    }
  };
  auto compiled = policy::Compile(update.policy);
  if (!compiled.ok()) return fail("compile", compiled.status());
  const uint64_t previous_version = applied().version;
  // The control service numbers its versions; a file's are counted here, and
  // a restart re-applies the same text as the same version.
  const uint64_t version = update.version ? update.version
                           : update.text == applied_text_ && previous_version > 0
                               ? previous_version
                               : previous_version + 1;
  // The candidate judged in shadow is this policy: it is loaded already.
  const Shadow shadow = this->shadow();
  const bool promote = shadow.id != 0 && shadow.content_hash == hash;
  if (absl::Status s =
          promote ? installer_.PromoteShadow(version) : installer_.Install(*compiled, version);
      !s.ok()) {
    // Either way the candidate stopped being judged (or may have).
    std::lock_guard<std::mutex> status_lock(status_mu_);
    shadow_ = {};
    return fail("apply", s);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard<std::mutex> status_lock(status_mu_);
    applied_.version = version;
    applied_.hash = hash;
    applied_.last_error.clear();
    shadow_ = {};
  }
  metrics_.policy_version.Set(static_cast<double>(version));
  metrics_.apply_seconds.Observe(seconds);
  metrics_.last_applied_timestamp.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  collector_.SetPolicy(*compiled);
  LogInfo(promote ? "policy applied: the shadow candidate, promoted" : "policy applied",
          {{"origin", update.origin},
           {"name", update.policy.metadata().name()},
           {"version", version},
           {"apply_seconds", seconds}});
  // Enforced; now kept as last-known-good. A policy from the control
  // service comes without text: it is written as YAML here, after the
  // switch, so that a large policy does not wait for it.
  const std::string text = update.text.empty() ? policy::ToYaml(update.policy) : update.text;
  // Unconfirmed, it is not what a restart should come back to.
  if (!update.awaits_confirmation() && (version != previous_version || text != applied_text_)) {
    if (absl::Status s = state_.SaveApplied({text, version}); !s.ok()) {
      LogWarning("policy applied but not saved as last-known-good",
                 {{"error", std::string(s.message())}});
    }
  }
  applied_text_ = text;
  // Compiling a large policy leaves hundreds of MB free on the heap; give
  // them back, or the next one stacks its peak on top of them.
  malloc_trim(0);
  return absl::OkStatus();
}

Applier::Shadow Applier::shadow() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return shadow_;
}

absl::Status Applier::ApplyShadow(const ShadowUpdate& update) {
  std::lock_guard<std::mutex> lock(apply_mu_);
  auto fail = [&](const absl::Status& s) {
    metrics_.sync_errors.Add({{"kind", "shadow"}}).Increment();
    LogError("shadow candidate not loaded",
             {{"shadow", update.id}, {"error", std::string(s.message())}});
    std::lock_guard<std::mutex> status_lock(status_mu_);
    shadow_ = {.error = absl::StrCat("shadow candidate ", update.id, ": ", s.message())};
    return s;
  };
  auto compiled = policy::Compile(update.policy);
  if (!compiled.ok()) return fail(compiled.status());
  // Stamped with the live version: the candidate has none of its own.
  if (absl::Status s = installer_.InstallShadow(*compiled, applied().version); !s.ok()) {
    return fail(s);
  }
  {
    std::lock_guard<std::mutex> status_lock(status_mu_);
    shadow_ = {.id = update.id, .content_hash = update.content_hash};
  }
  LogInfo("shadow candidate loaded: judged beside the live policy, not enforced",
          {{"shadow", update.id}, {"hash", update.content_hash}});
  malloc_trim(0);
  return absl::OkStatus();
}

absl::Status Applier::DiscardShadow() {
  std::lock_guard<std::mutex> lock(apply_mu_);
  if (absl::Status s = installer_.DiscardShadow(); !s.ok()) return s;
  std::lock_guard<std::mutex> status_lock(status_mu_);
  if (shadow_.id != 0) LogInfo("shadow candidate discarded", {{"shadow", shadow_.id}});
  shadow_ = {};
  return absl::OkStatus();
}

}  // namespace portcullis::agent
