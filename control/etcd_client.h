// A client of etcd's v3 gRPC API (stubs generated from etcd's own protos,
// proto/CMakeLists.txt) over several endpoints: one channel per member, and
// a call that fails because its member is gone or cannot reach a quorum is
// retried on the next member. Only when none answers is the call an error,
// which then says that etcd has no quorum or cannot be reached.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace portcullis::control {

struct EtcdOptions {
  // --etcd-endpoints: http:// or https:// URLs of the members.
  std::vector<std::string> endpoints;
  // --etcd-ca, --etcd-cert, --etcd-key: PEM files for https:// endpoints
  // (the client certificate is optional, as etcd's --client-cert-auth is).
  std::string ca_file, cert_file, key_file;
  // How long one member has to answer one call before the next is tried.
  absl::Duration call_timeout = absl::Seconds(3);
};

class EtcdClient {
 public:
  // Checks the endpoints and loads the certificates; connects lazily.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(const EtcdOptions& options);

  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& request);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& request);
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(int64_t ttl_seconds);
  // Watches `key` from etcd revision `from` (a Watch stream on the member
  // that answered last) until it is written or `timeout` passes. OK either
  // way; an error when the stream could not be kept (the caller reads the
  // key next, which says whether etcd is reachable).
  absl::Status AwaitWrite(const std::string& key, int64_t from, absl::Duration timeout);
  // Watches the keys in [key, range_end) (range_end "": `key` only) from
  // etcd revision `from` on the member that answered last, and hands each
  // response to `on_response` until it returns false (then OK), or the
  // stream ends: cancelled through `ctx`, past its deadline, or broken (the
  // error; the next call then starts on another member).
  absl::Status Watch(grpc::ClientContext& ctx, const std::string& key, const std::string& range_end,
                     int64_t from,
                     const std::function<bool(const etcdserverpb::WatchResponse&)>& on_response);

  // The endpoints, for messages.
  std::string Describe() const;

 private:
  struct Member {
    std::string url;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  };
  EtcdClient(std::vector<Member> members, absl::Duration call_timeout)
      : members_(std::move(members)), call_timeout_(call_timeout) {}

  // Runs `call` on the member that answered last, then on each other one
  // while the failure is the member's (unavailable, timed out); and all of
  // them again, for up to 3 s, while they seem to be electing a leader.
  template <typename Response, typename Call>
  absl::StatusOr<Response> OnAnyMember(const char* what, const Call& call);

  std::vector<Member> members_;
  absl::Duration call_timeout_;
  std::atomic<size_t> current_{0};
};

// The key just past every key that starts with `prefix`: a range's end.
std::string EtcdPrefixEnd(const std::string& prefix);

}  // namespace portcullis::control
