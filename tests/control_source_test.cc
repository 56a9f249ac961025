// The agent's control-service policy source against a scripted control
// service (plaintext, loopback, in this process): what it asks for when it
// (re)connects, what it delivers and rejects, and when it reports.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/policy_source.h"
#include "control/wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "portcullis/v1/control.grpc.pb.h"
#include "tests/support/policy_versions.h"

namespace portcullis::agent {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

v1::PolicyVersion Version(uint64_t number, bool valid = true) {
  return testing::StreamedVersion(number, valid);
}

// Sends what the test queues on each watch stream; records requests and reports.
class ScriptedControl final : public v1::Control::Service {
 public:
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::PolicyVersion>* writer) override {
    ctx->AddInitialMetadata(control::kLiveVersionHeader, "0");
    writer->SendInitialMetadata();
    {
      std::lock_guard<std::mutex> lock(mu_);
      watches_.push_back(*request);
    }
    cv_.notify_all();
    while (!ctx->IsCancelled()) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(20));
      while (!queue_.empty()) {
        v1::PolicyVersion v = queue_.front();
        queue_.pop_front();
        lock.unlock();
        writer->Write(v);
        lock.lock();
      }
      if (close_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "closing");
    }
    return grpc::Status::CANCELLED;
  }
  grpc::Status ReportStatus(grpc::ServerContext*, const v1::AgentStatus* status,
                            v1::ReportStatusResponse*) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reports_.push_back(*status);
    }
    cv_.notify_all();
    return grpc::Status::OK;
  }

  void Send(v1::PolicyVersion v) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(v));
    cv_.notify_all();
  }
  void CloseStreams() {
    std::lock_guard<std::mutex> lock(mu_);
    close_ = true;
    cv_.notify_all();
  }
  template <typename Pred>
  bool WaitUntil(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return pred(); });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::PolicyVersion> queue_;
  std::vector<v1::WatchRequest> watches_;
  std::vector<v1::AgentStatus> reports_;
  bool close_ = false;
};

class ControlSourceTest : public ::testing::Test {
 protected:
  void StartServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port_ ? port_ : 0),
                             grpc::InsecureServerCredentials(), &port_);
    control_ = std::make_unique<ScriptedControl>();
    builder.RegisterService(control_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void StopServer() {
    control_->CloseStreams();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    server_.reset();
  }

  void StartSource() {
    ControlSourceOptions options;
    options.client.target = absl::StrCat("127.0.0.1:", port_);
    options.client.insecure_plaintext = true;
    options.report_interval = absl::Seconds(30);  // only reports that follow events
    ControlSourceHooks hooks;
    hooks.status = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      return status_;
    };
    hooks.connected = [this](bool up) {
      std::lock_guard<std::mutex> lock(mu_);
      connected_.push_back(up);
    };
    hooks.sync_error = [this](absl::string_view kind) {
      std::lock_guard<std::mutex> lock(mu_);
      errors_.push_back(std::string(kind));
    };
    source_ = NewControlPolicySource(options, hooks);
    ASSERT_TRUE(source_
                    ->Start(
                        [this](PolicyUpdate u) {
                          std::lock_guard<std::mutex> lock(mu_);
                          applied_.push_back(u.version);
                          if (u.version == refuse_version_) {
                            status_.set_last_error("does not fit");
                            return absl::ResourceExhaustedError("does not fit");
                          }
                          status_.set_applied_version(u.version);
                          status_.set_applied_hash(policy::ContentHash(u.policy));
                          return absl::OkStatus();
                        },
                        [this](std::string why) {
                          std::lock_guard<std::mutex> lock(mu_);
                          rejected_.push_back(why);
                        })
                    .ok());
  }

  // Polls `pred` under mu_ for up to 10 s.
  template <typename Pred>
  bool Eventually(Pred pred) {
    for (const auto deadline = Clock::now() + std::chrono::seconds(10); Clock::now() < deadline;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (pred()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  void TearDown() override {
    if (source_) source_->Stop();
    if (server_) StopServer();
  }

  int port_ = 0;
  std::unique_ptr<ScriptedControl> control_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<PolicySource> source_;
  std::mutex mu_;
  v1::AgentStatus status_;
  uint64_t refuse_version_ = 0;
  std::vector<uint64_t> applied_;
  std::vector<std::string> rejected_, errors_;
  std::vector<bool> connected_;
};

TEST_F(ControlSourceTest, DeliversVersionsAndReportsAfterEachApply) {
  StartServer();
  status_.set_node("n1");
  StartSource();
  ASSERT_TRUE(control_->WaitUntil([&] { return control_->watches_.size() == 1; }));
  EXPECT_EQ(control_->watches_[0].node(), "n1");
  EXPECT_EQ(control_->watches_[0].applied_version(), 0u);
  control_->Send(Version(1));
  ASSERT_TRUE(control_->WaitUntil([&] {
    return !control_->reports_.empty() && control_->reports_.back().applied_version() == 1;
  }));
  EXPECT_EQ(control_->reports_.back().applied_hash(), Version(1).content_hash());
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(applied_, std::vector<uint64_t>{1});
  EXPECT_EQ(connected_, std::vector<bool>{true});
}

TEST_F(ControlSourceTest, AVersionThatFailsKeepsThePreviousAndIsReported) {
  StartServer();
  refuse_version_ = 2;
  StartSource();
  control_->Send(Version(1));
  control_->Send(Version(2));                   // the agent cannot apply it
  control_->Send(Version(3, /*valid=*/false));  // invalid: rejected before applying
  ASSERT_TRUE(control_->WaitUntil([&] {
    return !control_->reports_.empty() && control_->reports_.back().last_error() == "does not fit";
  }));
  EXPECT_EQ(control_->reports_.back().applied_version(), 1u);
  ASSERT_TRUE(Eventually([&] { return !rejected_.empty(); }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(applied_, (std::vector<uint64_t>{1, 2}));
  EXPECT_THAT(rejected_[0], HasSubstr("version 3: policy: error: spec.ports[0].ports[0]"));
}

TEST_F(ControlSourceTest, ReconnectsAfterTheServiceRestartsAndResumesFromItsVersion) {
  StartServer();
  StartSource();
  control_->Send(Version(4));
  ASSERT_TRUE(control_->WaitUntil([&] {
    return !control_->reports_.empty() && control_->reports_.back().applied_version() == 4;
  }));
  StopServer();
  const auto down = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  StartServer();  // same port
  ASSERT_TRUE(control_->WaitUntil([&] { return control_->watches_.size() == 1; }));
  // Backoff: 0.25 s, then 0.5 s, ..., with jitter; back within a few seconds.
  EXPECT_LT(Clock::now() - down, std::chrono::seconds(5));
  EXPECT_EQ(control_->watches_[0].applied_version(), 4u);
  EXPECT_EQ(control_->watches_[0].applied_hash(), Version(4).content_hash());
  // The source reports "connected" once its stream is up, which can be a
  // moment after the service has seen the Watch.
  ASSERT_TRUE(Eventually([&] { return connected_.size() >= 3; }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(connected_[0], true);
  EXPECT_EQ(connected_[1], false);
  EXPECT_THAT(errors_, ::testing::Contains("stream"));
}

}  // namespace
}  // namespace portcullis::agent
