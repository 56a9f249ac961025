// LiveBroadcast over a real in-process gRPC stream (plaintext, loopback):
// what an agent's stream is sent when the replica goes stale and recovers.
#include "control/live_broadcast.h"

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "portcullis/v1/control.grpc.pb.h"
#include "tests/support/policy_versions.h"

namespace portcullis::control {
namespace {

// Watch only, straight into the broadcast (raw, as ControlService's is).
class WatchOnly final
    : public v1::Control::WithRawCallbackMethod_Watch<v1::Control::CallbackService> {
 public:
  explicit WatchOnly(LiveBroadcast& live) : live_(live) {}
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* raw) override {
    grpc::ByteBuffer copy = *raw;
    v1::WatchRequest request;
    EXPECT_TRUE(grpc::SerializationTraits<v1::WatchRequest>::Deserialize(&copy, &request).ok());
    auto stream = live_.Open(ctx, request, {});
    EXPECT_TRUE(stream.ok()) << stream.status();
    return *stream;
  }

 private:
  LiveBroadcast& live_;
};

std::shared_ptr<const v1::PolicyVersion> Version(uint64_t n) {
  return std::make_shared<const v1::PolicyVersion>(testing::StreamedVersion(n));
}

class LiveBroadcastTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Control::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  // A stream for an agent on `applied` (0: none), which ends by itself
  // after 10 s so that a missing message fails the test instead of hanging it.
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::PolicyVersion>> reader;
    v1::PolicyVersion Next() {
      v1::PolicyVersion v;
      EXPECT_TRUE(reader->Read(&v)) << "the stream ended";
      return v;
    }
  };
  std::unique_ptr<Stream> Open(uint64_t applied, bool reads_notices = true) {
    auto s = std::make_unique<Stream>();
    s->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WatchRequest request;
    request.set_node("node-a");
    request.set_reads_notices(reads_notices);
    if (applied) {
      request.set_applied_version(applied);
      request.set_applied_hash(Version(applied)->content_hash());
    }
    s->reader = stub_->Watch(&s->ctx, request);
    s->reader->WaitForInitialMetadata();
    return s;
  }

  static void ExpectNotice(const v1::PolicyVersion& v, bool stale, uint64_t version) {
    EXPECT_TRUE(v.notice());
    EXPECT_EQ(v.stale(), stale);
    EXPECT_EQ(v.version(), version);
    EXPECT_EQ(v.content_hash(), Version(version)->content_hash());
    EXPECT_FALSE(v.has_policy()) << "a notice carries no policy";
  }

  prometheus::Registry registry_;
  LiveBroadcast live_{16, registry_};
  WatchOnly service_{live_};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Control::Stub> stub_;
};

// A stream is told once when its replica goes stale (a repeat says
// nothing), once when it recovers, and still gets the next version whole.
TEST_F(LiveBroadcastTest, AStreamIsToldWhenItsReplicaGoesStaleAndWhenItRecovers) {
  live_.Publish(Version(1));
  auto s = Open(0);
  const v1::PolicyVersion first = s->Next();
  EXPECT_FALSE(first.notice());
  EXPECT_EQ(first.version(), 1u);
  live_.SetStale(true);
  live_.SetStale(true);
  ExpectNotice(s->Next(), true, 1);
  live_.SetStale(false);
  ExpectNotice(s->Next(), false, 1);
  live_.Publish(Version(2));
  const v1::PolicyVersion second = s->Next();
  EXPECT_FALSE(second.notice());
  EXPECT_EQ(second.version(), 2u);
  EXPECT_TRUE(second.has_policy());
}

// While stale, an agent that has the version gets only the notice; one
// that has not gets the version first, then the notice: a notice never
// stands in for a version.
TEST_F(LiveBroadcastTest, AStreamOpenedWhileStaleIsToldAfterTheVersionItLacks) {
  live_.Publish(Version(1));
  live_.SetStale(true);
  auto on_it = Open(1);
  ExpectNotice(on_it->Next(), true, 1);
  auto behind = Open(0);
  const v1::PolicyVersion v = behind->Next();
  EXPECT_FALSE(v.notice());
  EXPECT_EQ(v.version(), 1u);
  ExpectNotice(behind->Next(), true, 1);
}

// An agent of an older build, which would take a notice for a version with
// an empty policy, is sent versions only.
TEST_F(LiveBroadcastTest, AnAgentThatDoesNotReadNoticesIsSentNone) {
  live_.Publish(Version(1));
  live_.SetStale(true);
  auto old = Open(0, /*reads_notices=*/false);
  EXPECT_EQ(old->Next().version(), 1u);
  live_.SetStale(false);
  live_.SetStale(true);
  live_.Publish(Version(2));
  const v1::PolicyVersion next = old->Next();
  EXPECT_FALSE(next.notice());
  EXPECT_EQ(next.version(), 2u);
}

}  // namespace
}  // namespace portcullis::control
