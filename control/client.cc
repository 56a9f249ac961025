#include "control/client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace portcullis::control {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("--control HOST:PORT is required");
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnection is the caller's (with jitter); keep gRPC's own short.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  args.SetMaxReceiveMessageSize(64 << 20);
  if (options.insecure_plaintext) {
    return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  }
  auto tls = ReadTlsFiles(options.tls);
  if (!tls.ok()) return tls.status();
  if (!options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls->ca;
  ssl.pem_cert_chain = tls->cert;
  ssl.pem_private_key = tls->key;
  return grpc::CreateCustomChannel(options.target, grpc::SslCredentials(ssl), args);
}

absl::Status FromGrpc(const grpc::Status& status, absl::string_view target) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string message = status.error_message();
  if (code == absl::StatusCode::kUnavailable) {
    if (absl::StrContains(message, "handshake") || absl::StrContains(message, "SSL") ||
        absl::StrContains(message, "ssl") || absl::StrContains(message, "certificate")) {
      absl::StrAppend(&message, " (the TLS handshake with ", target,
                      " failed: is --ca the service's CA, and is --cert issued by it? "
                      "does the service's certificate name this host? see --server-name)");
    } else {
      message = absl::StrCat("cannot reach the control service at ", target, ": ", message);
    }
  } else if (code == absl::StatusCode::kDeadlineExceeded) {
    message = absl::StrCat("the control service at ", target, " did not answer in time: ", message);
  }
  return absl::Status(code, message);
}

}  // namespace portcullis::control
