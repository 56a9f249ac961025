// The agent's control-service policy source over a fake ControlStub: no
// sockets, no gRPC. What it asks for on every (re)connect, what it delivers
// and rejects, when it reports, and what it counts.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/policy_source.h"
#include "control/control_stub.h"
#include "gtest/gtest.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "tests/support/policy_versions.h"

namespace portcullis::agent {
namespace {

v1::PolicyVersion Version(uint64_t number, bool valid = true) {
  return testing::StreamedVersion(number, valid);
}

// One scripted Watch stream: headers or not, versions, then an end status;
// without an end it stays open until cancelled.
struct Script {
  bool headers = true;
  std::vector<v1::PolicyVersion> versions;
  std::optional<absl::Status> end;
};

class FakeControl : public control::ControlStub {
 public:
  // What the test scripts and reads; shared with the streams.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Script> scripts;
    std::vector<v1::WatchRequest> watches;
    std::vector<v1::AgentStatus> reports;
    absl::Status report_result = absl::OkStatus();
  };

  explicit FakeControl(std::shared_ptr<State> state) : state_(std::move(state)) {}

  bool WaitForConnected(absl::Duration) override { return true; }
  std::unique_ptr<control::WatchStream> Watch(const v1::WatchRequest& request) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->watches.push_back(request);
    Script script;
    if (!state_->scripts.empty()) {
      script = std::move(state_->scripts.front());
      state_->scripts.pop_front();
    }
    state_->cv.notify_all();
    return std::make_unique<Stream>(state_, std::move(script));
  }
  absl::StatusOr<v1::ReportStatusResponse> ReportStatus(const v1::AgentStatus& status,
                                                        absl::Duration) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->reports.push_back(status);
    state_->cv.notify_all();
    if (!state_->report_result.ok()) return state_->report_result;
    return v1::ReportStatusResponse();
  }

#define PC_UNUSED_CALL(Name, Request, Response)                                    \
  absl::StatusOr<v1::Response> Name(const v1::Request&, absl::Duration) override { \
    return absl::UnimplementedError("not an agent's call");                        \
  }
  PC_UNUSED_CALL(Push, PushRequest, PushResponse)
  PC_UNUSED_CALL(Validate, ValidateRequest, ValidateResponse)
  PC_UNUSED_CALL(Diff, DiffRequest, DiffResponse)
  PC_UNUSED_CALL(Rollback, RollbackRequest, PushResponse)
  PC_UNUSED_CALL(History, HistoryRequest, HistoryResponse)
  PC_UNUSED_CALL(Get, GetRequest, PolicyVersion)
  PC_UNUSED_CALL(Audit, AuditRequest, AuditResponse)
  PC_UNUSED_CALL(Status, StatusRequest, StatusResponse)
  PC_UNUSED_CALL(Confirm, ConfirmRequest, PolicyVersion)
  PC_UNUSED_CALL(ShadowReport, ShadowReportRequest, ShadowReportResponse)
  PC_UNUSED_CALL(PromoteShadow, PromoteShadowRequest, PushResponse)
  PC_UNUSED_CALL(DiscardShadow, DiscardShadowRequest, DiscardShadowResponse)
  PC_UNUSED_CALL(PromoteRollout, RolloutRequest, PushResponse)
  PC_UNUSED_CALL(AbortRollout, RolloutRequest, PushResponse)
#undef PC_UNUSED_CALL

 private:
  class Stream : public control::WatchStream {
   public:
    Stream(std::shared_ptr<State> state, Script script)
        : state_(std::move(state)), script_(std::move(script)) {}
    bool WaitForHeaders() override { return script_.headers; }
    bool Read(v1::PolicyVersion* version) override {
      if (next_ < script_.versions.size()) {
        *version = script_.versions[next_++];
        return true;
      }
      if (script_.end) return false;
      std::unique_lock<std::mutex> lock(state_->mu);
      state_->cv.wait(lock, [this] { return cancelled_; });
      return false;
    }
    absl::Status Finish() override {
      return script_.end.value_or(absl::CancelledError("cancelled"));
    }
    void Cancel() override {
      std::lock_guard<std::mutex> lock(state_->mu);
      cancelled_ = true;
      state_->cv.notify_all();
    }
    std::string Peer() override { return "198.18.0.2:9443"; }

   private:
    std::shared_ptr<State> state_;
    Script script_;
    size_t next_ = 0;
    bool cancelled_ = false;  // under state_->mu
  };

  std::shared_ptr<State> state_;
};

class ControlSourceFakeTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (source_) source_->Stop();
  }

  // Starts the source; the agent "applies" what it is given.
  void Start() {
    ControlSourceHooks hooks;
    hooks.status = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      v1::AgentStatus s;
      s.set_node("node-a");
      s.set_applied_version(applied_version_);
      s.set_applied_hash(applied_hash_);
      return s;
    };
    hooks.connected = [this](bool up) {
      std::lock_guard<std::mutex> lock(mu_);
      connected_.push_back(up);
    };
    hooks.stale = [this](bool stale) {
      std::lock_guard<std::mutex> lock(mu_);
      stale_.push_back(stale);
    };
    hooks.sync_error = [this](absl::string_view kind) {
      std::lock_guard<std::mutex> lock(mu_);
      errors_.emplace_back(kind);
    };
    source_ = NewControlPolicySource(std::make_unique<FakeControl>(state_),
                                     {.client = {.target = "fake:1"},
                                      .report_interval = absl::Hours(1),
                                      .stale_failover = stale_failover_},
                                     std::move(hooks));
    ASSERT_TRUE(source_
                    ->Start(
                        [this](PolicyUpdate u) {
                          std::lock_guard<std::mutex> lock(mu_);
                          applied_version_ = u.version;
                          applied_hash_ = policy::ContentHash(u.policy);
                          delivered_.push_back(u.version);
                          return absl::OkStatus();
                        },
                        [this](std::string why) {
                          std::lock_guard<std::mutex> lock(mu_);
                          rejected_.push_back(why);
                        })
                    .ok());
  }

  // Waits (at most 10 s) until `done` holds, under the fake's lock.
  bool WaitForFake(const std::function<bool(const FakeControl::State&)>& done) {
    std::unique_lock<std::mutex> lock(state_->mu);
    return state_->cv.wait_for(lock, std::chrono::seconds(10), [&] { return done(*state_); });
  }

  // Polls (at most 10 s) until `done` holds, under the agent side's lock.
  bool WaitForAgent(const std::function<bool()>& done) {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::shared_ptr<FakeControl::State> state_ = std::make_shared<FakeControl::State>();
  std::unique_ptr<PolicySource> source_;
  std::mutex mu_;
  uint64_t applied_version_ = 0;
  std::string applied_hash_;
  std::vector<uint64_t> delivered_;
  std::vector<std::string> rejected_;
  std::vector<bool> connected_;
  std::vector<bool> stale_;
  std::vector<std::string> errors_;
  absl::Duration stale_failover_ = absl::Seconds(30);
};

v1::PolicyVersion StaleNotice(bool stale, uint64_t version) {
  v1::PolicyVersion n;
  n.set_notice(true);
  n.set_stale(stale);
  n.set_version(version);
  n.set_content_hash(Version(version).content_hash());
  return n;
}

// Valid versions are delivered in order, an invalid one is rejected with
// its version named, and each is followed by a report of what is applied.
TEST_F(ControlSourceFakeTest, DeliversValidVersionsRejectsInvalidOnesAndReportsEach) {
  state_->scripts.push_back({.versions = {Version(1), Version(2, false), Version(3)}});
  Start();
  ASSERT_TRUE(WaitForFake([](const auto& s) {
    for (const v1::AgentStatus& r : s.reports) {
      if (r.applied_version() == 3) return true;
    }
    return false;
  }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 3}));
  ASSERT_EQ(rejected_.size(), 1u);
  EXPECT_NE(rejected_[0].find("version 2"), std::string::npos) << rejected_[0];
  EXPECT_EQ(connected_, std::vector<bool>{true});
  EXPECT_TRUE(errors_.empty());
}

