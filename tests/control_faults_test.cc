// The control service under faults and hostile clients, as a real process
// on loopback with --dev certificates; the clients are in this process.
// Disk full, a corrupt store, oversized messages, floods of unauthenticated
// calls, thousands of idle streams, and readers that never read: nothing
// crashes, memory stays bounded, nothing acknowledged is lost, and
// authorised clients are still served.
#include <grpcpp/grpcpp.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "control/audit_chain.h"
#include "control/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "portcullis/v1/control.grpc.pb.h"
#include "tests/support/command.h"
#include "tests/support/lab.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

const std::string kControl = PORTCULLIS_CONTROL_PATH;

// A policy with `prefixes` /28s in one set (variant shifts them).
v1::Policy PolicyWith(int prefixes, int variant = 0) {
  std::string text =
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: f}\nspec:\n"
      "  defaultAction: deny\n  sets:\n    admins: [198.18.1.0/28]\n    office:\n";
  absl::StrAppend(&text, PrefixItems(prefixes, variant));
  absl::StrAppend(&text,
                  "  failsafe:\n    - {ports: [22, 10250], proto: tcp, from: [admins]}\n"
                  "  ports:\n    - {ports: [80], proto: tcp, from: any}\n"
                  "    - {ports: [8080], proto: tcp, from: [office]}\n");
  auto checked = policy::CheckPolicyText(text);
  EXPECT_TRUE(checked.ok()) << checked.Format("p.yaml");
  return checked.ok() ? checked.loaded->policy : v1::Policy();
}

class ControlFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounts a small tmpfs: needs root";
    state_ = tmp_.path() + "/state";
    std::filesystem::create_directories(state_);
    port_ = 20000 + getpid() % 20000;
  }
  void TearDown() override {
    control_.Kill(SIGKILL);
    if (mounted_) umount2(state_.c_str(), MNT_DETACH);
    if (HasFailure()) {
      std::ifstream in(tmp_.File("control.log"));
      std::cerr << "---- control log ----\n" << in.rdbuf();
    }
  }

  void MountSmallDisk(const std::string& size) {
    ASSERT_EQ(mount("tmpfs", state_.c_str(), "tmpfs", 0, ("size=" + size).c_str()), 0);
    mounted_ = true;
  }

  void StartControl() {
    control_ = Process(
        {kControl, "--dev", "--state-dir", state_, "--listen", absl::StrCat("127.0.0.1:", port_),
         "--metrics-addr", "", "--refusal-audit-window", "1s"},
        tmp_.File("control.log"));
    ASSERT_TRUE(
        WaitFor([&] { return Stub("viewer") != nullptr && Live().ok(); }, std::chrono::seconds(10)))
        << "the control service did not start";
  }

  // A stub with `role`'s certificate ("" = none), on its own connection.
  std::unique_ptr<v1::Control::Stub> Stub(const std::string& role) {
    control::ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", port_);
    const std::string tls = state_ + "/tls/";
    options.tls = {tls + "ca.crt", role.empty() ? "" : tls + role + ".crt",
                   role.empty() ? "" : tls + role + ".key"};
    options.own_connection = true;
    if (!std::filesystem::exists(options.tls.ca)) return nullptr;
    auto channel = control::MakeChannel(options);
    return channel.ok() ? v1::Control::NewStub(*channel) : nullptr;
  }

  absl::StatusOr<v1::PolicyVersion> Live() {
    auto stub = Stub("viewer");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::StatusResponse status;
    grpc::Status s = stub->Status(&ctx, v1::StatusRequest(), &status);
    if (!s.ok()) return control::FromGrpc(s, "control");
    v1::PolicyVersion v;
    v.set_version(status.live_version());
    return v;
  }

  grpc::Status Push(const v1::Policy& policy, const std::string& reason, v1::PushResponse* response,
                    const std::string& role = "editor") {
    auto stub = Stub(role);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::PushRequest request;
    *request.mutable_policy() = policy;
    request.set_reason(reason);
    return stub->Push(&ctx, request, response);
  }

  std::vector<v1::AuditEntry> AuditLog() {
    auto stub = Stub("viewer");
    std::vector<v1::AuditEntry> all;
    for (uint64_t after = 0;;) {
      grpc::ClientContext ctx;
      v1::AuditRequest request;
      request.set_after_seq(after);
      v1::AuditResponse response;
      if (!stub->Audit(&ctx, request, &response).ok()) break;
      all.insert(all.end(), response.entries().begin(), response.entries().end());
      if (!response.more() || response.entries().empty()) break;
      after = all.back().seq();
    }
    return all;
  }

  TempDir tmp_;
  std::string state_;
  int port_ = 0;
  bool mounted_ = false;
  Process control_;
};

