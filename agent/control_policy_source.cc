#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/policy_source.h"
#include "common/log.h"
#include "control/client.h"
#include "control/control_stub.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Exponential backoff with jitter: each wait is drawn from [d/2, d], and d
// doubles from 250 ms up to 30 s, so that agents that lost the service
// together do not come back together.
class Backoff {
 public:
  std::chrono::milliseconds Next() {
    const int64_t d = delay_ms_;
    delay_ms_ = std::min<int64_t>(delay_ms_ * 2, 30000);
    return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(d / 2, d)(rng_));
  }
  void Reset() { delay_ms_ = 250; }

 private:
  int64_t delay_ms_ = 250;
  std::mt19937_64 rng_{std::random_device{}()};
};

class ControlPolicySource : public PolicySource {
 public:
  // Without a stub, Start makes the gRPC one from options.client.
  ControlPolicySource(std::unique_ptr<control::ControlStub> stub, ControlSourceOptions options,
                      ControlSourceHooks hooks)
      : options_(std::move(options)),
        hooks_(std::move(hooks)),
        stub_(std::move(stub)),
        stale_wait_(options_.stale_failover) {
    // One connection of its own: a new channel must mean a new handshake.
    options_.client.own_connection = true;
  }
  ~ControlPolicySource() override { Stop(); }

