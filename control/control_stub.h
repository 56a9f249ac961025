// The control API as its clients (the agent and portcullisctl) call it: the
// generated stub behind an interface whose calls return absl statuses, with
// gRPC and TLS failures explained (FromGrpc). Callers are tested with a fake
// and decorated in one place, as google-cloud-cpp does with its *Stub
// classes.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "portcullis/v1/control.grpc.pb.h"

namespace portcullis::control {

// One open Watch stream.
class WatchStream {
 public:
  virtual ~WatchStream() = default;
  // Waits for the service's headers; false when the call failed before it
  // answered (the service sends them at once: kLiveVersionHeader).
  virtual bool WaitForHeaders() = 0;
  // The next version; false when the stream ended (then Finish says why).
  virtual bool Read(v1::PolicyVersion* version) = 0;
  virtual absl::Status Finish() = 0;
  // From another thread: ends a Read in progress.
  virtual void Cancel() = 0;
  // The replica's IP:PORT once connected (PeerEndpoint), or "".
  virtual std::string Peer() = 0;
};

class ControlStub {
 public:
  virtual ~ControlStub() = default;

  // Waits until the channel is connected or `timeout` passes. (A sync gRPC
  // client moves a connection attempt forward only while someone waits.)
  virtual bool WaitForConnected(absl::Duration timeout) = 0;

  // Unary calls, each with `deadline` from now.
  virtual absl::StatusOr<v1::PushResponse> Push(const v1::PushRequest& request,
                                                absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::ValidateResponse> Validate(const v1::ValidateRequest& request,
                                                        absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::DiffResponse> Diff(const v1::DiffRequest& request,
                                                absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PushResponse> Rollback(const v1::RollbackRequest& request,
                                                    absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::HistoryResponse> History(const v1::HistoryRequest& request,
                                                      absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PolicyVersion> Get(const v1::GetRequest& request,
                                                absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::AuditResponse> Audit(const v1::AuditRequest& request,
                                                  absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StatusResponse> Status(const v1::StatusRequest& request,
                                                    absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PolicyVersion> Confirm(const v1::ConfirmRequest& request,
                                                    absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::ShadowReportResponse> ShadowReport(
      const v1::ShadowReportRequest& request, absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PushResponse> PromoteShadow(const v1::PromoteShadowRequest& request,
                                                         absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::DiscardShadowResponse> DiscardShadow(
      const v1::DiscardShadowRequest& request, absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PushResponse> PromoteRollout(const v1::RolloutRequest& request,
                                                          absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::PushResponse> AbortRollout(const v1::RolloutRequest& request,
                                                        absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::ReportStatusResponse> ReportStatus(const v1::AgentStatus& request,
                                                                absl::Duration deadline) = 0;

  // Opens a policy stream (no deadline: it lives as long as the agent).
  virtual std::unique_ptr<WatchStream> Watch(const v1::WatchRequest& request) = 0;
};

// The real stub over `channel`; `target` (HOST:PORT) names the service in
// error messages.
std::unique_ptr<ControlStub> NewGrpcControlStub(std::shared_ptr<grpc::Channel> channel,
                                                std::string target);

}  // namespace portcullis::control