TEST_F(ControlFaultsTest, AFullDiskRefusesThePushAndLeavesTheStoreIntact) {
  MountSmallDisk("3m");
  StartControl();
  v1::PushResponse first;
  ASSERT_TRUE(Push(PolicyWith(10), "first", &first).ok());
  // Fill the disk.
  {
    std::ofstream filler(state_ + "/filler", std::ios::binary);
    const std::string block(64 << 10, 'x');
    while (filler.write(block.data(), block.size())) {
    }
  }
  v1::PushResponse refused;
  const grpc::Status full = Push(PolicyWith(20000), "too big for the disk", &refused);
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_THAT(full.error_message(), HasSubstr("disk is full; nothing was stored"));
  std::filesystem::remove(state_ + "/filler");

  // Nothing half-written: the live version is the first, the chain verifies,
  // and the next push gets the next number.
  auto live = Live();
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->version(), first.version());
  EXPECT_TRUE(control::VerifyAuditChain(AuditLog(), "").ok());
  v1::PushResponse next;
  ASSERT_TRUE(Push(PolicyWith(20), "after", &next).ok());
  EXPECT_EQ(next.version(), first.version() + 1);
}

TEST_F(ControlFaultsTest, ACorruptStoreIsRefusedAtStartWithHowToRestore) {
  std::ofstream(state_ + "/control.db") << std::string(16384, '\x5a');
  Process control({kControl, "--dev", "--state-dir", state_, "--listen",
                   absl::StrCat("127.0.0.1:", port_), "--metrics-addr", ""},
                  tmp_.File("control.log"));
  EXPECT_EQ(control.Wait(), 1);
  std::ifstream in(tmp_.File("control.log"));
  const std::string log((std::istreambuf_iterator<char>(in)), {});
  EXPECT_THAT(log, HasSubstr("restore the latest backup"));
}

TEST_F(ControlFaultsTest, AnOversizedMessageIsRefusedAndTheServiceGoesOn) {
  StartControl();
  v1::PushResponse response;
  const grpc::Status s = Push(PolicyWith(1), std::string(65 << 20, 'r'), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(Push(PolicyWith(1), "normal", &response).ok());
  EXPECT_TRUE(control_.running());
}

TEST_F(ControlFaultsTest, AFloodOfUnauthenticatedCallsIsRefusedAccountedAndCheap) {
  StartControl();
  constexpr int kThreads = 8, kCallsPerThread = 250;
  std::atomic<int> refused{0}, other{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto stub = Stub("");
      for (int i = 0; i < kCallsPerThread; ++i) {
        grpc::ClientContext ctx;
        v1::PushRequest request;
        request.set_reason("x");
        v1::PushResponse response;
        const grpc::Status s = stub->Push(&ctx, request, &response);
        (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ? refused : other)++;
      }
    });
  }
  // An authorised client is served while the flood goes on.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto before = Clock::now();
  v1::PushResponse response;
  EXPECT_TRUE(Push(PolicyWith(5), "during the flood", &response).ok());
  EXPECT_LT(Clock::now() - before, std::chrono::seconds(2));
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(refused, kThreads * kCallsPerThread);
  EXPECT_EQ(other, 0);
  EXPECT_LT(RssMb(control_.pid()), 300);

  // Every refusal is in the audit log: itemised (at most 20 a window, here
  // of a second), or counted in a summary row.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the last summary
  int64_t itemised = 0, summarised = 0;
  for (const v1::AuditEntry& e : AuditLog()) {
    if (e.outcome() != "refused") continue;
    if (e.method() == "(many)") {
      int64_t n = 0;
      ASSERT_TRUE(absl::SimpleAtoi(e.detail().substr(0, e.detail().find(' ')), &n)) << e.detail();
      summarised += n;
    } else {
      ++itemised;
    }
  }
  EXPECT_EQ(itemised + summarised, kThreads * kCallsPerThread);
  EXPECT_LE(itemised, 20 * (static_cast<int64_t>(seconds) + 2));
}

