#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/policy_source.h"
#include "common/log.h"
#include "control/wire.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "portcullis/v1/control.grpc.pb.h"

namespace portcullis::agent {
namespace {

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
  ControlPolicySource(ControlSourceOptions options, ControlSourceHooks hooks)
      : options_(std::move(options)), hooks_(std::move(hooks)) {}
  ~ControlPolicySource() override { Stop(); }

  absl::Status Start(std::function<absl::Status(PolicyUpdate)> on_update,
                     std::function<void(std::string)> on_rejected) override {
    auto channel = control::MakeChannel(options_.client);
    if (!channel.ok()) return channel.status();
    channel_ = *channel;
    stub_ = v1::Control::NewStub(channel_);
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
      if (watch_ctx_) watch_ctx_->TryCancel();
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
      auto ctx = std::make_shared<grpc::ClientContext>();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        watch_ctx_ = ctx;
      }
      // A sync client moves a connection attempt forward only while a thread
      // waits on it (else gRPC's backup poller does, every 5 s): wait here.
      if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
        if (!Retry(backoff, false, "not connected within 5 s")) return;
        continue;
      }
      const v1::AgentStatus now = hooks_.status();
      v1::WatchRequest request;
      request.set_node(now.node());
      request.set_applied_version(now.applied_version());
      request.set_applied_hash(now.applied_hash());
      std::unique_ptr<grpc::ClientReader<v1::PolicyVersion>> reader =
          stub_->Watch(ctx.get(), request);
      reader->WaitForInitialMetadata();
      // The service sends its headers at once; without them the call failed.
      const bool up = ctx->GetServerInitialMetadata().count(control::kLiveVersionHeader) > 0;
      if (up) {
        backoff.Reset();
        hooks_.connected(true);
        LogInfo("connected to the control service",
                {{"control", options_.client.target}, {"applied_version", now.applied_version()}});
        Kick();  // report at once, so that the service sees this agent
      }
      v1::PolicyVersion version;
      while (reader->Read(&version)) Deliver(version, on_update, on_rejected);
      const grpc::Status status = reader->Finish();
      if (up) hooks_.connected(false);
      if (!Retry(backoff, up, control::FromGrpc(status, options_.client.target).message())) {
        return;
      }
    }
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

  void ReportLoop() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.report_interval),
                     [this] { return stopping_ || report_now_; });
        if (stopping_) return;
        report_now_ = false;
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::ReportStatusResponse response;
      const grpc::Status s = stub_->ReportStatus(&ctx, hooks_.status(), &response);
      if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE) {
        // Unavailable is the broken stream's to report; this is something else.
        hooks_.sync_error("report");
        LogWarning(
            "cannot report status to the control service",
            {{"error", std::string(control::FromGrpc(s, options_.client.target).message())}});
      }
    }
  }

  const ControlSourceOptions options_;
  const ControlSourceHooks hooks_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Control::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool report_now_ = false;
  std::shared_ptr<grpc::ClientContext> watch_ctx_;
  std::thread watcher_, reporter_;
};

}  // namespace

std::unique_ptr<PolicySource> NewControlPolicySource(ControlSourceOptions options,
                                                     ControlSourceHooks hooks) {
  return std::make_unique<ControlPolicySource>(std::move(options), std::move(hooks));
}

}  // namespace portcullis::agent