  absl::Status Start(std::function<absl::Status(PolicyUpdate)> on_update,
                     std::function<void(std::string)> on_rejected) override {
    if (!stub_) {
      own_stub_ = true;
      auto stub = MakeStub();
      if (!stub.ok()) return stub.status();
      stub_ = *std::move(stub);
    }
    watcher_ =
        std::thread([this, on_update = std::move(on_update), on_rejected = std::move(on_rejected)] {
          WatchLoop(on_update, on_rejected);
        });
    reporter_ = std::thread([this] { ReportLoop(); });
    return absl::OkStatus();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      if (watch_) watch_->Cancel();
    }
    cv_.notify_all();
    if (watcher_.joinable()) watcher_.join();
    if (reporter_.joinable()) reporter_.join();
  }

 private:
  void WatchLoop(const std::function<absl::Status(PolicyUpdate)>& on_update,
                 const std::function<void(std::string)>& on_rejected) {
    Backoff backoff;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
      }
      const std::shared_ptr<control::ControlStub> stub = Stub();
      if (!stub->WaitForConnected(absl::Seconds(5))) {
        if (!Retry(backoff, false, "not connected within 5 s")) return;
        continue;
      }
      const v1::AgentStatus now = hooks_.status();
      v1::WatchRequest request;
      request.set_node(now.node());
      request.set_applied_version(now.applied_version());
      request.set_applied_hash(now.applied_hash());
      request.set_awaiting_confirmation(now.awaiting_confirmation());
      request.set_shadow_hash(now.shadow().content_hash());
      *request.mutable_node_labels() = now.node_labels();
      request.set_reads_notices(true);
      std::shared_ptr<control::WatchStream> stream = stub->Watch(request);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        watch_ = stream;  // for Stop to cancel
      }
      const bool up = stream->WaitForHeaders();
      const std::string peer = up ? stream->Peer() : "";
      if (up) {
        backoff.Reset();
        {
          std::lock_guard<std::mutex> lock(mu_);
          up_at_ = Clock::now();
        }
        hooks_.connected(true);
        LogInfo("connected to the control service", {{"control", options_.client.target},
                                                     {"replica", peer},
                                                     {"applied_version", now.applied_version()}});
        Kick();  // report at once, so that the service sees this agent
      }
      v1::PolicyVersion version;
      while (stream->Read(&version)) {
        if (version.notice()) {
          Notice(version, peer);
        } else {
          Deliver(version, on_update, on_rejected);
        }
      }
      const absl::Status status = stream->Finish();
      if (up) hooks_.connected(false);
      bool leaving = false, was_stale = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        leaving = leaving_;
        leaving_ = false;
        was_stale = stale_since_.has_value();
        stale_since_.reset();
      }
      if (was_stale && hooks_.stale) hooks_.stale(false);  // no stream, nothing to be stale
      if (leaving) {
        LeaveFor(peer);
        continue;  // at once: the replica left is up, only stale
      }
      if (absl::IsUnauthenticated(status)) Reconnect(status);
      if (!Retry(backoff, up, status.message())) return;
    }
  }

  // A notice on the stream: its replica went stale (it cannot read its
  // store) or recovered. Stale, the agent keeps what it enforces and leaves
  // for another replica after stale_wait_ (ReportLoop's timer).
  void Notice(const v1::PolicyVersion& notice, const std::string& peer) {
    absl::Duration wait;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (notice.stale() == stale_since_.has_value()) return;
      if (notice.stale()) {
        stale_since_ = Clock::now();
        // Stale from its first word, right after a move: every replica
        // may be (etcd lost its quorum), so moving on is worth less.
        const bool again = moved_ && Clock::now() - up_at_ < std::chrono::seconds(2);
        stale_wait_ = again ? std::min(stale_wait_ * 2, options_.stale_failover * 16)
                            : options_.stale_failover;
        wait = stale_wait_;
      } else {
        stale_since_.reset();
      }
      moved_ = false;
    }
    cv_.notify_all();
    if (hooks_.stale) hooks_.stale(notice.stale());
    if (notice.stale()) {
      LogWarning(
          "the control replica cannot read its store: enforcing its last version, which may no "
          "longer be live",
          {{"replica", peer},
           {"version", notice.version()},
           {"leave_in_ms", control::MayFailOver(options_.client.target)
                               ? absl::ToInt64Milliseconds(wait)
                               : int64_t{-1}}});
    } else {
      LogInfo("the control replica can read its store again", {{"replica", peer}});
    }
  }

  // Moves off the stale replica at `peer`: a new channel that tries it last.
  void LeaveFor(const std::string& peer) {
    LogWarning("leaving a stale control replica for another",
               {{"replica", peer}, {"control", options_.client.target}});
    {
      std::lock_guard<std::mutex> lock(mu_);
      moved_ = true;
    }
    if (!own_stub_) return;  // a given stub: reopen the stream on it
    options_.client.try_last = peer;
    auto stub = MakeStub();
    if (!stub.ok()) {
      LogError("cannot make a new channel", {{"error", std::string(stub.status().message())}});
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    stub_ = *std::move(stub);
  }

  absl::StatusOr<std::shared_ptr<control::ControlStub>> MakeStub() const {
    auto channel = control::MakeChannel(options_.client);
    if (!channel.ok()) return channel.status();
    return control::NewGrpcControlStub(*std::move(channel), options_.client.target);
  }

  std::shared_ptr<control::ControlStub> Stub() {
    std::lock_guard<std::mutex> lock(mu_);
    return stub_;
  }

  // The service refused this agent's certificate (revoked, or expired since
  // the connection was made): a new channel, so that the next handshake
  // presents the certificate files as they are now (renewed, in the usual
  // case). The connection that presented the old one is closed with it.
  void Reconnect(const absl::Status& why) {
    if (!own_stub_) return;
    LogWarning(
        "the control service refused this agent's certificate; reconnecting with the "
        "certificate on disk now",
        {{"error", std::string(why.message())}, {"cert", options_.client.tls.cert}});
    auto stub = MakeStub();
    if (!stub.ok()) {
      LogError("cannot read the certificate files",
               {{"error", std::string(stub.status().message())}});
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    stub_ = *std::move(stub);
  }

  // Counts and logs a lost or failed stream, then waits out the backoff.
  // False when stopping.
  bool Retry(Backoff& backoff, bool was_up, absl::string_view error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return false;
    }
    hooks_.sync_error("stream");
    const auto wait = backoff.Next();
    LogWarning(was_up ? "the policy stream broke; enforcing the last applied policy, reconnecting"
                      : "cannot reach the control service; enforcing the last applied policy",
               {{"control", options_.client.target},
                {"error", std::string(error)},
                {"retry_in_ms", static_cast<int64_t>(wait.count())}});
    std::unique_lock<std::mutex> lock(mu_);
    return !cv_.wait_for(lock, wait, [this] { return stopping_; });
  }

  void Deliver(const v1::PolicyVersion& version,
               const std::function<absl::Status(PolicyUpdate)>& on_update,
               const std::function<void(std::string)>& on_rejected) {
    // The service validated it; an agent of another build checks again.
    policy::Diagnostics diags;
    policy::Validate(version.policy(), diags);
    if (diags.has_errors()) {
      on_rejected(absl::StrCat("version ", version.version(), ": ", diags.Format("policy")));
    } else {
      // No text: the agent writes its last-known-good YAML after the switch.
      PolicyUpdate update{version.policy(), "", absl::StrCat("control version ", version.version()),
                          version.version()};
      update.confirm_by_unix_nanos = version.confirm_by_unix_nanos();
      update.confirmed = version.confirmed_unix_nanos() != 0;
      if (version.has_shadow()) {
        policy::Diagnostics shadow_diags;
        policy::Validate(version.shadow().policy(), shadow_diags);
        if (shadow_diags.has_errors()) {
          on_rejected(absl::StrCat("shadow candidate ", version.shadow().id(), ": ",
                                   shadow_diags.Format("policy")));
        } else {
          update.shadow = ShadowUpdate{version.shadow().id(), version.shadow().policy(),
                                       version.shadow().content_hash()};
        }
      }
      on_update(std::move(update)).IgnoreError();  // the agent logs, counts and reports it
    }
    Kick();
  }

  void Kick() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      report_now_ = true;
    }
    cv_.notify_all();
  }

  // Reports every report_interval and when kicked, and ends a stream that
  // stayed stale for stale_wait_, so that WatchLoop moves.
  void ReportLoop() {
    const auto interval = absl::ToChronoMilliseconds(options_.report_interval);
    Clock::time_point next_report = Clock::now() + interval;
    const bool may_move = control::MayFailOver(options_.client.target);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        const auto leave_at = [&] {
          return *stale_since_ + absl::ToChronoMilliseconds(stale_wait_);
        };
        // No predicate: a wakeup (a Kick, a notice, Stop) or a deadline
        // recomputes everything below.
        if (!stopping_ && !report_now_) {
          Clock::time_point until = next_report;
          // Not while leaving: the deadline has passed until the stream ends.
          if (may_move && stale_since_ && !leaving_) until = std::min(until, leave_at());
          cv_.wait_until(lock, until);
        }
        if (stopping_) return;
        const Clock::time_point now = Clock::now();
        if (may_move && stale_since_ && now >= leave_at() && watch_ && !leaving_) {
          leaving_ = true;
          watch_->Cancel();
        }
        if (!report_now_ && now < next_report) continue;
        report_now_ = false;
        next_report = now + interval;
      }
      const absl::StatusOr<v1::ReportStatusResponse> s =
          Stub()->ReportStatus(hooks_.status(), absl::Seconds(5));
      if (!s.ok() && !absl::IsUnavailable(s.status())) {
        // Unavailable is the broken stream's to report; this is something else.
        hooks_.sync_error("report");
        LogWarning("cannot report status to the control service",
                   {{"error", std::string(s.status().message())}});
      }
    }
  }

  ControlSourceOptions options_;
  const ControlSourceHooks hooks_;
  bool own_stub_ = false;                       // made from options_.client, so remade
  std::shared_ptr<control::ControlStub> stub_;  // under mu_ once started
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool report_now_ = false;
  std::shared_ptr<control::WatchStream> watch_;  // under mu_
  // The open stream's staleness, under mu_: since when its replica said
  // it is stale, how long the agent stays, whether it is leaving, and
  // whether this stream came from a move (and when it came up).
  std::optional<Clock::time_point> stale_since_;
  absl::Duration stale_wait_;
  bool leaving_ = false;
  bool moved_ = false;
  Clock::time_point up_at_;
  std::thread watcher_, reporter_;
};

}  // namespace

std::unique_ptr<PolicySource> NewControlPolicySource(ControlSourceOptions options,
                                                     ControlSourceHooks hooks) {
  return std::make_unique<ControlPolicySource>(nullptr, std::move(options), std::move(hooks));
}

std::unique_ptr<PolicySource> NewControlPolicySource(std::unique_ptr<control::ControlStub> stub,
                                                     ControlSourceOptions options,
                                                     ControlSourceHooks hooks) {
  return std::make_unique<ControlPolicySource>(std::move(stub), std::move(options),
                                               std::move(hooks));
}

}  // namespace portcullis::agent