// One agent certificate reported status for any node name (three spoofed
// nodes shown in sync) and took every policy stream. A node's certificate
// (portcullis-agent:NODE) now speaks for that node only, holds at most 4
// streams, and a shared certificate is refused unless the service allows it.
TEST_F(ControlFaultsTest, AnAgentCertificateSpeaksForItsOwnNodeOnly) {
  control_ = Process({kControl, "--dev", "--dev-node-certs", "node-a", "--state-dir", state_,
                      "--listen", absl::StrCat("127.0.0.1:", port_), "--metrics-addr", ""},
                     tmp_.File("control.log"));
  ASSERT_TRUE(
      WaitFor([&] { return Stub("viewer") != nullptr && Live().ok(); }, std::chrono::seconds(10)));
  auto report = [&](const std::string& cert, const std::string& node,
                    const std::string& error = "") {
    auto stub = Stub(cert);
    grpc::ClientContext ctx;
    v1::AgentStatus status;
    status.set_node(node);
    status.set_last_error(error);
    v1::ReportStatusResponse response;
    return stub->ReportStatus(&ctx, status, &response);
  };
  EXPECT_TRUE(report("agent-node-a", "node-a", "\x1b[2J\x1b[32mall in sync").ok());
  // What agents write reaches a terminal escaped.
  const std::string tls = state_ + "/tls/";
  const CommandResult status = RunCommand(
      absl::StrCat(PORTCULLISCTL_PATH, " --control 127.0.0.1:", port_, " --ca ", tls,
                   "ca.crt --cert ", tls, "viewer.crt --key ", tls, "viewer.key status"));
  EXPECT_THAT(status.out, HasSubstr("last error: \\x1b[2J\\x1b[32mall in sync"));
  EXPECT_EQ(status.out.find('\x1b'), std::string::npos);
  grpc::Status s = report("agent-node-a", "node-b");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(),
            "the certificate \"portcullis-agent:node-a\" speaks for node \"node-a\" only, not "
            "\"node-b\"");
  s = report("agent", "node-c");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("the agent certificate \"agent\" names no node"));

  auto stub = Stub("agent-node-a");
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::PolicyVersion>>> streams;
  absl::Cleanup cancel = [&] {
    for (auto& c : contexts) c->TryCancel();
    for (auto& r : streams) r->Finish();
  };
  v1::WatchRequest request;
  request.set_node("node-a");
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->Watch(contexts.back().get(), request));
    streams.back()->WaitForInitialMetadata();
  }
  grpc::ClientContext fifth;
  auto refused = stub->Watch(&fifth, request);
  v1::PolicyVersion version;
  while (refused->Read(&version)) {
  }
  s = refused->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(), "too many policy streams for \"node-a\" (4)");
}

