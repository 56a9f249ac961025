#include "control/client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "control/wire.h"

namespace portcullis::control {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("--control HOST:PORT is required");
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kClientKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kClientKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnection pacing is the caller's (with jitter); keep gRPC's own
  // short. (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it is also the connect
  // timeout, and a short one fails handshakes with a busy service.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (options.insecure_plaintext) {
    return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  }
  auto tls = ReadTlsFiles(options.tls, /*identity_optional=*/true);
  if (!tls.ok()) return tls.status();
  if (!options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
  }
  // Files, not their contents: a renewed certificate is used at the next
  // handshake, without a restart.
  return grpc::CreateCustomChannel(
      options.target, ReloadingChannelCredentials(options.tls, options.tls_refresh), args);
}

absl::Status FromGrpc(const grpc::Status& status, absl::string_view target) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string message = status.error_message();
  if (code == absl::StatusCode::kUnavailable) {
    message = absl::StrCat("cannot reach the control service at ", target, ": ", message);
    // A refused handshake shows only as a closed socket on this side.
    if (absl::StrContains(message, "Socket closed") || absl::StrContains(message, "andshake") ||
        absl::StrContains(message, "SSL") || absl::StrContains(message, "certificate")) {
      absl::StrAppend(&message,
                      " (if the service is up, the TLS handshake failed: is --ca the service's "
                      "CA, and was --cert issued by it? does the service's certificate name "
                      "the host you dial? see --server-name)");
    }
  } else if (code == absl::StatusCode::kDeadlineExceeded) {
    message = absl::StrCat("the control service at ", target, " did not answer in time: ", message);
  }
  return absl::Status(code, message);
}

}  // namespace portcullis::control