// A stream that ends is counted as a stream error and reopened, asking for
// what the agent applied meanwhile; a stream that never answered is not
// "connected".
TEST_F(ControlSourceFakeTest, ReconnectsResumingFromTheAppliedVersion) {
  state_->scripts.push_back({.versions = {Version(4)}, .end = absl::UnavailableError("gone")});
  state_->scripts.push_back({.headers = false, .end = absl::UnavailableError("refused")});
  state_->scripts.push_back({});  // stays open
  Start();
  ASSERT_TRUE(WaitForFake([](const auto& s) { return s.watches.size() == 3; }));
  std::lock_guard<std::mutex> state_lock(state_->mu);
  EXPECT_EQ(state_->watches[0].applied_version(), 0u);
  EXPECT_EQ(state_->watches[0].node(), "node-a");
  EXPECT_EQ(state_->watches[1].applied_version(), 4u);
  EXPECT_EQ(state_->watches[1].applied_hash(), policy::ContentHash(Version(4).policy()));
  EXPECT_EQ(state_->watches[2].applied_version(), 4u);
  ASSERT_TRUE(WaitForAgent([this] { return connected_.size() == 3; }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(errors_, (std::vector<std::string>{"stream", "stream"}));
  // Up, down; the headerless stream is never up; the third is.
  EXPECT_EQ(connected_, (std::vector<bool>{true, false, true}));
}

// A report refused for another reason than a broken stream (Unavailable,
// which the stream counts) is counted as a report error.
TEST_F(ControlSourceFakeTest, AReportRefusedIsCountedAsAReportError) {
  state_->report_result = absl::PermissionDeniedError("not an agent");
  state_->scripts.push_back({.versions = {Version(1)}});
  Start();
  // The report error is counted after the call returns; one per report
  // (on connecting and after the delivery, which may coalesce).
  ASSERT_TRUE(WaitForAgent([this] { return !errors_.empty(); }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(std::count(errors_.begin(), errors_.end(), "report"),
            static_cast<std::ptrdiff_t>(errors_.size()))
      << "only report errors: the stream is fine";
}

}  // namespace
}  // namespace portcullis::agent

namespace portcullis::agent {
namespace {

// A notice is not a version: nothing is applied. Stale for longer than
// stale_failover, the agent leaves the stream and opens another at once
// (no backoff, no stream error), resuming from its version; a replica
// that recovers in time is stayed on.
TEST_F(ControlSourceFakeTest, AStaleStreamIsLeftAfterItsGraceAndARecoveredOneIsKept) {
  stale_failover_ = absl::Milliseconds(300);
  state_->scripts.push_back(
      {.versions = {Version(1), StaleNotice(true, 1), StaleNotice(false, 1)}});
  Start();
  ASSERT_TRUE(WaitForAgent([this] { return stale_.size() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    EXPECT_EQ(state_->watches.size(), 1u) << "left a replica that had recovered";
  }
  source_->Stop();
  source_.reset();

  state_ = std::make_shared<FakeControl::State>();
  stale_.clear();
  delivered_.clear();
  state_->scripts.push_back({.versions = {Version(2), StaleNotice(true, 2)}});
  state_->scripts.push_back({});  // a healthy replica: stays open
  const auto start = std::chrono::steady_clock::now();
  Start();
  ASSERT_TRUE(WaitForFake([](const auto& s) { return s.watches.size() == 2; }));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(300)) << "left before the grace period";
  EXPECT_LT(took, std::chrono::seconds(3));
  std::lock_guard<std::mutex> state_lock(state_->mu);
  EXPECT_EQ(state_->watches[1].applied_version(), 2u);
  ASSERT_TRUE(WaitForAgent([this] { return stale_.size() == 2; }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(delivered_, std::vector<uint64_t>{2}) << "a notice was applied as a version";
  EXPECT_EQ(stale_, (std::vector<bool>{true, false}));
  EXPECT_TRUE(errors_.empty()) << "leaving a stale replica is no stream error";
}

}  // namespace
}  // namespace portcullis::agent