// Watch streams that never read.
class IdleWatch : public grpc::ClientReadReactor<v1::PolicyVersion> {
 public:
  IdleWatch(v1::Control::Stub* stub, int i, bool read) {
    request_.set_node(absl::StrCat("idle-", i));
    stub->async()->Watch(&ctx_, &request_, this);
    if (read) StartRead(&version_);
    StartCall();
  }
  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) ++up;
  }
  void OnReadDone(bool ok) override {
    if (ok) {
      ++received;
      StartRead(&version_);
    }
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Cancel() { ctx_.TryCancel(); }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  static inline std::atomic<int> up{0}, received{0};

 private:
  grpc::ClientContext ctx_;
  v1::WatchRequest request_;
  v1::PolicyVersion version_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

// Streams, cancelled and waited for however the test ends.
struct Watches {
  std::vector<std::unique_ptr<v1::Control::Stub>> stubs;
  std::vector<std::unique_ptr<IdleWatch>> all;
  ~Watches() {
    for (auto& w : all) w->Cancel();
    for (auto& w : all) w->Wait();
  }
};

TEST_F(ControlFaultsTest, TenThousandIdleStreamsStayBoundedAndAuthorisedClientsAreServed) {
  StartControl();
  v1::PushResponse response;
  ASSERT_TRUE(Push(PolicyWith(10), "first", &response).ok());
  const long idle_rss = RssMb(control_.pid());

  // 10,000 streams over 100 connections (the service allows 100 per
  // connection); half never read at all.
  constexpr int kConnections = 100, kPerConnection = 100;
  Watches watches;
  IdleWatch::up = 0;
  for (int c = 0; c < kConnections; ++c) {
    watches.stubs.push_back(Stub("agent"));
    for (int i = 0; i < kPerConnection; ++i) {
      watches.all.push_back(std::make_unique<IdleWatch>(
          watches.stubs.back().get(), c * kPerConnection + i, /*read=*/c % 2 == 0));
    }
  }
  ASSERT_TRUE(WaitFor([&] { return IdleWatch::up == kConnections * kPerConnection; },
                      std::chrono::seconds(60)))
      << IdleWatch::up << " streams up";
  const long loaded_rss = RssMb(control_.pid());
  RecordProperty("control_rss_mb_idle", static_cast<int>(idle_rss));
  RecordProperty("control_rss_mb_10k_streams", static_cast<int>(loaded_rss));
  EXPECT_LT(loaded_rss, 1024) << idle_rss << " MB idle, " << loaded_rss << " MB with the streams";
  // Authorised clients are served: a push, and a viewer.
  const auto start = Clock::now();
  ASSERT_TRUE(Push(PolicyWith(12), "with 10k streams open", &response).ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(Live().ok());
  EXPECT_TRUE(control_.running());
}

TEST_F(ControlFaultsTest, ReadersThatNeverReadCostOneVersionEach) {
  StartControl();
  v1::PushResponse response;
  ASSERT_TRUE(Push(PolicyWith(10), "first", &response).ok());
  Watches watches;
  IdleWatch::up = 0;
  for (int c = 0; c < 4; ++c) {
    watches.stubs.push_back(Stub("agent"));
    for (int i = 0; i < 50; ++i) {
      watches.all.push_back(
          std::make_unique<IdleWatch>(watches.stubs.back().get(), c * 50 + i, /*read=*/false));
    }
  }
  ASSERT_TRUE(WaitFor([&] { return IdleWatch::up == 200; }, std::chrono::seconds(30)));
  const long before = RssMb(control_.pid());
  // Twenty pushes of a 20k-prefix policy (~0.5 MB each): each stream holds
  // at most the newest version, one shared copy, not a queue of twenty.
  for (int i = 1; i <= 20; ++i) {
    const grpc::Status pushed = Push(PolicyWith(20000, i), absl::StrCat("push ", i), &response);
    ASSERT_TRUE(pushed.ok()) << pushed.error_message();
  }
  const long after = RssMb(control_.pid());
  RecordProperty("control_rss_mb_slow_readers", static_cast<int>(after));
  EXPECT_LT(after - before, 200) << before << " MB before, " << after << " MB after";
  EXPECT_TRUE(Live().ok());
}

}  // namespace
}  // namespace portcullis::testing
