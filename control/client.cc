#include "control/client.h"

#include <arpa/inet.h>

#include <algorithm>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "control/wire.h"

namespace portcullis::control {

namespace {

// IP:PORT or [IPv6]:PORT in inet_ntop's spelling, or nullopt.
std::optional<std::string> CanonicalEndpoint(absl::string_view endpoint, bool* v6 = nullptr) {
  const size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos) return std::nullopt;
  absl::string_view host = endpoint.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(endpoint.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return std::nullopt;
  }
  unsigned char addr[sizeof(in6_addr)];
  char text[INET6_ADDRSTRLEN];
  const bool is_v6 = absl::ConsumePrefix(&host, "[") && absl::ConsumeSuffix(&host, "]");
  const int family = is_v6 ? AF_INET6 : AF_INET;
  if (inet_pton(family, std::string(host).c_str(), addr) != 1 ||
      inet_ntop(family, addr, text, sizeof(text)) == nullptr) {
    return std::nullopt;
  }
  if (v6 != nullptr) *v6 = is_v6;
  return is_v6 ? absl::StrCat("[", text, "]:", port) : absl::StrCat(text, ":", port);
}

}  // namespace

std::string PeerEndpoint(absl::string_view peer) {
  if (!absl::ConsumePrefix(&peer, "ipv4:")) absl::ConsumePrefix(&peer, "ipv6:");
  const std::string unescaped =
      absl::StrReplaceAll(peer, {{"%5B", "["}, {"%5D", "]"}, {"%5b", "["}, {"%5d", "]"}});
  return CanonicalEndpoint(unescaped).value_or(unescaped);
}

bool MayFailOver(const std::string& control) {
  return absl::StrContains(control, ',') || !CanonicalEndpoint(control).has_value();
}

absl::StatusOr<std::string> ChannelTarget(const std::string& control, absl::string_view last) {
  if (!absl::StrContains(control, ',')) return control;
  std::vector<std::string> v4, v6;
  for (absl::string_view endpoint : absl::StrSplit(control, ',')) {
    const auto bad = [&] {
      return absl::InvalidArgumentError(absl::StrCat(
          "--control ", control, ": ", endpoint,
          " is not IP:PORT or [IPv6]:PORT (several endpoints are addresses; for host names, give "
          "one name that resolves to several addresses)"));
    };
    bool is_v6 = false;
    std::optional<std::string> canonical = CanonicalEndpoint(endpoint, &is_v6);
    if (!canonical) return bad();
    (is_v6 ? v6 : v4).push_back(*std::move(canonical));
  }
  if (!v4.empty() && !v6.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--control ", control, ": mixes IPv4 and IPv6 endpoints; give one family"));
  }
  std::vector<std::string>& all = v4.empty() ? v6 : v4;
  std::shuffle(all.begin(), all.end(), std::mt19937(std::random_device()()));
  std::stable_partition(all.begin(), all.end(), [&](const std::string& e) { return e != last; });
  return absl::StrCat(v4.empty() ? "ipv6:" : "ipv4:", absl::StrJoin(all, ","));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("--control HOST:PORT is required");
  auto target = ChannelTarget(options.target, options.try_last);
  if (!target.ok()) return target.status();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kClientKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
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
    return grpc::CreateCustomChannel(*target, grpc::InsecureChannelCredentials(), args);
  }
  auto tls = ReadTlsFiles(options.tls, /*identity_optional=*/true);
  if (!tls.ok()) return tls.status();
  if (!options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
  } else if (*target != options.target) {
    // A list's authority is no host name: expect the first endpoint's host.
    std::string host = options.target.substr(0, options.target.find(','));
    host = host.substr(0, host.rfind(':'));
    if (absl::StartsWith(host, "[")) host = host.substr(1, host.size() - 2);
    args.SetSslTargetNameOverride(host);
  }
  // Files, not their contents: a renewed certificate is used at the next
  // handshake, without a restart.
  return grpc::CreateCustomChannel(
      *target, ReloadingChannelCredentials(options.tls, options.tls_refresh), args);
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
