#include "control/control_stub.h"

#include <chrono>

#include "control/client.h"
#include "control/wire.h"

namespace portcullis::control {
namespace {

std::chrono::system_clock::time_point In(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

class GrpcWatchStream : public WatchStream {
 public:
  GrpcWatchStream(v1::Control::Stub& stub, const v1::WatchRequest& request, std::string target)
      : target_(std::move(target)), reader_(stub.Watch(&ctx_, request)) {}

  bool WaitForHeaders() override {
    reader_->WaitForInitialMetadata();
    return ctx_.GetServerInitialMetadata().count(kLiveVersionHeader) > 0;
  }
  bool Read(v1::PolicyVersion* version) override { return reader_->Read(version); }
  absl::Status Finish() override { return FromGrpc(reader_->Finish(), target_); }
  void Cancel() override { ctx_.TryCancel(); }
  std::string Peer() override {
    const std::string peer = ctx_.peer();
    return peer.empty() ? "" : PeerEndpoint(peer);
  }

 private:
  grpc::ClientContext ctx_;  // before reader_, which uses it
  const std::string target_;
  std::unique_ptr<grpc::ClientReader<v1::PolicyVersion>> reader_;
};

class GrpcControlStub : public ControlStub {
 public:
  GrpcControlStub(std::shared_ptr<grpc::Channel> channel, std::string target)
      : channel_(std::move(channel)),
        stub_(v1::Control::NewStub(channel_)),
        target_(std::move(target)) {}

  bool WaitForConnected(absl::Duration timeout) override {
    return channel_->WaitForConnected(In(timeout));
  }

  absl::StatusOr<v1::PushResponse> Push(const v1::PushRequest& r, absl::Duration d) override {
    return Call(&v1::Control::Stub::Push, r, d);
  }
  absl::StatusOr<v1::ValidateResponse> Validate(const v1::ValidateRequest& r,
                                                absl::Duration d) override {
    return Call(&v1::Control::Stub::Validate, r, d);
  }
  absl::StatusOr<v1::DiffResponse> Diff(const v1::DiffRequest& r, absl::Duration d) override {
    return Call(&v1::Control::Stub::Diff, r, d);
  }
  absl::StatusOr<v1::PushResponse> Rollback(const v1::RollbackRequest& r,
                                            absl::Duration d) override {
    return Call(&v1::Control::Stub::Rollback, r, d);
  }
  absl::StatusOr<v1::HistoryResponse> History(const v1::HistoryRequest& r,
                                              absl::Duration d) override {
    return Call(&v1::Control::Stub::History, r, d);
  }
  absl::StatusOr<v1::PolicyVersion> Get(const v1::GetRequest& r, absl::Duration d) override {
    return Call(&v1::Control::Stub::Get, r, d);
  }
  absl::StatusOr<v1::AuditResponse> Audit(const v1::AuditRequest& r, absl::Duration d) override {
    return Call(&v1::Control::Stub::Audit, r, d);
  }
  absl::StatusOr<v1::StatusResponse> Status(const v1::StatusRequest& r, absl::Duration d) override {
    return Call(&v1::Control::Stub::Status, r, d);
  }
  absl::StatusOr<v1::ShadowReportResponse> ShadowReport(const v1::ShadowReportRequest& r,
                                                        absl::Duration d) override {
    return Call(&v1::Control::Stub::ShadowReport, r, d);
  }
  absl::StatusOr<v1::PushResponse> PromoteShadow(const v1::PromoteShadowRequest& r,
                                                 absl::Duration d) override {
    return Call(&v1::Control::Stub::PromoteShadow, r, d);
  }
  absl::StatusOr<v1::DiscardShadowResponse> DiscardShadow(const v1::DiscardShadowRequest& r,
                                                          absl::Duration d) override {
    return Call(&v1::Control::Stub::DiscardShadow, r, d);
  }
  absl::StatusOr<v1::PushResponse> PromoteRollout(const v1::RolloutRequest& r,
                                                  absl::Duration d) override {
    return Call(&v1::Control::Stub::PromoteRollout, r, d);
  }
  absl::StatusOr<v1::PushResponse> AbortRollout(const v1::RolloutRequest& r,
                                                absl::Duration d) override {
    return Call(&v1::Control::Stub::AbortRollout, r, d);
  }
  absl::StatusOr<v1::PolicyVersion> Confirm(const v1::ConfirmRequest& r,
                                            absl::Duration d) override {
    return Call(&v1::Control::Stub::Confirm, r, d);
  }
  absl::StatusOr<v1::ReportStatusResponse> ReportStatus(const v1::AgentStatus& r,
                                                        absl::Duration d) override {
    return Call(&v1::Control::Stub::ReportStatus, r, d);
  }

  std::unique_ptr<WatchStream> Watch(const v1::WatchRequest& request) override {
    return std::make_unique<GrpcWatchStream>(*stub_, request, target_);
  }

 private:
  // One unary call with its deadline; the gRPC status explained.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (v1::Control::Stub::*method)(grpc::ClientContext*,
                                                                          const Request&,
                                                                          Response*),
                                const Request& request, absl::Duration deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(deadline));
    Response response;
    const grpc::Status s = ((*stub_).*method)(&ctx, request, &response);
    if (!s.ok()) return FromGrpc(s, target_);
    return response;
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Control::Stub> stub_;
  const std::string target_;
};

}  // namespace

std::unique_ptr<ControlStub> NewGrpcControlStub(std::shared_ptr<grpc::Channel> channel,
                                                std::string target) {
  return std::make_unique<GrpcControlStub>(std::move(channel), std::move(target));
}

}  // namespace portcullis::control
