// etcd's v3 API through the stubs generated from Debian's golang-etcd-server-dev
// protos (proto/CMakeLists.txt), against a real one-member etcd on loopback:
// what `--store etcd` is being built on (issue 14). Pins that the stripped
// protos still speak etcd's wire format: transactions that compare, leases
// that expire keys, and watches.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "tests/support/etcd.h"

namespace portcullis::testing {
namespace {

class EtcdStubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The channel is made once etcd serves: one made before would back
    // off for seconds before it tried again.
    ASSERT_TRUE(etcd_.WaitHealthy()) << "etcd did not start; its log is " << etcd_.LogOf(0);
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", etcd_.ClientPort(0)),
                                       grpc::InsecureChannelCredentials());
    kv_ = etcdserverpb::KV::NewStub(channel);
    lease_ = etcdserverpb::Lease::NewStub(channel);
    watch_ = etcdserverpb::Watch::NewStub(channel);
  }

  // Puts key=value only if the key does not exist yet.
  bool CreateIfAbsent(const std::string& key, const std::string& value, int64_t lease = 0) {
    etcdserverpb::TxnRequest txn;
    etcdserverpb::Compare* c = txn.add_compare();
    c->set_key(key);
    c->set_target(etcdserverpb::Compare::CREATE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_create_revision(0);
    etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    put->set_lease(lease);
    grpc::ClientContext ctx;
    etcdserverpb::TxnResponse resp;
    EXPECT_TRUE(kv_->Txn(&ctx, txn, &resp).ok());
    return resp.succeeded();
  }

  int64_t Count(const std::string& key) {
    grpc::ClientContext ctx;
    etcdserverpb::RangeRequest req;
    req.set_key(key);
    etcdserverpb::RangeResponse resp;
    EXPECT_TRUE(kv_->Range(&ctx, req, &resp).ok());
    return resp.count();
  }

  EtcdCluster etcd_{1};
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease_;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch_;
};

TEST_F(EtcdStubTest, ATransactionThatComparesLetsOnlyOneOfTwoWritersWin) {
  EXPECT_TRUE(CreateIfAbsent("/portcullis-test/versions/1", "first"));
  EXPECT_FALSE(CreateIfAbsent("/portcullis-test/versions/1", "second"));
  grpc::ClientContext ctx;
  etcdserverpb::RangeRequest req;
  req.set_key("/portcullis-test/versions/1");
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE(kv_->Range(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.kvs_size(), 1);
  EXPECT_EQ(resp.kvs(0).value(), "first");
}

TEST_F(EtcdStubTest, AKeyOnARevokedLeaseIsGone) {
  grpc::ClientContext grant_ctx;
  etcdserverpb::LeaseGrantRequest grant;
  grant.set_ttl(30);
  etcdserverpb::LeaseGrantResponse granted;
  ASSERT_TRUE(lease_->LeaseGrant(&grant_ctx, grant, &granted).ok());
  ASSERT_NE(granted.id(), 0);
  ASSERT_TRUE(CreateIfAbsent("/portcullis-test/agents/node-a", "report", granted.id()));
  EXPECT_EQ(Count("/portcullis-test/agents/node-a"), 1);
  grpc::ClientContext revoke_ctx;
  etcdserverpb::LeaseRevokeRequest revoke;
  revoke.set_id(granted.id());
  etcdserverpb::LeaseRevokeResponse revoked;
  ASSERT_TRUE(lease_->LeaseRevoke(&revoke_ctx, revoke, &revoked).ok());
  EXPECT_EQ(Count("/portcullis-test/agents/node-a"), 0);
}

TEST_F(EtcdStubTest, AWatchSeesAPutUnderItsPrefix) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = watch_->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key("/portcullis-test/head");
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::WatchResponse created;
  ASSERT_TRUE(stream->Read(&created));
  EXPECT_TRUE(created.created());
  ASSERT_TRUE(CreateIfAbsent("/portcullis-test/head", "7"));
  etcdserverpb::WatchResponse event;
  ASSERT_TRUE(stream->Read(&event));
  ASSERT_EQ(event.events_size(), 1);
  EXPECT_EQ(event.events(0).type(), mvccpb::Event::PUT);
  EXPECT_EQ(event.events(0).kv().value(), "7");
  ctx.TryCancel();
}

}  // namespace
}  // namespace portcullis::testing
