// The live policy version and its fan-out to the agents' Watch streams: one
// WatchReactor per stream, each holding only the newest pending version, so
// a slow agent or a burst of pushes costs one write, not a queue. A version
// is serialized once, when published, and every stream writes those bytes
// (the Watch method is raw: grpc::ByteBuffer in and out). Whether
// the replica is stale (cannot read its shared store) reaches the streams
// as small notices (PolicyVersion.notice).
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "control/revocation.h"
#include "portcullis/v1/control.grpc.pb.h"

namespace portcullis::control {

class WatchReactor;

// A version as published, with its wire encoding, shared by every stream.
struct EncodedVersion {
  std::shared_ptr<const v1::PolicyVersion> version;
  grpc::ByteBuffer bytes;
};

class LiveBroadcast {
 public:
  LiveBroadcast(uint32_t max_streams, prometheus::Registry& registry);
  // Ends every open stream (UNAVAILABLE: the service is stopping).
  ~LiveBroadcast();
  LiveBroadcast(const LiveBroadcast&) = delete;
  LiveBroadcast& operator=(const LiveBroadcast&) = delete;

  // The live version; nullptr before the first push.
  std::shared_ptr<const v1::PolicyVersion> Live() const;
  // While the live version is a canary: what the other nodes are sent.
  std::shared_ptr<const v1::PolicyVersion> Stable() const;
  // Makes `version` live and offers it to every stream; a canary version
  // (version->rollout()) only to the streams of the nodes it selects, and
  // `stable` to the others.
  void Publish(std::shared_ptr<const v1::PolicyVersion> version,
               std::shared_ptr<const v1::PolicyVersion> stable = nullptr);
  // Tells every stream, and every stream opened from now on, that what it
  // serves may no longer be live (the store cannot be read), or that it is
  // again. A stream is told only of a change from what it was last told.
  void SetStale(bool stale);

  // Who opens a stream.
  struct Owner {
    std::string identity;       // the node a certificate is bound to, or ""
    uint32_t per_identity = 0;  // streams it may hold at once; 0 = no limit
    std::optional<PeerCertificate> certificate;
  };

  // A new stream for `request`, or ResourceExhausted when max_streams are
  // open, or `owner.per_identity` already are for its identity. The
  // reactor sends the live version at once unless the agent has it.
  absl::StatusOr<grpc::ServerWriteReactor<grpc::ByteBuffer>*> Open(grpc::CallbackServerContext* ctx,
                                                                   const v1::WatchRequest& request,
                                                                   Owner owner);

  // Ends (UNAUTHENTICATED, with the reason) every stream whose certificate
  // `holds` no longer accepts: revoked or expired since it was opened.
  // Returns how many it ended.
  size_t EndStreams(const std::function<absl::Status(const PeerCertificate&)>& holds);

 private:
  friend class WatchReactor;
  void Closed(WatchReactor* reactor);
  // What the stream of `request` is sent: live_, or stable_ for a node a
  // canary does not select. Under mu_.
  std::shared_ptr<const EncodedVersion> For(const v1::WatchRequest& request) const;

  const uint32_t max_streams_;
  prometheus::Gauge& live_version_;
  prometheus::Gauge& watch_streams_;
  std::mutex publish_mu_;  // one Publish at a time; taken before mu_
  mutable std::mutex mu_;
  std::shared_ptr<const EncodedVersion> live_;    // under mu_
  std::shared_ptr<const EncodedVersion> stable_;  // under mu_; with a canary live_ only
  bool stale_ = false;                            // under mu_
  std::set<WatchReactor*> watchers_;              // under mu_
  std::map<std::string, uint32_t> per_identity_;  // open streams; under mu_
};

}  // namespace portcullis::control
